package mirror

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"golang.org/x/sys/unix"
)

// stamp is the mtime of every file the tests make, so that two trees
// built apart compare equal.
var stamp = time.Date(2026, 11, 30, 12, 0, 0, 123456789, time.UTC)

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte, mode os.FileMode) {
	t.Helper()
	must(t, os.WriteFile(path, data, mode))
	must(t, os.Chmod(path, mode)) // past the umask
	must(t, os.Chtimes(path, stamp, stamp))
}

// buildTree makes the same small tree of every kind of entry in dir.
func buildTree(t *testing.T, dir string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Join(dir, "d", "e"), 0o755))
	writeFile(t, filepath.Join(dir, "f"), bytes.Repeat([]byte("0123456789"), 1000), 0o644)
	writeFile(t, filepath.Join(dir, "d", "g"), []byte("g\n"), 0o600)
	writeFile(t, filepath.Join(dir, "d", "e", "empty"), nil, 0o644)
	writeFile(t, filepath.Join(dir, "h1"), []byte("linked\n"), 0o644)
	must(t, os.Link(filepath.Join(dir, "h1"), filepath.Join(dir, "d", "h2")))
	must(t, os.Symlink("f", filepath.Join(dir, "s")))
	must(t, unix.Mkfifo(filepath.Join(dir, "d", "fifo"), 0o644))
}

// mustCompare compares with Max unset and fails on error.
func mustCompare(t *testing.T, dirs []string, content bool) []Difference {
	t.Helper()
	diffs, err := Compare(dirs, CompareOptions{Content: content})
	must(t, err)
	return diffs
}

func TestIdentical(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	buildTree(t, a)
	buildTree(t, b)
	for _, content := range []bool{false, true} {
		if diffs := mustCompare(t, []string{a, b}, content); len(diffs) != 0 {
			t.Errorf("Content=%v: differences in identical trees: %v", content, diffs)
		}
	}
	diffs, st, err := CompareStats([]string{a, b}, CompareOptions{Content: true})
	must(t, err)
	// f, d/g, d/e/empty, h1, d/h2: 10000+2+0+7+7 bytes.
	if len(diffs) != 0 || st.Files != 5 || st.Bytes != 10016 {
		t.Errorf("CompareStats = %v, %+v; want none, 5 files, 10016 bytes", diffs, st)
	}
}

// setXattr sets a user xattr, skipping the test where the filesystem has
// none.
func setXattr(t *testing.T, path, name, value string) {
	t.Helper()
	err := unix.Lsetxattr(path, name, []byte(value), 0)
	if errors.Is(err, unix.ENOTSUP) {
		t.Skipf("the filesystem of %s has no user xattrs: %v", path, err)
	}
	must(t, err)
}

// aclReadableBy is a system.posix_acl_access value for a 0644 file that
// also names user uid, with read access (the kernel's xattr form: a
// version, then tag, permissions and id of each entry in tag order).
func aclReadableBy(uid uint32) string {
	const userObj, user, groupObj, mask, other = 0x01, 0x02, 0x04, 0x10, 0x20
	b := binary.LittleEndian.AppendUint32(nil, 2)
	for _, e := range []struct {
		tag, perm uint16
		id        uint32
	}{{userObj, 6, ^uint32(0)}, {user, 4, uid}, {groupObj, 4, ^uint32(0)}, {mask, 4, ^uint32(0)}, {other, 4, ^uint32(0)}} {
		b = binary.LittleEndian.AppendUint16(b, e.tag)
		b = binary.LittleEndian.AppendUint16(b, e.perm)
		b = binary.LittleEndian.AppendUint32(b, e.id)
	}
	return string(b)
}

// capNetBindService is a security.capability value (VFS_CAP_REVISION_2)
// permitting CAP_NET_BIND_SERVICE.
var capNetBindService = string(binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(
	binary.LittleEndian.AppendUint32(nil, 0x02000000), 1<<unix.CAP_NET_BIND_SERVICE), 0)) + string(make([]byte, 8))

