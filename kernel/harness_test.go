// Package kernel holds the VM harness (vmtest.sh and friends). Its tests
// check the harness itself: they boot the Debian kernel under qemu with the
// deliberately broken test packages in testdata/ and assert that vmtest.sh
// reports what happened in the guest.
package kernel

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// TestBuildStopsAtPatchThatDoesNotApply runs build.sh on a stand-in source
// tarball and series: the patch that applies is applied, the one that does
// not stops the build with exit status 1, naming it; with only the first,
// the build gets as far as configuring (which the stand-in tree cannot).
func TestBuildStopsAtPatchThatDoesNotApply(t *testing.T) {
	if os.Getenv("BPFUSEFS_VM") == "1" {
		t.Skip("inside the vmtest guest: no dpkg, no build dependencies")
	}
	if _, err := exec.LookPath("dpkg-query"); err != nil {
		t.Skip("build.sh needs dpkg-query (Debian) to check its build dependencies")
	}
	cache := t.TempDir()
	srcDir := filepath.Join(cache, "kernels", "source", "7.3.0-test")
	tree := filepath.Join(t.TempDir(), "linux-source-7.3")
	for _, d := range []string{srcDir, tree} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	write := func(path, content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(tree, "hello.txt"), "hello\n")
	write(filepath.Join(srcDir, "package-version"), "7.3.0-test\n")
	tar := exec.Command("tar", "-cJf", filepath.Join(srcDir, "linux-source-7.3.tar.xz"), "-C", filepath.Dir(tree), "linux-source-7.3")
	if out, err := tar.CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	series := t.TempDir()
	patch := func(name, from, to string) {
		write(filepath.Join(series, name), "--- a/hello.txt\n+++ b/hello.txt\n@@ -1 +1 @@\n-"+from+"\n+"+to+"\n")
	}
	patch("0001-good.patch", "hello", "hello, world")
	patch("0002-bad.patch", "goodbye", "farewell")

	build := func(wantText ...string) {
		t.Helper()
		cmd := exec.CommandContext(t.Context(), "./build.sh")
		cmd.Env = append(os.Environ(), "BPFUSEFS_CACHE="+cache, "BPFUSEFS_OFFLINE=1",
			"BPFUSEFS_KERNEL_SERIES="+series, "BPFUSEFS_KERNEL_SOURCE=7.3.0-test")
		out, err := cmd.CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 1 {
			t.Fatalf("build.sh: %v, want exit status 1\n%s", err, out)
		}
		for _, w := range wantText {
			if !strings.Contains(string(out), w) {
				t.Fatalf("build.sh output lacks %q:\n%s", w, out)
			}
		}
	}
	build("applying 0001-good.patch", "0002-bad.patch does not apply to linux-source-7.3")
	if err := os.Remove(filepath.Join(series, "0002-bad.patch")); err != nil {
		t.Fatal(err)
	}
	build("applying 0001-good.patch", "make tinyconfig failed")
	// A failed build leaves its tree for inspection: the patch is in it.
	got, err := os.ReadFile(filepath.Join(cache, "kernels", "build", "linux-source-7.3", "hello.txt"))
	if err != nil || string(got) != "hello, world\n" {
		t.Fatalf("patched tree: %q, %v; want the patch applied", got, err)
	}
}
