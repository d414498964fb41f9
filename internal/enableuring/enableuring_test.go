package enableuring

import (
	"os"
	"strings"
	"testing"
	"time"
)

func read(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(Param)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// settled reads the parameter under the lock, when no holder has it: other
// test processes may hold it at another value meanwhile, and restore it.
func settled(t *testing.T) string {
	t.Helper()
	lock, err := takeLock()
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	return read(t)
}

// TestHoldTakesTurns checks that Hold sets the parameter, that a second
// holder waits for the first to restore it, and that the old value is back
// after both.
func TestHoldTakesTurns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to set enable_uring")
	}
	if _, err := os.Stat(Param); err != nil {
		t.Skipf("kernel has no FUSE-over-io_uring: %v", err)
	}
	old := settled(t)
	restore, err := Hold("Y")
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t); got != "Y" {
		t.Errorf("while held at Y: %s", got)
	}
	flipped := map[string]string{"Y": "N", "N": "Y"}[old]
	second := make(chan func() error)
	go func() {
		r, err := Hold(flipped)
		if err != nil {
			t.Error(err)
			r = func() error { return nil }
		}
		second <- r
	}()
	select {
	case r := <-second:
		r()
		t.Fatal("a second Hold did not wait for the first to restore")
	case <-time.After(200 * time.Millisecond):
	}
	if got := read(t); got != "Y" {
		t.Errorf("changed while the second holder waited: %s", got)
	}
	if err := restore(); err != nil {
		t.Fatal(err)
	}
	restoreSecond := <-second
	if got := read(t); got != flipped {
		t.Errorf("held by the second holder at %s: %s", flipped, got)
	}
	if err := restoreSecond(); err != nil {
		t.Fatal(err)
	}
	if got := settled(t); got != old {
		t.Errorf("after both: %s, want the old %s", got, old)
	}
}
