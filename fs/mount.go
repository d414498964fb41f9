// Package fs serves a backing directory as a FUSE filesystem.
//
// It implements go-fuse's low-level fuse.RawFileSystem directly, in the
// style of libfuse's passthrough_hp: every inode the kernel knows holds an
// O_PATH descriptor of its backing object, keyed by (st_dev, st_ino) so hard
// links share one inode and st_ino is the backing one, and every operation
// is a *at syscall relative to such descriptors. Names are resolved one
// component at a time with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|
// RESOLVE_NO_MAGICLINKS), so nothing escapes the backing root.
//
// File data takes one of three paths, chosen per mount: pread/pwrite in the
// daemon, the io_uring Engine in the daemon, or FUSE passthrough, where the
// kernel reads and writes the backing file itself (package passthrough
// decides which files qualify). Requests arrive from /dev/fuse, or over
// FUSE-over-io_uring (package fusering).
//
// Choices that shape behaviour:
//
//   - Permissions: with default_permissions (always, with allow_other) the
//     kernel checks every access against the real caller. Objects are
//     created on a worker thread carrying the caller's fsuid, fsgid and
//     umask (credWorkers), so ownership, setgid inheritance, default ACLs
//     and setgid stripping are the backing filesystem's own. The daemon
//     cannot see the caller's supplementary groups (go-fuse does not expose
//     FUSE_CREATE_SUPP_GROUP), so a caller who owns a setgid directory's
//     group only through a supplementary group loses S_ISGID on files it
//     creates there with that bit.
//   - Set-ID bits: FUSE_HANDLE_KILLPRIV_V2 is negotiated, so the daemon drops
//     them on unprivileged writes, truncates, fallocate and copy_file_range
//     and the kernel does not ask for security.capability before every
//     write.
//   - Locks: POSIX, OFD and flock locks are not negotiated, so the kernel
//     keeps them on the FUSE inode, with exact local semantics (blocking,
//     deadlock detection, release on close) for everyone using the mount.
//     They are not visible to processes using the backing directory
//     directly, which is not a supported way to share files with a mount.
//   - ioctl: only the file attribute commands (chattr, lsattr, project ids)
//     are forwarded; everything else, FS_IOC_SHUTDOWN above all, gets ENOTTY.
//     FIEMAP never reaches a FUSE daemon (the VFS answers it).
//   - File handles: export support is negotiated. On ext4-like backing
//     filesystems a node id is the backing file handle itself, so handles
//     stay valid after the kernel forgets an inode and across remounts;
//     elsewhere forgotten inodes leave the handle behind in memory.
//   - Mirrors: inodes and open files hold one descriptor per replica (the
//     backing directory and each mirror). Mutations reach every healthy
//     replica, reads one; a failing replica is degraded and the others
//     carry on (see replicaSet). Mirrored files are never passed through:
//     the kernel has one backing file per inode. File handles of a
//     mirrored mount are remembered in memory only (ghosts), as the node
//     id cannot be a handle of several filesystems.
package fs

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/bpfusefs/bpfusefs/mirror"
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Options configure a mount. Accel modes are resolved by the caller: each
// one set here is required, and Mount fails when it is unavailable.
type Options struct {
	Backing string   // backing directory (absolute)
	Mirrors []string // extra replicas: every mutation reaches each of them too

	// MirrorRepair names the replica (Backing or one of Mirrors) whose
	// tree is copied over the others at mount when they disagree; empty,
	// a disagreement refuses the mount.
	MirrorRepair string

	Engine      bool // daemon I/O through the io_uring Engine
	Passthrough bool // regular files served by the kernel (FUSE passthrough)
	Fusering    bool // requests arrive over FUSE-over-io_uring (Linux 6.14+, enable_uring=Y)
	// NoZeroCopy keeps Fusering's queues ordinary where the kernel has
	// zero-copy ones (Linux 7.3+), to measure one against the other.
	NoZeroCopy bool
	// BPF runs the io_uring BPF loop on the FUSE queue rings (Linux
	// 7.1+ bpf-ops; implies Fusering): READ, WRITE and FLUSH of regular
	// files the daemon serves (mirrored ones included), and FSYNC of
	// unmirrored ones, are answered in the kernel.
	BPF bool

	ReadOnly           bool
	AllowOther         bool
	DefaultPermissions bool
	Debug              bool

	// MountFlags are extra mount(2) flags: MS_NOSUID, MS_NODEV,
	// MS_NOEXEC, MS_NOATIME... (ReadOnly adds MS_RDONLY).
	MountFlags uintptr

	FSName string      // default: the backing directory
	Logger *log.Logger // default: discard, or the standard logger with Debug
}

