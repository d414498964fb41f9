package bench

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestQuickBench runs every workload, shrunk, against native and go-fuse's
// loopback, and checks that each produced a figure and a ratio. It asserts
// no timings.
func TestQuickBench(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the smoke bench takes about a minute")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount FUSE")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
	for _, tool := range []string{"fio", "go", "tar", "git", "make", "cc", "find"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	cache := os.Getenv("BPFUSEFS_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Skip("no cache directory for the loopback build:", err)
		}
		cache = filepath.Join(home, ".cache", "bpfusefs")
	}
	cfg := &Config{Runs: 1, FileSize: 8 << 20, CopySize: 8 << 20, Runtime: 1, Files: 300, SourceFiles: 4,
		Dir: t.TempDir(), Cache: cache, Systems: patterns{native, loopback}}
	var progress strings.Builder
	rep, err := Run(context.Background(), cfg, &progress)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, progress.String())
	}
	for _, st := range rep.Systems {
		if st.Skipped != "" {
			t.Fatalf("%s skipped: %s", st.Name, st.Skipped)
		}
	}
	for _, w := range workloads() {
		for _, sys := range []string{native, loopback} {
			r := rep.find(sys, w.name)
			if r == nil {
				t.Errorf("%s %s: no result", sys, w.name)
				continue
			}
			if sys == loopback && w.replicas > 1 {
				if !strings.Contains(r.Skipped, errNoMirrors.Error()) {
					t.Errorf("loopback %s: %+v, want skipped for lack of mirrors", w.name, r)
				}
				continue
			}
			if r.Error != "" || r.Skipped != "" || r.Median == nil || !(*r.Median > 0) {
				t.Errorf("%s %s: %+v, want a positive figure", sys, w.name, r)
				continue
			}
			if !(r.Ratios[native] > 0) {
				t.Errorf("%s %s: ratio to native %v, want positive", sys, w.name, r.Ratios[native])
			}
			if sys == loopback {
				if r.Ratios[loopback] != 1 {
					t.Errorf("loopback %s: ratio to itself %v, want 1", w.name, r.Ratios[loopback])
				}
				if r.DaemonCPU == nil || *r.DaemonCPU < 0 {
					t.Errorf("loopback %s: daemon CPU %v, want measured", w.name, r.DaemonCPU)
				} else if r.DaemonSys == nil || *r.DaemonSys < 0 || *r.DaemonSys > *r.DaemonCPU {
					t.Errorf("loopback %s: daemon system CPU %v of %v, want measured, within the total", w.name, r.DaemonSys, *r.DaemonCPU)
				}
			}
		}
	}
	// Every mount was undone and every backing directory removed.
	entries, err := os.ReadDir(cfg.Dir)
	if err != nil || len(entries) != 0 {
		t.Errorf("work directory left behind: %v, %v", entries, err)
	}
}