func TestDifferences(t *testing.T) {
	tests := []struct {
		name string
		// change departs b from a.
		change func(t *testing.T, b string)
		// meta are the differences found without Content, content those
		// found only with it.
		meta, content []string
	}{
		{
			name:   "missing",
			change: func(t *testing.T, b string) { must(t, os.Remove(filepath.Join(b, "d", "g"))) },
			meta:   []string{"d/g: missing"},
		},
		{
			name:   "missing directory is reported once",
			change: func(t *testing.T, b string) { must(t, os.RemoveAll(filepath.Join(b, "d", "e"))) },
			meta:   []string{"d/e: missing"},
		},
		{
			name:   "extra",
			change: func(t *testing.T, b string) { writeFile(t, filepath.Join(b, "d", "new"), nil, 0o644) },
			meta:   []string{"d/new: extra"},
		},
		{
			name: "type",
			change: func(t *testing.T, b string) {
				must(t, os.Remove(filepath.Join(b, "f")))
				must(t, os.Mkdir(filepath.Join(b, "f"), 0o755))
			},
			meta: []string{"f: type file != dir"},
		},
		{
			name:   "size",
			change: func(t *testing.T, b string) { writeFile(t, filepath.Join(b, "d", "g"), []byte("gg\n"), 0o600) },
			meta:   []string{"d/g: size 2 != 3"},
		},
		{
			name: "mtime",
			change: func(t *testing.T, b string) {
				must(t, os.Chtimes(filepath.Join(b, "f"), stamp, stamp.Add(time.Nanosecond)))
			},
			meta: []string{"f: mtime 2026-11-30T12:00:00.123456789Z != 2026-11-30T12:00:00.12345679Z"},
		},
		{
			name: "content at an offset",
			change: func(t *testing.T, b string) {
				data := bytes.Repeat([]byte("0123456789"), 1000)
				data[4321] = 'x'
				writeFile(t, filepath.Join(b, "f"), data, 0o644)
			},
			content: []string{"f: content differs at byte 4321"},
		},
		{
			name: "symlink target",
			change: func(t *testing.T, b string) {
				must(t, os.Remove(filepath.Join(b, "s")))
				must(t, os.Symlink("d/g", filepath.Join(b, "s")))
			},
			meta: []string{`s: symlink target "f" != "d/g"`},
		},
		{
			name:    "xattr",
			change:  func(t *testing.T, b string) { setXattr(t, filepath.Join(b, "d", "g"), "user.x", "1") },
			content: []string{"d/g: xattr user.x extra"},
		},
		{
			// An ACL and a file capability grant access: the check at
			// mount time compares them, other xattrs only a verify.
			name: "acl",
			change: func(t *testing.T, b string) {
				setXattr(t, filepath.Join(b, "f"), "system.posix_acl_access", aclReadableBy(1))
			},
			meta: []string{"f: xattr system.posix_acl_access extra"},
		},
		{
			name: "file capability",
			change: func(t *testing.T, b string) {
				setXattr(t, filepath.Join(b, "f"), "security.capability", capNetBindService)
			},
			meta: []string{"f: xattr security.capability extra"},
		},
		{
			// statx reports the immutable flag: it is compared at
			// mount time.
			name: "immutable flag",
			change: func(t *testing.T, b string) {
				t.Cleanup(func() { unchattr(t, b) })
				chattr(t, filepath.Join(b, "d"), inodeflags.Immutable)
			},
			meta: []string{"d: flags - != i"},
		},
		{
			name:    "noatime flag",
			change:  func(t *testing.T, b string) { chattr(t, filepath.Join(b, "f"), inodeflags.NoAtime) },
			content: []string{"f: flags - != A"},
		},
		{
			name:   "mode",
			change: func(t *testing.T, b string) { must(t, os.Chmod(filepath.Join(b, "f"), 0o640)) },
			meta:   []string{"f: mode 0644 != 0640"},
		},
		{
			name: "owner",
			change: func(t *testing.T, b string) {
				if os.Geteuid() != 0 {
					t.Skip("giving a file away needs root")
				}
				must(t, os.Lchown(filepath.Join(b, "f"), 1, 2))
			},
			meta: []string{"f: owner 0:0 != 1:2"},
		},
		{
			name: "directory mode, not its mtime",
			change: func(t *testing.T, b string) {
				must(t, os.Chmod(filepath.Join(b, "d"), 0o700))
				must(t, os.Chtimes(filepath.Join(b, "d"), stamp, stamp))
			},
			meta: []string{"d: mode 0755 != 0700"},
		},
		{
			name: "hard links broken",
			change: func(t *testing.T, b string) {
				must(t, os.Remove(filepath.Join(b, "d", "h2")))
				writeFile(t, filepath.Join(b, "d", "h2"), []byte("linked\n"), 0o644)
			},
			// d/h2 comes first in the walk: h1 is the odd one.
			content: []string{"h1: hard links"},
		},
		{
			name: "hard links added",
			change: func(t *testing.T, b string) {
				must(t, os.Remove(filepath.Join(b, "d", "g")))
				must(t, os.Link(filepath.Join(b, "d", "e", "empty"), filepath.Join(b, "d", "g")))
			},
			// The files differ in size and mode as well.
			meta:    []string{"d/g: size 2 != 0", "d/g: mode 0600 != 0644"},
			content: []string{"d/g: hard links"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := t.TempDir(), t.TempDir()
			buildTree(t, a)
			buildTree(t, b)
			tt.change(t, b)
			checkDiffs(t, "Content=false", mustCompare(t, []string{a, b}, false), b, tt.meta)
			checkDiffs(t, "Content=true", mustCompare(t, []string{a, b}, true), b, append(slices.Clone(tt.meta), tt.content...))
		})
	}
}

