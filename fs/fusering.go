package fs

import (
	"log"

	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// mountFusering serves the mount over FUSE-over-io_uring: one ring per
// CPU, requests as completions, replies committed with the next fetch.
// The file system is the same; only the transport differs. With zeroCopy,
// where the kernel has zero-copy queues (Linux 7.3+, root), the transport
// reads and writes the files ZeroCopyFile names itself.
func mountFusering(mountpoint string, fs *fileSystem, mo *fuse.MountOptions, zeroCopy bool, logger *log.Logger) (connection, error) {
	return fusering.Mount(mountpoint, fs, mo, fusering.Options{Logger: logger, ZeroCopy: zeroCopy})
}

// ZeroCopyFile implements fusering.ZeroCopyFiles: the transport may serve
// READ and WRITE of open file fh with READ_FIXED/WRITE_FIXED between the
// backing file and the caller's pages, so file data never enters the
// daemon. The file must qualify as for passthrough (a write needs no
// set-ID or capability dropping, which the transport does not do) and
// have one replica; O_DIRECT files stay with the daemon, whose aligned
// buffers they need.
func (fs *fileSystem) ZeroCopyFile(fh uint64) (int, bool) {
	h := fs.handles.get(fh)
	if h == nil || h.dir != nil || h.direct || h.passthrough || fs.replicas.mirrored() {
		return 0, false
	}
	fd := h.fd()
	return fd, fs.passthroughEligible(h.node, fd)
}
