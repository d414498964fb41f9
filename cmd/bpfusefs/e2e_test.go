package main

// End-to-end tests: the bpfusefs binary, built once in TestMain, mounts
// real FUSE filesystems (root and /dev/fuse needed) and unmodified programs
// run on them.

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/bpfusefs/bpfusefs/control"
	"github.com/bpfusefs/bpfusefs/features"
	"github.com/bpfusefs/bpfusefs/internal/fusetest"
	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
)

// binary is the bpfusefs built for the tests; empty when it was not built.
var binary string

// noMountReason says why this host cannot run the mounting tests.
var noMountReason string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	switch _, err := os.Stat("/dev/fuse"); {
	case os.Geteuid() != 0:
		noMountReason = "needs root to mount FUSE (no fusermount on these hosts)"
	case err != nil:
		noMountReason = "needs /dev/fuse: " + err.Error()
	}
	// A prebuilt binary (the VM harness's guest has no Go toolchain).
	if prebuilt := os.Getenv("BPFUSEFS_BIN"); prebuilt != "" {
		binary = prebuilt
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "bpfusefs-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	// World-readable so that tests running tools as another user work.
	if err := os.Chmod(dir, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	binary = filepath.Join(dir, "bpfusefs")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building bpfusefs: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// requireMount skips a test that cannot mount here, and holds the fuse
// module's enable_uring at Y for the rest of it: the parameter is global,
// test processes of other packages set it under a shared lock, and a test
// that mounted without holding it could see fusering available when it
// probes (doctor, --accel auto) and gone when its daemon mounts.
func requireMount(t *testing.T) {
	t.Helper()
	if noMountReason != "" {
		t.Skip(noMountReason)
	}
	if err := holdEnableURing(t, "Y"); err != nil {
		t.Logf("fusering not enabled: %v", err)
	}
}

// uringHeld has the tests that hold enable_uring's lock, which a test
// must take only once.
var uringHeld sync.Map

// holdEnableURing sets enable_uring to value ("Y" or "N") until the test
// ends, under fusetest's cross-process lock, which it takes on first use.
func holdEnableURing(t *testing.T, value string) error {
	t.Helper()
	if _, held := uringHeld.Load(t); held {
		return os.WriteFile(fusetest.EnableURingParam, []byte(value), 0)
	}
	if err := fusetest.SetEnableURing(t, value); err != nil {
		return err
	}
	uringHeld.Store(t, true)
	t.Cleanup(func() { uringHeld.Delete(t) })
	return nil
}

func requireTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s: %v", tool, err)
		}
	}
}

// accelModes lists the --accel values this host supports: none, and each
// acceleration doctor finds available, alone; and fusering,engine, what
// auto picks where neither passthrough nor bpf serves a file.
func accelModes(t *testing.T) []string {
	t.Helper()
	modes := []string{"none"}
	r := features.Probe(fsChecker())
	for _, n := range features.Accels {
		if r.Accel[n].Available {
			modes = append(modes, string(n))
		} else {
			t.Logf("accel %s not tested: %s", n, r.Accel[n].Reason)
		}
	}
	if r.Accel[features.Fusering].Available && r.Accel[features.Engine].Available {
		modes = append(modes, string(features.Fusering)+","+string(features.Engine))
	}
	return modes
}

// forEachAccel runs fn as a subtest per supported mode on a fresh mount.
func forEachAccel(t *testing.T, fn func(t *testing.T, backing, mnt string)) {
	t.Helper()
	// FUSE-over-io_uring is off by default: requireMount turns it on (and
	// back off after) so that the fusering modes are tested too where the
	// kernel has them.
	requireMount(t)
	for _, mode := range accelModes(t) {
		t.Run(mode, func(t *testing.T) {
			backing, mnt := mountDaemon(t, "--accel", mode)
			fn(t, backing, mnt)
		})
	}
}

// bpfusefs runs the binary and returns its combined output and exit code.
func bpfusefs(t *testing.T, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	}
	t.Fatalf("running bpfusefs %v: %v", args, err)
	return "", 0
}