// Mounted is a live bpfusefs mount, returned by Mount. (A Go package cannot
// have both a func and a type named Mount.)
type Mounted struct {
	mountpoint string
	conn       connection
	fs         *fileSystem
	accel      []string
	backing    string
	done       chan struct{}
	unmountMu  sync.Mutex
}

// maxWrite is the largest READ/WRITE the kernel sends (and MaxPages allows).
const maxWrite = 1 << 20

// Mount mounts opts.Backing on mountpoint and returns once the mount is live.
func Mount(mountpoint string, opts Options) (*Mounted, error) {
	if err := checkOptions(mountpoint, &opts); err != nil {
		return nil, err
	}
	if err := agreeReplicas(opts); err != nil {
		return nil, err
	}
	logger := opts.Logger
	switch {
	case logger != nil:
	case opts.Debug:
		logger = log.Default()
	default:
		logger = log.New(io.Discard, "", 0)
	}
	fs, err := newFileSystem(opts, logger)
	if err != nil {
		return nil, err
	}
	mo := fs.mountOptions(opts, logger)
	var conn connection
	if opts.Fusering || opts.BPF {
		conn, err = mountFusering(mountpoint, fs, mo, fusering.Options{
			Logger:   logger,
			ZeroCopy: !opts.NoZeroCopy,
			BPF:      opts.BPF,
		})
	} else {
		conn, err = mountDev(mountpoint, fs, mo)
	}
	if err != nil {
		fs.close()
		return nil, fmt.Errorf("mount %s on %s: %w", opts.Backing, mountpoint, err)
	}
	if ring, ok := conn.(*fusering.Server); ok && fs.bpf && ring.Stats().BPFQueues == 0 {
		fs.bpf = false // no queue could load the program (logged)
	}
	m := &Mounted{
		mountpoint: mountpoint,
		conn:       conn,
		fs:         fs,
		accel:      fs.accel(),
		backing:    opts.Backing,
		done:       make(chan struct{}),
	}
	go func() {
		conn.Wait()
		fs.close()
		close(m.done)
	}()
	if opts.Passthrough && !passthrough.Negotiated(conn.KernelSettings()) {
		m.Unmount(false)
		return nil, errors.New("passthrough: the kernel did not accept FUSE_PASSTHROUGH at INIT")
	}
	return m, nil
}

// connection is how requests reach the file system: go-fuse's /dev/fuse
// reader (*devServer) or FUSE-over-io_uring queues (*fusering.Server).
type connection interface {
	KernelSettings() *fuse.InitIn
	// Unmount unmounts (failing while the mount is busy) and returns
	// once the connection has ended.
	Unmount() error
	// Wait returns once the connection has ended, whoever unmounted it.
	Wait()
}

// devServer serves a mount by reading /dev/fuse.
type devServer struct {
	*fuse.Server
	served chan struct{} // closed when Serve has returned
}

func mountDev(mountpoint string, fs *fileSystem, mo *fuse.MountOptions) (connection, error) {
	server, err := fuse.NewServer(fs, mountpoint, mo)
	if err != nil {
		return nil, err
	}
	d := devServer{Server: server, served: make(chan struct{})}
	go func() {
		server.Serve()
		close(d.served)
	}()
	if err := server.WaitMount(); err != nil {
		d.Unmount()
		return nil, err
	}
	return d, nil
}

