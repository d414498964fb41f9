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

// Eligible is the policy: the kernel can serve an open directly only for a
// regular file that lives in exactly one backing file. A mirrored file has
// several replicas and every write must reach all of them, which the kernel
// (one backing file per inode) cannot do.
func Eligible(mode uint32, replicas int) bool {
	return mode&syscall.S_IFMT == syscall.S_IFREG && replicas == 1
}

// Registrar registers backing files with a FUSE connection;
// *fuse.Server implements it.
type Registrar interface {
	RegisterBackingFd(*fuse.BackingMap) (int32, syscall.Errno)
	UnregisterBackingFd(int32) syscall.Errno
}

// Slot holds the backing id of one inode. The kernel allows a single
// backing file per inode, so every concurrent open shares the id
// registered by the first one, and the id is released with the last.
// The zero value is ready to use.
type Slot struct {
	mu   sync.Mutex
	id   int32
	refs int
}

// Acquire returns the inode's backing id, registering fd when no open of
// the inode holds one yet. Each successful Acquire needs one Release.
func (s *Slot) Acquire(r Registrar, fd int) (int32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		id, errno := r.RegisterBackingFd(&fuse.BackingMap{Fd: int32(fd)})
		if errno != 0 {
			return 0, fmt.Errorf("passthrough: FUSE_DEV_IOC_BACKING_OPEN: %w", errno)
		}
		s.id = id
	}
	s.refs++
	return s.id, nil
}

// Release drops one reference and unregisters the id with the last one.
func (s *Slot) Release(r Registrar) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.refs == 0 {
		return errors.New("passthrough: release of an unused backing slot")
	}
	s.refs--
	if s.refs > 0 {
		return nil
	}
	if errno := r.UnregisterBackingFd(s.id); errno != 0 {
		return fmt.Errorf("passthrough: FUSE_DEV_IOC_BACKING_CLOSE %d: %w", s.id, errno)
	}
	return nil
}