// newDirs makes an empty backing directory and mount point.
func newDirs(t *testing.T) (backing, mnt string) {
	t.Helper()
	dir := t.TempDir()
	backing, mnt = filepath.Join(dir, "backing"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return backing, mnt
}

// mountDaemon mounts a fresh backing directory with `mount -d` and the
// given flags, and unmounts it at the end of the test.
func mountDaemon(t *testing.T, flags ...string) (backing, mnt string) {
	t.Helper()
	backing, mnt = newDirs(t)
	args := append([]string{"mount", "-d"}, flags...)
	if out, code := bpfusefs(t, nil, append(args, backing, mnt)...); code != 0 {
		t.Fatalf("bpfusefs %v: exit %d\n%s", args, code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	return backing, mnt
}

// cleanupMount unmounts mnt if a test left it mounted, and checks that
// the daemon's control socket went away with it.
func cleanupMount(t *testing.T, mnt string) {
	if _, mounted, _ := mountinfo.Find(mnt); mounted {
		if out, code := bpfusefs(t, nil, "umount", mnt); code != 0 {
			t.Errorf("umount %s: exit %d\n%s", mnt, code, out)
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
			return
		}
	}
	if sock, err := control.SocketPath(mnt); err == nil {
		if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("control socket %s still there after umount (%v)", sock, err)
		}
	}
}

// runTool runs a program in dir and fails the test with its output if it fails.
func runTool(t *testing.T, dir string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s (in %s): %v\n%s", name, strings.Join(args, " "), dir, err, out)
	}
	return string(out)
}

// writeTree creates a small tree of files of assorted sizes, a symlink, a
// hard link and an empty directory below dir.
func writeTree(t *testing.T, dir string) {
	t.Helper()
	for i := 0; i < 24; i++ {
		sub := filepath.Join(dir, fmt.Sprintf("d%d", i%4), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		// Sizes cross page and request boundaries: 0, odd, 4 KiB, 1 MiB + 1.
		size := []int{0, 1, 4095, 4096, 70001, 1<<20 + 1}[i%6]
		data := make([]byte, size)
		for j := range data {
			data[j] = byte(i*131 + j*7 + j>>9)
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%d", i)), data, os.FileMode(0o600+i%3*0o44)); err != nil {
			t.Fatal(err)
		}
	}
	must(t, os.Symlink("d0/e0/f0", filepath.Join(dir, "link")))
	must(t, os.Link(filepath.Join(dir, "d1/e1/f1"), filepath.Join(dir, "hard")))
	must(t, os.Mkdir(filepath.Join(dir, "empty"), 0o700))
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// treeEntry is what compareTrees compares of one file.
type treeEntry struct {
	mode    fs.FileMode
	content string // file data or symlink target
}

func readTree(t *testing.T, root string) map[string]treeEntry {
	t.Helper()
	tree := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		fi, err := d.Info()
		if err != nil {
			return err
		}
		e := treeEntry{mode: fi.Mode()}
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			e.content = string(b)
		case fi.Mode()&fs.ModeSymlink != 0:
			if e.content, err = os.Readlink(path); err != nil {
				return err
			}
		}
		if rel != "." {
			tree[rel] = e
		}
		return nil
	})
	if err != nil {
		t.Fatalf("reading %s: %v", root, err)
	}
	return tree
}

// compareTrees fails unless both trees hold the same names, modes and bytes.
func compareTrees(t *testing.T, want, got string) {
	t.Helper()
	a, b := readTree(t, want), readTree(t, got)
	for name, ea := range a {
		eb, ok := b[name]
		switch {
		case !ok:
			t.Errorf("%s: missing from %s", name, got)
		case ea.mode != eb.mode:
			t.Errorf("%s: mode %v in %s, %v in %s", name, ea.mode, want, eb.mode, got)
		case ea.content != eb.content:
			t.Errorf("%s: content differs between %s and %s (%d vs %d bytes)", name, want, got, len(ea.content), len(eb.content))
		}
	}
	for name := range b {
		if _, ok := a[name]; !ok {
			t.Errorf("%s: in %s but not in %s", name, got, want)
		}
	}
}

