package fs

import (
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// openFlags are the open(2) flags applied to a backing file. O_NOFOLLOW and
// the creation flags are the kernel's business (it resolved the name and
// decided the file exists); kept, they would refuse the /proc/self/fd link
// or recreate what exists.
func openFlags(flags uint32) int {
	return int(flags) &^ (unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_NOFOLLOW)
}

// finishOpen registers the open backing descriptors of each replica as a
// handle and decides who serves its I/O.
func (fs *fileSystem) finishOpen(n *inode, fds []int, flags int, out *fuse.OpenOut) fuse.Status {
	h := &handle{node: n, fds: fds, direct: flags&unix.O_DIRECT != 0, appending: flags&unix.O_APPEND != 0,
		writable: flags&unix.O_ACCMODE != unix.O_RDONLY}
	h.reader.Store(int32(fs.pickReader(fds)))
	if fs.passthrough {
		fd := h.fd()
		id, ok, err := n.backing.Open(fs.server, fd, fs.passthroughEligible(n, fd))
		if err != nil {
			// The kernel refused this backing file (a backing
			// filesystem stacked too deep, say): serve it here.
			fs.log.Printf("open: %v; serving the file through the daemon", err)
			id, ok, _ = n.backing.Open(fs.server, fd, false)
		}
		if ok {
			h.passthrough = true
			out.OpenFlags |= fuse.FOPEN_PASSTHROUGH
			out.BackingID = id
			fs.stats.paths[pathPassthrough].Add(1)
		}
	}
	if !h.passthrough && !h.direct {
		// Every change goes through this mount, so the page cache
		// survives close and reopen (auto_inval_data still drops it
		// when the backing mtime moves).
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
	}
	out.Fh = fs.handles.add(h)
	return fuse.OK
}

// passthroughEligible asks the passthrough policy about the open file fd.
func (fs *fileSystem) passthroughEligible(n *inode, fd int) bool {
	f, ok := backingFile(fd)
	f.Replicas = len(n.replicas)
	return ok && passthrough.Eligible(f)
}

// killPrivFree reports whether the regular file fd is one whose writes
// need not drop set-ID bits or capabilities: the passthrough rules for
// one file, as the zero-copy path writes each replica's the same way.
func killPrivFree(fd int) bool {
	f, ok := backingFile(fd)
	f.Replicas = 1
	return ok && passthrough.Eligible(f)
}

// backingFile describes fd for passthrough.Eligible, all but the number of
// replicas.
func backingFile(fd int) (passthrough.File, bool) {
	var st unix.Stat_t
	if unix.Fstat(fd, &st) != nil {
		return passthrough.File{}, false
	}
	f := passthrough.File{Mode: st.Mode}
	if st.Mode&unix.S_IFMT == unix.S_IFREG {
		f.Capabilities = hasCapabilities(fd)
	}
	return f, true
}

// hasCapabilities reports whether the file fd carries file capabilities
// (security.capability), which a write by another caller than root drops.
func hasCapabilities(fd int) bool {
	_, err := unix.Fgetxattr(fd, "security.capability", nil)
	return err == nil || err == unix.ERANGE
}

func (fs *fileSystem) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	flags := openFlags(in.Flags)
	fds, err := fs.openEach("open", n.replicas, func(fd int) (int, error) { return fs.proc.reopen(fd, flags) })
	if err != nil {
		return status(err)
	}
	if flags&unix.O_TRUNC != 0 {
		fs.syncTimes(n)
	}
	if in.Mode&fuse.OPEN_KILL_SUIDGID != 0 {
		if err := fs.killPriv(n, in.Caller); err != nil {
			closeFDs(fds)
			return status(err)
		}
	}
	return fs.finishOpen(n, fds, flags, out)
}

// newFile turns the descriptors of a just-created file (one per replica)
// into an inode and a handle, answering CREATE and TMPFILE.
func (fs *fileSystem) newFile(fds []int, flags int, out *fuse.CreateOut) fuse.Status {
	pathFDs, err := fs.openEach("open", fds, func(fd int) (int, error) { return fs.proc.reopen(fd, unix.O_PATH) })
	if err != nil {
		closeFDs(fds)
		return status(err)
	}
	var st unix.Stat_t
	if err := statFD(pathFDs[fs.replicas.leader()], &st); err != nil {
		closeFDs(fds)
		closeFDs(pathFDs)
		return status(err)
	}
	n := fs.inodes.add(pathFDs, &st)
	fs.syncTimes(n)
	fs.fillEntry(n, &st, &out.EntryOut)
	return fs.finishOpen(n, fds, flags, &out.OpenOut)
}

