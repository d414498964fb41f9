// Package inodeflags reads and sets the inode flags chattr(1) shows
// (FS_IOC_GETFLAGS, FS_IOC_SETFLAGS), for keeping replicas of a tree alike.
//
// Two of them refuse what a replica's keeper must still do: an immutable
// file takes no new times, owner, mode or xattrs and cannot be renamed over
// or removed, and an append-only one takes no explicit times either. The
// replica has the flag because its primary has it, and the change makes it
// agree with the primary, so the keeper, holding CAP_LINUX_IMMUTABLE, lifts
// the flags for the change and puts them back (Unprotected).
package inodeflags

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Flags from include/uapi/linux/fs.h.
const (
	Immutable = 0x00000010 // FS_IMMUTABLE_FL
	Append    = 0x00000020 // FS_APPEND_FL
	NoDump    = 0x00000040 // FS_NODUMP_FL
	NoAtime   = 0x00000080 // FS_NOATIME_FL

	// Protected are the flags that refuse a replica's keeper.
	Protected = Immutable | Append
	// Portable are the flags worth copying between replicas: those with
	// a meaning of their own that ext4, XFS, Btrfs and tmpfs all keep.
	Portable = Protected | NoDump | NoAtime
)

// The ioctl commands. Their argument is an int (the kernel's fileattr code
// reads 32 bits), whatever the _IOR/_IOW size in their numbers says.
const (
	GetCmd = 0x80086601 // FS_IOC_GETFLAGS
	SetCmd = 0x40086602 // FS_IOC_SETFLAGS
)

// Letters names the portable flags among flags as lsattr(1) does (i, a,
// d, A), "-" for none.
func Letters(flags uint32) string {
	var b []byte
	for _, f := range []struct {
		flag   uint32
		letter byte
	}{{Immutable, 'i'}, {Append, 'a'}, {NoDump, 'd'}, {NoAtime, 'A'}} {
		if flags&f.flag != 0 {
			b = append(b, f.letter)
		}
	}
	if b == nil {
		return "-"
	}
	return string(b)
}

// Get returns the flags of the file or directory open as fd. A filesystem
// without flags (ENOTTY, EOPNOTSUPP, EINVAL) has none.
func Get(fd int) (uint32, error) {
	var flags uint32
	err := ioctl(fd, GetCmd, &flags)
	if Unsupported(err) {
		return 0, nil
	}
	return flags, err
}

// Set sets the flags of the file or directory open as fd.
func Set(fd int, flags uint32) error { return ioctl(fd, SetCmd, &flags) }

// Unsupported says whether err means the filesystem keeps no flags, or not
// the ones asked for.
func Unsupported(err error) bool {
	return err == unix.ENOTTY || err == unix.EOPNOTSUPP || err == unix.EINVAL
}

func ioctl(fd int, cmd uintptr, flags *uint32) error {
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), cmd, uintptr(unsafe.Pointer(flags)))
	if errno != 0 {
		return errno
	}
	return nil
}

// Lift clears the protected flags of the file or directory open as fd and
// returns the flags it had, to put back.
func Lift(fd int) (uint32, error) {
	flags, err := Get(fd)
	if err != nil || flags&Protected == 0 {
		return flags, err
	}
	return flags, Set(fd, flags&^Protected)
}

// Unprotected runs change, and when it fails with EPERM on an object whose
// open returns a descriptor with protected flags, runs it again with those
// flags lifted and puts them back afterwards. open is called only then, so
// that the common case costs nothing; it should open regular files and
// directories only (read-only, O_NONBLOCK, not following symlinks), and
// may return unix.ENOTSUP for anything else. The error is change's, or
// the failure to put the flags back.
func Unprotected(open func() (int, error), change func() error) error {
	err := change()
	if err != unix.EPERM {
		return err
	}
	fd, oerr := open()
	if oerr != nil {
		return err
	}
	defer unix.Close(fd)
	flags, lerr := Lift(fd)
	if lerr != nil || flags&Protected == 0 {
		return err
	}
	err = change()
	if serr := Set(fd, flags); err == nil {
		err = serr
	}
	return err
}