func TestTarRoundTrip(t *testing.T) {
	requireTools(t, "tar")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		src := t.TempDir()
		writeTree(t, src)
		// Into the mount: archive written on it, extracted on it.
		runTool(t, src, "tar", "cf", filepath.Join(mnt, "src.tar"), ".")
		must(t, os.Mkdir(filepath.Join(mnt, "x"), 0o755))
		runTool(t, mnt, "tar", "xpf", "src.tar", "-C", "x")
		compareTrees(t, src, filepath.Join(mnt, "x"))
		compareTrees(t, src, filepath.Join(backing, "x"))
		// And back out: archive the mount's copy, extract it elsewhere.
		out := t.TempDir()
		runTool(t, filepath.Join(mnt, "x"), "tar", "cf", filepath.Join(out, "back.tar"), ".")
		must(t, os.Mkdir(filepath.Join(out, "y"), 0o755))
		runTool(t, out, "tar", "xpf", "back.tar", "-C", "y")
		compareTrees(t, src, filepath.Join(out, "y"))
		// The hard link survived as one inode with two names.
		var a, b syscall.Stat_t
		must(t, syscall.Stat(filepath.Join(mnt, "x/hard"), &a))
		must(t, syscall.Stat(filepath.Join(mnt, "x/d1/e1/f1"), &b))
		if a.Ino != b.Ino || a.Nlink != 2 {
			t.Errorf("hard link: inodes %d and %d, nlink %d; want one inode with nlink 2", a.Ino, b.Ino, a.Nlink)
		}
	})
}

func TestGit(t *testing.T) {
	requireTools(t, "git")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		repo := filepath.Join(mnt, "repo")
		must(t, os.Mkdir(repo, 0o755))
		writeTree(t, repo)
		git := func(args ...string) string {
			return runTool(t, repo, "git", append([]string{"-c", "user.name=t", "-c", "user.email=t@e", "-c", "init.defaultBranch=main", "-c", "safe.directory=*"}, args...)...)
		}
		git("init", "-q")
		git("add", "-A")
		git("commit", "-q", "-m", "first")
		must(t, os.WriteFile(filepath.Join(repo, "d0/e0/f0"), []byte("changed\n"), 0o644))
		if st := git("status", "--porcelain"); st != " M d0/e0/f0\n" {
			t.Errorf("git status after one edit = %q", st)
		}
		git("commit", "-q", "-am", "second")
		if st := git("status", "--porcelain"); st != "" {
			t.Errorf("git status after commit = %q, want clean", st)
		}
		git("gc", "-q", "--aggressive")
		git("fsck", "--strict", "--no-progress")
		if n := strings.TrimSpace(git("rev-list", "--count", "HEAD")); n != "2" {
			t.Errorf("rev-list --count = %s, want 2", n)
		}
		// The backing directory is a valid repository too.
		runTool(t, filepath.Join(backing, "repo"), "git", "-c", "safe.directory=*", "fsck", "--strict", "--no-progress")
	})
}

func TestSQLite(t *testing.T) {
	requireTools(t, "sqlite3")
	var script strings.Builder
	script.WriteString("PRAGMA journal_mode=WAL;\nCREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT, n INTEGER);\nCREATE INDEX tv ON t(v);\n")
	for tx := 0; tx < 200; tx++ {
		script.WriteString("BEGIN;\n")
		for i := 0; i < 10; i++ {
			fmt.Fprintf(&script, "INSERT INTO t(v, n) VALUES (hex(randomblob(%d)), %d);\n", 16+i*40, tx*10+i)
		}
		if tx%7 == 0 {
			fmt.Fprintf(&script, "UPDATE t SET v = v || 'x' WHERE n %% 13 = %d;\nDELETE FROM t WHERE n = %d;\n", tx%13, tx*10)
		}
		if tx%50 == 49 {
			script.WriteString("ROLLBACK;\n")
		} else {
			script.WriteString("COMMIT;\n")
		}
	}
	script.WriteString("PRAGMA wal_checkpoint(TRUNCATE);\nVACUUM;\n")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		db := filepath.Join(mnt, "test.db")
		cmd := exec.Command("sqlite3", db)
		cmd.Stdin = strings.NewReader(script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("sqlite3 script: %v\n%s", err, out)
		}
		// 200 transactions of 10 rows, 4 of them rolled back; 28 of the
		// committed ones deleted a row.
		for _, path := range []string{db, filepath.Join(backing, "test.db")} {
			if got := runTool(t, mnt, "sqlite3", path, "PRAGMA integrity_check;"); got != "ok\n" {
				t.Errorf("integrity_check of %s = %q", path, got)
			}
			if got := runTool(t, mnt, "sqlite3", path, "SELECT count(*) FROM t;"); got != "1932\n" {
				t.Errorf("rows in %s = %q, want 1932", path, got)
			}
		}
	})
}

