package inodeflags

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestLetters(t *testing.T) {
	for flags, want := range map[uint32]string{0: "-", Immutable | NoAtime: "iA", Portable: "iadA", 0x80000: "-"} {
		if got := Letters(flags); got != want {
			t.Errorf("Letters(%#x) = %q, want %q", flags, got, want)
		}
	}
}

// TestUnprotected sets times on an immutable file: refused, then done with
// the flag lifted, which is back afterwards. A change that fails for
// another reason is not retried.
func TestUnprotected(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(path, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	open := func() (int, error) { return unix.Open(path, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0) }
	fd, err := open()
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := Get(fd)
	if err != nil {
		t.Fatal(err)
	}
	if err := Set(fd, flags|Immutable); err != nil {
		t.Skipf("chattr +i: %v", err) // no CAP_LINUX_IMMUTABLE, or no flags here
	}
	defer Set(fd, flags)
	ts := []unix.Timespec{{Sec: 1}, {Sec: 2}}
	setTimes := func() error { return unix.UtimesNano(path, ts) }
	if err := setTimes(); err != unix.EPERM {
		t.Fatalf("utimensat on an immutable file: %v, want EPERM", err)
	}
	if err := Unprotected(open, setTimes); err != nil {
		t.Fatalf("Unprotected: %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil || st.Mtim.Sec != 2 {
		t.Errorf("mtime %v (%v), want 2", st.Mtim, err)
	}
	if got, err := Get(fd); err != nil || got != flags|Immutable {
		t.Errorf("flags after Unprotected %#x (%v), want %#x", got, err, flags|Immutable)
	}
	calls := 0
	if err := Unprotected(open, func() error { calls++; return unix.EINVAL }); err != unix.EINVAL || calls != 1 {
		t.Errorf("a change failing with EINVAL: %v after %d calls, want EINVAL after 1", err, calls)
	}
}
