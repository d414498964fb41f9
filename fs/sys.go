package fs

import (
	"strconv"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// resolveBeneath keeps every name resolution inside the directory it starts
// from: no "..", no absolute symlinks, no symlinks at all and no /proc magic
// links. Names from the kernel are single components, so this only matters
// when the backing tree is changed behind the mount's back, which is exactly
// when it must hold.
const resolveBeneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openBeneath opens name in dir with openat2 and resolveBeneath.
func openBeneath(dir int, name string, flags int, mode uint32) (int, error) {
	for {
		fd, err := unix.Openat2(dir, name, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_CLOEXEC),
			Mode:    uint64(mode),
			Resolve: resolveBeneath,
		})
		if err != unix.EINTR && err != unix.EAGAIN {
			return fd, err
		}
	}
}

// validName rejects names that are not a single path component. The kernel
// never sends them; a buggy or hostile peer on /dev/fuse might.
func validName(name string) bool {
	if name == "" || name == "." || name == ".." || len(name) > 255 {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] == '/' {
			return false
		}
	}
	return true
}

// procFD is the /proc/self/fd directory, the only way to turn an O_PATH
// descriptor into an open file without going back through a path that may
// have been renamed meanwhile.
type procFD int

func (p procFD) reopen(fd int, flags int) (int, error) {
	for {
		nfd, err := unix.Openat(int(p), strconv.Itoa(fd), flags|unix.O_CLOEXEC, 0)
		if err != unix.EINTR {
			return nfd, err
		}
	}
}

// path names fd below /proc/self/fd for the few calls that take no
// descriptor (truncate) or that fall back on older kernels (xattrs).
func (p procFD) path(fd int) string {
	return "/proc/self/fd/" + strconv.Itoa(fd)
}

func statFD(fd int, st *unix.Stat_t) error {
	return unix.Fstatat(fd, "", st, unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
}

// encodeDev and decodeDev convert between the 64-bit dev_t of stat(2)
// and the 32-bit "new" encoding that struct fuse_attr and fuse_mknod_in
// carry (new_encode_dev in the kernel).
func encodeDev(dev uint64) uint32 {
	major, minor := unix.Major(dev), unix.Minor(dev)
	return (minor & 0xff) | (major&0xfff)<<8 | (minor&^0xff)<<12
}

func decodeDev(dev uint32) uint64 {
	major := (dev & 0xfff00) >> 8
	minor := (dev & 0xff) | (dev>>12)&0xfff00
	return unix.Mkdev(major, minor)
}

// attrFromStat fills a from st, the stat of one replica's copy of an object
// the kernel knows as st_ino ino (see inode.ino).
func attrFromStat(a *fuse.Attr, ino uint64, st *unix.Stat_t) {
	a.Ino = ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime = uint64(st.Atim.Sec)
	a.Atimensec = uint32(st.Atim.Nsec)
	a.Mtime = uint64(st.Mtim.Sec)
	a.Mtimensec = uint32(st.Mtim.Nsec)
	a.Ctime = uint64(st.Ctim.Sec)
	a.Ctimensec = uint32(st.Ctim.Nsec)
	a.Mode = st.Mode
	a.Nlink = uint32(st.Nlink)
	a.Uid = st.Uid
	a.Gid = st.Gid
	a.Rdev = encodeDev(st.Rdev)
	a.Blksize = uint32(st.Blksize)
}

// status converts an error from a backing syscall into a FUSE reply code.
func status(err error) fuse.Status {
	if err == nil {
		return fuse.OK
	}
	return fuse.ToStatus(err)
}

// The *xattrat family (Linux 6.13) names an object by directory and name;
// it refuses O_PATH descriptors with AT_EMPTY_PATH, so it only serves
// symlinks here (see xattrTarget).
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

func bytesPtr(b []byte) uintptr {
	if len(b) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&b[0]))
}

func getxattrat(dir int, path, name string, dest []byte) (int, error) {
	cpath, cname, err := cstrings(path, name)
	if err != nil {
		return 0, err
	}
	args := xattrArgs{value: uint64(bytesPtr(dest)), size: uint32(len(dest))}
	n, _, errno := unix.Syscall6(unix.SYS_GETXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(cpath)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(cname)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func setxattrat(dir int, path, name string, data []byte, flags int) error {
	cpath, cname, err := cstrings(path, name)
	if err != nil {
		return err
	}
	args := xattrArgs{value: uint64(bytesPtr(data)), size: uint32(len(data)), flags: uint32(flags)}
	_, _, errno := unix.Syscall6(unix.SYS_SETXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(cpath)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(cname)), uintptr(unsafe.Pointer(&args)), unsafe.Sizeof(args))
	if errno != 0 {
		return errno
	}
	return nil
}

func listxattrat(dir int, path string, dest []byte) (int, error) {
	cpath, err := unix.BytePtrFromString(path)
	if err != nil {
		return 0, err
	}
	n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(cpath)),
		unix.AT_SYMLINK_NOFOLLOW, bytesPtr(dest), uintptr(len(dest)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

func removexattrat(dir int, path, name string) error {
	cpath, cname, err := cstrings(path, name)
	if err != nil {
		return err
	}
	_, _, errno := unix.Syscall6(unix.SYS_REMOVEXATTRAT, uintptr(dir), uintptr(unsafe.Pointer(cpath)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(unsafe.Pointer(cname)), 0, 0)
	if errno != 0 {
		return errno
	}
	return nil
}

func cstrings(a, b string) (*byte, *byte, error) {
	ca, err := unix.BytePtrFromString(a)
	if err != nil {
		return nil, nil, err
	}
	cb, err := unix.BytePtrFromString(b)
	return ca, cb, err
}