// checkDiffs checks diffs, all of replica b, against "PATH: WHAT" lines.
func checkDiffs(t *testing.T, what string, diffs []Difference, b string, want []string) {
	t.Helper()
	var got []string
	for _, d := range diffs {
		if d.Replica != b {
			t.Errorf("%s: difference %v names replica %s, want %s", what, d, d.Replica, b)
		}
		if s := d.String(); !strings.HasPrefix(s, b+"/") {
			t.Errorf("%s: String() = %q, want it to start with %s/", what, s, b)
		}
		got = append(got, d.Path+": "+d.What)
	}
	// Both sides in the order Compare reports: the mode of a file comes
	// before its hard links, its metadata before its content.
	slices.Sort(got)
	want = slices.Clone(want)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s: differences\n%s\nwant\n%s", what, strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestMax(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	buildTree(t, a)
	for _, n := range []string{"x1", "x2", "x3", "x4"} {
		writeFile(t, filepath.Join(b, n), nil, 0o644)
	}
	all := mustCompare(t, []string{a, b}, true)
	if len(all) != 8 { // d, f, h1, s missing, x1..x4 extra
		t.Fatalf("want 8 differences, got %v", all)
	}
	for _, max := range []int{1, 3, len(all), len(all) + 5} {
		got, err := Compare([]string{a, b}, CompareOptions{Content: true, Max: max})
		must(t, err)
		if want := all[:min(max, len(all))]; !slices.Equal(got, want) {
			t.Errorf("Max %d: got %v, want %v", max, got, want)
		}
	}
}

func TestOrder(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	buildTree(t, a)
	diffs := mustCompare(t, []string{a, b}, false)
	var paths []string
	for _, d := range diffs {
		paths = append(paths, d.Path)
	}
	want := []string{"d", "f", "h1", "s"}
	if !slices.Equal(paths, want) {
		t.Errorf("paths %v, want %v (sorted, a missing directory once)", paths, want)
	}
}

