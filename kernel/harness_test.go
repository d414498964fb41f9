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
// (no bpfusefs, no host tools: a quicker boot), and returns its combined
// output and exit status.
func vmtest(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "kernel/vmtest.sh", append([]string{"--bpfusefs", "none", "--tools", ""}, args...)...)
	cmd.Dir = ".."
	// SIGTERM (not the default SIGKILL) lets vmtest.sh stop its qemu.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = time.Minute
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return string(out), 0
	case errors.As(err, &exit):
		return string(out), exit.ExitCode()
	default:
		t.Fatalf("kernel/vmtest.sh %s: %v", strings.Join(args, " "), err)
		return "", 0
	}
}

func TestFailingGuestTestFailsTheRun(t *testing.T) {
	needVM(t)
	out, code := vmtest(t, "--packages", "./kernel/testdata/failing", "--timeout", "5m")
	if code != exitTestsFailed {
		t.Errorf("exit status %d, want %d", code, exitTestsFailed)
	}
	for _, want := range []string{
		"deliberate failure inside the guest", // the test's own message, streamed from the guest
		"--- FAIL: TestDeliberateFailure",
		"VMTEST-RESULT status=fail passed=0 failed=1",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("vmtest.sh output:\n%s", out)
	}
}

func TestHungGuestIsStoppedByTimeout(t *testing.T) {
	needVM(t)
	out, code := vmtest(t, "--packages", "./kernel/testdata/hanging", "--timeout", "60s")
	if code != exitGuestUnfinished {
		t.Errorf("exit status %d, want %d", code, exitGuestUnfinished)
	}
	for _, want := range []string{
		"sleeping until the harness gives up", // the guest did reach the test
		"the guest did not finish within 60s",
		"console tail:",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, "VMTEST-RESULT") {
		t.Error("a guest that never finished printed a result line")
	}
	if t.Failed() {
		t.Logf("vmtest.sh output:\n%s", out)
	}
}

func TestGuestThatNeverReachesInitIsRetriedOnce(t *testing.T) {
	needVM(t)
	// No kernel reaches init within a second under emulation.
	out, code := vmtest(t, "--packages", "./kernel/testdata/failing", "--boot-timeout", "1s")
	if code != exitGuestUnfinished {
		t.Errorf("exit status %d, want %d", code, exitGuestUnfinished)
	}
	if n := strings.Count(out, "booting again"); n != 1 {
		t.Errorf("booted again %d times, want once", n)
	}
	if !strings.Contains(out, "the guest never reached init") {
		t.Error("output does not say the guest never reached init")
	}
	if t.Failed() {
		t.Logf("vmtest.sh output:\n%s", out)
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return s[strings.LastIndexByte(s, '\n')+1:]
}
