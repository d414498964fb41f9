package fs

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// dataPath does a mount's backing file I/O in the daemon. Every
// implementation gives byte-identical results; they differ in how the
// syscalls reach the kernel. A read is served by one replica; writes and
// syncs reach every replica at once, and report each one's outcome.
type dataPath interface {
	read(fd int, p []byte, off int64) (int, error)
	// write writes all of p at off to each descriptor of fds, skipping
	// -1, and sets errs[i] to the outcome for fds[i] (errSkipped when
	// skipped).
	write(fds []int, p []byte, off int64, errs []error)
	// fsync syncs each descriptor of fds like write writes.
	fsync(fds []int, datasync bool, errs []error)
	// splice copies n bytes from src to dst through pipe p, which it
	// leaves empty unless it fails, and returns how many it copied.
	splice(src int, offIn int64, dst int, offOut int64, n int64, p pipe) (int64, error)
	// path is the Stats.Paths index this implementation counts under.
	path() int
	close() error
}

// syscallPath is the reference: pread(2) and pwrite(2), one replica after
// the other.
type syscallPath struct{}

func (syscallPath) read(fd int, p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, p, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func (syscallPath) write(fds []int, p []byte, off int64, errs []error) {
	forEach(fds, errs, func(fd int) error { return pwriteAll(fd, p, off) })
}

// pwriteAll writes all of p at off with pwrite(2).
func pwriteAll(fd int, p []byte, off int64) error {
	return fullWrite(p, off, func(p []byte, off int64) (int, error) { return unix.Pwrite(fd, p, off) })
}

func (syscallPath) fsync(fds []int, datasync bool, errs []error) {
	forEach(fds, errs, func(fd int) error { return syncFD(fd, datasync) })
}

func (syscallPath) splice(src int, offIn int64, dst int, offOut int64, n int64, p pipe) (int64, error) {
	return spliceCopy(src, offIn, dst, offOut, n, p)
}

func (syscallPath) path() int    { return pathSyscall }
func (syscallPath) close() error { return nil }

// forEach sets errs[i] to fn(fds[i]), or errSkipped where fds[i] is -1.
func forEach(fds []int, errs []error, fn func(fd int) error) {
	for i, fd := range fds {
		if fd < 0 {
			errs[i] = errSkipped
			continue
		}
		errs[i] = fn(fd)
	}
}

// pickReader chooses the replica an open file reads from: opens take
// turns over the healthy replicas, spreading readers across mirrors.
func (fs *fileSystem) pickReader(fds []int) int {
	if !fs.replicas.mirrored() {
		return 0
	}
	turn := int(fs.readTurn.Add(1))
	for k := range fds {
		i := (turn + k) % len(fds)
		if fds[i] >= 0 && fs.replicas.healthy(i) {
			return i
		}
	}
	return fs.replicas.leader()
}

// read reads from h's reader replica. A replica failing with a fault is
// degraded and the read retried on the next one, until the last healthy
// replica answers.
func (fs *fileSystem) read(h *handle, p []byte, off int64) (int, error) {
	for {
		i := fs.reader(h)
		n, err := fs.data.read(h.fds[i], p, off)
		if err == nil || !fs.readFailed(i, err) {
			return n, err
		}
	}
}

// reader returns the replica h reads from: its own while that one is in
// service, else the next pickReader gives.
func (fs *fileSystem) reader(h *handle) int {
	i := int(h.reader.Load())
	if h.fds[i] < 0 || !fs.replicas.healthy(i) {
		i = fs.pickReader(h.fds)
		h.reader.Store(int32(i))
	}
	return i
}

// readFailed is told that a read from replica i failed with err, and says
// whether to retry on another: a fault degrades the replica, unless it is
// the last one.
func (fs *fileSystem) readFailed(i int, err error) bool {
	return replicaFault(err) && fs.replicas.degrade(i, "read", err)
}

// write writes all of p at off to every healthy replica of h (see
// replicaSet for who wins when they disagree), and returns the Stats.Paths
// index of the path that wrote.
func (fs *fileSystem) write(h *handle, p []byte, off int64) (int, error) {
	h.written.Store(true)
	data := fs.writePath(h)
	return data.path(), fs.fanOut(h, "write", func(fds []int, errs []error) { data.write(fds, p, off, errs) })
}

// writePath is the data path for a write through h: the mount's, except
// that buffered writes go to pwrite(2) on filesystems where io_uring
// would punt them to a worker thread (see probeAsyncWrites).
func (fs *fileSystem) writePath(h *handle) dataPath {
	if fs.data.path() == pathEngine && !h.direct && !fs.asyncWrites {
		return syscallPath{}
	}
	return fs.data
}

func (fs *fileSystem) fsync(h *handle, datasync bool) error {
	return fs.fanOut(h, "fsync", func(fds []int, errs []error) { fs.data.fsync(fds, datasync, errs) })
}

// fanOut runs do, a dataPath write or fsync, on h's descriptors of the
// healthy replicas (-1 elsewhere) and settles the outcomes (see
// replicaSet). A single replica is always healthy and needs no settling.
func (fs *fileSystem) fanOut(h *handle, op string, do func(fds []int, errs []error)) error {
	fds := fs.inService(h)
	errs := make([]error, len(fds))
	do(fds, errs)
	return fs.settle(op, fds, errs)
}

// inService returns h's descriptors of the healthy replicas, -1 for the
// others.
func (fs *fileSystem) inService(h *handle) []int {
	if !fs.replicas.mirrored() {
		return h.fds
	}
	fds := make([]int, len(h.fds))
	for i, fd := range h.fds {
		fds[i] = -1
		if fs.replicas.healthy(i) {
			fds[i] = fd
		}
	}
	return fds
}

// settle turns the outcomes errs of a mutation on each of fds (from
// inService; ignored where fds[i] is -1) into the caller's answer (see
// replicaSet).
func (fs *fileSystem) settle(op string, fds []int, errs []error) error {
	if !fs.replicas.mirrored() {
		return errs[0]
	}
	for i, fd := range fds {
		if fd < 0 {
			errs[i] = errSkipped
		}
	}
	return fs.replicas.settle(op, errs)
}

// fullWrite repeats a positional write until p is written or it fails: a
// short write is finished, never reported as success.
func fullWrite(p []byte, off int64, pwrite func([]byte, int64) (int, error)) error {
	for len(p) > 0 {
		n, err := pwrite(p, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return unix.EIO
		}
		p, off = p[n:], off+int64(n)
	}
	return nil
}

// directAlign is the alignment O_DIRECT backing I/O gets; 4096 satisfies
// every common logical block size.
const directAlign = 4096

// alignedBuffer returns p when it is suitably aligned for O_DIRECT, else a
// fresh aligned buffer of the same length.
func alignedBuffer(p []byte) ([]byte, bool) {
	if len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%directAlign == 0 {
		return p, false
	}
	buf := make([]byte, len(p)+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&buf[0]))%directAlign)) % directAlign
	return buf[skip : skip+len(p)], true
}
