package fs

import (
	"log"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
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

	proc     procFD
	replicas *replicaSet
	inodes   *inodeTable
	handles  *handleTable
	// creds creates objects with the caller's identity; nil when the
	// daemon is not root, in which case objects belong to the daemon.
	creds *credWorkers
	data  dataPath
	// asyncWrites is set when every replica's filesystem does buffered
	// writes without blocking (see writePath).
	asyncWrites bool
	pipes       pipePool
	// readTurn spreads open files over the replicas (pickReader).
	readTurn atomic.Uint32
	// passthrough is set when opens of eligible files go to the kernel.
	passthrough bool
	// fusering is set when requests arrive over FUSE-over-io_uring,
	// bpf when the rings run the BPF loop.
	fusering, bpf bool
	// privGained are called when an inode gains set-ID bits or file
	// capabilities through the mount (OnOffloadChange).
	privMu     sync.Mutex
	privGained []func()
	server     *fuse.Server // set by Init, before any other request
	stats      counters
	log        *log.Logger
}

func (fs *fileSystem) String() string { return "bpfusefs" }

func (fs *fileSystem) Init(server *fuse.Server) {
	fs.server = server
	fs.inodes.startPruning(newPruner(server.PruneNotify, fs.log))
}

func (fs *fileSystem) fillEntry(n *inode, st *unix.Stat_t, out *fuse.EntryOut) {
	out.NodeId = n.id
	out.Generation = 0
	out.SetEntryTimeout(cacheTimeout)
	out.SetAttrTimeout(attrTimeout(n))
	attrFromStat(&out.Attr, n.ino, st)
}

// lookup resolves one name below parent and takes a kernel reference on
// the result.
func (fs *fileSystem) lookup(parent *inode, name string, out *fuse.EntryOut) fuse.Status {
	if !validName(name) {
		return fuse.ENOENT
	}
	fds, err := fs.openEach("lookup", parent.replicas, func(dir int) (int, error) {
		return openBeneath(dir, name, unix.O_PATH|unix.O_NOFOLLOW, 0)
	})
	if err != nil {
		return status(err)
	}
	return fs.addEntry(fds, out)
}

// openEach opens one object on every replica as one mutation (see
// replicaSet.apply), open getting the replica's descriptor from fds. The
// result holds -1 for replicas where nothing was opened.
func (fs *fileSystem) openEach(op string, fds []int, open func(fd int) (int, error)) ([]int, error) {
	opened := make([]int, len(fds))
	for i := range opened {
		opened[i] = -1
	}
	err := fs.replicas.apply(op, fds, func(i, fd int) error {
		nfd, err := open(fd)
		if err == nil {
			opened[i] = nfd
		}
		return err
	})
	if err != nil {
		closeFDs(opened)
		return nil, err
	}
	return opened, nil
}

