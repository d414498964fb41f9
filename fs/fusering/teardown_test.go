package fusering

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// hangLimit bounds waits that only end if the code under test works; it
// detects hangs and is never a performance assertion.
const hangLimit = 30 * time.Second

// The test binary, re-executed, is a helper process: a daemon serving the
// mount point named by helperEnv, or a reader of the file named by
// readerEnv.
const (
	helperEnv = "FUSERING_TEST_HELPER_MOUNT"
	readerEnv = "FUSERING_TEST_HELPER_READ"
)

func TestMain(m *testing.M) {
	if mnt := os.Getenv(helperEnv); mnt != "" {
		serveHelper(mnt)
		return
	}
	if name := os.Getenv(readerEnv); name != "" {
		readHelper(name)
		return
	}
	os.Exit(m.Run())
}

// readHelper makes one read(2) of name, which the test interrupts.
func readHelper(name string) {
	fd, err := unix.Open(name, unix.O_RDONLY, 0)
	if err == nil {
		_, err = unix.Read(fd, make([]byte, 4096))
	}
	fmt.Println("read:", err)
}

// serveHelper is the daemon of TestDaemonKilled: it mounts a loopback of
// mnt+".backing" on mnt, says "ready" and serves until it is killed.
func serveHelper(mnt string) {
	root, err := loopbackFS(mnt + ".backing")
	if err == nil {
		mo := &fuse.MountOptions{DisabledCapabilities: fuse.CAP_PASSTHROUGH}
		_, err = Mount(mnt, root, mo, Options{})
	}
	if err != nil {
		fmt.Println("mount:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	select {}
}

// gatedFS holds READ and FSYNC in the daemon until the test opens the
// gate; a READ interrupted meanwhile fails with EINTR.
type gatedFS struct {
	fuse.RawFileSystem
	entered     chan uint32 // receives the opcode of each held request
	gate        chan struct{}
	interrupted chan struct{} // receives each interrupted READ
}

func newGatedFS(fs fuse.RawFileSystem) *gatedFS {
	return &gatedFS{RawFileSystem: fs, entered: make(chan uint32, 64), gate: make(chan struct{}),
		interrupted: make(chan struct{}, 64)}
}

func (g *gatedFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	g.entered <- opRead
	select {
	case <-g.gate:
		return g.RawFileSystem.Read(cancel, in, buf)
	case <-cancel:
		g.interrupted <- struct{}{}
		return nil, fuse.EINTR
	}
}

func (g *gatedFS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	g.entered <- opFsync
	<-g.gate
	return g.RawFileSystem.Fsync(cancel, in)
}

func mountGated(t *testing.T, opts Options) (*testMount, *gatedFS) {
	m := newTestMount(t)
	g := newGatedFS(newBackedFS(t, m.backing, true))
	return mountOver(t, m, g, testMountOptions(), opts), g
}

// waitOrFail waits for done, failing the test if it never comes.
func waitOrFail(t *testing.T, done <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(hangLimit):
		t.Fatalf("%s: still waiting after %v", what, hangLimit)
	}
}

// ringFds counts this process's io_uring instances.
func ringFds(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, fd := range fds {
		if target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name())); target == "anon_inode:[io_uring]" {
			n++
		}
	}
	return n
}