// TestParallelOrder compares trees whose differences lie in many
// subtrees in one goroutine and in several: the same differences in the
// same order, and with Max, that many of them, in that order.
func TestParallelOrder(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for i := range 20 {
		for _, root := range []string{a, b} {
			must(t, os.MkdirAll(filepath.Join(root, fmt.Sprintf("d%02d/sub", i)), 0o755))
		}
		writeFile(t, filepath.Join(a, fmt.Sprintf("d%02d/sub/only-a", i)), nil, 0o644)
		writeFile(t, filepath.Join(b, fmt.Sprintf("d%02d/only-b", i)), nil, 0o644)
		writeFile(t, filepath.Join(a, fmt.Sprintf("d%02d/f", i)), []byte("a"), 0o644)
		writeFile(t, filepath.Join(b, fmt.Sprintf("d%02d/f", i)), []byte("bb"), 0o644)
	}
	dirs := []string{a, b}
	one, _, err := compare(dirs, CompareOptions{}, 1)
	must(t, err)
	if len(one) < 60 { // per directory: only-b extra, f's size (and mtime), only-a missing
		t.Fatalf("want 60 differences or more, got %d: %v", len(one), one)
	}
	for range 20 {
		many, _, err := compare(dirs, CompareOptions{}, 8)
		must(t, err)
		if !slices.Equal(many, one) {
			t.Fatalf("in 8 goroutines:\n%v\nin one:\n%v", many, one)
		}
		some, _, err := compare(dirs, CompareOptions{Max: 10}, 8)
		must(t, err)
		if len(some) != 10 {
			t.Fatalf("Max 10 in 8 goroutines: %d differences", len(some))
		}
		rest := one
		for _, d := range some {
			k := slices.Index(rest, d)
			if k < 0 {
				t.Fatalf("Max 10 in 8 goroutines: %v out of order or not a difference:\n%v", d, some)
			}
			rest = rest[k+1:]
		}
	}
}

func TestCompareErrors(t *testing.T) {
	a := t.TempDir()
	if _, err := Compare([]string{a}, CompareOptions{}); err == nil {
		t.Error("Compare of one directory: no error")
	}
	if _, err := Compare([]string{a, filepath.Join(a, "nonexistent")}, CompareOptions{}); err == nil {
		t.Error("Compare with a missing root: no error")
	}
	if os.Geteuid() == 0 {
		t.Log("running as root: an unreadable directory is not tested")
		return
	}
	b := t.TempDir()
	for _, dir := range []string{a, b} {
		must(t, os.Mkdir(filepath.Join(dir, "locked"), 0o755))
	}
	must(t, os.Chmod(filepath.Join(b, "locked"), 0))
	defer os.Chmod(filepath.Join(b, "locked"), 0o755)
	if diffs, err := Compare([]string{a, b}, CompareOptions{}); err == nil {
		t.Errorf("unreadable directory: no error, differences %v", diffs)
	}
}

// treeHash hashes everything of a tree that Repair must not change on the
// primary, inode numbers and ctimes included.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(root, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o %d:%d %d %d %v %v %d\n", path, st.Mode, st.Uid, st.Gid, st.Size, st.Ino, st.Mtim, st.Ctim, st.Nlink)
		switch {
		case isReg(&st):
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			h.Write(data)
		case isLink(&st):
			target, err := os.Readlink(path)
			if err != nil {
				return err
			}
			fmt.Fprintln(h, target)
		}
		dir, err := unix.Open(filepath.Dir(path), unix.O_PATH|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		x, err := xattrs(dir, filepath.Base(path), nil)
		for _, k := range sortedKeys(x) {
			fmt.Fprintf(h, "%s=%x\n", k, x[k])
		}
		return err
	})
	must(t, err)
	return fmt.Sprintf("%x", h.Sum(nil))
}

// acl is a system.posix_acl_access value: user::rw- user:1000:r--
// group::r-- mask::r-- other::r--.
func acl() []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint32(2))
	for _, e := range [][3]uint32{{0x01, 6, 0xffffffff}, {0x02, 4, 1000}, {0x04, 4, 0xffffffff}, {0x10, 4, 0xffffffff}, {0x20, 4, 0xffffffff}} {
		binary.Write(&b, binary.LittleEndian, uint16(e[0]))
		binary.Write(&b, binary.LittleEndian, uint16(e[1]))
		binary.Write(&b, binary.LittleEndian, e[2])
	}
	return b.Bytes()
}

