package fs

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/bpfusefs/bpfusefs/uring"
	"golang.org/x/sys/unix"
)

// sparseFile writes a file with data at 0, a 4 MiB hole, data, and a
// trailing 1 MiB hole, and returns its content.
func sparseFile(t *testing.T, path string) []byte {
	t.Helper()
	content := make([]byte, 6<<20+8192)
	rng := rand.New(rand.NewPCG(3, 4))
	for _, r := range [][2]int{{0, 64 << 10}, {4<<20 + 64<<10, 4<<20 + 64<<10 + 1<<20 + 8192}} {
		for i := r[0]; i < r[1]; i++ {
			content[i] = byte(rng.Uint32()) | 1
		}
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(content[:64<<10], 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(content[4<<20+64<<10:4<<20+64<<10+1<<20+8192], 4<<20+64<<10); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(int64(len(content))); err != nil {
		t.Fatal(err)
	}
	return content
}

// copyAll copies src to dst (both through the mount) with
// copy_file_range(2) from offIn to offOut until the source ends.
func copyAll(t *testing.T, src, dst string, offIn, offOut int64) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, 1<<30, 0)
		if err != nil {
			t.Fatalf("copy_file_range %s -> %s: %v", src, dst, err)
		}
		if n == 0 {
			return
		}
	}
}

func blocks(t *testing.T, path string) int64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks
}

// checkSparseCopy checks that every replica's copy dst of the sparse file
// src takes no more blocks than the source: the holes were kept.
func checkSparseCopy(t *testing.T, tm *testMount, src, dst string) {
	t.Helper()
	for _, r := range tm.replicas() {
		s, d := blocks(t, filepath.Join(r, src)), blocks(t, filepath.Join(r, dst))
		if d > s+16 {
			t.Errorf("%s: the copy of a sparse file takes %d blocks, the source %d", r, d, s)
		}
	}
}