func TestCpArchiveXattrs(t *testing.T) {
	requireTools(t, "cp", "setfattr", "getfattr")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		src := t.TempDir()
		writeTree(t, src)
		files := []string{"d0/e0/f0", "d1/e1/f1", "d2/e2/f2", "empty"}
		for i, f := range files {
			runTool(t, src, "setfattr", "-n", "user.bpfusefs", "-v", fmt.Sprintf("value-%d", i), f)
		}
		runTool(t, src, "setfattr", "-n", "user.second", "-v", "0x00ff10", files[0])
		runTool(t, "/", "cp", "-a", src, filepath.Join(mnt, "copy"))
		compareTrees(t, src, filepath.Join(mnt, "copy"))
		compareTrees(t, src, filepath.Join(backing, "copy"))
		// One block per file; their order is the directories' readdir
		// order, which differs between file systems: compare them sorted.
		dump := func(root string) string {
			out := runTool(t, root, "getfattr", "-R", "-d", "-m", "^user\\.", "-e", "hex", ".")
			blocks := strings.Split(strings.TrimSpace(out), "\n\n")
			slices.Sort(blocks)
			return strings.Join(blocks, "\n\n")
		}
		want := dump(src)
		if !strings.Contains(want, "user.second=0x00ff10") {
			t.Fatalf("source xattrs not set: %s", want)
		}
		for _, root := range []string{filepath.Join(mnt, "copy"), filepath.Join(backing, "copy")} {
			if got := dump(root); got != want {
				t.Errorf("xattrs in %s:\n%s\nwant:\n%s", root, got, want)
			}
		}
		// cp -a keeps modification times.
		var a, b syscall.Stat_t
		must(t, syscall.Lstat(filepath.Join(src, files[1]), &a))
		must(t, syscall.Lstat(filepath.Join(mnt, "copy", files[1]), &b))
		if a.Mtim != b.Mtim {
			t.Errorf("mtime %v became %v", a.Mtim, b.Mtim)
		}
	})
}

func TestMakeCProject(t *testing.T) {
	requireTools(t, "make", "cc")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		proj := filepath.Join(mnt, "proj")
		must(t, os.Mkdir(proj, 0o755))
		const n = 8
		var calls, objs strings.Builder
		for i := 0; i < n; i++ {
			src := fmt.Sprintf("#include \"lib.h\"\nint f%d(int x) { return x * %d + %d; }\n", i, i+1, i)
			must(t, os.WriteFile(filepath.Join(proj, fmt.Sprintf("f%d.c", i)), []byte(src), 0o644))
			fmt.Fprintf(&calls, "\ts += f%d(%d);\n", i, i)
			fmt.Fprintf(&objs, " f%d.o", i)
		}
		var header strings.Builder
		for i := 0; i < n; i++ {
			fmt.Fprintf(&header, "int f%d(int);\n", i)
		}
		must(t, os.WriteFile(filepath.Join(proj, "lib.h"), []byte(header.String()), 0o644))
		main := "#include <stdio.h>\n#include \"lib.h\"\nint main(void) {\n\tint s = 0;\n" + calls.String() + "\tprintf(\"%d\\n\", s);\n\treturn 0;\n}\n"
		must(t, os.WriteFile(filepath.Join(proj, "main.c"), []byte(main), 0o644))
		makefile := "prog: main.o" + objs.String() + "\n\tcc -o $@ $^\n%.o: %.c lib.h\n\tcc -O1 -c -o $@ $<\n"
		must(t, os.WriteFile(filepath.Join(proj, "Makefile"), []byte(makefile), 0o644))

		runTool(t, proj, "make", "-j2")
		// sum over i of i*(i+1)+i = sum of i^2 + 2i for i < 8 = 140 + 56.
		if out := runTool(t, proj, "./prog"); out != "196\n" {
			t.Errorf("prog printed %q, want 196", out)
		}
		if out := runTool(t, proj, "make"); !strings.Contains(out, "up to date") {
			t.Errorf("second make rebuilt something: %s", out)
		}
		// Touching a source rebuilds exactly what depends on it.
		must(t, os.WriteFile(filepath.Join(proj, "f3.c"), []byte("#include \"lib.h\"\nint f3(int x) { return x; }\n"), 0o644))
		out := runTool(t, proj, "make")
		if !strings.Contains(out, "f3.c") || strings.Contains(out, "f2.c") {
			t.Errorf("make after editing f3.c:\n%s", out)
		}
		// f3(3) went from 15 to 3.
		if out := runTool(t, filepath.Join(backing, "proj"), "./prog"); out != "184\n" {
			t.Errorf("prog from the backing dir printed %q, want 184", out)
		}
	})
}