// buildRich adds to buildTree what only a repair needs: large, sparse,
// special, set-id, read-only, xattr'd and foreign-owned entries.
func buildRich(t *testing.T, dir string) {
	t.Helper()
	buildTree(t, dir)
	big := make([]byte, 3<<20+17)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	writeFile(t, filepath.Join(dir, "big"), big, 0o644)
	writeSparse(t, filepath.Join(dir, "sparse"))
	writeFile(t, filepath.Join(dir, "setuid"), []byte("#!/bin/sh\n"), os.ModeSetuid|0o755)
	writeFile(t, filepath.Join(dir, "twin1"), []byte("twin\n"), 0o644)
	writeFile(t, filepath.Join(dir, "twin2"), []byte("twin\n"), 0o644)
	must(t, os.Link(filepath.Join(dir, "h1"), filepath.Join(dir, "d", "e", "h3")))
	must(t, os.Symlink("nowhere", filepath.Join(dir, "d", "dangling")))
	must(t, unix.Mknod(filepath.Join(dir, "sock"), unix.S_IFSOCK|0o644, 0))
	setXattr(t, filepath.Join(dir, "f"), "user.note", "hello")
	setXattr(t, filepath.Join(dir, "d"), "user.dir", "")
	if err := unix.Setxattr(filepath.Join(dir, "d", "g"), "system.posix_acl_access", acl(), 0); err != nil {
		t.Logf("no ACL tested: %v", err)
	}
	if os.Geteuid() == 0 {
		must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
		must(t, os.Lchown(filepath.Join(dir, "d", "g"), 1234, 5678))
		must(t, os.Lchown(filepath.Join(dir, "s"), 1234, 5678))
	}
	must(t, os.MkdirAll(filepath.Join(dir, "ro", "sub"), 0o755))
	writeFile(t, filepath.Join(dir, "ro", "sub", "x"), []byte("x"), 0o444)
	must(t, os.Chmod(filepath.Join(dir, "ro", "sub"), 0o555))
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o555))
	t.Cleanup(func() { // without root, TempDir could not remove them
		os.Chmod(filepath.Join(dir, "ro"), 0o755)
		os.Chmod(filepath.Join(dir, "ro", "sub"), 0o755)
	})
	for _, d := range []string{"d", "ro", "."} {
		must(t, os.Chtimes(filepath.Join(dir, d), stamp, stamp))
	}
}

// writeSparse writes a 64 MiB file with 4 KiB of data at 32 MiB.
func writeSparse(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	must(t, err)
	_, err = f.WriteAt(bytes.Repeat([]byte{0xa5}, 4096), 32<<20)
	must(t, err)
	must(t, f.Truncate(64<<20))
	must(t, f.Close())
	must(t, os.Chtimes(path, stamp, stamp))
}

// spoil departs a replica built by buildRich from its primary in every
// way Repair has to undo.
func spoil(t *testing.T, dir string) {
	t.Helper()
	must(t, os.Chmod(filepath.Join(dir, "ro"), 0o755))
	must(t, os.Chmod(filepath.Join(dir, "ro", "sub"), 0o755))
	must(t, os.Remove(filepath.Join(dir, "ro", "sub", "x")))
	must(t, os.MkdirAll(filepath.Join(dir, "extra", "deep", "er"), 0o755))
	writeFile(t, filepath.Join(dir, "extra", "deep", "er", "file"), []byte("x"), 0o644)
	must(t, os.Chmod(filepath.Join(dir, "extra", "deep"), 0o500))
	must(t, os.Remove(filepath.Join(dir, "f")))
	must(t, os.MkdirAll(filepath.Join(dir, "f", "sub"), 0o755)) // dir where a file is
	must(t, os.RemoveAll(filepath.Join(dir, "d", "e")))
	writeFile(t, filepath.Join(dir, "d", "e"), []byte("file where a dir is"), 0o644)
	big, err := os.ReadFile(filepath.Join(dir, "big"))
	must(t, err)
	big[3<<20] ^= 1
	writeFile(t, filepath.Join(dir, "big"), big, 0o644) // same size and mtime
	must(t, os.Remove(filepath.Join(dir, "sparse")))
	must(t, os.Remove(filepath.Join(dir, "s")))
	must(t, os.Symlink("elsewhere", filepath.Join(dir, "s")))
	must(t, os.Chmod(filepath.Join(dir, "setuid"), 0o755))
	must(t, os.Chtimes(filepath.Join(dir, "d", "g"), stamp, time.Now()))
	setXattr(t, filepath.Join(dir, "d", "g"), "user.stale", "1")
	unix.Removexattr(filepath.Join(dir, "d", "g"), "system.posix_acl_access") // where ACLs work
	must(t, unix.Removexattr(filepath.Join(dir, "d"), "user.dir"))
	must(t, os.Remove(filepath.Join(dir, "d", "h2")))
	writeFile(t, filepath.Join(dir, "d", "h2"), []byte("linked\n"), 0o644) // a link broken
	must(t, os.Remove(filepath.Join(dir, "twin2")))
	must(t, os.Link(filepath.Join(dir, "twin1"), filepath.Join(dir, "twin2"))) // a link too many
	must(t, os.Remove(filepath.Join(dir, "d", "fifo")))
	if os.Geteuid() == 0 {
		must(t, os.Remove(filepath.Join(dir, "null")))
		must(t, unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 5))))
		must(t, os.Lchown(filepath.Join(dir, "big"), 1, 1))
	}
}

