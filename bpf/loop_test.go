package bpf

import (
	"bytes"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/bpfusefs/bpfusefs/uring"
)

const testRegionSize = SharedSize + 64<<10

// requireLoop skips unless this machine can run io_uring BPF loops.
func requireLoop(tb testing.TB) {
	tb.Helper()
	requireBPF(tb, Available, "kernel cannot run the loop")
}

// requireBPF skips unless we may load BPF programs and available says the
// kernel can run them, saying why in one line.
func requireBPF(tb testing.TB, available func() error, missing string) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("loading BPF programs needs root (CAP_BPF)")
	}
	if err := available(); err != nil {
		tb.Skipf("%s: %v", missing, err)
	}
}

// newLoopRing sets up a ring for a Loop with its parameter region. The
// calling goroutine is locked to its thread for the rest of the test: the
// ring is SINGLE_ISSUER.
func newLoopRing(tb testing.TB) (*uring.Ring, []byte) {
	tb.Helper()
	runtime.LockOSThread()
	tb.Cleanup(runtime.UnlockOSThread)
	ring, err := uring.New(8, &uring.Options{Flags: RingFlags})
	if err != nil {
		tb.Fatalf("ring with flags %#x: %v", RingFlags, err)
	}
	tb.Cleanup(func() { ring.Close() })
	region, err := ring.RegisterMemRegion(testRegionSize, 0)
	if err != nil {
		tb.Fatalf("register parameter region: %v", err)
	}
	return ring, region
}

// ownCQCQEs is how many of own CQEs the program reaps from its own CQ:
// all of them on a kernel with extra CQs, none on others.
func ownCQCQEs(own uint64) uint64 {
	if uring.VerifyRegisterCQ() != nil {
		return 0
	}
	return own
}

func attach(tb testing.TB, ring *uring.Ring, region []byte) *Loop {
	tb.Helper()
	l, err := Attach(ring, region)
	if err != nil {
		tb.Fatalf("attach: %+v", err)
	}
	tb.Cleanup(func() { l.Close() })
	return l
}

func readStats(t *testing.T, l *Loop) Stats {
	t.Helper()
	s, err := l.Stats()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAvailableWrapsSentinel(t *testing.T) {
	err := Available()
	if err != nil && !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Available() = %v, want nil or an error wrapping ErrUnavailable", err)
	}
	if os.Getenv("BPFUSEFS_VM") == "1" && err != nil {
		t.Fatalf("the VM kernel (7.1+) must have io_uring bpf-ops: %v", err)
	}
}

