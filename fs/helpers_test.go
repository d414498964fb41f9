package fs

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/bpfusefs/bpfusefs/internal/fusetest"
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/bpfusefs/bpfusefs/uring"
	"golang.org/x/sys/unix"
)

// testMount is one live mount of a fresh backing directory.
type testMount struct {
	mode    string
	backing string
	mirrors []string
	mnt     string
	m       *Mounted
}

// replicas lists the backing directory and the mirrors.
func (tm *testMount) replicas() []string { return append([]string{tm.backing}, tm.mirrors...) }

func (tm *testMount) b(rel string) string { return filepath.Join(tm.backing, rel) }
func (tm *testMount) p(rel string) string { return filepath.Join(tm.mnt, rel) }

// requireFUSE skips tests that cannot mount on this machine.
func requireFUSE(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting FUSE needs root (no fusermount here)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skip("no /dev/fuse")
	}
}

// requireFusering skips tests that cannot serve FUSE over io_uring here,
// and otherwise holds enable_uring at Y for the test (see modes).
func requireFusering(t *testing.T) {
	t.Helper()
	requireFUSE(t)
	if err := fusetest.SetEnableURing(t, "Y"); err != nil {
		t.Skip(err)
	}
	if err := fusering.Available(); err != nil {
		t.Skip(err)
	}
}

// modes lists the accel modes this host supports, each as the Options
// fields that select it. A mode the host lacks is reported, not failed.
// Call it once per test: it may hold enable_uring for the test.
func modes(t testing.TB) map[string]Options {
	t.Helper()
	ms := map[string]Options{"none": {}}
	if e, err := uring.NewEngine(uring.EngineOptions{Entries: 8}); err != nil {
		t.Logf("engine mode skipped: %v", err)
	} else {
		e.Close()
		ms["engine"] = Options{Engine: true}
	}
	if err := passthrough.Probe(); err != nil {
		t.Logf("passthrough mode skipped: %v", err)
	} else {
		ms["passthrough"] = Options{Passthrough: true}
	}
	// FUSE-over-io_uring needs the fuse module's enable_uring, which is
	// global: it is held at Y until the test ends, after its mounts are
	// gone, and then restored, under the lock every test process takes to
	// change it.
	if err := fusetest.SetEnableURing(t, "Y"); err != nil {
		t.Logf("fusering modes skipped: %v", err)
	} else if err := fusering.Available(); err != nil {
		t.Logf("fusering modes skipped: %v", err)
	} else {
		ms["fusering"] = Options{Fusering: true}
		if ms["engine"].Engine {
			ms["fusering,engine"] = Options{Fusering: true, Engine: true}
		}
		if err := bpf.Available(); err != nil {
			t.Logf("bpf mode skipped: %v", err)
		} else {
			ms["bpf"] = Options{BPF: true}
		}
	}
	if testing.Short() {
		// The VM harness runs -short under emulation, where every mode
		// costs minutes, for the kernels' transports: the data paths
		// of the daemon and of passthrough run in full on the host.
		for _, m := range []string{"engine", "passthrough", "fusering,engine"} {
			if _, ok := ms[m]; ok {
				delete(ms, m)
				t.Logf("%s mode skipped in -short", m)
			}
		}
	}
	return ms
}

// mountFS mounts a fresh backing directory with opts and unmounts it when
// the test ends.
func mountFS(t *testing.T, mode string, opts Options) *testMount {
	t.Helper()
	return mountReplicas(t, mode, opts, nil)
}

// mountReplicas mounts a fresh backing directory with opts, and mirrors
// made by the functions in mirrors, and unmounts it when the test ends.
// When backing is set, it makes the backing directory.
func mountReplicas(t *testing.T, mode string, opts Options, backing func(t *testing.T) string, mirrors ...func(t *testing.T) string) *testMount {
	t.Helper()
	dir := t.TempDir()
	// Other users must reach the tree for the credential tests.
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0755); err != nil {
			t.Fatal(err)
		}
	}
	tm := &testMount{mode: mode, backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt")}
	for _, d := range []string{tm.backing, tm.mnt} {
		if err := os.Mkdir(d, 0755); err != nil {
			t.Fatal(err)
		}
	}
	if backing != nil {
		tm.backing = backing(t)
	}
	for _, mk := range mirrors {
		tm.mirrors = append(tm.mirrors, mk(t))
	}
	opts.Backing = tm.backing
	opts.Mirrors = tm.mirrors
	opts.AllowOther = true
	opts.DefaultPermissions = true
	m, err := Mount(tm.mnt, opts)
	if err != nil {
		t.Fatalf("Mount(%s): %v", mode, err)
	}
	tm.m = m
	unmountAtCleanup(t, m, tm.mnt)
	return tm
}

// unmountAtCleanup unmounts m, mounted at mnt, when the test ends however
// it ends (a mount left behind by a failed test outlives its daemon,
// this process, as a dead mount); a test may unmount it itself before.
func unmountAtCleanup(t *testing.T, m *Mounted, mnt string) {
	t.Cleanup(func() {
		err := m.Unmount(false)
		if err == nil {
			return
		}
		// Busy: a file is open on the mount, likely leaked by the test;
		// name those. A lazy unmount alone would wait until it is closed,
		// at the latest at exit, where its FLUSH would wait for this very
		// process: abort the connection first (umount -f), so that the
		// test fails instead of hanging.
		t.Errorf("Unmount: %v; open in this process: %v", err, openUnder(mnt))
		unix.Unmount(mnt, unix.MNT_FORCE)
		m.Unmount(true)
		done := make(chan struct{})
		go func() { m.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(time.Minute):
			t.Errorf("%s: the connection did not end a minute after it was aborted", mnt)
		}
	})
}

// openUnder lists this process's descriptors of files under dir.
func openUnder(dir string) []string {
	ents, _ := os.ReadDir("/proc/self/fd")
	var open []string
	for _, e := range ents {
		target, err := os.Readlink("/proc/self/fd/" + e.Name())
		if err == nil && (target == dir || strings.HasPrefix(target, dir+"/")) {
			open = append(open, e.Name()+" "+target)
		}
	}
	return open
}

// eachMode runs fn in a subtest per accel mode, each on its own mount.
func eachMode(t *testing.T, fn func(t *testing.T, tm *testMount)) {
	requireFUSE(t)
	for name, opts := range modes(t) {
		t.Run(name, func(t *testing.T) {
			fn(t, mountFS(t, name, opts))
		})
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0644); err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
