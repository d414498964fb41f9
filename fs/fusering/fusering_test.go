package fusering

import (
	"bytes"

	"github.com/hanwen/go-fuse/v2/fuse"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

func TestCountCPUList(t *testing.T) {
	for list, want := range map[string]int{"0": 1, "0-1": 2, "0-3,8": 5, "0,2,4-7": 6} {
		if got, err := countCPUList(list); err != nil || got != want {
			t.Errorf("countCPUList(%q) = %d, %v; want %d", list, got, err, want)
		}
	}
	for _, bad := range []string{"", "x", "3-1", "0-"} {
		if _, err := countCPUList(bad); err == nil {
			t.Errorf("countCPUList(%q) succeeded", bad)
		}
	}
}

// TestRandomWriteReadBack writes random data at random offsets through the
// mount, reads it back through the mount, and compares both with the
// backing file byte for byte.
func TestRandomWriteReadBack(t *testing.T) {
	requireRing(t)
	for name, maxWrite := range map[string]int{"default": 0, "1MiB": 1 << 20} {
		t.Run(name, func(t *testing.T) {
			mo := testMountOptions()
			mo.MaxWrite = maxWrite
			m := mountLoopbackWith(t, mo, Options{})
			writeReadBack(t, m)
			st := m.srv.Stats()
			if st.Queues < 1 || st.Depth != defaultDepth || st.PayloadSize < max(maxWrite, defaultMaxWrite) {
				t.Errorf("queues %d depth %d payload %d", st.Queues, st.Depth, st.PayloadSize)
			}
			if got := m.srv.KernelSettings(); got.Flags64()&fuse.CAP_OVER_IO_URING == 0 {
				t.Errorf("kernel settings without FUSE_OVER_IO_URING: %+v", got)
			}
		})
	}
}

// writeReadBack writes random data at random offsets of a file through the
// mount, reads it back after reopening it, compares both the data read and
// the backing file with what was written, and checks that the READs and
// WRITEs came by ring.
func writeReadBack(t *testing.T, m *testMount) {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	const size = 8 << 20
	want := make([]byte, size)
	f, err := os.OpenFile(filepath.Join(m.mnt, "random"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	for range 300 {
		off := rng.IntN(size - 1)
		n := 1 + rng.IntN(min(size-off, 300<<10))
		chunk := want[off : off+n]
		for i := range chunk {
			chunk[i] = byte(rng.Uint32())
		}
		if _, err := f.WriteAt(chunk, int64(off)); err != nil {
			f.Close()
			t.Fatalf("WriteAt(%d, %d): %v", off, n, err)
		}
	}
	if err := f.Truncate(size); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	// Reopened, the file's page cache is dropped: reads reach the daemon.
	if f, err = os.Open(filepath.Join(m.mnt, "random")); err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := make([]byte, size)
	for off := 0; off < size; {
		n := min(1+rng.IntN(200<<10), size-off)
		if _, err := f.ReadAt(got[off:off+n], int64(off)); err != nil {
			t.Fatalf("ReadAt(%d, %d): %v", off, n, err)
		}
		off += n
	}
	if !bytes.Equal(got, want) {
		t.Fatal("data read through the mount differs from what was written")
	}
	backing, err := os.ReadFile(filepath.Join(m.backing, "random"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(backing, want) {
		t.Fatal("backing file differs from what was written through the mount")
	}
	st := m.srv.Stats()
	t.Logf("stats: %+v", st)
	if st.Ring.Writes == 0 || st.Ring.Reads == 0 {
		t.Fatalf("no READ or WRITE arrived by ring: %+v", st)
	}
	if st.Dev.Reads+st.Dev.Writes > (st.Ring.Reads+st.Ring.Writes)/10 {
		t.Errorf("most data requests did not arrive by ring: %+v", st)
	}
}
