package fs

import (
	"log"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// cacheTimeout is how long the kernel may trust entries and attributes.
// Every change to the backing tree comes through this mount, which keeps
// the kernel's caches exact; the timeout only bounds how long a change made
// directly in the backing directory stays invisible.
const cacheTimeout = time.Second

// attrTimeout is how long the kernel may cache n's attributes. While the
// kernel does n's I/O itself (passthrough), writes through a shared mmap
// change the backing file's mtime and ctime without the kernel's copy of
// them knowing, so it must ask every time.
func attrTimeout(n *inode) time.Duration {
	if n.backing.Active() {
		return 0
	}
	return cacheTimeout
}

// fileSystem serves FUSE requests from a backing directory in the style of
// libfuse's passthrough_hp: every inode the kernel knows holds an O_PATH
// descriptor of its backing object and every operation is a *at syscall
// relative to such descriptors.
type fileSystem struct {
	// Requests not served here (POLL, BMAP, the lock opcodes, which the
	// kernel handles locally because they are not negotiated) get ENOSYS.
	fuse.RawFileSystem

	proc procFD
	// rootPath is the backing directory as /proc/self/fd names it.
	rootPath string
	// mountFD is the backing root opened for open_by_handle_at, which
	// refuses O_PATH descriptors.
	mountFD int
	inodes  *inodeTable
	handles *handleTable
	// creds creates objects with the caller's identity; nil when the
	// daemon is not root, in which case objects belong to the daemon.
	creds *credWorkers
	data  dataPath
	// passthrough is set when opens of eligible files go to the kernel.
	passthrough bool
	// fusering is set when requests arrive over FUSE-over-io_uring.
	fusering bool
	server   *fuse.Server // set by Init, before any other request
	stats    counters
	log      *log.Logger
}

func (fs *fileSystem) String() string { return "bpfusefs" }

func (fs *fileSystem) Init(server *fuse.Server) { fs.server = server }

func (fs *fileSystem) fillEntry(n *inode, st *unix.Stat_t, out *fuse.EntryOut) {
	out.NodeId = n.id
	out.Generation = 0
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(attrTimeout(n))
	attrFromStat(&out.Attr, st)
}

// lookup resolves one name below parent and takes a kernel reference on
// the result.
func (fs *fileSystem) lookup(parent *inode, name string, out *fuse.EntryOut) fuse.Status {
	if !validName(name) {
		return fuse.ENOENT
	}
	fd, err := openBeneath(parent.fd(), name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	if err != nil {
		return status(err)
	}
	return fs.addEntry(fd, out)
}

// addEntry answers a lookup with fd, an O_PATH descriptor it takes over.
func (fs *fileSystem) addEntry(fd int, out *fuse.EntryOut) fuse.Status {
	var st unix.Stat_t
	if err := statFD(fd, &st); err != nil {
		unix.Close(fd)
		return status(err)
	}
	fs.fillEntry(fs.inodes.add(fd, &st), &st, out)
	return fuse.OK
}

// begin counts a request and returns the inode it is about, or nil when
// the node id is unknown.
func (fs *fileSystem) begin(h *fuse.InHeader) *inode {
	fs.stats.op(h.Opcode)
	return fs.inodes.get(h.NodeId)
}

// parentOf returns the directory a request about one of its entries names,
// after checking the entry name.
func (fs *fileSystem) parentOf(h *fuse.InHeader, name string) (*inode, fuse.Status) {
	parent := fs.begin(h)
	if parent == nil {
		return nil, fuse.Status(unix.ESTALE)
	}
	if !validName(name) {
		return nil, fuse.EINVAL
	}
	return parent, fuse.OK
}

// asCaller runs fn, which creates an object, with the caller's identity and
// umask (see credWorkers).
func (fs *fileSystem) asCaller(caller fuse.Caller, umask uint32, fn func() error) error {
	if fs.creds == nil {
		return fn()
	}
	return fs.creds.run(caller, umask, true, fn)
}

func (fs *fileSystem) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	fs.stats.op(h.Opcode)
	switch name {
	case ".":
		// Export support: the kernel resolves a file handle whose
		// inode it has forgotten.
		n, st := fs.inodes.revive(h.NodeId, fs.mountFD)
		if n == nil {
			return fuse.Status(unix.ESTALE)
		}
		fs.fillEntry(n, st, out)
		return fuse.OK
	case "..":
		return fs.lookupParent(h.NodeId, out)
	}
	parent := fs.inodes.get(h.NodeId)
	if parent == nil {
		return fuse.Status(unix.ESTALE)
	}
	return fs.lookup(parent, name, out)
}

// lookupParent answers LOOKUP(dir, ".."), which export support sends to
// connect a directory from a file handle to the tree.
func (fs *fileSystem) lookupParent(id uint64, out *fuse.EntryOut) fuse.Status {
	n := fs.inodes.get(id)
	if n == nil || n.mode != unix.S_IFDIR {
		return fuse.Status(unix.ESTALE)
	}
	if id == rootID {
		// The root's parent is outside the mount; the kernel never
		// asks, and must not get it.
		return fuse.ENOENT
	}
	// Not beneath n by definition, but a directory other than the root
	// has its parent inside the backing tree.
	fd, err := unix.Openat(n.fd(), "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return status(err)
	}
	return fs.addEntry(fd, out)
}

func (fs *fileSystem) Forget(nodeid, nlookup uint64) {
	fs.stats.op(opForget)
	fs.inodes.forget(nodeid, nlookup)
}

func (fs *fileSystem) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	return fs.attr(n, out)
}

