package fs

import (
	"path/filepath"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Extended attributes of most objects are reached through their
// /proc/self/fd link, which getxattr(2) and friends follow to the object
// itself. A symlink cannot be reached that way (following the link lands on
// its target) and the *xattrat syscalls refuse O_PATH descriptors, so a
// symlink is named by its parent directory and name: the path the kernel
// reports for its descriptor (or, for one opened by a file handle without
// a path, the one findPath finds), re-resolved beneath the backing root and
// checked to still be the same object.

// xattrOp runs the path-based form of an xattr call for a non-symlink, or
// the *at form for a symlink, on replica i of n.
func (fs *fileSystem) xattrOp(n *inode, i int, byPath func(path string) error, at func(dir int, name string) error) error {
	if !n.isSymlink() {
		return byPath(fs.proc.path(n.replicas[i]))
	}
	dir, name, err := fs.symlinkParent(n, i)
	if err != nil {
		return err
	}
	defer unix.Close(dir)
	err = at(dir, name)
	if err == unix.ENOSYS {
		return unix.EOPNOTSUPP // kernel older than 6.13
	}
	return err
}

// xattrSet runs an xattr change on every replica of n.
func (fs *fileSystem) xattrSet(op string, n *inode, byPath func(path string) error, at func(dir int, name string) error) error {
	return fs.replicas.apply(op, n.replicas, func(i, _ int) error { return fs.xattrOp(n, i, byPath, at) })
}

// symlinkParent opens the directory holding replica i of symlink n and
// returns its name there.
func (fs *fileSystem) symlinkParent(n *inode, i int) (int, string, error) {
	fd, r := n.replicas[i], fs.replicas.r[i]
	var self unix.Stat_t
	if err := statFD(fd, &self); err != nil {
		return -1, "", err
	}
	rel, err := r.pathOf(fd)
	if err == errNoPath { // opened by its handle
		rel, err = r.findPath(fd, nil)
	}
	if err != nil {
		return -1, "", err
	}
	dirPath, name := filepath.Split(rel)
	if dirPath == "" {
		dirPath = "."
	}
	dir, err := openBeneath(r.rootFD, dirPath, unix.O_PATH|unix.O_DIRECTORY, 0)
	if err != nil {
		return -1, "", err
	}
	var st unix.Stat_t
	if err := unix.Fstatat(dir, name, &st, unix.AT_SYMLINK_NOFOLLOW); err != nil || st.Dev != self.Dev || st.Ino != self.Ino {
		unix.Close(dir)
		return -1, "", unix.ENOENT
	}
	return dir, name, nil
}

func (fs *fileSystem) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	n := fs.begin(h)
	if n == nil {
		return 0, fuse.Status(unix.ESTALE)
	}
	var sz int
	err := fs.xattrOp(n, fs.replicas.leader(),
		func(path string) (err error) { sz, err = unix.Getxattr(path, attr, dest); return err },
		func(dir int, name string) (err error) { sz, err = getxattrat(dir, name, attr, dest); return err })
	return uint32(sz), status(err)
}

func (fs *fileSystem) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	n := fs.begin(h)
	if n == nil {
		return 0, fuse.Status(unix.ESTALE)
	}
	var sz int
	err := fs.xattrOp(n, fs.replicas.leader(),
		func(path string) (err error) { sz, err = unix.Listxattr(path, dest); return err },
		func(dir int, name string) (err error) { sz, err = listxattrat(dir, name, dest); return err })
	return uint32(sz), status(err)
}

func (fs *fileSystem) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	flags := int(in.Flags)
	err := fs.xattrSet("setxattr", n,
		func(path string) error { return unix.Setxattr(path, attr, data, flags) },
		func(dir int, name string) error { return setxattrat(dir, name, attr, data, flags) })
	if err == nil && in.SetXAttrFlags&fuse.SETXATTR_ACL_KILL_SGID != 0 {
		err = fs.dropSetgid(n)
	}
	if err == nil && attr == "security.capability" {
		fs.gainedPrivileges()
	}
	return status(err)
}

// dropSetgid clears S_ISGID after the kernel found that the caller who set
// an access ACL is not in the file's group (FUSE_SETXATTR_ACL_KILL_SGID):
// the daemon set it as root, for whom the backing filesystem keeps the bit.
func (fs *fileSystem) dropSetgid(n *inode) error {
	var st unix.Stat_t
	if err := statFD(n.fd(), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_ISGID == 0 {
		return nil
	}
	err := fs.replicas.apply("chmod", n.replicas, func(_, fd int) error {
		return unix.Fchmodat(fd, "", st.Mode&07777&^unix.S_ISGID, unix.AT_EMPTY_PATH)
	})
	if err != nil {
		return err
	}
	fs.server.InodeNotify(n.id, -1, 0)
	return nil
}

func (fs *fileSystem) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	n := fs.begin(h)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	return status(fs.xattrSet("removexattr", n,
		func(path string) error { return unix.Removexattr(path, attr) },
		func(dir int, name string) error { return removexattrat(dir, name, attr) }))
}
