// Package enableuring sets the fuse module's enable_uring parameter, which
// gates FUSE-over-io_uring for the whole machine.
//
// The parameter is global, while tests of several packages, xfstests runs
// and benchmarks may want it at the same time, some at Y and some at N. So
// it is only changed under an exclusive flock(2) on one file in the
// temporary directory, held until the old value is restored: whoever needs
// the parameter takes a turn instead of flipping it under somebody else.
// xfstests/lib.sh takes the same lock with flock(1).
package enableuring

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Param is the fuse module parameter that gates FUSE-over-io_uring.
const Param = "/sys/module/fuse/parameters/enable_uring"

// LockName is the lock file's name in os.TempDir().
const LockName = "bpfusefs-test-enable-uring.lock"

// Hold waits for the lock, sets the parameter to value ("Y" or "N") and
// returns what restores the old value and drops the lock. Only root can
// write the parameter; a kernel without FUSE-over-io_uring has none.
func Hold(value string) (restore func() error, err error) {
	lock, err := takeLock()
	if err != nil {
		return nil, err
	}
	old, err := os.ReadFile(Param)
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("kernel has no FUSE-over-io_uring: %w", err)
	}
	if err := os.WriteFile(Param, []byte(value), 0); err != nil {
		lock.Close()
		return nil, fmt.Errorf("cannot set enable_uring: %w", err)
	}
	return func() error {
		defer lock.Close() // closing drops the lock
		if err := os.WriteFile(Param, []byte(strings.TrimSpace(string(old))), 0); err != nil {
			return fmt.Errorf("restoring enable_uring: %w", err)
		}
		return nil
	}, nil
}

// takeLock waits for the lock and returns the file that holds it; closing
// the file drops it.
func takeLock() (*os.File, error) {
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), LockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("locking enable_uring: %w", err)
	}
	return lock, nil
}