// addEntry answers a lookup with fds, the O_PATH descriptors of the object
// on each replica, which it takes over.
func (fs *fileSystem) addEntry(fds []int, out *fuse.EntryOut) fuse.Status {
	var st unix.Stat_t
	if err := statFD(fds[fs.replicas.leader()], &st); err != nil {
		closeFDs(fds)
		return status(err)
	}
	fs.fillEntry(fs.inodes.add(fds, &st), &st, out)
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
		n, st := fs.inodes.revive(h.NodeId, cancel)
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
	fds, err := fs.openEach("lookup ..", n.replicas, func(dir int) (int, error) {
		return unix.Openat(dir, "..", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
	if err != nil {
		return status(err)
	}
	return fs.addEntry(fds, out)
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
	attrFromStat(&out.Attr, n.ino, &st)
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
	out.Statx.Ino = n.ino
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
	if mode, ok := in.GetMode(); ok {
		err := fs.replicas.apply("chmod", n.replicas, func(_, fd int) error {
			return unix.Fchmodat(fd, "", mode, unix.AT_EMPTY_PATH)
		})
		if err != nil {
			return err
		}
		if mode&(unix.S_ISUID|unix.S_ISGID) != 0 {
			fs.gainedPrivileges()
		}
	}
	uid, setUID := in.GetUID()
	gid, setGID := in.GetGID()
	if setUID || setGID {
		err := fs.replicas.apply("chown", n.replicas, func(_, fd int) error {
			return unix.Fchownat(fd, "", int(int32(uid)), int(int32(gid)), unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			return err
		}
	}
	size, setSize := in.GetSize()
	if setSize {
		var err error
		if h != nil {
			err = fs.replicas.apply("truncate", h.fds, func(_, fd int) error { return unix.Ftruncate(fd, int64(size)) })
		} else {
			err = fs.replicas.apply("truncate", n.replicas, func(_, fd int) error { return unix.Truncate(fs.proc.path(fd), int64(size)) })
		}
		if err != nil {
			return err
		}
	}
	setTimes := in.Valid&(fuse.FATTR_ATIME|fuse.FATTR_MTIME) != 0
	if setTimes {
		ts := [2]unix.Timespec{
			utime(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec),
			utime(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec),
		}
		err := fs.replicas.apply("utimensat", n.replicas, func(_, fd int) error {
			return unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			return err
		}
	}
	if setSize || setTimes {
		fs.syncTimes(n)
	}
	if in.Valid&fuse.FATTR_KILL_SUIDGID != 0 {
		return fs.killPriv(n, in.Caller)
	}
	return nil
}

// syncTimes gives n's mirrors the leader's access and modification times.
// Each replica stamps its own clock reading on a change, so after writes,
// truncates and "now" updates the mirrors are a few microseconds off; the
// mount-time agreement check compares modification times, so they are
// made exact whenever a file is released, synced or has its size or times
// set.
func (fs *fileSystem) syncTimes(n *inode) {
	if !fs.replicas.mirrored() {
		return
	}
	n.syncingTimes.Lock()
	defer n.syncingTimes.Unlock()
	lead := fs.replicas.leader()
	var st unix.Stat_t
	if err := statFD(n.replicas[lead], &st); err != nil {
		return // the next mutation finds out what is wrong
	}
	ts := [2]unix.Timespec{st.Atim, st.Mtim}
	for i, fd := range n.replicas {
		if i == lead || fd < 0 || !fs.replicas.healthy(i) {
			continue
		}
		// A file made immutable or append-only since it was written
		// takes no times: the mirror's flags are lifted for them.
		err := inodeflags.Unprotected(func() (int, error) {
			if n.mode != unix.S_IFREG && n.mode != unix.S_IFDIR {
				return -1, unix.ENOTSUP
			}
			return fs.proc.reopen(fd, unix.O_RDONLY|unix.O_NONBLOCK)
		}, func() error {
			return unix.UtimesNanoAt(fd, "", ts[:], unix.AT_EMPTY_PATH|unix.AT_SYMLINK_NOFOLLOW)
		})
		if err != nil {
			fs.replicas.degrade(i, "utimensat", err)
		}
	}
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
	var st unix.Stat_t
	if err := statFD(n.fd(), &st); err != nil {
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
		err := fs.replicas.apply("chmod", n.replicas, func(_, fd int) error {
			return unix.Fchmodat(fd, "", mode&07777, unix.AT_EMPTY_PATH)
		})
		if err != nil {
			return err
		}
		// Offset -1: attributes only, not the page cache.
		fs.server.InodeNotify(n.id, -1, 0)
	}
	// Look before removing: removexattr fails with EPERM on append-only
	// and immutable files even when there is nothing to remove.
	if _, err := unix.Getxattr(fs.proc.path(n.fd()), "security.capability", nil); err != nil {
		return nil
	}
	return fs.replicas.apply("removexattr", n.replicas, func(_, fd int) error {
		if err := unix.Removexattr(fs.proc.path(fd), "security.capability"); err != nil && err != unix.ENODATA {
			return err
		}
		return nil
	})
}

// create makes a new object with fn (as the caller) and looks it up.
func (fs *fileSystem) create(h *fuse.InHeader, name string, umask uint32, out *fuse.EntryOut, fn func(dir int) error) fuse.Status {
	parent, st := fs.parentOf(h, name)
	if !st.Ok() {
		return st
	}
	err := fs.asCaller(h.Caller, umask, func() error {
		return fs.replicas.apply("create "+name, parent.replicas, func(_, dir int) error { return fn(dir) })
	})
	if err != nil {
		return status(err)
	}
	st = fs.lookup(parent, name, out)
	if st.Ok() {
		fs.syncTimes(fs.inodes.get(out.NodeId))
	}
	return st
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
	err := fs.replicas.apply("link "+name, parent.replicas, func(i, dir int) error {
		return unix.Linkat(old.replicas[i], "", dir, name, unix.AT_EMPTY_PATH)
	})
	if err != nil {
		return status(err)
	}
	return fs.lookup(parent, name, out)
}

func (fs *fileSystem) remove(h *fuse.InHeader, name string, flags int) fuse.Status {
	parent, st := fs.parentOf(h, name)
	if !st.Ok() {
		return st
	}
	return status(fs.replicas.apply("unlink "+name, parent.replicas, func(_, dir int) error {
		return unix.Unlinkat(dir, name, flags)
	}))
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
	return status(fs.replicas.apply("rename "+oldName, oldDir.replicas, func(i, dir int) error {
		return unix.Renameat2(dir, oldName, newDir.replicas[i], newName, uint(in.Flags))
	}))
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
	fs.mirrorsFree(n, &st)
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

// mirrorsFree lowers the free space and inodes in st, the leader's statfs,
// to what the fullest healthy mirror has left: a write must fit on every
// replica.
func (fs *fileSystem) mirrorsFree(n *inode, st *unix.Statfs_t) {
	if !fs.replicas.mirrored() || st.Frsize <= 0 {
		return
	}
	for i, fd := range n.replicas {
		var m unix.Statfs_t
		if i == fs.replicas.leader() || fd < 0 || !fs.replicas.healthy(i) || unix.Fstatfs(fd, &m) != nil {
			continue
		}
		scale := func(blocks uint64) uint64 { return blocks * uint64(m.Frsize) / uint64(st.Frsize) }
		st.Bfree = min(st.Bfree, scale(m.Bfree))
		st.Bavail = min(st.Bavail, scale(m.Bavail))
		st.Ffree = min(st.Ffree, m.Ffree)
	}
}