func (d devServer) Unmount() error {
	if err := d.Server.Unmount(); err != nil {
		return err
	}
	d.Wait()
	return nil
}

// Wait returns once Serve has returned and closed the device.
func (d devServer) Wait() { <-d.served }

func checkOptions(mountpoint string, opts *Options) error {
	if err := checkReplicas(opts); err != nil {
		return err
	}
	var st, parent unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("mountpoint %s: not a directory", mountpoint)
	}
	if err := unix.Stat(filepath.Join(mountpoint, ".."), &parent); err != nil {
		return fmt.Errorf("mountpoint %s: %w", mountpoint, err)
	}
	if st.Dev != parent.Dev && mountpoint != "/" {
		return fmt.Errorf("mountpoint %s: busy (already a mount point)", mountpoint)
	}
	if os.Geteuid() == 0 && opts.AllowOther && !opts.DefaultPermissions {
		return errors.New("allow_other without default_permissions would let every user act with the daemon's root rights")
	}
	if opts.Passthrough {
		if err := passthrough.Probe(); err != nil {
			return err
		}
	}
	return nil
}

// checkReplicas checks the backing directory and mirrors: absolute paths
// of distinct directories, none inside another (a replica inside the
// backing directory would show up in the mount and receive its own writes).
func checkReplicas(opts *Options) error {
	type dir struct{ what, path, real string }
	dirs := []dir{{what: "backing directory", path: opts.Backing}}
	for _, m := range opts.Mirrors {
		dirs = append(dirs, dir{what: "mirror directory", path: m})
	}
	for i := range dirs {
		d := &dirs[i]
		if !filepath.IsAbs(d.path) {
			return fmt.Errorf("%s %q: not an absolute path", d.what, d.path)
		}
		if fi, err := os.Stat(d.path); err != nil {
			return fmt.Errorf("%s: %w", d.what, err)
		} else if !fi.IsDir() {
			return fmt.Errorf("%s %s: not a directory", d.what, d.path)
		}
		real, err := filepath.EvalSymlinks(d.path)
		if err != nil {
			return fmt.Errorf("%s: %w", d.what, err)
		}
		d.real = real
		for _, o := range dirs[:i] {
			if within(o.real, real) || within(real, o.real) {
				return fmt.Errorf("%s %s and %s %s overlap: replicas must be separate trees", o.what, o.path, d.what, d.path)
			}
		}
	}
	if opts.MirrorRepair == "" {
		return nil
	}
	if len(opts.Mirrors) == 0 {
		return errors.New("--mirror-repair needs --mirror")
	}
	for _, d := range dirs {
		if filepath.Clean(opts.MirrorRepair) == filepath.Clean(d.path) {
			return nil
		}
	}
	return fmt.Errorf("--mirror-repair=%s: not one of the replicas (the backing directory or a --mirror)", opts.MirrorRepair)
}

// maxListed bounds the differences a refused mount lists.
const maxListed = 20

// agreeReplicas checks that the replicas hold the same tree (names, types,
// modes, owners, sizes and modification times of files, symlink targets,
// and what grants access: ACLs, file capabilities, protective flags)
// before they are served, and refuses the mount with a listing when they
// do not, unless opts.MirrorRepair names the replica to copy over the
// others.
func agreeReplicas(opts Options) error {
	if len(opts.Mirrors) == 0 {
		return nil
	}
	dirs := append([]string{opts.Backing}, opts.Mirrors...)
	diffs, err := mirror.Compare(dirs, mirror.CompareOptions{Max: maxListed + 1})
	if err != nil {
		return fmt.Errorf("compare replicas: %w", err)
	}
	if len(diffs) == 0 {
		return nil
	}
	if opts.MirrorRepair == "" {
		var b strings.Builder
		fmt.Fprintf(&b, "replicas disagree, refusing to mount:\n")
		for _, d := range diffs[:min(len(diffs), maxListed)] {
			fmt.Fprintf(&b, "  %s\n", d)
		}
		if len(diffs) > maxListed {
			fmt.Fprintf(&b, "  ... and more\n")
		}
		fmt.Fprintf(&b, "(bpfusefs verify %s lists every difference; --mirror-repair=DIR copies replica DIR over the others)", strings.Join(dirs, " "))
		return errors.New(b.String())
	}
	var others []string
	for _, d := range dirs {
		if filepath.Clean(d) != filepath.Clean(opts.MirrorRepair) {
			others = append(others, d)
		}
	}
	if err := mirror.Repair(opts.MirrorRepair, others); err != nil {
		return fmt.Errorf("--mirror-repair=%s: %w", opts.MirrorRepair, err)
	}
	return nil
}