func (fs *fileSystem) attr(n *inode, out *fuse.AttrOut) fuse.Status {
	var st unix.Stat_t
	if err := statFD(n.fd(), &st); err != nil {
		return status(err)
	}
	out.SetTimeout(attrTimeout(n))
	attrFromStat(&out.Attr, &st)
	return fuse.OK
}

// Statx answers statx(2) with the backing object's own statx, so birth
// time and file attributes (append-only, immutable...) reach the caller.
func (fs *fileSystem) Statx(cancel <-chan struct{}, in *fuse.StatxIn, out *fuse.StatxOut) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	var stx unix.Statx_t
	flags := unix.AT_EMPTY_PATH | unix.AT_SYMLINK_NOFOLLOW | int(in.SxFlags&(unix.AT_STATX_FORCE_SYNC|unix.AT_STATX_DONT_SYNC))
	if err := unix.Statx(n.fd(), "", flags, int(in.SxMask), &stx); err != nil {
		return status(err)
	}
	out.SetTimeout(attrTimeout(n))
	out.Statx.FromStatx(&stx)
	return fuse.OK
}

func (fs *fileSystem) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	var h *handle
	if fh, ok := in.GetFh(); ok {
		h = fs.handles.get(fh)
	}
	if err := fs.setattr(n, h, in); err != nil {
		return status(err)
	}
	return fs.attr(n, out)
}

