package fs

import (
	"slices"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// mountFusering serves the mount over FUSE-over-io_uring: one ring per
// CPU, requests as completions, replies committed with the next fetch.
// The file system is the same; only the transport differs. With ZeroCopy,
// where the kernel has zero-copy queues (Linux 7.3+, root), the transport
// reads and writes the files ZeroCopyFile names itself; with BPF, the
// rings' BPF loop reads and writes the files OffloadFile names (on the
// caller's pages where both apply).
func mountFusering(mountpoint string, fs *fileSystem, mo *fuse.MountOptions, opts fusering.Options) (connection, error) {
	return fusering.Mount(mountpoint, fs, mo, opts)
}

// OffloadFile implements fusering.OffloadFiles: the BPF loop may answer
// READ and WRITE of open file fh with backing I/O itself, as Read and
// Write would, FSYNC as Fsync would (giving the mirrors the leader's times,
// then syncing every healthy replica), FLUSH, which Flush only counts, and
// COPY_FILE_RANGE between two such files as CopyFileRange would (replica by
// replica, keeping holes) while every replica is healthy.
// That is any regular file the daemon serves except O_DIRECT ones (whose
// I/O needs aligned buffers). A mirrored file is read from the replica its
// reads go to now and written to every healthy one (see OnOffloadChange).
// Copies into a file are the loop's for any caller while the file has no
// set-ID bits or capabilities to drop (CopyAnyCaller: a write by another
// than root drops them, which the loop cannot), else for root's only.
// Writes of O_APPEND opens stay with Write: the backing descriptor would
// append wherever the kernel said to write.
func (fs *fileSystem) OffloadFile(fh uint64) (bpf.File, bool) {
	h := fs.handles.get(fh)
	if h == nil || h.dir != nil || h.direct || h.passthrough {
		return bpf.File{}, false
	}
	f := bpf.File{ReadFd: h.fds[h.reader.Load()]}
	var st unix.Stat_t
	if f.ReadFd < 0 || unix.Fstat(f.ReadFd, &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
		return bpf.File{}, false
	}
	if len(h.fds) > bpf.MaxReplicas {
		return f, true
	}
	// The leader first: syncTimes gives its times to the others.
	lead := fs.replicas.leader()
	if h.fds[lead] >= 0 {
		f.SyncFds = append(f.SyncFds, h.fds[lead])
		for i, fd := range h.fds {
			if i != lead && fd >= 0 && fs.replicas.healthy(i) {
				f.SyncFds = append(f.SyncFds, fd)
			}
		}
	}
	// A copy pairs the replicas of two files: all must be there.
	for i, fd := range h.fds {
		if fd < 0 || !fs.replicas.healthy(i) {
			f.CopyFds = nil
			break
		}
		f.CopyFds = append(f.CopyFds, fd)
	}
	// Nothing for killPriv to drop for any caller: no set-ID bits
	// (S_ISGID alone counts: it drops that for a caller outside the
	// file's group), no capabilities.
	f.CopyAnyCaller = len(f.CopyFds) > 0 && st.Mode&(unix.S_ISUID|unix.S_ISGID) == 0 && !hasCapabilities(f.ReadFd)
	if h.writable && !h.appending {
		for i, fd := range h.fds {
			if fd >= 0 && fs.replicas.healthy(i) {
				f.WriteFds = append(f.WriteFds, fd)
			}
		}
		// Release copies the leader's times to the mirrors of a
		// written file; these writes bypass Write, which marks it.
		h.written.Store(true)
	}
	return f, true
}

// OnOffloadChange implements fusering.OffloadFiles: f runs when a replica
// degrades, whose descriptors OffloadFile may have given out, and when a
// file gains set-ID bits or capabilities, which CopyAnyCaller said it had
// none of.
func (fs *fileSystem) OnOffloadChange(f func()) {
	fs.replicas.onDegrade(f)
	fs.privMu.Lock()
	fs.privGained = append(fs.privGained, f)
	fs.privMu.Unlock()
}

// gainedPrivileges runs the OnOffloadChange callbacks after a chmod that
// sets S_ISUID or S_ISGID, or a setxattr of security.capability.
func (fs *fileSystem) gainedPrivileges() {
	fs.privMu.Lock()
	defer fs.privMu.Unlock()
	for _, f := range fs.privGained {
		f()
	}
}

// FsyncDone implements fusering.OffloadFiles: each outcome of the BPF
// loop's fsyncs (after it gave the mirrors the leader's times) belongs to
// the replica its descriptor is of, the fsyncs it did not run are run
// here, and Fsync's rules settle them.
func (fs *fileSystem) FsyncDone(in *fuse.FsyncIn, fds []int, errs []error) fuse.Status {
	h := fs.beginFile(&in.InHeader, in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	byReplica := slices.Repeat([]int{-1}, len(h.fds))
	outcomes := make([]error, len(h.fds))
	for j, fd := range fds {
		i := slices.Index(h.fds, fd)
		if i < 0 {
			continue
		}
		byReplica[i], outcomes[i] = fd, errs[j]
		if errs[j] == bpf.ErrNotSynced {
			fs.data.fsync(byReplica[i:i+1], in.FsyncFlags&1 != 0, outcomes[i:i+1])
		}
	}
	if err := fs.settle("fsync", byReplica, outcomes); err != nil {
		fs.stats.errors.Add(1)
		return status(err)
	}
	return fuse.OK
}

// ZeroCopyFile implements fusering.ZeroCopyFiles: the transport may serve
// READ and WRITE of open file fh with READ_FIXED/WRITE_FIXED between the
// backing file and the caller's pages, so file data never enters the
// daemon; it reads from and writes to the replicas Read and Write would.
// The file must need no set-ID or capability dropping on a write, which
// the transport does not do (as for passthrough). O_DIRECT files stay with
// the daemon, whose aligned buffers they need, and so do O_APPEND ones:
// their backing descriptor would append the kernel's writeback of a mapped
// page wherever the page belongs (see writebackHandle).
//
// The answer is the same for every request of an open, as the kernel's
// choice is: a file made set-user-ID while open goes on zero-copy, like a
// passthrough file, rather than failing its writes.
func (fs *fileSystem) ZeroCopyFile(fh uint64) (fusering.ZeroCopyIO, bool) {
	h := fs.handles.get(fh)
	if h == nil {
		return nil, false
	}
	h.zeroCopyOnce.Do(func() {
		if h.dir == nil && !h.direct && !h.appending && !h.passthrough && killPrivFree(h.fd()) {
			h.zeroCopy = &zeroCopyFile{fs, h}
		}
	})
	if h.zeroCopy == nil {
		return nil, false
	}
	return h.zeroCopy, true
}

// zeroCopyFile is an open file's backing I/O on the zero-copy path, under
// the replica rules of Read and Write. The handle keeps one, so that no
// request allocates it.
type zeroCopyFile struct {
	fs *fileSystem
	h  *handle
}

func (z *zeroCopyFile) ReadFd() int { return z.h.fds[z.fs.reader(z.h)] }

func (z *zeroCopyFile) ReadFailed(fd int, err error) bool {
	i := slices.Index(z.h.fds, fd)
	return i >= 0 && z.fs.readFailed(i, err)
}

func (z *zeroCopyFile) WriteFds() []int {
	z.h.written.Store(true)
	return z.fs.inService(z.h)
}

func (z *zeroCopyFile) WriteDone(fds []int, errs []error) error {
	return z.fs.settle("write", fds, errs)
}
