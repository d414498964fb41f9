package uring

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// newRing creates a ring for a test, skipping when io_uring is unavailable.
func newRing(t testing.TB, entries uint32, opts *Options) *Ring {
	t.Helper()
	r, err := New(entries, opts)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("io_uring unavailable: %v", err)
	}
	if err != nil {
		t.Fatalf("New(%d, %+v): %v", entries, opts, err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return r
}

// tempFile creates a file with content and returns it open read-write.
func tempFile(t testing.TB, content []byte) *os.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "data")
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// pinned keeps *p in place until the test ends, as memory the kernel
// reaches by address must be: pinning also moves it off the goroutine
// stack, which can move.
func pinned[T any](t testing.TB, p *T) *T {
	var pin runtime.Pinner
	pin.Pin(p)
	t.Cleanup(pin.Unpin)
	return p
}

// pinnedBytes pins the array behind b.
func pinnedBytes(t testing.TB, b []byte) []byte {
	pinned(t, &b[0])
	return b
}

// submitAll submits the prepared SQEs and returns their CQEs by user data.
func submitAll(t testing.TB, r *Ring, n uint32) map[uint64]CQE {
	t.Helper()
	if _, err := r.SubmitAndWait(n); err != nil {
		t.Fatalf("SubmitAndWait(%d): %v", n, err)
	}
	got := map[uint64]CQE{}
	cqes := make([]*CQE, 64)
	for uint32(len(got)) < n {
		k := r.PeekCQEs(cqes)
		if k == 0 {
			c, err := r.WaitCQE()
			if err != nil {
				t.Fatalf("WaitCQE: %v", err)
			}
			cqes[0], k = c, 1
		}
		for _, c := range cqes[:k] {
			got[c.UserData] = *c
		}
		r.CQAdvance(uint32(k))
	}
	return got
}

func TestReadWriteMatchesSyscalls(t *testing.T) {
	r := newRing(t, 8, nil)
	content := bytes.Repeat([]byte("0123456789abcdef"), 1024)
	f := tempFile(t, content)

	buf := pinnedBytes(t, make([]byte, 4096))
	sqe := r.GetSQE()
	sqe.PrepRead(int(f.Fd()), buf, 100)
	sqe.SetUserData(1)
	patch := pinnedBytes(t, []byte("io_uring was here"))
	sqe = r.GetSQE()
	sqe.PrepWrite(int(f.Fd()), patch, 9000)
	sqe.SetUserData(2)
	got := submitAll(t, r, 2)
	if got[1].Res != 4096 || !bytes.Equal(buf, content[100:4196]) {
		t.Fatalf("read: res %d, data mismatch %v", got[1].Res, !bytes.Equal(buf, content[100:4196]))
	}
	if got[2].Res != int32(len(patch)) {
		t.Fatalf("write: res %d", got[2].Res)
	}
	want := make([]byte, len(patch))
	if _, err := unix.Pread(int(f.Fd()), want, 9000); err != nil || !bytes.Equal(want, patch) {
		t.Fatalf("pread after write: %q, %v", want, err)
	}
}

func TestReadBadFdIsErrno(t *testing.T) {
	r := newRing(t, 4, nil)
	sqe := r.GetSQE()
	sqe.PrepRead(-5, pinnedBytes(t, make([]byte, 8)), 0)
	got := submitAll(t, r, 1)
	c := got[0]
	if err := c.Err(); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("res %d err %v, want EBADF", c.Res, err)
	}
}
