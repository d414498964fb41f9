package fusering

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/bpfusefs/bpfusefs/internal/fusetest"
)

// setEnableURing sets the fuse module's enable_uring parameter for the
// test and restores it afterwards, or skips the test when it cannot.
func setEnableURing(t testing.TB, value string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount and to set enable_uring")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	if err := fusetest.SetEnableURing(t, value); err != nil {
		t.Skip(err)
	}
}

// requireRing prepares a test that mounts over the ring.
func requireRing(t testing.TB) {
	t.Helper()
	setEnableURing(t, "Y")
	if err := Available(); err != nil {
		t.Skip(err)
	}
}

// loopbackFS is go-fuse's loopback file system over dir, with the caching
// go-fuse's own posix tests use.
func loopbackFS(dir string) (fuse.RawFileSystem, error) {
	root, err := gofs.NewLoopbackRoot(dir)
	if err != nil {
		return nil, err
	}
	sec := time.Second
	return gofs.NewNodeFS(root, &gofs.Options{EntryTimeout: &sec, AttrTimeout: &sec}), nil
}

func mustLoopbackFS(t testing.TB, dir string) fuse.RawFileSystem {
	t.Helper()
	fs, err := loopbackFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

// testMount is a mounted loopback file system.
type testMount struct {
	srv      *Server
	backing  string // the loopback's directory
	mnt      string // where it is mounted
	unmounts bool   // cleanup still has to unmount
}

// mountLoopback mounts go-fuse's loopback over a fresh directory through
// the ring and unmounts it at the end of the test.
func mountLoopback(t testing.TB, opts Options) *testMount {
	t.Helper()
	return mountLoopbackWith(t, testMountOptions(), opts)
}

// testMountOptions are the mount options of the tests: go-fuse's loopback
// as root uses FUSE passthrough, which would keep READ and WRITE from the
// daemon.
func testMountOptions() *fuse.MountOptions {
	return &fuse.MountOptions{EnableLocks: true, DisabledCapabilities: fuse.CAP_PASSTHROUGH}
}

func mountLoopbackWith(t testing.TB, mo *fuse.MountOptions, opts Options) *testMount {
	t.Helper()
	m := newTestMount(t)
	return mountOver(t, m, mustLoopbackFS(t, m.backing), mo, opts)
}

// newTestMount makes the backing and mount directories of a test mount.
func newTestMount(t testing.TB) *testMount {
	t.Helper()
	dir := t.TempDir()
	m := &testMount{backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt"), unmounts: true}
	for _, d := range []string{m.backing, m.mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func mountOver(t testing.TB, m *testMount, fs fuse.RawFileSystem, mo *fuse.MountOptions, opts Options) *testMount {
	t.Helper()
	srv, err := Mount(m.mnt, fs, mo, opts)
	if err != nil {
		t.Fatalf("Mount: %v", err)
	}
	m.srv = srv
	t.Cleanup(func() {
		if !m.unmounts {
			return
		}
		if err := srv.Unmount(); err != nil {
			t.Errorf("Unmount: %v", err)
			unix.Unmount(m.mnt, unix.MNT_DETACH)
			srv.Wait()
		}
	})
	return m
}
