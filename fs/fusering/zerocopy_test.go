package fusering

import (
	"path/filepath"
	"sync"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// backedFS is a loopback of one flat directory that names the backing fd
// of each open file, as ZeroCopyFiles asks.
type backedFS struct {
	fuse.RawFileSystem
	dir      string
	directIO bool // open files FOPEN_DIRECT_IO: every read reaches the daemon

	mu    sync.Mutex
	names map[uint64]string // node id -> name in dir
	fds   map[uint64]int    // file handle -> backing fd
}

func (b *backedFS) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	st := b.RawFileSystem.Lookup(cancel, h, name, out)
	if st.Ok() {
		b.remember(out.NodeId, name)
	}
	return st
}

func (b *backedFS) remember(node uint64, name string) {
	b.mu.Lock()
	b.names[node] = name
	b.mu.Unlock()
}

func (b *backedFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := b.RawFileSystem.Create(cancel, in, name, out)
	if st.Ok() {
		b.remember(out.NodeId, name)
		b.openBacking(out.NodeId, out.Fh)
	}
	return st
}

func (b *backedFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := b.RawFileSystem.Open(cancel, in, out)
	if st.Ok() {
		b.openBacking(in.NodeId, out.Fh)
		if b.directIO {
			out.OpenFlags |= fuse.FOPEN_DIRECT_IO
		}
	}
	return st
}

func newBackedFS(t testing.TB, dir string, directIO bool) *backedFS {
	return &backedFS{RawFileSystem: mustLoopbackFS(t, dir), dir: dir, directIO: directIO,
		names: map[uint64]string{}, fds: map[uint64]int{}}
}

func (b *backedFS) openBacking(node, fh uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if fd, err := unix.Open(filepath.Join(b.dir, b.names[node]), unix.O_RDWR|unix.O_CLOEXEC, 0); err == nil {
		b.fds[fh] = fd
	}
}

func (b *backedFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	b.mu.Lock()
	if fd, ok := b.fds[in.Fh]; ok {
		unix.Close(fd)
		delete(b.fds, in.Fh)
	}
	b.mu.Unlock()
	b.RawFileSystem.Release(cancel, in)
}

func (b *backedFS) ZeroCopyFile(fh uint64) (ZeroCopyIO, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	fd, ok := b.fds[fh]
	return backingFd(fd), ok
}

// backingFd is the zero-copy I/O of a file with one backing file.
type backingFd int

func (fd backingFd) ReadFd() int                        { return int(fd) }
func (backingFd) ReadFailed(int, error) bool            { return false }
func (fd backingFd) WriteFds() []int                    { return []int{int(fd)} }
func (backingFd) WriteDone(_ []int, errs []error) error { return errs[0] }

// TestZeroCopy serves a file system that offers its backing fds with
// Options.ZeroCopy. On a kernel with zero-copy queues (Linux 7.3+) READ
// and WRITE must then be served from the entries' slots; elsewhere the
// queues fall back to copying. Either way the data must be right.
func TestZeroCopy(t *testing.T) {
	requireRing(t)
	m := newTestMount(t)
	mountOver(t, m, newBackedFS(t, m.backing, false), testMountOptions(), Options{ZeroCopy: true})
	writeReadBack(t, m)
	st := m.srv.Stats()
	if st.ZeroCopyQueues == 0 {
		t.Logf("no zero-copy queues on this kernel; served by copy: %+v", st)
		if st.ZeroCopyReads+st.ZeroCopyWrites != 0 {
			t.Errorf("zero-copy requests without zero-copy queues: %+v", st)
		}
		return
	}
	if st.ZeroCopyQueues != st.Queues || st.ZeroCopyReads == 0 || st.ZeroCopyWrites == 0 {
		t.Errorf("zero-copy queues did not serve READ and WRITE from their slots: %+v", st)
	}
}