// openCopyPair opens src of tm for reading and creates dst, both closed
// when t ends.
func openCopyPair(t *testing.T, tm *testMount) (in, out *os.File) {
	t.Helper()
	in, err := os.Open(tm.p("src"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { in.Close() })
	if out, err = os.Create(tm.p("dst")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { out.Close() })
	return in, out
}

// bpfCopies returns how many COPY_FILE_RANGEs the BPF loop of tm answered.
func bpfCopies(tm *testMount) uint64 {
	if ring, ok := tm.m.conn.(*fusering.Server); ok {
		return ring.Stats().BPFCopies
	}
	return 0
}

// TestCopyFileRangeCases copies within a directory, across directories,
// into the middle of an existing file and from a sparse source, on one
// replica and on two, and checks the kernel's own refusals.
func TestCopyFileRangeCases(t *testing.T) {
	requireFUSE(t)
	run := func(t *testing.T, tm *testMount) {
		content := sparseFile(t, tm.p("sparse"))
		if err := os.Mkdir(tm.p("dir"), 0755); err != nil {
			t.Fatal(err)
		}
		copyAll(t, tm.p("sparse"), tm.p("dir/copy"), 0, 0)
		// Into the middle of an existing file: a hole of the source
		// must overwrite data with zeros.
		old := bytes.Repeat([]byte{0xff}, 5<<20)
		if err := os.WriteFile(tm.p("over"), old, 0644); err != nil {
			t.Fatal(err)
		}
		copyAll(t, tm.p("sparse"), tm.p("over"), 0, 4096)
		over := append(bytes.Clone(old[:4096]), content...)
		for _, r := range tm.replicas() {
			for name, want := range map[string][]byte{"dir/copy": content, "over": over} {
				got, err := os.ReadFile(filepath.Join(r, name))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s/%s: copy differs (len %d, want %d)", r, name, len(got), len(want))
				}
			}
		}
		checkSparseCopy(t, tm, "sparse", "dir/copy")

		// Overlapping ranges of one file: the kernel refuses.
		f, err := os.OpenFile(tm.p("over"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		offIn, offOut := int64(0), int64(4096)
		if _, err := unix.CopyFileRange(int(f.Fd()), &offIn, int(f.Fd()), &offOut, 8192, 0); err != unix.EINVAL {
			t.Errorf("overlapping copy_file_range: %v, want EINVAL", err)
		}
		// Past the source's end: nothing to copy.
		offIn, offOut = int64(len(over)+10), 0
		out, err := os.Create(tm.p("empty"))
		if err != nil {
			t.Fatal(err)
		}
		defer out.Close()
		if n, err := unix.CopyFileRange(int(f.Fd()), &offIn, int(out.Fd()), &offOut, 8192, 0); n != 0 || err != nil {
			t.Errorf("copy_file_range past the end: %d, %v", n, err)
		}
		// The BPF loop copies with IORING_OP_COPY_FILE_RANGE where it
		// serves them (see TestBPFOffload).
		if s := tm.m.Stats(); s.Copies["copy_file_range"] == 0 && bpfCopies(tm) == 0 {
			t.Errorf("no copy went through copy_file_range: %v", s.Copies)
		}
	}
	for mode, opts := range modes(t) {
		t.Run(mode, func(t *testing.T) { run(t, mountFS(t, mode, opts)) })
		if opts.Passthrough {
			continue // mirrored files are served by the daemon
		}
		t.Run(mode+"/mirrored", func(t *testing.T) {
			run(t, mountReplicas(t, mode, opts, nil, plainMirror))
		})
	}
}

// TestCopyAcrossFilesystems copies into a tmpfs mounted inside the backing
// directory: copy_file_range(2) refuses to cross filesystems, and the
// splice fallback copies.
func TestCopyAcrossFilesystems(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		sub := tm.b("tmpfs")
		if err := os.Mkdir(sub, 0755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mount("tmpfs", sub, "tmpfs", 0, "size=64m"); err != nil {
			t.Skipf("cannot mount a tmpfs: %v", err)
		}
		defer unix.Unmount(sub, unix.MNT_DETACH)
		content := sparseFile(t, tm.p("src"))
		copyAll(t, tm.p("src"), tm.p("tmpfs/dst"), 0, 0)
		if got := []byte(readFile(t, tm.b("tmpfs/dst"))); !bytes.Equal(got, content) {
			t.Errorf("copy across filesystems differs (len %d, want %d)", len(got), len(content))
		}
		if s := tm.m.Stats(); s.Copies["splice"] == 0 {
			t.Errorf("copy across filesystems did not splice: %v", s.Copies)
		}
	})
}

// TestCopyMethods checks each copy method of each data path alone on
// backing files, byte for byte.
func TestCopyMethods(t *testing.T) {
	dir := t.TempDir()
	content := sparseFile(t, filepath.Join(dir, "src"))
	paths := map[string]dataPath{"syscall": syscallPath{}}
	if p, err := newEnginePath(); err == nil {
		defer p.close()
		paths["engine"] = p
	} else {
		t.Logf("engine path not tested: %v", err)
	}
	for name, data := range paths {
		fs := &fileSystem{data: data}
		defer fs.pipes.close()
		methods := map[string]func(src, dst int, n int64) error{
			"splice": func(src, dst int, n int64) error {
				p, err := fs.pipes.get()
				if err != nil {
					return err
				}
				_, err = data.splice(src, 0, dst, 0, n, p)
				fs.pipes.put(p, err == nil)
				return err
			},
			"readwrite": func(src, dst int, n int64) error { return fs.readWriteCopy(src, 0, dst, 0, n) },
			"copyRange": func(src, dst int, n int64) error {
				_, err := fs.copyRange(src, 0, dst, 0, n, 0)
				return err
			},
		}
		for method, copyFn := range methods {
			t.Run(name+"/"+method, func(t *testing.T) {
				src, err := os.Open(filepath.Join(dir, "src"))
				if err != nil {
					t.Fatal(err)
				}
				defer src.Close()
				dstPath := filepath.Join(dir, name+method)
				dst, err := os.Create(dstPath)
				if err != nil {
					t.Fatal(err)
				}
				defer dst.Close()
				if err := copyFn(int(src.Fd()), int(dst.Fd()), int64(len(content))); err != nil {
					t.Fatal(err)
				}
				if got := []byte(readFile(t, dstPath)); !bytes.Equal(got, content) {
					t.Errorf("copy differs (len %d, want %d)", len(got), len(content))
				}
			})
		}
	}
}

// TestCopyLarge copies 1 GiB through a mount of one replica, and 256 MiB
// through a mount of two (a sixteenth with -short), and compares
// checksums.
func TestCopyLarge(t *testing.T) {
	requireFUSE(t)
	mode, opts := "engine", Options{Engine: true}
	if _, ok := modes(t)[mode]; !ok {
		mode, opts = "none", Options{}
	}
	for _, n := range []int{1, 2} {
		size := int64(1<<30) / int64(n*n)
		if testing.Short() {
			size /= 16
		}
		t.Run(fmt.Sprintf("%s/%d", mode, n), func(t *testing.T) {
			tm := mountReplicas(t, mode, opts, nil, replicas(n-1, plainMirror)...)
			want := writeRandom(t, tm.p("big"), size)
			copyAll(t, tm.p("big"), tm.p("big.copy"), 0, 0)
			for _, r := range tm.replicas() {
				if got := fileSum(t, filepath.Join(r, "big.copy")); got != want {
					t.Errorf("%s: checksum of the copy differs", r)
				}
			}
		})
	}
}

// writeRandom writes size pseudo-random bytes to path and returns their
// checksum.
func writeRandom(t *testing.T, path string, size int64) [32]byte {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	rng := rand.New(rand.NewPCG(5, 6))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			v := rng.Uint64()
			for k := range 8 {
				buf[i+k] = byte(v >> (8 * k))
			}
		}
		chunk := buf[:min(left, int64(len(buf)))]
		h.Write(chunk)
		if _, err := f.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	return [32]byte(h.Sum(nil))
}