// TestUnmountWithRequestsInFlight detaches the mount while READs wait in
// the daemon: they complete, and once the last file closes the queues end
// and every ring is closed.
func TestUnmountWithRequestsInFlight(t *testing.T) {
	requireRing(t)
	before := ringFds(t)
	m, g := mountGated(t, Options{})
	want := bytes.Repeat([]byte("in flight "), 1000)
	if err := os.WriteFile(filepath.Join(m.backing, "f"), want, 0o644); err != nil {
		t.Fatal(err)
	}
	// Open first: a held READ keeps its queue thread, which OPEN on the
	// same CPU would wait for.
	files := make([]*os.File, 4)
	for i := range files {
		f, err := os.Open(filepath.Join(m.mnt, "f"))
		if err != nil {
			t.Fatal(err)
		}
		files[i] = f
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(files))
	for _, f := range files {
		wg.Go(func() {
			defer f.Close()
			got := make([]byte, len(want))
			n, err := f.ReadAt(got, 0)
			switch {
			case err != nil:
				errs <- err
			case !bytes.Equal(got[:n], want):
				errs <- errors.New("read returned wrong data")
			}
		})
	}
	select {
	case <-g.entered:
	case <-time.After(hangLimit):
		t.Fatal("no READ reached the daemon")
	}
	if err := unix.Unmount(m.mnt, unix.MNT_DETACH); err != nil {
		t.Fatal(err)
	}
	m.unmounts = false
	close(g.gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("read in flight during unmount: %v", err)
	}
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	waitOrFail(t, done, "Wait after unmount")
	if after := ringFds(t); after != before {
		t.Errorf("%d io_uring fds open after Wait, %d before Mount", after, before)
	}
}

// TestSlowRequestDoesNotStallQueue holds an FSYNC in the daemon and checks
// that requests from the same CPU, hence the same queue, are still served.
func TestSlowRequestDoesNotStallQueue(t *testing.T) {
	requireRing(t)
	m, g := mountGated(t, Options{Depth: 2, DeferTaskrun: true})
	name := filepath.Join(m.mnt, "f")
	if err := os.WriteFile(name, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(name, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	onCPU0 := func(fn func()) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		var set unix.CPUSet
		set.Set(0)
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			t.Error(err)
		}
		fn()
	}
	fsynced := make(chan error, 1)
	go onCPU0(func() { fsynced <- f.Sync() })
	select {
	case op := <-g.entered:
		if op != opFsync {
			t.Fatalf("held opcode %d, want FSYNC", op)
		}
	case <-time.After(hangLimit):
		t.Fatal("FSYNC never reached the daemon")
	}
	statted := make(chan struct{})
	go onCPU0(func() {
		defer close(statted)
		for i := range 20 {
			other := filepath.Join(m.mnt, fmt.Sprint("other", i))
			if err := os.WriteFile(other, []byte("x"), 0o644); err != nil {
				t.Error(err)
			}
		}
	})
	waitOrFail(t, statted, "requests behind a held FSYNC")
	close(g.gate)
	if err := <-fsynced; err != nil {
		t.Fatal(err)
	}
	if st := m.srv.Stats(); st.Offloaded == 0 {
		t.Errorf("FSYNC was not served off the queue thread: %+v", st)
	}
}

// TestInterruptReachesRingRequest interrupts a reader whose READ came over
// the ring and waits in the daemon: the kernel sends the INTERRUPT over
// /dev/fuse, and it must cancel the ring request.
func TestInterruptReachesRingRequest(t *testing.T) {
	requireRing(t)
	m, g := mountGated(t, Options{})
	if err := os.WriteFile(filepath.Join(m.backing, "f"), []byte("interrupt me"), 0o644); err != nil {
		t.Fatal(err)
	}
	// One plain read(2) of a file opened FOPEN_DIRECT_IO (as the gated
	// file system does): the caller's own READ, not readahead, which is
	// never interrupted. Even SIGKILL first makes the kernel send an
	// INTERRUPT; the reader then waits for the answer to die.
	reader := exec.Command(os.Args[0], "-test.run=^$")
	reader.Env = append(os.Environ(), readerEnv+"="+filepath.Join(m.mnt, "f"))
	if err := reader.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { reader.Wait(); close(exited) }()
	select {
	case <-g.entered:
	case <-time.After(hangLimit):
		t.Fatal("the READ never reached the daemon")
	}
	if err := reader.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-g.interrupted:
	case <-time.After(hangLimit):
		close(g.gate)
		t.Fatal("the INTERRUPT did not reach the READ served over the ring")
	}
	waitOrFail(t, exited, "the interrupted reader's exit")
	if st := m.srv.Stats(); st.Ring.Reads == 0 || st.Dev.Requests == 0 {
		t.Errorf("want the READ by ring and the INTERRUPT by /dev/fuse: %+v", st)
	}
	close(g.gate)
}