func (fs *fileSystem) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	parent, st := fs.parentOf(&in.InHeader, name)
	if !st.Ok() {
		return st
	}
	flags := int(in.Flags) &^ (unix.O_NOCTTY | unix.O_NOFOLLOW)
	var fds []int
	err := fs.asCaller(in.Caller, in.Umask, func() (err error) {
		fds, err = fs.openEach("create "+name, parent.replicas, func(dir int) (int, error) {
			return openBeneath(dir, name, flags|unix.O_CREAT, in.Mode&07777)
		})
		return err
	})
	if err != nil {
		return status(err)
	}
	return fs.newFile(fds, flags, out)
}

// Tmpfile makes an unnamed file (O_TMPFILE) in the backing directory; a
// later LINK of its inode (linkat with AT_EMPTY_PATH) gives it a name.
func (fs *fileSystem) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	parent := fs.begin(&in.InHeader)
	if parent == nil {
		return fuse.Status(unix.ESTALE)
	}
	flags := int(in.Flags)&^(unix.O_CREAT|unix.O_NOCTTY|unix.O_NOFOLLOW) | unix.O_TMPFILE
	var fds []int
	err := fs.asCaller(in.Caller, in.Umask, func() (err error) {
		fds, err = fs.openEach("tmpfile", parent.replicas, func(dir int) (int, error) {
			return unix.Openat(dir, ".", flags|unix.O_CLOEXEC, in.Mode&07777)
		})
		return err
	})
	if err != nil {
		return status(err)
	}
	return fs.newFile(fds, flags, out)
}

func (fs *fileSystem) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return nil, fuse.EBADF
	}
	p := buf[:min(int(in.Size), len(buf))]
	dst, bounce := p, false
	if h.direct {
		dst, bounce = alignedBuffer(p)
	}
	n, err := fs.read(h, dst, int64(in.Offset))
	if err != nil {
		fs.stats.errors.Add(1)
		return nil, status(err)
	}
	if bounce {
		copy(p, dst[:n])
	}
	fs.stats.paths[fs.data.path()].Add(1)
	fs.stats.bytesRead.Add(uint64(n))
	return fuse.ReadResultData(p[:n]), fuse.OK
}

func (fs *fileSystem) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return 0, fuse.EBADF
	}
	if in.WriteFlags&fuse.WRITE_KILL_SUIDGID != 0 {
		if err := fs.killPriv(h.node, in.Caller); err != nil {
			return 0, status(err)
		}
	}
	if in.WriteFlags&fuse.WRITE_CACHE != 0 && (h.direct || h.appending) {
		wb, err := fs.writebackHandle(h)
		if err != nil {
			fs.stats.errors.Add(1)
			return 0, status(err)
		}
		h.written.Store(true)
		h = wb
	}
	src := data
	if h.direct {
		if buf, bounce := alignedBuffer(data); bounce {
			copy(buf, data)
			src = buf
		}
	}
	path, err := fs.write(h, src, int64(in.Offset))
	if err != nil {
		fs.stats.errors.Add(1)
		return 0, status(err)
	}
	fs.stats.bytesWritten.Add(uint64(len(data)))
	fs.stats.paths[path].Add(1)
	return uint32(len(data)), fuse.OK
}

// Flush gives the mirrors of a written file the leader's times, as
// RELEASE does: close(2) waits for FLUSH, where RELEASE comes later,
// unwaited for, so a reader right after the close would find the replicas'
// times apart. Locks are kept by the kernel, and the backing descriptor
// stays open until RELEASE.
func (fs *fileSystem) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if h := fs.beginFile(&in.InHeader, in.Fh); h != nil && h.written.Load() {
		fs.syncTimes(h.node)
	}
	return fuse.OK
}

// writebackHandle returns the handle that writes h's page-cache writeback.
// The kernel writes dirty pages of a shared mapping through any writable
// open of the file, trimmed at EOF, and at the page's own offset. An
// O_DIRECT descriptor refuses that length (EINVAL: it is not
// block-aligned) and an O_APPEND one would move the data to the end, so
// such opens get plain write-only descriptors of the same replicas, opened
// under the replica rules of every other open (openEach).
func (fs *fileSystem) writebackHandle(h *handle) (*handle, error) {
	h.writebackOnce.Do(func() {
		var fds []int
		fds, h.writebackErr = fs.openEach("writeback open", h.fds, func(fd int) (int, error) {
			return fs.proc.reopen(fd, unix.O_WRONLY)
		})
		if h.writebackErr == nil {
			h.writeback = &handle{node: h.node, fds: fds}
		}
	})
	return h.writeback, h.writebackErr
}

