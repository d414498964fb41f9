package fs

import (
	"unsafe"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Ioctl commands the daemon forwards, from include/uapi/linux/fs.h.
const (
	fsIocGetFlags   = inodeflags.GetCmd
	fsIocSetFlags   = inodeflags.SetCmd
	fsIocFSGetXattr = 0x801c581f // FS_IOC_FSGETXATTR
	fsIocFSSetXattr = 0x401c5820 // FS_IOC_FSSETXATTR
)

// fileattrSize is the size of the argument the kernel's fileattr code
// passes with each forwarded command: an int for the flags, struct fsxattr
// for the others.
var fileattrSize = map[uint32]uint32{
	fsIocGetFlags:   4,
	fsIocSetFlags:   4,
	fsIocFSGetXattr: 28,
	fsIocFSSetXattr: 28,
}

// Ioctl forwards only the file attribute commands (chattr/lsattr, project
// ids and xflags) and answers everything else with ENOTTY. The daemon runs
// as root, so forwarding an arbitrary command would hand any caller root's
// ioctls on the backing filesystem (FS_IOC_SHUTDOWN, XFS_IOC_GOINGDOWN...).
//
// The four forwarded commands are safe because the VFS intercepts them in
// do_vfs_ioctl: a FUSE_IOCTL carrying one of them comes from the kernel's
// fileattr code, after it checked that the caller owns the file and holds
// CAP_LINUX_IMMUTABLE for the immutable and append-only flags. Their 32-bit
// twins (FS_IOC32_*) are not intercepted on 64-bit kernels and stay refused.
//
// FS_IOC_FIEMAP is intercepted too, but the VFS answers it itself and FUSE
// has no fiemap operation, so it never reaches the daemon.
func (fs *fileSystem) Ioctl(cancel <-chan struct{}, in *fuse.IoctlIn, inbuf []byte, out *fuse.IoctlOut, outbuf []byte) fuse.Status {
	fs.stats.op(in.Opcode)
	size, ok := fileattrSize[in.Cmd]
	if !ok {
		return fuse.Status(unix.ENOTTY)
	}
	h := fs.handles.get(in.Fh)
	if h == nil {
		return fuse.EBADF
	}
	var arg [28]byte
	switch in.Cmd {
	case fsIocSetFlags, fsIocFSSetXattr:
		if uint32(len(inbuf)) < size {
			return fuse.EINVAL
		}
		copy(arg[:], inbuf[:size])
	default:
		if uint32(len(outbuf)) < size {
			return fuse.EINVAL
		}
	}
	ioctl := func(_, fd int) error {
		if _, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(in.Cmd), uintptr(unsafe.Pointer(&arg[0]))); errno != 0 {
			return errno
		}
		return nil
	}
	set := in.Cmd == fsIocSetFlags || in.Cmd == fsIocFSSetXattr
	var err error
	switch {
	case set && h.dir != nil:
		err = fs.applyDir("ioctl", h, ioctl)
	case set:
		err = fs.replicas.apply("ioctl", h.fds, ioctl)
	default:
		err = ioctl(0, h.fd())
	}
	if err != nil {
		return status(err)
	}
	if set {
		// Setting file attributes changes the ctime behind the kernel's
		// attribute cache (generic/277); offset -1: attributes only.
		fs.server.InodeNotify(h.node.id, -1, 0)
	}
	copy(outbuf, arg[:size])
	out.Result = 0
	return fuse.OK
}
