// Package fusetest holds test support shared by packages that mount FUSE.
package fusetest

import (
	"fmt"
	"os"
	"testing"

	"github.com/bpfusefs/bpfusefs/internal/enableuring"
)

// EnableURingParam is the fuse module parameter that gates
// FUSE-over-io_uring.
const EnableURingParam = enableuring.Param

// SetEnableURing sets the fuse module's enable_uring parameter to value
// ("Y" or "N") for the rest of the test and restores the old value in its
// cleanup, holding enableuring's machine-wide lock in between: `go test
// ./...` runs packages in parallel processes, and tests that need the
// parameter take turns instead of flipping it under each other. A test
// must call it at most once.
func SetEnableURing(t testing.TB, value string) error {
	t.Helper()
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root to set enable_uring")
	}
	restore, err := enableuring.Hold(value)
	if err != nil {
		return err
	}
	t.Cleanup(func() {
		if err := restore(); err != nil {
			t.Error(err)
		}
	})
	return nil
}
