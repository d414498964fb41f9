// Package kernel holds the VM harness (vmtest.sh and friends). Its tests
// check the harness itself: they boot the Debian kernel under qemu with the
// deliberately broken test packages in testdata/ and assert that vmtest.sh
// reports what happened in the guest.
package kernel

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// vmtest.sh exit statuses (see its header).
const (
	exitTestsFailed     = 1
	exitGuestUnfinished = 4
)

var (
	kernelOnce sync.Once
	kernelErr  error
)

// needVM skips the test when the guest cannot be booted for reasons outside
// the harness: inside the guest itself, no qemu and no way to install it, or
// no Debian kernel to fetch.
func needVM(t *testing.T) {
	t.Helper()
	if os.Getenv("BPFUSEFS_VM") == "1" {
		t.Skip("already inside the vmtest guest")
	}
	if testing.Short() {
		t.Skip("boots a VM; skipped in -short mode")
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil && os.Getuid() != 0 {
		t.Skip("qemu-system-x86_64 is not installed and only root can install it")
	}
	kernelOnce.Do(func() {
		out, err := exec.Command("./debian-kernel.sh").CombinedOutput()
		if err != nil {
			kernelErr = errors.New(lastLine(string(out)))
		}
	})
	if kernelErr != nil {
		t.Skipf("no Debian kernel to boot: %v", kernelErr)
	}
}

// vmtest runs vmtest.sh from the repository root, with the smallest guest
// (no bpfusefs, no host tools: a quicker boot), checks that it exits with
// status want and prints every string in wants, and returns its output. The
// output is logged when the test fails.
func vmtest(t *testing.T, args []string, want int, wants ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kernel/vmtest.sh", append([]string{"--bpfusefs", "none", "--tools", ""}, args...)...)
	cmd.Dir = ".."
	// SIGTERM (not the default SIGKILL) lets vmtest.sh stop its qemu.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	out, err := cmd.CombinedOutput()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("vmtest.sh %s:\n%s", strings.Join(args, " "), out)
		}
	})
	code := 0
	if exit := (*exec.ExitError)(nil); errors.As(err, &exit) {
		code = exit.ExitCode()
	} else if err != nil {
		t.Fatalf("kernel/vmtest.sh: %v", err)
	}
	if code != want {
		t.Errorf("exit status %d, want %d", code, want)
	}
	for _, w := range wants {
		if !strings.Contains(string(out), w) {
			t.Errorf("output lacks %q", w)
		}
	}
	return string(out)
}

func TestFailingGuestTestFailsTheRun(t *testing.T) {
	needVM(t)
	vmtest(t, []string{"--packages", "./kernel/testdata/failing", "--timeout", "5m"}, exitTestsFailed,
		"deliberate failure inside the guest", // the test's own message, streamed from the guest
		"--- FAIL: TestDeliberateFailure",
		"VMTEST-RESULT status=fail passed=0 failed=1")
}

func TestHungGuestIsStoppedByTimeout(t *testing.T) {
	needVM(t)
	out := vmtest(t, []string{"--packages", "./kernel/testdata/hanging", "--timeout", "60s"}, exitGuestUnfinished,
		"sleeping until the harness gives up", // the guest did reach the test
		"the guest did not finish within 60s",
		"console tail:")
	if strings.Contains(out, "VMTEST-RESULT") {
		t.Error("a guest that never finished printed a result line")
	}
}

func TestGuestThatNeverReachesInitIsRetriedOnce(t *testing.T) {
	needVM(t)
	// No kernel reaches init within a second under emulation.
	out := vmtest(t, []string{"--packages", "./kernel/testdata/failing", "--boot-timeout", "1s"}, exitGuestUnfinished,
		"the guest never reached init")
	if n := strings.Count(out, "booting again"); n != 1 {
		t.Errorf("booted again %d times, want once", n)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