func TestRepair(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	buildRich(t, a)
	buildRich(t, b)
	spoil(t, b)
	diffs := mustCompare(t, []string{a, b}, true)
	if len(diffs) < 15 {
		t.Fatalf("spoiled replica: only %d differences: %v", len(diffs), diffs)
	}
	t.Logf("%d differences before Repair: %v", len(diffs), diffs)
	before := treeHash(t, a)
	for pass := 1; pass <= 2; pass++ { // the second finds nothing to do
		must(t, Repair(a, []string{b}))
		if diffs := mustCompare(t, []string{a, b}, true); len(diffs) != 0 {
			t.Errorf("pass %d: differences after Repair:\n%v", pass, diffs)
		}
		if after := treeHash(t, a); after != before {
			t.Errorf("pass %d: Repair changed the primary", pass)
		}
	}
	// What Compare does not look at: directory times, and no temporary
	// file left behind.
	for _, d := range []string{".", "d", "ro", "ro/sub"} {
		var pst, rst unix.Stat_t
		must(t, unix.Lstat(filepath.Join(a, d), &pst))
		must(t, unix.Lstat(filepath.Join(b, d), &rst))
		if pst.Mtim != rst.Mtim {
			t.Errorf("%s: directory mtime %v, want %v", d, rst.Mtim, pst.Mtim)
		}
	}
	must(t, filepath.WalkDir(b, func(path string, _ fs.DirEntry, err error) error {
		if strings.Contains(path, ".bpfusefs-repair") {
			t.Errorf("temporary file left: %s", path)
		}
		return err
	}))
}

func TestRepairSparse(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	writeSparse(t, filepath.Join(a, "sparse"))
	writeFile(t, filepath.Join(b, "sparse"), []byte("dense"), 0o644)
	must(t, Repair(a, []string{b}))
	var pst, rst unix.Stat_t
	must(t, unix.Stat(filepath.Join(a, "sparse"), &pst))
	must(t, unix.Stat(filepath.Join(b, "sparse"), &rst))
	if rst.Size != pst.Size || rst.Blocks > pst.Blocks {
		t.Errorf("repaired copy: %d bytes in %d blocks; the primary has %d bytes in %d blocks",
			rst.Size, rst.Blocks, pst.Size, pst.Blocks)
	}
	if diffs := mustCompare(t, []string{a, b}, true); len(diffs) != 0 {
		t.Errorf("differences after Repair: %v", diffs)
	}
}