func (fs *fileSystem) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	fs.stats.op(in.Opcode)
	fs.release(in.Fh)
}

// beginFile counts a request and returns the open file it is about, or
// nil when the handle is unknown.
func (fs *fileSystem) beginFile(hdr *fuse.InHeader, fh uint64) *handle {
	fs.stats.op(hdr.Opcode)
	return fs.handles.get(fh)
}

func (fs *fileSystem) release(fh uint64) {
	h := fs.handles.remove(fh)
	if h == nil {
		return
	}
	if h.written.Load() {
		fs.syncTimes(h.node)
	}
	if fs.passthrough && h.dir == nil {
		if err := h.node.backing.Close(fs.server, h.passthrough); err != nil {
			fs.log.Printf("release: %v", err)
		}
		if h.passthrough && !h.node.backing.Active() {
			// Writes through mappings of the backing file changed its
			// times behind the kernel's attribute cache.
			fs.server.InodeNotify(h.node.id, -1, 0)
		}
	}
	h.close()
}

func (fs *fileSystem) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	fs.syncTimes(h.node)
	if err := fs.fsync(h, in.FsyncFlags&1 != 0); err != nil {
		fs.stats.errors.Add(1)
		return status(err)
	}
	return fuse.OK
}

func (fs *fileSystem) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	if err := fs.killPrivOfCaller(in.Caller, h.node); err != nil {
		return status(err)
	}
	h.written.Store(true)
	err := fs.replicas.apply("fallocate", h.fds, func(_, fd int) error {
		return unix.Fallocate(fd, in.Mode, int64(in.Offset), int64(in.Length))
	})
	if err != nil {
		fs.stats.errors.Add(1)
		return status(err)
	}
	return fuse.OK
}

func (fs *fileSystem) Lseek(cancel <-chan struct{}, in *fuse.LseekIn, out *fuse.LseekOut) fuse.Status {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	off, err := unix.Seek(h.fd(), int64(in.Offset), int(in.Whence))
	if err != nil {
		return status(err)
	}
	out.Offset = uint64(off)
	return fuse.OK
}

// killPrivOfCaller drops set-ID bits before a modification the kernel
// sends without a kill flag (FALLOCATE, COPY_FILE_RANGE): a local
// filesystem drops them for an unprivileged caller, while the daemon acts
// as root, for whom the backing filesystem keeps them. Root callers keep
// them; other callers are taken to lack CAP_FSETID, which the daemon cannot
// see.
func (fs *fileSystem) killPrivOfCaller(caller fuse.Caller, n *inode) error {
	if caller.Uid == 0 {
		return nil
	}
	return fs.killPriv(n, caller)
}

// maxCopyChunk bounds one COPY_FILE_RANGE reply, whose size field is 32 bits;
// the caller's copy_file_range(2) loops for the rest.
const maxCopyChunk = 1 << 30

func (fs *fileSystem) CopyFileRange(cancel <-chan struct{}, in *fuse.CopyFileRangeIn) (uint32, fuse.Status) {
	fs.stats.op(in.Opcode)
	src, dst := fs.handles.get(in.FhIn), fs.handles.get(in.FhOut)
	if src == nil || dst == nil {
		return 0, fuse.EBADF
	}
	if err := fs.killPrivOfCaller(in.Caller, dst.node); err != nil {
		return 0, status(err)
	}
	dst.written.Store(true)
	// The leader copies what the source holds; every other replica then
	// copies as much, and must get as far.
	length := int64(min(in.Len, maxCopyChunk))
	copied := int64(-1)
	err := fs.replicas.apply("copy_file_range", dst.fds, func(i, fd int) error {
		n, err := fs.copyRange(src.fds[i], int64(in.OffIn), fd, int64(in.OffOut), length, int(in.Flags))
		switch {
		case err != nil:
			return err
		case copied < 0:
			copied = n
		case n != copied:
			return unix.EIO // the replicas' sources differ
		}
		return nil
	})
	if err != nil {
		fs.stats.errors.Add(1)
		return 0, status(err)
	}
	return uint32(copied), fuse.OK
}
