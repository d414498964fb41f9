package uring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// do submits one prepared SQE and returns its CQE.
func do(t *testing.T, r *Ring, prep func(*SQE)) CQE {
	t.Helper()
	sqe := r.GetSQE()
	if sqe == nil {
		t.Fatal("GetSQE: SQ full")
	}
	prep(sqe)
	sqe.SetUserData(42)
	got := submitAll(t, r, 1)
	c, ok := got[42]
	if !ok {
		t.Fatalf("no CQE for user data 42: %v", got)
	}
	return c
}

// mustRes fails unless the CQE reports success with res want (-1: any).
func mustRes(t *testing.T, what string, c CQE, want int32) {
	t.Helper()
	if c.Res < 0 || want >= 0 && c.Res != want {
		t.Fatalf("%s: res %d (%v), want %d", what, c.Res, c.Err(), want)
	}
}

func cstr(t *testing.T, s string) *byte {
	p, err := unix.BytePtrFromString(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func openDir(t *testing.T, dir string) int {
	fd, err := unix.Open(dir, unix.O_DIRECTORY|unix.O_RDONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

func TestPrepNop(t *testing.T) {
	r := newRing(t, 4, nil)
	mustRes(t, "nop", do(t, r, (*SQE).PrepNop), 0)
}

func TestPrepVectored(t *testing.T) {
	r := newRing(t, 4, nil)
	f := tempFile(t, []byte("hello, vectored world"))
	fd := int(f.Fd())

	a, b := pinnedBytes(t, make([]byte, 5)), pinnedBytes(t, make([]byte, 7))
	iov := iovecsOf([][]byte{a, b})
	pinned(t, &iov[0])
	mustRes(t, "readv", do(t, r, func(s *SQE) { s.PrepReadv(fd, iov, 0) }), 12)
	wa, wb := make([]byte, 5), make([]byte, 7)
	if _, err := unix.Preadv(fd, [][]byte{wa, wb}, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, wa) || !bytes.Equal(b, wb) {
		t.Fatalf("readv got %q %q, preadv %q %q", a, b, wa, wb)
	}

	iov = iovecsOf([][]byte{pinnedBytes(t, []byte("VEC")), pinnedBytes(t, []byte("TORED"))})
	pinned(t, &iov[0])
	mustRes(t, "writev", do(t, r, func(s *SQE) { s.PrepWritev(fd, iov, 7) }), 8)
	got, _ := os.ReadFile(f.Name())
	if string(got) != "hello, VECTORED world" {
		t.Fatalf("after writev: %q", got)
	}
}

func TestPrepFsyncFallocateFtruncate(t *testing.T) {
	r := newRing(t, 4, nil)
	f := tempFile(t, []byte("data"))
	fd := int(f.Fd())
	mustRes(t, "fsync", do(t, r, func(s *SQE) { s.PrepFsync(fd, 0) }), 0)
	mustRes(t, "fdatasync", do(t, r, func(s *SQE) { s.PrepFsync(fd, FsyncDatasync) }), 0)

	mustRes(t, "fallocate", do(t, r, func(s *SQE) { s.PrepFallocate(fd, 0, 0, 1<<20) }), 0)
	ref := tempFile(t, []byte("data"))
	if err := unix.Fallocate(int(ref.Fd()), 0, 0, 1<<20); err != nil {
		t.Fatal(err)
	}
	var st, refSt unix.Stat_t
	unix.Fstat(fd, &st)
	unix.Fstat(int(ref.Fd()), &refSt)
	if st.Size != refSt.Size || st.Blocks != refSt.Blocks {
		t.Fatalf("fallocate: size %d blocks %d; fallocate(2): size %d blocks %d", st.Size, st.Blocks, refSt.Size, refSt.Blocks)
	}
	keep := uint32(unix.FALLOC_FL_KEEP_SIZE | unix.FALLOC_FL_PUNCH_HOLE)
	mustRes(t, "punch hole", do(t, r, func(s *SQE) { s.PrepFallocate(fd, keep, 0, 4096) }), 0)

	if !kernelHas(t, OpFtruncate) {
		return
	}
	mustRes(t, "ftruncate", do(t, r, func(s *SQE) { s.PrepFtruncate(fd, 3) }), 0)
	got, _ := os.ReadFile(f.Name())
	if len(got) != 3 {
		t.Fatalf("ftruncate: size %d, want 3", len(got))
	}
	if c := do(t, r, func(s *SQE) { s.PrepFtruncate(fd, -1) }); !errors.Is(c.Err(), syscall.EINVAL) {
		t.Fatalf("ftruncate(-1): %v, want EINVAL like ftruncate(2): %v", c.Err(), unix.Ftruncate(fd, -1))
	}
}

// kernelHas reports whether the kernel has op, skipping the rest of t if not.
func kernelHas(t *testing.T, op Op) bool {
	t.Helper()
	r := newRing(t, 1, nil)
	p, err := r.ProbeOps()
	if err != nil {
		t.Fatal(err)
	}
	if !p.Supports(op) {
		t.Logf("kernel lacks IORING_OP_%v; rest skipped", op)
	}
	return p.Supports(op)
}

func TestPrepSpliceTee(t *testing.T) {
	r := newRing(t, 4, nil)
	content := []byte("spliced through a pipe and teed")
	f := tempFile(t, content)
	var p1, p2 [2]int
	if err := unix.Pipe(p1[:]); err != nil {
		t.Fatal(err)
	}
	if err := unix.Pipe(p2[:]); err != nil {
		t.Fatal(err)
	}
	for _, fd := range append(p1[:], p2[:]...) {
		defer unix.Close(fd)
	}
	n := int32(len(content))
	mustRes(t, "splice file->pipe", do(t, r, func(s *SQE) {
		s.PrepSplice(int(f.Fd()), 0, p1[1], -1, uint32(n), 0)
	}), n)
	mustRes(t, "tee", do(t, r, func(s *SQE) { s.PrepTee(p1[0], p2[1], uint32(n), 0) }), n)
	for i, fd := range []int{p1[0], p2[0]} {
		buf := make([]byte, 64)
		k, err := unix.Read(fd, buf)
		if err != nil || !bytes.Equal(buf[:k], content) {
			t.Fatalf("pipe %d: %q, %v", i, buf[:k], err)
		}
	}
}

func TestPrepPathOps(t *testing.T) {
	r := newRing(t, 4, nil)
	dir := t.TempDir()
	dfd := openDir(t, dir)

	// openat, then compare with fstat of the same path.
	c := do(t, r, func(s *SQE) { s.PrepOpenat(dfd, cstr(t, "new"), unix.O_CREAT|unix.O_WRONLY, 0o640) })
	mustRes(t, "openat", c, -1)
	fd := int(c.Res)
	mustRes(t, "write", do(t, r, func(s *SQE) { s.PrepWrite(fd, pinnedBytes(t, []byte("abc")), 0) }), 3)
	mustRes(t, "close", do(t, r, func(s *SQE) { s.PrepClose(fd) }), 0)
	if err := unix.Close(fd); err != syscall.EBADF {
		t.Fatalf("fd still open after IORING_OP_CLOSE: %v", err)
	}

	// openat2 with RESOLVE_BENEATH: like openat2(2), escaping fails.
	how := pinned(t, &unix.OpenHow{Flags: unix.O_RDONLY, Resolve: unix.RESOLVE_BENEATH})
	c = do(t, r, func(s *SQE) { s.PrepOpenat2(dfd, cstr(t, "new"), how) })
	mustRes(t, "openat2", c, -1)
	unix.Close(int(c.Res))
	c = do(t, r, func(s *SQE) { s.PrepOpenat2(dfd, cstr(t, "../x"), how) })
	_, want := unix.Openat2(dfd, "../x", how)
	if !errors.Is(c.Err(), want) || want == nil {
		t.Fatalf("openat2 escaping: %v, openat2(2): %v", c.Err(), want)
	}

	// statx against statx(2).
	st, ref := pinned(t, new(unix.Statx_t)), unix.Statx_t{}
	mustRes(t, "statx", do(t, r, func(s *SQE) {
		s.PrepStatx(dfd, cstr(t, "new"), 0, unix.STATX_BASIC_STATS, st)
	}), 0)
	if err := unix.Statx(dfd, "new", 0, unix.STATX_BASIC_STATS, &ref); err != nil {
		t.Fatal(err)
	}
	if st.Ino != ref.Ino || st.Size != 3 || st.Mode != ref.Mode || st.Mode&0o777 != 0o640 {
		t.Fatalf("statx: ino %d size %d mode %o; statx(2): ino %d mode %o", st.Ino, st.Size, st.Mode, ref.Ino, ref.Mode)
	}

	mustRes(t, "mkdirat", do(t, r, func(s *SQE) { s.PrepMkdirat(dfd, cstr(t, "sub"), 0o750) }), 0)
	if fi, err := os.Stat(filepath.Join(dir, "sub")); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o750 {
		t.Fatalf("mkdirat: %v %v", fi, err)
	}
	mustRes(t, "linkat", do(t, r, func(s *SQE) {
		s.PrepLinkat(dfd, cstr(t, "new"), dfd, cstr(t, "sub/hard"), 0)
	}), 0)
	mustRes(t, "symlinkat", do(t, r, func(s *SQE) { s.PrepSymlinkat(cstr(t, "new"), dfd, cstr(t, "sym")) }), 0)
	if target, err := os.Readlink(filepath.Join(dir, "sym")); err != nil || target != "new" {
		t.Fatalf("symlinkat: %q %v", target, err)
	}
	mustRes(t, "renameat", do(t, r, func(s *SQE) {
		s.PrepRenameat(dfd, cstr(t, "new"), dfd, cstr(t, "renamed"), 0)
	}), 0)
	var hard unix.Stat_t
	if err := unix.Stat(filepath.Join(dir, "renamed"), &hard); err != nil || hard.Nlink != 2 || hard.Ino != ref.Ino {
		t.Fatalf("after renameat/linkat: nlink %d ino %d (want 2, %d): %v", hard.Nlink, hard.Ino, ref.Ino, err)
	}
	noreplace := uint32(unix.RENAME_NOREPLACE)
	c = do(t, r, func(s *SQE) { s.PrepRenameat(dfd, cstr(t, "renamed"), dfd, cstr(t, "sym"), noreplace) })
	if !errors.Is(c.Err(), syscall.EEXIST) {
		t.Fatalf("renameat NOREPLACE onto existing: %v, want EEXIST", c.Err())
	}
	mustRes(t, "unlinkat", do(t, r, func(s *SQE) { s.PrepUnlinkat(dfd, cstr(t, "sub/hard"), 0) }), 0)
	mustRes(t, "unlinkat dir", do(t, r, func(s *SQE) { s.PrepUnlinkat(dfd, cstr(t, "sub"), unix.AT_REMOVEDIR) }), 0)
	c = do(t, r, func(s *SQE) { s.PrepUnlinkat(dfd, cstr(t, "sub"), 0) })
	if want := unix.Unlinkat(dfd, "sub", 0); !errors.Is(c.Err(), want) || want == nil {
		t.Fatalf("unlinkat missing: %v, unlinkat(2): %v", c.Err(), want)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("dir has %d entries, want renamed and sym", len(entries))
	}
}