func TestThreeReplicas(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	for _, dir := range []string{a, b, c} {
		buildTree(t, dir)
	}
	must(t, os.Remove(filepath.Join(b, "d", "g")))
	data := bytes.Repeat([]byte("0123456789"), 1000)
	data[9999] = 'x'
	writeFile(t, filepath.Join(c, "f"), data, 0o644)
	must(t, os.Remove(filepath.Join(c, "d", "g")))
	got := mustCompare(t, []string{a, b, c}, true)
	want := []Difference{
		{Path: "d/g", Replica: b, What: "missing"},
		{Path: "d/g", Replica: c, What: "missing"},
		{Path: "f", Replica: c, What: "content differs at byte 9999"},
	}
	if !slices.Equal(got, want) {
		t.Errorf("differences %v, want %v", got, want)
	}
	must(t, Repair(a, []string{b, c}))
	if diffs := mustCompare(t, []string{a, b, c}, true); len(diffs) != 0 {
		t.Errorf("differences after Repair: %v", diffs)
	}
}

func TestRepairRefusesOverlap(t *testing.T) {
	a := t.TempDir()
	buildTree(t, a)
	before := treeHash(t, a)
	for _, replicas := range [][]string{{a}, {filepath.Join(a, "d")}, {a + "/."}} {
		if err := Repair(a, replicas); err == nil || !strings.Contains(err.Error(), "overlap") {
			t.Errorf("Repair(%s, %v) = %v, want an overlap error", a, replicas, err)
		}
	}
	if err := Repair(filepath.Join(a, "d"), []string{a}); err == nil {
		t.Errorf("Repair into the primary's parent: no error")
	}
	if treeHash(t, a) != before {
		t.Error("a refused Repair changed the tree")
	}
}

