package fs

import (
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// dirStream reads a backing directory for one open directory handle.
// Entries carry the backing filesystem's own d_off cookies, which stay valid
// across calls, so telldir/seekdir (and the kernel restarting a READDIR at
// any offset) land where the backing directory would.
type dirStream struct {
	mu      sync.Mutex
	fd      int
	replica int // whose directory fd is
	inodes  *inodeTable
	buf     []byte
	pending []fuse.DirEntry // read from the backing dir, not yet sent
	pos     uint64          // the offset pending[0] follows
}

const direntBufSize = 32 << 10

// next calls add for each entry from offset on until add reports that the
// reply is full or the directory ends.
func (d *dirStream) next(offset uint64, add func(fuse.DirEntry) bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if offset != d.pos {
		if _, err := unix.Seek(d.fd, int64(offset), unix.SEEK_SET); err != nil {
			return err
		}
		d.pending = d.pending[:0]
		d.pos = offset
	}
	for {
		if len(d.pending) == 0 {
			if err := d.fill(); err != nil || len(d.pending) == 0 {
				return err
			}
		}
		e := d.pending[0]
		if !add(e) {
			return nil
		}
		d.pending = d.pending[1:]
		d.pos = e.Off
	}
}

func (d *dirStream) fill() error {
	if d.buf == nil {
		d.buf = make([]byte, direntBufSize)
	}
	n, err := unix.Getdents(d.fd, d.buf)
	for err == unix.EINTR {
		n, err = unix.Getdents(d.fd, d.buf)
	}
	if err != nil {
		return err
	}
	d.pending = d.pending[:0]
	for off := 0; off < n; {
		var e fuse.DirEntry
		off += e.Parse(d.buf[off:n])
		d.pending = append(d.pending, e)
	}
	d.inodes.stableInos(d.fd, d.replica, d.pending)
	return nil
}

func (fs *fileSystem) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	// Entries are listed from the leader; the other replicas are only
	// opened for FSYNCDIR.
	lead := fs.replicas.leader()
	fd, err := openDir(n.replicas[lead])
	if err != nil {
		return status(err)
	}
	fds := make([]int, len(n.replicas))
	for i := range fds {
		fds[i] = -1
	}
	fds[lead] = fd
	out.Fh = fs.handles.add(&handle{node: n, fds: fds, dir: &dirStream{fd: fd, replica: lead, inodes: fs.inodes}})
	return fuse.OK
}

func openDir(fd int) (int, error) {
	return unix.Openat(fd, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
}

func (fs *fileSystem) dirHandle(hdr *fuse.InHeader, fh uint64) *handle {
	h := fs.beginFile(hdr, fh)
	if h == nil || h.dir == nil {
		return nil
	}
	return h
}

func (fs *fileSystem) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h := fs.dirHandle(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.dir.next(in.Offset, out.AddDirEntry))
}

func (fs *fileSystem) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	h := fs.dirHandle(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(h.dir.next(in.Offset, func(e fuse.DirEntry) bool {
		entry := out.AddDirLookupEntry(e)
		if entry == nil {
			return false
		}
		// "." and ".." stay without a node id: the kernel takes no
		// reference on them. An entry that vanished meanwhile is
		// sent without one too, and the kernel looks it up later.
		if e.Name != "." && e.Name != ".." && fs.lookup(h.node, e.Name, entry) != fuse.OK {
			*entry = fuse.EntryOut{}
		}
		return true
	}))
}

func (fs *fileSystem) ReleaseDir(in *fuse.ReleaseIn) {
	fs.stats.op(in.Opcode)
	fs.release(in.Fh)
}

func (fs *fileSystem) FsyncDir(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := fs.dirHandle(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	return status(fs.applyDir("fsyncdir", h, func(_, fd int) error {
		return syncFD(fd, in.FsyncFlags&1 != 0)
	}))
}

// applyDir runs fn on the directory h on every replica in service, through
// the handle's descriptor on the leader and a fresh open elsewhere: a
// directory handle holds the leader's alone, entries being listed from it.
func (fs *fileSystem) applyDir(op string, h *handle, fn func(i, fd int) error) error {
	return fs.replicas.apply(op, h.node.replicas, func(i, fd int) error {
		if h.fds[i] >= 0 {
			return fn(i, h.fds[i])
		}
		dir, err := openDir(fd)
		if err != nil {
			return err
		}
		defer unix.Close(dir)
		return fn(i, dir)
	})
}

func syncFD(fd int, datasync bool) error {
	if datasync {
		return unix.Fdatasync(fd)
	}
	return unix.Fsync(fd)
}
