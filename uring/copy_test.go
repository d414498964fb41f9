package uring

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// requireCopyFileRange skips t on kernels without our series' opcode.
func requireCopyFileRange(t *testing.T) *Ring {
	t.Helper()
	if !kernelHas(t, OpCopyFileRange) {
		t.Skip("kernel lacks IORING_OP_COPY_FILE_RANGE (added by kernel/patches/; make vmtest KERNEL=patched)")
	}
	return newRing(t, 8, nil)
}

// copyPair is a source file and two destinations: one written by the
// opcode, one by copy_file_range(2), which every case is compared with.
type copyPair struct {
	src, got, want *os.File
}

func newCopyPair(t *testing.T, content []byte) copyPair {
	return copyPair{tempFile(t, content), tempFile(t, nil), tempFile(t, nil)}
}

// check compares the two destinations byte for byte.
func (p copyPair) check(t *testing.T, what string) {
	t.Helper()
	got, err1 := os.ReadFile(p.got.Name())
	want, err2 := os.ReadFile(p.want.Name())
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: destination differs from copy_file_range(2)'s (%d vs %d bytes)", what, len(got), len(want))
	}
}

func TestCopyFileRangeMatchesSyscall(t *testing.T) {
	r := requireCopyFileRange(t)
	content := make([]byte, 1<<20)
	rand.NewChaCha8([32]byte{1}).Read(content)
	p := newCopyPair(t, content)
	src := int(p.src.Fd())

	for _, tc := range []struct {
		name          string
		offIn, offOut int64
		n             int
		wantN         int32
	}{
		{"aligned", 0, 0, 256 << 10, 256 << 10},
		{"unaligned, into a hole", 4097, 3<<20 + 11, 100_003, 100_003},
		{"past the source's end is short", 1<<20 - 1000, 64 << 10, 4096, 1000},
		{"at the source's end copies nothing", 1 << 20, 0, 4096, 0},
	} {
		c := do(t, r, func(s *SQE) {
			s.PrepCopyFileRange(src, tc.offIn, int(p.got.Fd()), tc.offOut, uint32(tc.n), 0)
		})
		offIn, offOut := tc.offIn, tc.offOut
		n, err := unix.CopyFileRange(src, &offIn, int(p.want.Fd()), &offOut, tc.n, 0)
		if err != nil || int32(n) != tc.wantN {
			t.Fatalf("%s: copy_file_range(2) = %d, %v; want %d", tc.name, n, err, tc.wantN)
		}
		mustRes(t, tc.name, c, tc.wantN)
		p.check(t, tc.name)
	}
}

// TestCopyFileRangeFilePositions: an offset of -1 uses and advances the
// file position, as a NULL offset does for the syscall.
func TestCopyFileRangeFilePositions(t *testing.T) {
	r := requireCopyFileRange(t)
	p := newCopyPair(t, []byte("0123456789abcdefghij"))
	if _, err := p.src.Seek(5, 0); err != nil {
		t.Fatal(err)
	}
	mustRes(t, "copy at the positions", do(t, r, func(s *SQE) {
		s.PrepCopyFileRange(int(p.src.Fd()), -1, int(p.got.Fd()), -1, 7, 0)
	}), 7)
	if pos, _ := p.src.Seek(0, 1); pos != 12 {
		t.Errorf("source position %d after copying 7 bytes from 5, want 12", pos)
	}
	if pos, _ := p.got.Seek(0, 1); pos != 7 {
		t.Errorf("destination position %d after copying 7 bytes, want 7", pos)
	}
	if _, err := p.src.Seek(5, 0); err != nil {
		t.Fatal(err)
	}
	if n, err := unix.CopyFileRange(int(p.src.Fd()), nil, int(p.want.Fd()), nil, 7, 0); n != 7 || err != nil {
		t.Fatalf("copy_file_range(2): %d, %v", n, err)
	}
	p.check(t, "file positions")
}

func TestCopyFileRangeFixedSource(t *testing.T) {
	r := requireCopyFileRange(t)
	p := newCopyPair(t, []byte("from a registered file"))
	if err := r.RegisterFiles([]int32{-1, int32(p.src.Fd())}); err != nil {
		t.Fatal(err)
	}
	mustRes(t, "fixed source", do(t, r, func(s *SQE) {
		s.PrepCopyFileRange(1, 0, int(p.got.Fd()), 0, 22, SpliceFdInFixed)
	}), 22)
	off := int64(0)
	unix.CopyFileRange(int(p.src.Fd()), &off, int(p.want.Fd()), nil, 22, 0)
	p.check(t, "fixed source")
	wantErr(t, "empty fixed slot", do(t, r, func(s *SQE) {
		s.PrepCopyFileRange(0, 0, int(p.got.Fd()), 0, 22, SpliceFdInFixed)
	}), syscall.EBADF)
}