// within reports whether path is dir or below it.
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

func newFileSystem(opts Options, logger *log.Logger) (*fileSystem, error) {
	replicas, roots, err := newReplicaSet(append([]string{opts.Backing}, opts.Mirrors...), logger)
	if err != nil {
		return nil, err
	}
	procDir, err := unix.Open("/proc/self/fd", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		replicas.closeOpenFDs()
		closeFDs(replicas.rootFDs())
		return nil, fmt.Errorf("open /proc/self/fd: %w", err)
	}
	fs := &fileSystem{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		replicas:      replicas,
		proc:          procFD(procDir),
		inodes:        newInodeTable(replicas, &roots[0]),
		handles:       newHandleTable(),
		data:          syscallPath{},
		passthrough:   opts.Passthrough,
		fusering:      opts.Fusering || opts.BPF,
		bpf:           opts.BPF,
		asyncWrites:   replicas.asyncWrites(),
		log:           logger,
	}
	if os.Geteuid() == 0 {
		if fs.creds, err = startCredWorkers(); err != nil {
			fs.close()
			return nil, fmt.Errorf("credential workers: %w", err)
		}
	}
	if opts.Engine {
		if fs.data, err = newEnginePath(); err != nil {
			fs.close()
			return nil, err
		}
	}
	return fs, nil
}

func (fs *fileSystem) mountOptions(opts Options, logger *log.Logger) *fuse.MountOptions {
	name := opts.FSName
	if name == "" {
		name = opts.Backing
	}
	mo := &fuse.MountOptions{
		FsName:            name,
		Name:              "bpfusefs",
		AllowOther:        opts.AllowOther,
		DirectMountStrict: true,
		MaxWrite:          maxWrite,
		MaxReadAhead:      128 << 10,
		MaxBackground:     64,
		Debug:             opts.Debug,
		Logger:            logger,
		// POSIX ACLs make the kernel check permissions itself, which
		// needs default_permissions.
		EnableAcl: opts.DefaultPermissions,
		// FUSE_HANDLE_KILLPRIV_V2: the daemon drops set-ID bits on
		// write and truncate (killPriv), so the kernel does not ask for
		// security.capability before every write and passthrough writes
		// stay daemon-free.
		ExtraCapabilities: fuse.CAP_HANDLE_KILLPRIV_V2 |
			// File handles (name_to_handle_at, NFS export) survive the
			// kernel forgetting inodes: see inodeTable.ghosts.
			fuse.CAP_EXPORT_SUPPORT |
			// SETXATTR carries FUSE_SETXATTR_ACL_KILL_SGID.
			fuse.CAP_SETXATTR_EXT,
		DirectMountFlags: directMountFlags(opts),
	}
	if fs.creds != nil {
		// The umask reaches the backing filesystem on the creating
		// thread, where default ACLs can override it as they do locally.
		mo.ExtraCapabilities |= fuse.CAP_DONT_MASK
	}
	if opts.DefaultPermissions {
		mo.Options = append(mo.Options, "default_permissions")
	}
	return mo
}

