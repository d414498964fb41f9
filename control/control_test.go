package control

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
)

const nobody = 65534

func statsHandler(method string) (any, error) {
	if method != "stats" {
		return nil, errors.New("unknown method " + method)
	}
	return map[string]int{"ops": 42}, nil
}

func TestCallOwner(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	s, err := Listen(path, os.Geteuid(), statsHandler)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	var got map[string]int
	if err := Call(path, "stats", &got); err != nil {
		t.Fatalf("Call(stats): %v", err)
	}
	if got["ops"] != 42 {
		t.Errorf("stats = %v, want ops 42", got)
	}
	if err := Call(path, "nonsense", nil); err == nil || !strings.Contains(err.Error(), "unknown method") {
		t.Errorf("Call(nonsense) = %v, want the handler's error", err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != want {
			t.Errorf("%s mode %o, want %o", p, perm, want)
		}
	}
}

// TestCloseRemovesSocketAndAnswersWait waits, then closes the server,
// every other time right after Wait returns, as the daemon closes when
// umount unmounts right after asking: the wait must be answered, never
// reset (a wait the server had not yet accepted when it closed its
// listener was reset, 265 times in 300 here).
func TestCloseRemovesSocketAndAnswersWait(t *testing.T) {
	// The answer to a wait races with the rest of Close: repeat.
	for i := range 300 {
		path := filepath.Join(t.TempDir(), "c.sock")
		s, err := Listen(path, os.Geteuid(), statsHandler)
		if err != nil {
			t.Fatal(err)
		}
		wait, err := Wait(path)
		if err != nil {
			t.Fatal(err)
		}
		// Other requests are served while a wait is pending.
		if i%2 == 1 {
			if err := Call(path, "stats", nil); err != nil {
				t.Fatal(err)
			}
		}
		var closing atomic.Bool
		closed := make(chan error)
		go func() {
			closing.Store(true)
			closed <- s.Close()
		}()
		if err := wait.Result(nil); err != nil {
			t.Errorf("wait: %v", err)
		}
		if !closing.Load() {
			t.Error("wait was answered before Close")
		}
		// umount returns on this answer and promises the socket gone.
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket still there when the wait was answered: %v", err)
		}
		if err := <-closed; err != nil {
			t.Fatal(err)
		}
	}
}

func TestSocketTakenOverByTheNewDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.sock")
	old, err := Listen(path, os.Geteuid(), func(string) (any, error) { return "old", nil })
	if err != nil {
		t.Fatal(err)
	}
	// The same directory mounted again while the old daemon still exits:
	// the new daemon takes the name, and the old one's Close keeps off it.
	s, err := Listen(path, os.Geteuid(), func(string) (any, error) { return "new", nil })
	if err != nil {
		t.Fatalf("Listen while the old daemon still answers: %v", err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	var who string
	if err := Call(path, "stats", &who); err != nil || who != "new" {
		t.Errorf("after the old daemon closed, the socket answers %q, %v; want the new daemon", who, err)
	}
	s.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket still there after the new daemon's Close: %v", err)
	}

	// A daemon killed without cleanup leaves a socket file nobody listens on.
	stale, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Bind(stale, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	syscall.Close(stale)
	s, err = Listen(path, os.Geteuid(), statsHandler)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s.Close()
}

// TestHelperCall is not a test: TestNonOwnerRefused runs the test binary
// as another user with this test selected, to call the socket as that user.
func TestHelperCall(t *testing.T) {
	path := os.Getenv("CONTROL_TEST_SOCKET")
	if path == "" {
		t.Skip("helper process for TestNonOwnerRefused")
	}
	err := Call(path, "stats", nil)
	if err == nil {
		io.WriteString(os.Stdout, "ACCEPTED\n")
		return
	}
	io.WriteString(os.Stdout, "REFUSED: "+err.Error()+"\n")
}

func TestNonOwnerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as another uid")
	}
	// The socket directory is opened to everyone here so that the refusal
	// tested is the daemon's SO_PEERCRED check, not the directory mode.
	dir, err := os.MkdirTemp("", "control-test-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "control.test")
	copyExecutable(t, bin)
	path := filepath.Join(dir, "c.sock")
	// Owned by root: uid 65534 is neither the owner nor root.
	s, err := Listen(path, 0, statsHandler)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	openToAll := func() {
		t.Helper()
		if err := os.Chmod(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, 0o666); err != nil {
			t.Fatal(err)
		}
	}
	openToAll()

	run := func(uid uint32) string {
		cmd := exec.Command(bin, "-test.run=^TestHelperCall$")
		cmd.Env = []string{"CONTROL_TEST_SOCKET=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("helper as uid %d: %v\n%s", uid, err, out)
		}
		return string(out)
	}
	if out := run(nobody); !strings.Contains(out, "REFUSED: daemon: permission denied: uid 65534") {
		t.Errorf("uid %d got %q, want a permission refusal", nobody, out)
	}
	if out := run(0); !strings.Contains(out, "ACCEPTED") {
		t.Errorf("root got %q, want accepted", out)
	}

	// A server owned by nobody serves nobody.
	s.Close()
	owned, err := Listen(path, nobody, statsHandler)
	if err != nil {
		t.Fatal(err)
	}
	defer owned.Close()
	openToAll()
	if out := run(nobody); !strings.Contains(out, "ACCEPTED") {
		t.Errorf("owner uid %d got %q, want accepted", nobody, out)
	}
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestSocketPath(t *testing.T) {
	a, err := SocketPath("/mnt/a")
	if err != nil {
		t.Skip(err)
	}
	b, _ := SocketPath("/mnt/b")
	if a == b {
		t.Errorf("two mount points share socket %s", a)
	}
	dir, _ := Dir()
	if filepath.Dir(a) != dir || !strings.HasSuffix(a, ".sock") {
		t.Errorf("SocketPath = %s, want a .sock in %s", a, dir)
	}
	// sun_path holds 108 bytes including the terminating NUL.
	long, _ := SocketPath("/" + strings.Repeat("x", 4000))
	if len(long) >= 108 {
		t.Errorf("socket path for a long mount point is %d bytes", len(long))
	}
}