// TestCopyFileRangeLinked: a copy heads a chain whose read sees the copied
// bytes; a short copy fails the chain, as a short splice does.
func TestCopyFileRangeLinked(t *testing.T) {
	r := requireCopyFileRange(t)
	p := newCopyPair(t, []byte("copied, then read back"))
	buf := pinnedBytes(t, make([]byte, 22))
	sqe := r.GetSQE()
	sqe.PrepCopyFileRange(int(p.src.Fd()), 0, int(p.got.Fd()), 0, 22, 0)
	sqe.SetFlags(SQEIOLink)
	sqe.SetUserData(1)
	sqe = r.GetSQE()
	sqe.PrepRead(int(p.got.Fd()), buf, 0)
	sqe.SetUserData(2)
	got := submitAll(t, r, 2)
	mustRes(t, "linked copy", got[1], 22)
	mustRes(t, "read after the copy", got[2], 22)
	if string(buf) != "copied, then read back" {
		t.Fatalf("read after the copy: %q", buf)
	}

	sqe = r.GetSQE()
	sqe.PrepCopyFileRange(int(p.src.Fd()), 20, int(p.got.Fd()), 0, 22, 0) // 2 bytes left
	sqe.SetFlags(SQEIOLink)
	sqe.SetUserData(3)
	sqe = r.GetSQE()
	sqe.PrepNop()
	sqe.SetUserData(4)
	got = submitAll(t, r, 2)
	mustRes(t, "short copy", got[3], 2)
	wantErr(t, "the link after a short copy", got[4], syscall.ECANCELED)
}

