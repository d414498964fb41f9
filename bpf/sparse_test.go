package bpf

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// requireSparse skips unless this kernel has IORING_OP_BPF (our series).
func requireSparse(tb testing.TB) {
	tb.Helper()
	requireBPF(tb, SparseAvailable, "kernel lacks IORING_OP_BPF (make vmtest KERNEL=patched)")
}

// sparseSource writes blocks of SparseBlock bytes, random or, where zero
// says so, all zeros (written, or a hole where hole says so), then tail
// random bytes, and returns the file and its content.
func sparseSource(t *testing.T, zero, hole []bool, tail int) (*os.File, []byte) {
	t.Helper()
	rng := rand.NewChaCha8([32]byte{7})
	data := make([]byte, len(zero)*SparseBlock+tail)
	f, err := os.Create(filepath.Join(t.TempDir(), "src"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	for i, z := range zero {
		block := data[i*SparseBlock : (i+1)*SparseBlock]
		if !z {
			rng.Read(block)
		}
		if !hole[i] {
			if _, err := f.WriteAt(block, int64(i*SparseBlock)); err != nil {
				t.Fatal(err)
			}
		}
	}
	rng.Read(data[len(zero)*SparseBlock:])
	if _, err := f.WriteAt(data[len(zero)*SparseBlock:], int64(len(zero)*SparseBlock)); err != nil {
		t.Fatal(err)
	}
	return f, data
}

func TestSparseCopy(t *testing.T) {
	requireSparse(t)
	// Blocks 1 and 2 are written zeros, 4 is a hole; the tail's length is
	// not a multiple of 8, so the program sees a padded last block.
	zero := []bool{false, true, true, false, true, false}
	hole := []bool{false, false, false, false, true, false}
	src, data := sparseSource(t, zero, hole, 4097)
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := dst.WriteString("stale content the copy must replace"); err != nil {
		t.Fatal(err)
	}

	res, err := SparseCopy(dst, src)
	if err != nil {
		t.Fatalf("SparseCopy: %+v", err)
	}
	got, err := os.ReadFile(dst.Name())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("destination differs from the source (%d vs %d bytes)", len(got), len(data))
	}
	want := SparseResult{Bytes: int64(len(data)), Blocks: len(zero) + 1, ZeroBlocks: 3, Checksum: SparseChecksum(data)}
	if res != want {
		t.Fatalf("SparseCopy: %+v, want %+v", res, want)
	}
	// Each block of zeros stays a hole in the destination.
	for i, z := range zero {
		off := int64(i * SparseBlock)
		next, err := unix.Seek(int(dst.Fd()), off, unix.SEEK_DATA)
		if err != nil {
			t.Fatalf("SEEK_DATA at %d: %v", off, err)
		}
		if isHole := next >= off+SparseBlock; isHole != z {
			t.Errorf("block %d (zeros: %v): hole in the destination: %v", i, z, isHole)
		}
	}
}

func TestSparseCopyUnreadableSource(t *testing.T) {
	requireSparse(t)
	src, _ := sparseSource(t, []bool{false}, []bool{false}, 0)
	writeOnly, err := os.OpenFile(src.Name(), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer writeOnly.Close()
	dst, err := os.Create(filepath.Join(t.TempDir(), "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	if _, err := SparseCopy(dst, writeOnly); !errors.Is(err, unix.EBADF) {
		t.Fatalf("SparseCopy from a write-only source: %v, want EBADF", err)
	}
}

func TestSparseChecksum(t *testing.T) {
	for _, tc := range []struct {
		data []byte
		want uint64
	}{
		{nil, 0},
		{[]byte{1}, 1},
		{[]byte{0, 1}, 256},
		{[]byte{1, 0, 0, 0, 0, 0, 0, 0, 2}, 3},
		{bytes.Repeat([]byte{0xff}, 16), 0xfffffffffffffffe}, // wraps
	} {
		if got := SparseChecksum(tc.data); got != tc.want {
			t.Errorf("SparseChecksum(%x) = %#x, want %#x", tc.data, got, tc.want)
		}
	}
}