func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// TestCpAndFallocateLikeBacking runs cp --reflink=auto, cp --sparse=always
// and fallocate(1) on the mount and on a directory of the backing
// filesystem, and checks that the files end up with the same bytes, size
// and allocated blocks.
func TestCpAndFallocateLikeBacking(t *testing.T) {
	for _, tool := range []string{"cp", "fallocate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	steps := [][]string{
		{"cp", "--reflink=auto", "sparse", "reflinked"},
		{"cp", "--sparse=always", "sparse", "resparsed"},
		{"fallocate", "-l", "8M", "allocated"},
		{"fallocate", "-p", "-o", "4096", "-l", "65536", "resparsed"},
		{"fallocate", "-z", "-o", "0", "-l", "8192", "reflinked"},
	}
	run := func(t *testing.T, dir string, fail func(string, ...any)) {
		sparseFile(t, filepath.Join(dir, "sparse"))
		for _, step := range steps {
			if out, err := spawn(dir, 0, step...); err != nil {
				fail("%v in %s: %v\n%s", step, dir, err, out)
			}
		}
	}
	eachMode(t, func(t *testing.T, tm *testMount) {
		native := filepath.Join(filepath.Dir(tm.backing), "native")
		if err := os.Mkdir(native, 0755); err != nil {
			t.Fatal(err)
		}
		// What the backing filesystem cannot do (punching holes in a
		// ramfs, say) is no test of the mount.
		run(t, native, t.Skipf)
		run(t, tm.mnt, t.Fatalf)
		for _, name := range []string{"reflinked", "resparsed", "allocated"} {
			var want, got unix.Stat_t
			if err := unix.Stat(filepath.Join(native, name), &want); err != nil {
				t.Fatal(err)
			}
			if err := unix.Stat(tm.b(name), &got); err != nil {
				t.Fatal(err)
			}
			if got.Size != want.Size || got.Blocks != want.Blocks {
				t.Errorf("%s: size %d, %d blocks through the mount; %d, %d on the backing filesystem", name, got.Size, got.Blocks, want.Size, want.Blocks)
			}
			if !bytes.Equal([]byte(readFile(t, tm.p(name))), []byte(readFile(t, filepath.Join(native, name)))) {
				t.Errorf("%s: content differs from the backing filesystem's", name)
			}
		}
	})
}

// TestBPFCopyAnyCaller copies as a caller other than root (nobody's fsuid
// on a thread of its own): the BPF loop serves it while the destination
// has no set-ID bits to drop. A chmod that gives it some hands every open
// file back to the daemon, and a file opened with them stays the daemon's
// for such callers: it drops the bits, as a local copy does. Root's copies
// drop nothing and stay the loop's.
func TestBPFCopyAnyCaller(t *testing.T) {
	requireFusering(t)
	if err := bpf.Available(); err != nil {
		t.Skip(err)
	}
	if err := uring.VerifyCopyKeepHoles(); err != nil {
		t.Skipf("kernel lacks IORING_COPY_KEEP_HOLES (kernel/patches 0006): %v", err)
	}
	tm := mountReplicas(t, "bpf", Options{BPF: true}, nil, plainMirror)
	want := strings.Repeat("any caller ", 1000)
	writeFile(t, tm.p("src"), want)
	copyAs := func(what string, uid int, in, out *os.File, wantBPF bool) {
		t.Helper()
		before := bpfCopies(tm)
		done := make(chan error)
		go func() {
			// Never unlocked: the thread, and its fsuid, end with the
			// goroutine.
			runtime.LockOSThread()
			if err := unix.Setfsuid(uid); err != nil {
				done <- err
				return
			}
			var offIn, offOut int64
			n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(want), 0)
			if err == nil && n != len(want) {
				err = fmt.Errorf("copied %d bytes, want %d", n, len(want))
			}
			done <- err
		}()
		if err := <-done; err != nil {
			t.Fatalf("%s: copy_file_range as uid %d: %v", what, uid, err)
		}
		if got := bpfCopies(tm) - before; (got == 1) != wantBPF {
			t.Errorf("%s: BPF answered %d copies, want it to answer: %v", what, got, wantBPF)
		}
		checkReplicasHold(t, tm, "dst", []byte(want))
	}
	mode := func() uint32 { return stat(t, tm.b("dst")).Mode & 07777 }

	in, out := openCopyPair(t, tm)
	copyAs("no set-ID bits", nobody, in, out, true)
	if err := unix.Chmod(tm.p("dst"), 06755); err != nil {
		t.Fatal(err)
	}
	copyAs("set-ID bits given while open", nobody, in, out, false)
	if m := mode(); m != 0755 {
		t.Errorf("after a copy by uid %d: mode %o, want 755", nobody, m)
	}
	if err := unix.Chmod(tm.p("dst"), 06755); err != nil {
		t.Fatal(err)
	}
	in, out = openCopyPair(t, tm)
	copyAs("opened with set-ID bits", nobody, in, out, false)
	if m := mode(); m != 0755 {
		t.Errorf("after a copy by uid %d: mode %o, want 755", nobody, m)
	}
	if err := unix.Chmod(tm.p("dst"), 06755); err != nil {
		t.Fatal(err)
	}
	in, out = openCopyPair(t, tm)
	copyAs("root's", 0, in, out, true)
	if m := mode(); m != 06755 {
		t.Errorf("after root's copy: mode %o, want 6755", m)
	}
}