// TestRepairAcrossFilesystems repairs from tmpfs to the test's filesystem,
// where copy_file_range refuses (EXDEV) and the copy goes by hand.
func TestRepairAcrossFilesystems(t *testing.T) {
	b := t.TempDir()
	a, err := os.MkdirTemp("/dev/shm", "mirror-test-")
	if err != nil {
		t.Skipf("no /dev/shm: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(a) })
	var ast, bst unix.Stat_t
	must(t, unix.Stat(a, &ast))
	must(t, unix.Stat(b, &bst))
	if ast.Dev == bst.Dev {
		t.Skipf("%s and %s are on one filesystem", a, b)
	}
	buildTree(t, a)
	big := bytes.Repeat([]byte("across "), 300000) // 2 MiB and then some
	writeFile(t, filepath.Join(a, "big"), big, 0o644)
	writeSparse(t, filepath.Join(a, "sparse"))
	must(t, Repair(a, []string{b}))
	if diffs := mustCompare(t, []string{a, b}, true); len(diffs) != 0 {
		t.Errorf("differences after Repair: %v", diffs)
	}
}

// flagsOf returns the inode flags of path, a file or directory.
func flagsOf(t *testing.T, path string) uint32 {
	t.Helper()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	flags, err := inodeflags.Get(fd)
	must(t, err)
	return flags
}

// chattr adds flags to those of path, a file or directory, and skips the
// test where the filesystem or the caller cannot.
func chattr(t *testing.T, path string, flags uint32) {
	t.Helper()
	old := flagsOf(t, path)
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	must(t, err)
	defer unix.Close(fd)
	if err := inodeflags.Set(fd, old|flags); err != nil {
		if inodeflags.Unsupported(err) || err == unix.EPERM {
			t.Skipf("chattr %#x %s: %v", flags, path, err)
		}
		t.Fatal(err)
	}
}

// unchattr clears every protected flag under root, for the temporary
// directories' removal.
func unchattr(t *testing.T, root string) {
	filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err == nil && (d.IsDir() || d.Type().IsRegular()) {
			if fd, err := unix.Open(path, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err == nil {
				if flags, err := inodeflags.Get(fd); err == nil {
					inodeflags.Set(fd, flags&^inodeflags.Protected)
				}
				unix.Close(fd)
			}
		}
		return nil
	})
}

// TestRepairProtectedFlags repairs a replica whose immutable and
// append-only entries stand in the way: an extra immutable file and
// directory to remove, an immutable file with other bytes to replace, an
// append-only one with other times, all in an append-only directory. The
// primary's own flags, hard-linked immutable file included, must end on
// the replica.
func TestRepairProtectedFlags(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	t.Cleanup(func() { unchattr(t, a); unchattr(t, b) })
	for _, dir := range []string{a, b} {
		must(t, os.Mkdir(filepath.Join(dir, "d"), 0o755))
		writeFile(t, filepath.Join(dir, "d", "log"), []byte("appended\n"), 0o644)
		writeFile(t, filepath.Join(dir, "d", "frozen"), []byte("same\n"), 0o644)
	}
	writeFile(t, filepath.Join(a, "d", "sealed"), []byte("primary\n"), 0o644)
	must(t, os.Link(filepath.Join(a, "d", "sealed"), filepath.Join(a, "sealed-link")))
	writeFile(t, filepath.Join(b, "d", "sealed"), []byte("replica\n"), 0o644)
	writeFile(t, filepath.Join(b, "d", "extra"), []byte("extra\n"), 0o644)
	must(t, os.Mkdir(filepath.Join(b, "d", "extra-dir"), 0o755))
	writeFile(t, filepath.Join(b, "d", "extra-dir", "f"), nil, 0o644)
	must(t, os.Chtimes(filepath.Join(b, "d", "log"), stamp, stamp.Add(time.Second)))

	chattr(t, filepath.Join(a, "d", "sealed"), inodeflags.Immutable)
	chattr(t, filepath.Join(a, "d", "frozen"), inodeflags.Immutable|inodeflags.NoDump)
	chattr(t, filepath.Join(a, "d", "log"), inodeflags.Append)
	chattr(t, filepath.Join(a, "d"), inodeflags.Append)
	for _, name := range []string{"sealed", "extra", "extra-dir/f", "extra-dir", "frozen"} {
		chattr(t, filepath.Join(b, "d", name), inodeflags.Immutable)
	}
	chattr(t, filepath.Join(b, "d", "log"), inodeflags.Append)
	chattr(t, filepath.Join(b, "d"), inodeflags.Immutable)

	found := false
	for _, d := range mustCompare(t, []string{a, b}, true) {
		found = found || d.Path == "d/frozen" && d.What == "flags id != i"
	}
	if !found {
		t.Error("Compare did not report d/frozen's flags differing (id != i)")
	}
	before := treeHash(t, a)
	must(t, Repair(a, []string{b}))
	if diffs := mustCompare(t, []string{a, b}, true); len(diffs) != 0 {
		t.Errorf("differences after Repair:\n%v", diffs)
	}
	if treeHash(t, a) != before {
		t.Error("Repair changed the primary")
	}
	for _, name := range []string{"d", "d/sealed", "sealed-link", "d/frozen", "d/log"} {
		want := flagsOf(t, filepath.Join(a, name)) & inodeflags.Portable
		if got := flagsOf(t, filepath.Join(b, name)) & inodeflags.Portable; got != want {
			t.Errorf("%s: replica's flags %#x, want the primary's %#x", name, got, want)
		}
	}
}

// TestXattrsFallback reads an entry's xattrs with listxattrat(2) and
// through /proc, as on kernels before 6.13: both must list the same.
func TestXattrsFallback(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "f"), nil, 0o644)
	setXattr(t, filepath.Join(dir, "f"), "user.a", "1")
	setXattr(t, filepath.Join(dir, "f"), "system.posix_acl_access", aclReadableBy(1))
	dirfd, err := openRoot(dir)
	must(t, err)
	defer unix.Close(dirfd)
	var got [2]map[string][]byte
	for i, fallback := range []bool{false, true} {
		noListxattrat.Store(fallback)
		got[i], err = xattrs(dirfd, "f", nil)
		must(t, err)
		if !fallback && noListxattrat.Load() {
			t.Log("this kernel has no listxattrat(2): both reads went through /proc")
		}
	}
	noListxattrat.Store(false)
	if len(got[0]) != 2 || !maps.EqualFunc(got[0], got[1], bytes.Equal) {
		t.Errorf("listxattrat: %q, through /proc: %q; want user.a and the ACL in both", got[0], got[1])
	}
}
