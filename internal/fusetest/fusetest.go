// Package fusetest holds test support shared by packages that mount FUSE.
package fusetest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// EnableURingParam is the fuse module parameter that gates
// FUSE-over-io_uring.
const EnableURingParam = "/sys/module/fuse/parameters/enable_uring"

// SetEnableURing sets the fuse module's enable_uring parameter to value
// ("Y" or "N") for the rest of the test and restores the old value in its
// cleanup. The parameter is global while `go test ./...` runs packages in
// parallel processes, so the setting is held under an exclusive lock on a
// file shared by every test process: tests that need it take turns instead
// of flipping it under each other. A test must call it at most once.
func SetEnableURing(t testing.TB, value string) error {
	t.Helper()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root to set enable_uring")
	}
	lock, err := os.OpenFile(filepath.Join(os.TempDir(), "bpfusefs-test-enable-uring.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		lock.Close()
		return fmt.Errorf("locking enable_uring: %w", err)
	}
	release := func() { lock.Close() } // closing drops the lock
	old, err := os.ReadFile(EnableURingParam)
	if err != nil {
		release()
		return fmt.Errorf("kernel has no FUSE-over-io_uring: %w", err)
	}
	if err := os.WriteFile(EnableURingParam, []byte(value), 0); err != nil {
		release()
		return fmt.Errorf("cannot set enable_uring: %w", err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(EnableURingParam, []byte(strings.TrimSpace(string(old))), 0); err != nil {
			t.Errorf("restoring enable_uring: %v", err)
		}
		release()
	})
	return nil
}
