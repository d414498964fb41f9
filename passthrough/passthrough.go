// Package passthrough decides when a FUSE open can be handed to the kernel
// as a backing file (FUSE passthrough, Linux 6.9+) and keeps the per-inode
// backing id that the kernel requires to be shared by every open of an inode.
//
// The package knows nothing of how the daemon does its own I/O; it only
// answers "may the kernel serve this file directly?" and manages the ids.
package passthrough

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// minKernel is the first release with FUSE_PASSTHROUGH (6.9).
var minKernel = [2]int{6, 9}

// Probe reports why passthrough cannot be used by this process on this
// kernel, or nil when it can. The final word is the kernel's: a mount only
// uses passthrough when INIT negotiated FUSE_PASSTHROUGH (see Negotiated).
func Probe() error {
	if os.Geteuid() != 0 {
		return errors.New("passthrough: FUSE_DEV_IOC_BACKING_OPEN needs CAP_SYS_ADMIN (run as root)")
	}
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("passthrough: uname: %w", err)
	}
	release := unix.ByteSliceToString(uts.Release[:])
	var major, minor int
	if _, err := fmt.Sscanf(release, "%d.%d", &major, &minor); err != nil {
		return fmt.Errorf("passthrough: cannot parse kernel release %q", release)
	}
	if major < minKernel[0] || (major == minKernel[0] && minor < minKernel[1]) {
		return fmt.Errorf("passthrough: kernel %s is older than %d.%d", release, minKernel[0], minKernel[1])
	}
	return nil
}

// Negotiated reports whether the kernel accepted FUSE_PASSTHROUGH during
// INIT for the given connection.
func Negotiated(init *fuse.InitIn) bool {
	return init.Flags64()&fuse.CAP_PASSTHROUGH != 0
}

// File describes a file about to be opened, for Eligible.
type File struct {
	Mode     uint32 // st_mode
	Replicas int    // backing files that must all see every write
	// Capabilities reports a security.capability xattr on the file.
	Capabilities bool
}

// Eligible is the policy: may the kernel serve this file's I/O directly?
//
//   - Only regular files have data the kernel could pass through.
//   - A mirrored file has several replicas and every write must reach all
//     of them; the kernel takes one backing file per inode.
//   - A write by an unprivileged caller must drop set-user-ID, executable
//     set-group-ID and file capabilities. With FUSE_HANDLE_KILLPRIV_V2 the
//     kernel leaves that to the daemon's WRITE handler, which passthrough
//     writes never reach, so such files stay with the daemon.
func Eligible(f File) bool {
	if f.Mode&syscall.S_IFMT != syscall.S_IFREG || f.Replicas != 1 || f.Capabilities {
		return false
	}
	return f.Mode&syscall.S_ISUID == 0 && f.Mode&(syscall.S_ISGID|syscall.S_IXGRP) != syscall.S_ISGID|syscall.S_IXGRP
}

// Registrar registers backing files with a FUSE connection;
// *fuse.Server implements it.
type Registrar interface {
	RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(int32) syscall.Errno
}

// Slot tracks how the kernel does one inode's I/O. The kernel serves an
// inode either through a single backing file shared by all its opens or
// through the daemon, never both at once (a mixed open fails with
// ETXTBSY), so the first open decides for as long as any open remains.
// The zero value is ready to use.
type Slot struct {
	mu     sync.Mutex
	id     int32
	direct int // opens served through the backing file
	daemon int // opens served by the daemon
}

// Open decides how an open of the inode is served: through the inode's
// backing file (registering fd as that file if this is the first such
// open), or by the daemon. eligible is the policy's answer for the file;
// it is overruled while other opens of the inode hold the other mode.
// Every Open needs a Close with the same passthrough answer.
func (s *Slot) Open(r Registrar, fd int, eligible bool) (id int32, passthrough bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.direct > 0:
		s.direct++
		return s.id, true, nil
	case s.daemon > 0 || !eligible:
		s.daemon++
		return 0, false, nil
	}
	id, errno := r.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
	if errno != 0 {
		return 0, false, fmt.Errorf("passthrough: FUSE_DEV_IOC_BACKING_OPEN: %w", errno)
	}
	s.id = id
	s.direct = 1
	return id, true, nil
}

// Active reports whether the kernel is doing the inode's I/O through its
// backing file (some passthrough open, or a mapping of one, is live).
func (s *Slot) Active() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.direct > 0
}

// Close ends an open and unregisters the backing file with the last
// passthrough open.
func (s *Slot) Close(r Registrar, passthrough bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !passthrough {
		s.daemon--
		return nil
	}
	s.direct--
	if s.direct > 0 {
		return nil
	}
	if errno := r.UnregisterBackingFd(s.id); errno != 0 {
		return fmt.Errorf("passthrough: FUSE_DEV_IOC_BACKING_CLOSE %d: %w", s.id, errno)
	}
	return nil
}