// TestCopyFileRangeErrors: each error is the one copy_file_range(2) gives.
func TestCopyFileRangeErrors(t *testing.T) {
	r := requireCopyFileRange(t)
	p := newCopyPair(t, bytes.Repeat([]byte("x"), 8192))
	writeOnly, err := os.OpenFile(p.src.Name(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writeOnly.Close()
	dir := openDir(t, t.TempDir())
	src, dst := int(p.src.Fd()), int(p.got.Fd())
	// A memfd is on the kernel's internal tmpfs, which has no copy method
	// that reaches another file system.
	memfd, err := unix.MemfdCreate("copy-source", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(memfd)
	if _, err := unix.Write(memfd, make([]byte, 8192)); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name          string
		in            int
		offIn, offOut int64
		out           int
		flags         uint32
		want          syscall.Errno
	}{
		{"unknown flag", src, 0, 0, dst, 1, syscall.EINVAL},
		{"source not readable", int(writeOnly.Fd()), 0, 0, dst, 0, syscall.EBADF},
		{"bad source fd", -1, 0, 0, dst, 0, syscall.EBADF},
		{"directory destination", src, 0, 0, dir, 0, syscall.EISDIR},
		{"overlapping ranges in one file", src, 0, 100, src, 0, syscall.EINVAL},
		{"across file systems", memfd, 0, 0, dst, 0, syscall.EXDEV},
	} {
		wantErr(t, tc.name, do(t, r, func(s *SQE) {
			s.PrepCopyFileRange(tc.in, tc.offIn, tc.out, tc.offOut, 4096, tc.flags)
		}), tc.want)
		if tc.flags != 0 {
			continue // copy_file_range(2) takes no splice flags; its flags must be 0
		}
		offIn, offOut := tc.offIn, tc.offOut
		if _, err := unix.CopyFileRange(tc.in, &offIn, tc.out, &offOut, 4096, 0); !errors.Is(err, tc.want) {
			t.Errorf("%s: copy_file_range(2) fails with %v, the test expects %v", tc.name, err, tc.want)
		}
	}
}

// TestVerifyPatchedOps: each behavioural probe passes exactly when the
// kernel lists the opcode (on a stock kernel, the SQE fails with EINVAL).
func TestVerifyPatchedOps(t *testing.T) {
	p, err := newRing(t, 1, nil).ProbeOps()
	if err != nil {
		t.Fatal(err)
	}
	for op, verify := range map[Op]func() error{OpCopyFileRange: VerifyCopyFileRange, OpBPF: VerifyOpBPF, OpFutimens: VerifyFutimens} {
		err := verify()
		if p.Supports(op) != (err == nil) {
			t.Errorf("kernel lists IORING_OP_%v: %v; its probe: %v", op, p.Supports(op), err)
		}
		t.Logf("IORING_OP_%v listed %v, probe: %v", op, p.Supports(op), err)
	}
	// The flag came later than the opcode: it needs the opcode, not the
	// other way round.
	err = VerifyCopyKeepHoles()
	if err == nil && !p.Supports(OpCopyFileRange) {
		t.Errorf("IORING_COPY_KEEP_HOLES works where IORING_OP_%v is not listed", OpCopyFileRange)
	}
	t.Logf("IORING_COPY_KEEP_HOLES probe: %v", err)
}

// TestCopyKeepHoles checks each rule of CopyKeepHoles on real files: the
// bytes are the source's, and the destination's data and holes are what a
// sparse-aware copy leaves (dataMap, at the 64 KiB granularity the cases
// use).
func TestCopyKeepHoles(t *testing.T) {
	r := requireCopyFileRange(t)
	if err := VerifyCopyKeepHoles(); err != nil {
		t.Skipf("kernel lacks IORING_COPY_KEEP_HOLES (kernel/patches/ 0006): %v", err)
	}
	const blk = 64 << 10
	// The source: data, two blocks of hole, data, then a hole to its end.
	src := tempFile(t, nil)
	data := bytes.Repeat([]byte{'s'}, blk)
	for _, off := range []int64{0, 3 * blk} {
		if _, err := src.WriteAt(data, off); err != nil {
			t.Fatal(err)
		}
	}
	if err := src.Truncate(6 * blk); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		dstSize       int64 // of 'x' bytes before the copy
		offIn, offOut int64
		n             uint32
		wantRes       int32
		wantMap       string // the destination's blocks after: D data, - hole
		wantSize      int64
	}{
		{"over data: the hole is punched", 6 * blk, 0, 0, 6 * blk, 6 * blk, "D--D--", 6 * blk},
		{"past the end: nothing written, size extended", 0, 0, 0, 6 * blk, 6 * blk, "D--D--", 6 * blk},
		{"partly over data", 2 * blk, 0, 0, 6 * blk, 6 * blk, "D--D--", 6 * blk},
		{"a hole only, inside the destination", 4 * blk, blk, blk, 2 * blk, 2 * blk, "D--D", 4 * blk},
		{"shifted, ending in a hole past the end", 0, 3 * blk, blk, 2 * blk, 2 * blk, "-D-", 3 * blk},
		{"short at the source's end", blk, 5 * blk, 0, 4 * blk, blk, "-", blk},
		{"at the source's end: nothing", blk, 6 * blk, 0, blk, 0, "D", blk},
	} {
		dst := tempFile(t, bytes.Repeat([]byte{'x'}, int(tc.dstSize)))
		mustRes(t, tc.name, do(t, r, func(s *SQE) {
			s.PrepCopyFileRange(int(src.Fd()), tc.offIn, int(dst.Fd()), tc.offOut, tc.n, CopyKeepHoles)
		}), tc.wantRes)
		got, err := os.ReadFile(dst.Name())
		if err != nil {
			t.Fatal(err)
		}
		want := bytes.Repeat([]byte{'x'}, int(tc.dstSize))
		want = append(want, make([]byte, max(0, tc.wantSize-tc.dstSize))...)
		srcBytes := make([]byte, tc.wantRes)
		if _, err := src.ReadAt(srcBytes, tc.offIn); err != nil {
			t.Fatal(err)
		}
		copy(want[tc.offOut:], srcBytes)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: the destination's bytes are not the copy's", tc.name)
		}
		if m := dataMap(t, dst, blk); m != tc.wantMap {
			t.Errorf("%s: destination's blocks %q, want %q", tc.name, m, tc.wantMap)
		}
	}
	dst := tempFile(t, nil)
	for _, off := range [][2]int64{{-1, 0}, {0, -1}} {
		wantErr(t, "an offset of -1", do(t, r, func(s *SQE) {
			s.PrepCopyFileRange(int(src.Fd()), off[0], int(dst.Fd()), off[1], blk, CopyKeepHoles)
		}), unix.EINVAL)
	}
}

// dataMap describes f block by block: D where SEEK_DATA finds data, - a
// hole.
func dataMap(t *testing.T, f *os.File, blk int64) string {
	t.Helper()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var m []byte
	for off := int64(0); off < fi.Size(); off += blk {
		data, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
		if err != nil && err != unix.ENXIO {
			t.Fatal(err)
		}
		if err == nil && data == off {
			m = append(m, 'D')
		} else {
			m = append(m, '-')
		}
	}
	return string(m)
}