func TestAttachWithoutSupport(t *testing.T) {
	if Available() == nil {
		t.Skip("kernel has io_uring bpf-ops")
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ring, err := uring.New(8, nil)
	if err != nil {
		t.Skipf("no io_uring: %v", err)
	}
	defer ring.Close()
	if _, err := Attach(ring, make([]byte, SharedSize)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Attach on a kernel without bpf-ops: %v, want an error wrapping ErrUnavailable", err)
	}
}

func TestAttachRejectsUnsuitableRing(t *testing.T) {
	requireLoop(t)
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ring, err := uring.New(8, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ring.Close()
	if _, err := Attach(ring, make([]byte, SharedSize)); err == nil {
		t.Fatal("Attach accepted a ring without DEFER_TASKRUN and SQ_REWIND")
	}
}

func TestLoopSubmitsGoSQEs(t *testing.T) {
	requireLoop(t)
	ring, region := newLoopRing(t)
	l := attach(t, ring, region)

	dir := t.TempDir()
	want := []byte("read through the BPF loop")
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	buf := region[SharedSize : SharedSize+len(want)]
	l.GetSQE().PrepNop()
	sqe := l.GetSQE()
	sqe.PrepNop()
	sqe.SetUserData(2)
	sqe = l.GetSQE()
	sqe.PrepRead(int(f.Fd()), buf, 0)
	sqe.SetUserData(3)
	if err := l.Enter(3); err != nil {
		t.Fatal(err)
	}
	var cqes [8]uring.CQE
	n := l.Completions(cqes[:])
	if n != 3 {
		t.Fatalf("got %d completions, want 3", n)
	}
	seen := map[uint64]int32{}
	for _, c := range cqes[:n] {
		seen[c.UserData] = c.Res
	}
	if seen[0] != 0 || seen[2] != 0 || seen[3] != int32(len(want)) {
		t.Fatalf("completions %+v, want NOPs 0 and 2 with res 0 and READ 3 with res %d", cqes[:n], len(want))
	}
	if !bytes.Equal(buf, want) {
		t.Fatalf("read %q, want %q", buf, want)
	}
	s := readStats(t, l)
	if s.GoSqes != 3 || s.HandedOff != 3 || s.OwnSqes != 0 || s.SubmitErrors != 0 {
		t.Fatalf("stats %+v, want 3 Go SQEs handed off and nothing else", s)
	}
	if l.Ready() != 0 {
		t.Fatalf("%d completions left after reading them all", l.Ready())
	}
}

// copyFiles runs the loop's copy job from a file of size random bytes and
// returns the source contents and what reached the destination.
func copyFiles(t *testing.T, l *Loop, size, length int64, chunk int) (n int64, src, dst []byte) {
	t.Helper()
	dir := t.TempDir()
	src = make([]byte, size)
	rand.Read(src)
	if err := os.WriteFile(filepath.Join(dir, "src"), src, 0o600); err != nil {
		t.Fatal(err)
	}
	in, err := os.Open(filepath.Join(dir, "src"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	n, err = l.Copy(int(in.Fd()), int(out.Fd()), length, chunk)
	if err != nil {
		t.Fatalf("copy: %v", err)
	}
	dst, err = os.ReadFile(filepath.Join(dir, "dst"))
	if err != nil {
		t.Fatal(err)
	}
	return n, src, dst
}

func TestLoopCopy(t *testing.T) {
	requireLoop(t)
	ring, region := newLoopRing(t)
	l := attach(t, ring, region)

	const size, chunk = 1<<20 + 1234, 16 << 10
	n, src, dst := copyFiles(t, l, size, size, chunk)
	if n != size || !bytes.Equal(src, dst) {
		t.Fatalf("copied %d bytes (%d in the destination), want %d identical bytes", n, len(dst), size)
	}
	chunks := uint64((size + chunk - 1) / chunk)
	s := readStats(t, l)
	if s.CopyBytes != size || s.OwnSqes != 2*chunks || s.OwnCqes != 2*chunks || s.HandedOff != 0 {
		t.Fatalf("stats %+v, want %d bytes in %d READ+WRITE pairs, nothing handed off", s, size, chunks)
	}
	// With extra CQs (kernel/patches) every one of them came by the
	// program's own CQ, which has room for all that are in flight.
	if want := ownCQCQEs(s.OwnCqes); s.OwnCqCqes != want {
		t.Fatalf("%d of the program's %d CQEs came by its own CQ, want %d", s.OwnCqCqes, s.OwnCqes, want)
	}

	// With bpf_io_uring_submit_sqes_flags (kernel/patches) the WRITEs,
	// which the destination's filesystem cannot do without blocking,
	// complete while issued: one step runs many READ+WRITE pairs.
	// Through io-wq each WRITE's completion would come as task work,
	// which the kernel runs between steps only: a step per pair at least.
	if SubmitBlockAvailable() == nil && s.Steps >= chunks {
		t.Fatalf("%d loop steps for %d READ+WRITE pairs: the WRITEs did not complete while issued", s.Steps, chunks)
	}

	// A source shorter than asked ends the job at its end.
	n, src, dst = copyFiles(t, l, 5000, 1<<20, 4096)
	if n != 5000 || !bytes.Equal(src, dst) {
		t.Fatalf("short source: copied %d bytes, want the 5000 it has", n)
	}
}

func TestLoopCopyErrorIsReported(t *testing.T) {
	requireLoop(t)
	ring, region := newLoopRing(t)
	l := attach(t, ring, region)

	out, err := os.OpenFile(filepath.Join(t.TempDir(), "dst"), os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// Reading from a write-only fd fails inside the loop with EBADF.
	_, err = l.Copy(int(out.Fd()), int(out.Fd()), 4096, 4096)
	if !errors.Is(err, syscall.EBADF) {
		t.Fatalf("copy from a write-only fd: %v, want EBADF", err)
	}
	// The loop is usable afterwards.
	l.GetSQE().PrepNop()
	if err := l.Enter(1); err != nil {
		t.Fatalf("enter after a failed copy: %v", err)
	}
}

func TestDetachRestoresRing(t *testing.T) {
	requireLoop(t)
	ring, region := newLoopRing(t)
	l, err := Attach(ring, region)
	if err != nil {
		t.Fatalf("attach: %+v", err)
	}
	if _, err := Attach(ring, region); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second attach to the same ring: %v, want EBUSY", err)
	}
	l.GetSQE().PrepNop()
	if err := l.Enter(1); err != nil {
		t.Fatal(err)
	}
	// Consumed, as it would stay on the ring's CQ where the loop hands
	// completions over there (extra CQs).
	if n := l.Completions(make([]uring.CQE, 2)); n != 1 {
		t.Fatalf("%d completions for one NOP", n)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// Without the program the CQ is Go's again.
	sqe := ring.GetSQE()
	sqe.PrepNop()
	sqe.SetUserData(42)
	if _, err := ring.SubmitAndWait(1); err != nil {
		t.Fatal(err)
	}
	cqe, err := ring.WaitCQE()
	if err != nil {
		t.Fatal(err)
	}
	if cqe.UserData != 42 {
		t.Fatalf("completion user data %d, want 42", cqe.UserData)
	}
	ring.CQESeen()

	// And a new loop attaches to it.
	l = attach(t, ring, region)
	l.GetSQE().PrepNop()
	if err := l.Enter(1); err != nil {
		t.Fatal(err)
	}
}

func TestVerifierRejectionIsAnError(t *testing.T) {
	requireLoop(t)
	// A CQ of 0 entries leaves the CQE index mask unbounded: the verifier
	// must refuse the program, and the error must carry its log.
	_, err := loadObjects(loadParams{sqEntries: 8, cqEntries: 0, ringFd: -1, sqeSize: 64, regionSize: SharedSize})
	var verr *ebpf.VerifierError
	if !errors.As(err, &verr) {
		t.Fatalf("load with an unbounded CQ index: %v, want a *ebpf.VerifierError", err)
	}
}

// TestLoadFUSE loads the program as a FUSE queue of 8 entries uses it and
// logs what the verifier spent on it: every mount loads it once per queue.
func TestLoadFUSE(t *testing.T) {
	requireLoop(t)
	files, err := NewFiles()
	if err != nil {
		t.Fatal(err)
	}
	defer files.Close()
	q := &FUSEQueue{Depth: 8, HeaderOff: SharedSize, ScratchOff: SharedSize + 8*fuseHeaderSize,
		PayloadOff: 3 * SharedSize, PayloadStride: 1 << 20, Files: files}
	start := time.Now()
	objs, err := loadObjects(loadParams{sqEntries: 16, cqEntries: 64, ringFd: -1, sqeSize: 128,
		regionSize: uint32(q.PayloadOff + q.Depth*q.PayloadStride), fuse: q})
	if err != nil {
		t.Fatalf("%+v", err)
	}
	defer objs.Close()
	info, err := objs.LoopStep.Info()
	if err != nil {
		t.Fatal(err)
	}
	insns, _ := info.VerifiedInstructions()
	t.Logf("loaded in %v: %d instructions verified", time.Since(start), insns)
}