// connectionID returns the FUSE connection number of the mount at mnt:
// its device minor, the name under /sys/fs/fuse/connections.
func connectionID(t *testing.T, mnt string) string {
	t.Helper()
	info, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(info), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == mnt {
			_, minor, _ := strings.Cut(f[2], ":")
			return minor
		}
	}
	t.Fatalf("%s not in mountinfo", mnt)
	return ""
}

// TestKernelAbort aborts the connection through fusectl: the queues and the
// device reader end, the mount reports ENOTCONN, and it can be unmounted.
func TestKernelAbort(t *testing.T) {
	requireRing(t)
	m := mountLoopback(t, Options{DeferTaskrun: true})
	if err := os.WriteFile(filepath.Join(m.mnt, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	const fusectl = "/sys/fs/fuse/connections"
	abort := filepath.Join(fusectl, connectionID(t, m.mnt), "abort")
	if _, err := os.Stat(abort); errors.Is(err, os.ErrNotExist) {
		if err := unix.Mount("fusectl", fusectl, "fusectl", 0, ""); err != nil {
			t.Skipf("no %s and cannot mount fusectl: %v", abort, err)
		}
		t.Cleanup(func() { unix.Unmount(fusectl, 0) })
	}
	if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
		t.Fatalf("aborting through fusectl: %v", err)
	}
	done := make(chan struct{})
	go func() { m.srv.Wait(); close(done) }()
	waitOrFail(t, done, "Wait after abort")
	if _, err := os.Stat(filepath.Join(m.mnt, "f")); !errors.Is(err, syscall.ENOTCONN) && !errors.Is(err, syscall.ECONNABORTED) {
		t.Errorf("stat on an aborted mount: %v, want ENOTCONN", err)
	}
}

// TestDaemonKilled SIGKILLs a daemon serving over the ring: it dies, and
// the mount reports ENOTCONN.
func TestDaemonKilled(t *testing.T) {
	requireRing(t)
	dir := t.TempDir()
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{mnt, mnt + ".backing"} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"="+mnt)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(mnt, unix.MNT_DETACH) })
	line, _ := bufio.NewReader(stdout).ReadString('\n')
	if line != "ready\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("helper daemon: %q", line)
	}
	if err := os.WriteFile(filepath.Join(mnt, "f"), []byte("before the kill"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	waitOrFail(t, exited, "the killed daemon's exit")
	// The kernel ends the connection once it has cancelled the dead
	// daemon's ring commands, which it does asynchronously; requests in
	// between fail with ECANCELED, or ECONNABORTED when the teardown
	// catches them queued.
	for deadline := time.Now().Add(hangLimit); ; time.Sleep(10 * time.Millisecond) {
		_, err := os.Stat(filepath.Join(mnt, "f"))
		if errors.Is(err, syscall.ENOTCONN) {
			break
		}
		transient := errors.Is(err, syscall.ECANCELED) || errors.Is(err, syscall.ECONNABORTED)
		if !transient || time.Now().After(deadline) {
			t.Fatalf("stat after the daemon died: %v, want ENOTCONN", err)
		}
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		t.Errorf("unmount after the daemon died: %v", err)
	}
}

// TestUnavailable checks that with enable_uring=N Available and Mount fail
// with ErrUnavailable, naming the parameter, and leave nothing mounted.
func TestUnavailable(t *testing.T) {
	setEnableURing(t, "N")
	err := Available()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "enable_uring") {
		t.Fatalf("Available() = %v, want ErrUnavailable naming enable_uring", err)
	}
	mnt := t.TempDir()
	_, err = Mount(mnt, mustLoopbackFS(t, t.TempDir()), nil, Options{})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Mount = %v, want ErrUnavailable", err)
	}
	if mounts, _ := os.ReadFile("/proc/self/mounts"); bytes.Contains(mounts, []byte(mnt)) {
		t.Fatalf("%s is mounted after a failed Mount", mnt)
	}
}