func TestRsync(t *testing.T) {
	requireTools(t, "rsync")
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		src := t.TempDir()
		writeTree(t, src)
		runTool(t, "/", "rsync", "-aH", src+"/", filepath.Join(mnt, "r")+"/")
		compareTrees(t, src, filepath.Join(mnt, "r"))
		out := t.TempDir()
		runTool(t, "/", "rsync", "-aH", filepath.Join(mnt, "r")+"/", out+"/")
		compareTrees(t, src, out)
		// Nothing left to transfer, even comparing checksums.
		if changes := runTool(t, "/", "rsync", "-aHn", "--checksum", "--itemize-changes", src+"/", filepath.Join(mnt, "r")+"/"); changes != "" {
			t.Errorf("rsync finds differences after a copy:\n%s", changes)
		}
	})
}

func TestStatsJSON(t *testing.T) {
	forEachAccel(t, func(t *testing.T, backing, mnt string) {
		data := bytes.Repeat([]byte("bpfusefs"), 64<<10) // 512 KiB
		must(t, os.WriteFile(filepath.Join(mnt, "f"), data, 0o644))
		got, err := os.ReadFile(filepath.Join(mnt, "f"))
		must(t, err)
		if !bytes.Equal(got, data) {
			t.Fatal("read back differs from what was written")
		}
		out, code := bpfusefs(t, nil, "stats", "--json", mnt)
		if code != 0 {
			t.Fatalf("stats --json: exit %d\n%s", code, out)
		}
		var st struct {
			Accel        []string          `json:"accel"`
			Ops          map[string]uint64 `json:"ops"`
			Paths        map[string]uint64 `json:"paths"`
			BytesRead    *uint64           `json:"bytes_read"`
			BytesWritten *uint64           `json:"bytes_written"`
			Errors       *uint64           `json:"errors"`
			Replicas     []struct {
				Path  string `json:"path"`
				State string `json:"state"`
			} `json:"replicas"`
		}
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatalf("stats --json output: %v\n%s", err, out)
		}
		if st.BytesRead == nil || st.BytesWritten == nil || st.Errors == nil || st.Ops == nil || st.Paths == nil {
			t.Fatalf("stats --json lacks contract fields:\n%s", out)
		}
		if st.Ops["CREATE"] == 0 && st.Ops["OPEN"] == 0 {
			t.Errorf("no CREATE or OPEN counted after creating a file: %v", st.Ops)
		}
		if *st.Errors != 0 {
			t.Errorf("errors = %d, want 0", *st.Errors)
		}
		mode := strings.TrimPrefix(t.Name(), "TestStatsJSON/")
		zeroCopy := st.Paths["zero_copy"] > 0
		switch {
		case mode == "passthrough":
			// The kernel does the I/O: the daemon sees opens, not bytes.
			if st.Paths["passthrough"] == 0 {
				t.Errorf("passthrough mount counted no passthrough opens: %v", st.Paths)
			}
		case zeroCopy:
			// Zero-copy queues (Linux 7.3+): the ring transport did
			// the I/O between the backing file and the caller's
			// pages, without the file system's READ and WRITE.
			if !strings.HasPrefix(mode, "fusering") {
				t.Errorf("zero-copy I/O counted on a %s mount: %v", mode, st.Paths)
			}
		default:
			if *st.BytesWritten < uint64(len(data)) {
				t.Errorf("bytes_written = %d, want at least %d", *st.BytesWritten, len(data))
			}
			if st.Ops["WRITE"] == 0 {
				t.Errorf("no WRITE counted: %v", st.Ops)
			}
		}
		for _, name := range strings.Split(mode, ",") {
			if name != "none" && !slices.Contains(st.Accel, name) {
				t.Errorf("accel = %v, want it to include %s", st.Accel, name)
			}
			if (name == "fusering" || name == "engine" && !zeroCopy) && st.Paths[name] == 0 {
				// Requests arrived by the ring; reads and writes
				// went through the engine.
				t.Errorf("paths = %v, want %s counted", st.Paths, name)
			}
		}
		if len(st.Replicas) != 1 || st.Replicas[0].Path != backing || st.Replicas[0].State != "ok" {
			t.Errorf("replicas = %+v, want [%s ok]", st.Replicas, backing)
		}
		// The table form names the same counters.
		table, code := bpfusefs(t, nil, "stats", mnt)
		if code != 0 || !strings.Contains(table, "bytes written") || !strings.Contains(table, backing) {
			t.Errorf("stats table (exit %d):\n%s", code, table)
		}
	})
}
