package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"golang.org/x/sys/unix"
)

// chunkSize is the unit of file content compared or copied at a time:
// large enough that a syscall moves a lot, small enough to stay in cache.
const chunkSize = 1 << 20

// A fileID identifies an inode, for hard-link structure.
type fileID struct{ dev, ino uint64 }

func idOf(st *unix.Stat_t) fileID { return fileID{st.Dev, st.Ino} }

func isDir(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
func isLink(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFLNK }
func isReg(st *unix.Stat_t) bool  { return st.Mode&unix.S_IFMT == unix.S_IFREG }
func isDev(st *unix.Stat_t) bool {
	t := st.Mode & unix.S_IFMT
	return t == unix.S_IFCHR || t == unix.S_IFBLK
}

// typeName names a file type as differences print it.
func typeName(st *unix.Stat_t) string {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR:
		return "char device"
	case unix.S_IFBLK:
		return "block device"
	}
	return fmt.Sprintf("type %#o", st.Mode&unix.S_IFMT)
}

func devName(rdev uint64) string {
	return fmt.Sprintf("%d:%d", unix.Major(rdev), unix.Minor(rdev))
}

// join is filepath.Join for relative paths that starts from "." without
// keeping it.
func join(rel, name string) string {
	if rel == "." {
		return name
	}
	return rel + "/" + name
}

func lstatAt(dirfd int, name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := ignoringEINTR(func() error { return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW) })
	return st, err
}

// An entryStat is what a comparison knows of an entry without opening it.
type entryStat struct {
	unix.Stat_t
	// flags are the inode flags statx reports: immutable, append-only
	// and nodump (statx gives them the values of the FS_*_FL flags),
	// those the filesystem does not support clear.
	flags uint32
}

// statFlags are the inode flags statx reports.
const statFlags = inodeflags.Immutable | inodeflags.Append | inodeflags.NoDump

// statAt is lstatAt that also reads the entry's flags, in the same
// system call. An empty name stats dirfd itself.
func statAt(dirfd int, name string) (entryStat, error) {
	flags := unix.AT_SYMLINK_NOFOLLOW | unix.AT_STATX_SYNC_AS_STAT
	if name == "" {
		flags |= unix.AT_EMPTY_PATH
	}
	var stx unix.Statx_t
	if err := ignoringEINTR(func() error { return unix.Statx(dirfd, name, flags, unix.STATX_BASIC_STATS, &stx) }); err != nil {
		return entryStat{}, err
	}
	e := entryStat{
		Stat_t: unix.Stat_t{
			Dev:  unix.Mkdev(stx.Dev_major, stx.Dev_minor),
			Ino:  stx.Ino,
			Mode: uint32(stx.Mode),
			Uid:  stx.Uid,
			Gid:  stx.Gid,
			Rdev: unix.Mkdev(stx.Rdev_major, stx.Rdev_minor),
			Size: int64(stx.Size),
			Mtim: unix.NsecToTimespec(stx.Mtime.Sec*1e9 + int64(stx.Mtime.Nsec)),
		},
		flags: uint32(stx.Attributes&stx.Attributes_mask) & statFlags,
	}
	setNlink(&e.Nlink, stx.Nlink)
	return e, nil
}

// setNlink stores a link count in a Stat_t's Nlink, whose width depends
// on the architecture.
func setNlink[T ~uint32 | ~uint64](nlink *T, n uint32) { *nlink = T(n) }

func ignoringEINTR(f func() error) error {
	for {
		if err := f(); err != unix.EINTR {
			return err
		}
	}
}

// openRoot opens a replica root; the root itself may be reached through
// symlinks (the user named it), nothing below it is.
func openRoot(dir string) (int, error) {
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("%s: %w", dir, err)
	}
	return fd, nil
}

// openDir opens the directory name below dirfd without following a symlink.
func openDir(dirfd int, name string) (int, error) {
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		return err
	})
	return fd, err
}

// openFile opens the regular file name below dirfd for reading. O_NOATIME
// keeps a verify or repair from touching the files it reads where the
// caller may ask for that; O_NONBLOCK keeps a fifo swapped in behind our
// back from blocking the open.
func openFile(dirfd int, name string) (int, error) {
	flags := unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK
	var fd int
	err := ignoringEINTR(func() (err error) {
		fd, err = unix.Openat(dirfd, name, flags|unix.O_NOATIME, 0)
		if err == unix.EPERM { // O_NOATIME needs ownership or CAP_FOWNER
			fd, err = unix.Openat(dirfd, name, flags, 0)
		}
		return err
	})
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil || !isReg(&st) {
		unix.Close(fd)
		if err == nil {
			err = fmt.Errorf("%s: no longer a regular file", name)
		}
		return -1, err
	}
	return fd, nil
}

