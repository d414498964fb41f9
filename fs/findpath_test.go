package fs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestFindPath searches a tree for files by their inode: deep ones, past
// links to them and other files, not beyond the root, and not after the
// caller gave up.
func TestFindPath(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"a/b/c", "x/y", "z"} {
		if err := os.MkdirAll(filepath.Join(dir, "root", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"root/a/b/c/deep", "root/x/y/other", "root/top", "outside"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(f), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("a/b/c/deep", filepath.Join(dir, "root/z/link")); err != nil {
		t.Fatal(err)
	}
	r, _, err := openReplica(filepath.Join(dir, "root"))
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(r.rootFD)
	defer unix.Close(r.openFD)
	find := func(name string, cancel <-chan struct{}) (string, error) {
		t.Helper()
		fd, err := unix.Open(filepath.Join(dir, name), unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		return r.findPath(fd, cancel)
	}
	for name, want := range map[string]string{
		"root/a/b/c/deep": "a/b/c/deep",
		"root/top":        "top",
		"root/z/link":     "z/link", // the symlink itself, not where it points
	} {
		if got, err := find(name, nil); err != nil || got != want {
			t.Errorf("findPath(%s) = %q, %v; want %q", name, got, err, want)
		}
	}
	if got, err := find("outside", nil); err != unix.ESTALE {
		t.Errorf("findPath(a file outside the root) = %q, %v; want ESTALE", got, err)
	}
	cancelled := make(chan struct{})
	close(cancelled)
	if got, err := find("root/a/b/c/deep", cancelled); err != unix.EINTR {
		t.Errorf("findPath once cancelled = %q, %v; want EINTR", got, err)
	}
}