func (fs *fileSystem) setattr(n *inode, h *handle, in *fuse.SetAttrIn) error {
	fd := n.fd()
	if mode, ok := in.GetMode(); ok {
		if err := unix.Fchmodat(fd, "", mode, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	uid, setUID := in.GetUID()
	gid, setGID := in.GetGID()
	if setUID || setGID {
		if err := unix.Fchownat(fd, "", int(int32(uid)), int(int32(gid)), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if size, ok := in.GetSize(); ok {
		var err error
		if h != nil {
			err = unix.Ftruncate(h.fd(), int64(size))
		} else {
			err = unix.Truncate(fs.proc.path(fd), int64(size))
		}
		if err != nil {
			return err
		}
	}
	if in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0 {
		ts := [2]unix.Timespec{
			utime(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
			utime(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
		}
		if err := unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return err
		}
	}
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		return fs.killPriv(n, in.Caller)
	}
	return nil
}

// utime builds one utimensat timestamp from SETATTR's valid bits.
func utime(valid, set, now uint32, sec uint64, nsec uint32) unix.Timespec {
	switch {
	case valid&set == 0:
		return unix.Timespec{Nsec: unix.UTIME_OMIT}
	case valid&now != 0:
		return unix.Timespec{Nsec: unix.UTIME_NOW}
	default:
		return unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
	}
}

// killPriv does what a local filesystem does when a caller without
// CAP_FSETID writes or truncates a file (FUSE_HANDLE_KILLPRIV_V2 makes it
// the daemon's job): drop set-user-ID; drop set-group-ID when the group can
// execute or the caller is neither in the file's group nor root (the
// kernel's setattr_should_drop_sgid; the daemon only knows the caller's
// fsgid, and takes root for CAP_FSETID); and drop file capabilities.
//
// The kernel may hold the old mode in its attribute cache (after FALLOCATE,
// say), so a change is followed by an invalidation.
func (fs *fileSystem) killPriv(n *inode, caller fuse.Caller) error {
	fd := n.fd()
	var st unix.Stat_t
	if err := statFD(fd, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return nil
	}
	mode := st.Mode &^ unix.S_ISUID
	if mode&unix.S_IXGRP != 0 || (caller.Uid != 0 && caller.Gid != st.Gid) {
		mode &^= unix.S_ISGID
	}
	if mode != st.Mode {
		if err := unix.Fchmodat(fd, "", mode&07777, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
		// Offset -1: attributes only, not the page cache.
		fs.server.InodeNotify(n.id, -1, 0)
	}
	// Look before removing: removexattr fails with EPERM on append-only
	// and immutable files even when there is nothing to remove.
	path := fs.proc.path(fd)
	if _, err := unix.Getxattr(path, "security.capability", nil); err != nil {
		return nil
	}
	if err := unix.Removexattr(path, "security.capability"); err != nil && err != unix.ENODATA {
		return err
	}
	return nil
}

// create makes a new object with fn (as the caller) and looks it up.
func (fs *fileSystem) create(h *fuse.InHeader, name string, umask uint32, out *fuse.EntryOut, fn func(dir int) error) fuse.Status {
	parent, st := fs.parentOf(h, name)
	if !st.Ok() {
		return st
	}
	if err := fs.asCaller(h.Caller, umask, func() error { return fn(parent.fd()) }); err != nil {
		return status(err)
	}
	return fs.lookup(parent, name, out)
}

func (fs *fileSystem) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.create(&in.InHeader, name, in.Umask, out, func(dir int) error {
		return unix.Mknodat(dir, name, in.Mode, int(decodeDev(in.Rdev)))
	})
}

func (fs *fileSystem) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	return fs.create(&in.InHeader, name, in.Umask, out, func(dir int) error {
		return unix.Mkdirat(dir, name, in.Mode)
	})
}

func (fs *fileSystem) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	return fs.create(h, name, 0, out, func(dir int) error {
		return unix.Symlinkat(target, dir, name)
	})
}

func (fs *fileSystem) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	parent, st := fs.parentOf(&in.InHeader, name)
	if !st.Ok() {
		return st
	}
	old := fs.inodes.get(in.Oldnodeid)
	if old == nil {
		return fuse.Status(unix.ESTALE)
	}
	if err := unix.Linkat(old.fd(), "", parent.fd(), name, unix.AT_EMPTY_PATH); err != nil {
		return status(err)
	}
	return fs.lookup(parent, name, out)
}

func (fs *fileSystem) remove(h *fuse.InHeader, name string, flags int) fuse.Status {
	parent, st := fs.parentOf(h, name)
	if !st.Ok() {
		return st
	}
	return status(unix.Unlinkat(parent.fd(), name, flags))
}

func (fs *fileSystem) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, 0)
}

func (fs *fileSystem) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	return fs.remove(h, name, unix.AT_REMOVEDIR)
}

func (fs *fileSystem) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	fs.stats.op(in.Opcode)
	oldDir, newDir := fs.inodes.get(in.NodeId), fs.inodes.get(in.Newdir)
	if oldDir == nil || newDir == nil {
		return fuse.Status(unix.ESTALE)
	}
	if !validName(oldName) || !validName(newName) {
		return fuse.EINVAL
	}
	return status(unix.Renameat2(oldDir.fd(), oldName, newDir.fd(), newName, uint(in.Flags)))
}

func (fs *fileSystem) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	n := fs.begin(h)
	if n == nil {
		return nil, fuse.Status(unix.ESTALE)
	}
	buf := make([]byte, unix.PathMax)
	sz, err := unix.Readlinkat(n.fd(), "", buf)
	if err != nil {
		return nil, status(err)
	}
	return buf[:sz], fuse.OK
}

// Access is only asked when the kernel does not check permissions itself
// (no default_permissions), so the check must be made as the caller, without
// the daemon's override capabilities.
func (fs *fileSystem) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	n := fs.begin(&in.InHeader)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	check := func() error {
		return unix.Faccessat(n.fd(), "", in.Mask, unix.AT_EMPTY_PATH|unix.AT_EACCESS|unix.AT_SYMLINK_NOFOLLOW)
	}
	if fs.creds == nil {
		return status(check())
	}
	return status(fs.creds.run(in.Caller, 0, false, check))
}

func (fs *fileSystem) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	n := fs.begin(h)
	if n == nil {
		return fuse.Status(unix.ESTALE)
	}
	var st unix.Statfs_t
	if err := unix.Fstatfs(n.fd(), &st); err != nil {
		return status(err)
	}
	*out = fuse.StatfsOut{
		Blocks:  st.Blocks,
		Bfree:   st.Bfree,
		Bavail:  st.Bavail,
		Files:   st.Files,
		Ffree:   st.Ffree,
		Bsize:   uint32(st.Bsize),
		NameLen: uint32(st.Namelen),
		Frsize:  uint32(st.Frsize),
	}
	return fuse.OK
}