// readNames lists a directory, sorted, without "." and "..", from its
// start however often fd was read before.
func readNames(fd int) ([]string, error) {
	if _, err := unix.Seek(fd, 0, io.SeekStart); err != nil {
		return nil, err
	}
	buf := make([]byte, 64<<10)
	var names []string
	for {
		n, err := unix.Getdents(fd, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if n <= 0 {
			break
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
	slices.Sort(names)
	return names, nil
}

func has(sorted []string, name string) bool {
	_, ok := slices.BinarySearch(sorted, name)
	return ok
}

func readlinkAt(dirfd int, name string) (string, error) {
	for size := 256; ; size *= 2 {
		buf := make([]byte, size)
		n, err := unix.Readlinkat(dirfd, name, buf)
		if err != nil {
			return "", err
		}
		if n < size {
			return string(buf[:n]), nil
		}
	}
}

// procPath names the entry name below dirfd for the xattr calls, which
// have no *at form before Linux 6.13: the magic link resolves the
// directory by descriptor, and the l* calls do not follow name itself.
func procPath(dirfd int, name string) string {
	return "/proc/self/fd/" + strconv.Itoa(dirfd) + "/" + name
}

// xattrs reads the extended attributes of an entry that keep accepts
// (nil: every one, ACLs included as system.posix_acl_*). A filesystem
// without xattrs has none.
func xattrs(dirfd int, name string, keep func(string) bool) (map[string][]byte, error) {
	list, err := sizedRead(func(b []byte) (int, error) { return listxattrAt(dirfd, name, b) })
	if errors.Is(err, unix.ENOTSUP) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listxattr: %w", err)
	}
	var attrs map[string][]byte // most entries have none to keep
	var path string
	for len(list) > 0 {
		a, rest, _ := bytes.Cut(list, []byte{0})
		attr := string(a)
		list = rest
		if attr == "" || keep != nil && !keep(attr) {
			continue
		}
		if path == "" {
			path = procPath(dirfd, name)
		}
		val, err := sizedRead(func(b []byte) (int, error) { return unix.Lgetxattr(path, attr, b) })
		if errors.Is(err, unix.ENODATA) { // removed since the listing
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("getxattr %s: %w", attr, err)
		}
		if attrs == nil {
			attrs = make(map[string][]byte)
		}
		attrs[attr] = val
	}
	return attrs, nil
}

// noListxattrat is set once listxattrat(2) turned out to be missing.
var noListxattrat atomic.Bool

// listxattrAt lists the xattrs of the entry name below dirfd without
// following it: with listxattrat(2) where the kernel has it (Linux 6.13),
// at half the cost of llistxattr(2) of its procPath, whose lookup through
// /proc is most of the mount-time check's listing.
func listxattrAt(dirfd int, name string, buf []byte) (int, error) {
	if !noListxattrat.Load() {
		n, err := listxattrat(dirfd, name, buf)
		// EPERM: a seccomp filter that does not know the call.
		if err != unix.ENOSYS && err != unix.EPERM {
			return n, err
		}
		noListxattrat.Store(true)
	}
	return unix.Llistxattr(procPath(dirfd, name), buf)
}

func listxattrat(dirfd int, name string, buf []byte) (int, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var list unsafe.Pointer
	if len(buf) > 0 {
		list = unsafe.Pointer(&buf[0])
	}
	n, _, errno := unix.Syscall6(unix.SYS_LISTXATTRAT, uintptr(dirfd), uintptr(unsafe.Pointer(p)),
		unix.AT_SYMLINK_NOFOLLOW, uintptr(list), uintptr(len(buf)), 0)
	if errno != 0 {
		return 0, errno
	}
	return int(n), nil
}

// sizedRead calls an xattr getter first for the size, then with a buffer,
// again if the value grew in between (ERANGE).
func sizedRead(get func([]byte) (int, error)) ([]byte, error) {
	for {
		n, err := get(nil)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			return []byte{}, nil
		}
		buf := make([]byte, n)
		n, err = get(buf)
		if err == unix.ERANGE {
			continue
		}
		if err != nil {
			return nil, err
		}
		return buf[:n], nil
	}
}

// sortedKeys returns the union of the keys of maps, sorted.
func sortedKeys(ms ...map[string][]byte) []string {
	var keys []string
	for _, m := range ms {
		for k := range m {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// preadFull reads len(buf) bytes at off, fewer only at end of file.
func preadFull(fd int, buf []byte, off int64) (int, error) {
	done := 0
	for done < len(buf) {
		n, err := unix.Pread(fd, buf[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			break
		}
		done += n
	}
	return done, nil
}

// nextData returns where the data at or after off begins in fd: size when
// only a hole follows, off when the filesystem cannot tell (no SEEK_DATA).
func nextData(fd int, off, size int64) int64 {
	data, err := unix.Seek(fd, off, unix.SEEK_DATA)
	switch {
	case err == unix.ENXIO:
		return size
	case err != nil:
		return off
	}
	return data
}

// nextHole returns where the data at off ends in fd.
func nextHole(fd int, off, size int64) int64 {
	hole, err := unix.Seek(fd, off, unix.SEEK_HOLE)
	if err != nil || hole > size {
		return size
	}
	return hole
}