// directMountFlags are the mount(2) flags of a mount with opts. Like a
// local filesystem mounted by root, set-ID programs and devices work
// unless asked otherwise, but go-fuse reads 0 as fusermount's nosuid,nodev:
// without flags the mount gets MS_MGC_VAL, the old "no flags" magic. Never
// with a flag: the kernel drops the magic only when the high 16 bits are
// exactly it, and MS_RELATIME (one of its bits, so it was lost),
// MS_STRICTATIME and MS_LAZYTIME (which made mount(2) fail with EINVAL) live
// there too.
func directMountFlags(opts Options) uintptr {
	flags := opts.MountFlags
	if opts.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	if flags == 0 {
		return unix.MS_MGC_VAL
	}
	return flags
}

func (fs *fileSystem) accel() []string {
	accel := []string{pathNames[fs.data.path()]}
	if fs.fusering {
		accel = append(accel, pathNames[pathFusering])
	}
	if fs.bpf {
		accel = append(accel, pathNames[pathBPF])
	}
	if fs.passthrough {
		accel = append(accel, pathNames[pathPassthrough])
	}
	return accel
}

// close releases everything the filesystem holds; the kernel has let go.
func (fs *fileSystem) close() {
	for _, h := range fs.handles.drain() {
		h.close()
	}
	fs.inodes.closeAll()
	if fs.creds != nil {
		fs.creds.stop()
	}
	if err := fs.data.close(); err != nil {
		fs.log.Printf("close data path: %v", err)
	}
	unix.Close(int(fs.proc))
	fs.replicas.closeOpenFDs()
	fs.pipes.close()
}

// Unmount detaches the mount. Without lazy it fails (EBUSY) while files are
// open; with lazy the mount disappears from the namespace at once and is
// torn down when the last open file is closed.
func (m *Mounted) Unmount(lazy bool) error {
	m.unmountMu.Lock()
	defer m.unmountMu.Unlock()
	select {
	case <-m.done:
		return nil
	default:
	}
	if lazy {
		if err := unix.Unmount(m.mountpoint, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount -l %s: %w", m.mountpoint, err)
		}
		return nil
	}
	if err := m.conn.Unmount(); err != nil {
		return fmt.Errorf("unmount %s: %w", m.mountpoint, err)
	}
	<-m.done
	return nil
}

// Wait blocks until the mount is gone, whoever unmounted it, and every
// resource it held is released.
func (m *Mounted) Wait() { <-m.done }

// Stats returns a snapshot of the mount's counters.
func (m *Mounted) Stats() Stats {
	s := m.fs.stats.snapshot()
	if ring, ok := m.conn.(*fusering.Server); ok {
		rs := ring.Stats()
		s.Paths[pathNames[pathFusering]] = rs.Ring.Requests
		s.Paths[pathNames[pathZeroCopy]] = rs.ZeroCopyReads + rs.ZeroCopyWrites
		// Requests the BPF loop answered never reached the file system.
		s.Paths[pathNames[pathBPF]] = rs.BPFReads + rs.BPFWrites + rs.BPFFsyncs + rs.BPFFlushes + rs.BPFCopies
		for op, n := range map[string]uint64{"READ": rs.BPFReads, "WRITE": rs.BPFWrites, "FSYNC": rs.BPFFsyncs, "FLUSH": rs.BPFFlushes, "COPY_FILE_RANGE": rs.BPFCopies} {
			if n > 0 {
				s.Ops[op] += n
			}
		}
		s.BytesRead += rs.BPFReadBytes
		s.BytesWritten += rs.BPFWriteBytes
		s.BPFFallbacks = rs.BPFFallbacks
		s.BPFOwnCQ = rs.BPFOwnCQ
		s.BPFZeroCopy = rs.BPFZeroCopy
		s.BPFCopyBytes = rs.BPFCopyBytes
		s.Transport = map[string]uint64{"ring": rs.Ring.Requests, "dev": rs.Dev.Requests}
	}
	s.Accel = m.accel
	s.Replicas = m.fs.replicas.stats()
	return s
}
