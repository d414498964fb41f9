package uring

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func newEngine(t testing.TB, opts EngineOptions) *Engine {
	t.Helper()
	e, err := NewEngine(opts)
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("io_uring unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Engine.Close: %v", err)
		}
	})
	return e
}

func TestEnginePreadPwriteFsync(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 8})
	content := bytes.Repeat([]byte("engine!!"), 2048)
	f := tempFile(t, content)
	fd := int(f.Fd())

	buf := make([]byte, 4096)
	n, err := e.Pread(fd, buf, 4000)
	if err != nil || n != 4096 || !bytes.Equal(buf, content[4000:8096]) {
		t.Fatalf("Pread = %d, %v; data equal %v", n, err, bytes.Equal(buf, content[4000:8096]))
	}
	n, err = e.Pread(fd, buf, int64(len(content))-10)
	if err != nil || n != 10 {
		t.Fatalf("short Pread at EOF = %d, %v; want 10", n, err)
	}
	if n, err = e.Pwrite(fd, []byte("patched"), 3); err != nil || n != 7 {
		t.Fatalf("Pwrite = %d, %v", n, err)
	}
	if err := e.Fsync(fd, true); err != nil {
		t.Fatalf("Fsync(datasync): %v", err)
	}
	if err := e.Fsync(fd, false); err != nil {
		t.Fatalf("Fsync: %v", err)
	}
	got := make([]byte, 10)
	if _, err := unix.Pread(fd, got, 0); err != nil || string(got) != "engpatched" {
		t.Fatalf("pread after Pwrite = %q, %v", got, err)
	}
	if _, err := e.Pread(-1, buf, 0); !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Pread(-1) err = %v, want EBADF", err)
	}
	var errno syscall.Errno
	if _, err := e.Pwrite(fd, buf, -2); !errors.As(err, &errno) || errno != syscall.EINVAL {
		t.Fatalf("Pwrite at offset -2 err = %v, want EINVAL", err)
	}
	// A lone caller polls for itself: it never sleeps waiting for another.
	if st := e.Stats(); st.Requests != 7 || st.Parks != 0 || st.Enters < st.Requests {
		t.Fatalf("stats %+v, want 7 requests, no parks, an enter per request", st)
	}
}

func TestEngineBatchFanOut(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 16})
	const mirrors = 3
	files := make([]int, mirrors)
	for i := range files {
		files[i] = int(tempFile(t, nil).Fd())
	}
	data := bytes.Repeat([]byte{0xa5}, 8192)
	b := e.NewBatch()
	for _, fd := range files {
		b.Pwrite(fd, data, 4096)
	}
	b.Pwrite(-1, data, 0) // a dead mirror fails alone
	if err := e.Run(b); err != nil {
		t.Fatal(err)
	}
	res := b.Results()
	if len(res) != mirrors+1 {
		t.Fatalf("%d results, want %d", len(res), mirrors+1)
	}
	for i, fd := range files {
		if res[i] != int32(len(data)) {
			t.Errorf("mirror %d: res %d", i, res[i])
		}
		got := make([]byte, len(data))
		if n, err := unix.Pread(fd, got, 4096); err != nil || n != len(data) || !bytes.Equal(got, data) {
			t.Errorf("mirror %d: pread %d, %v", i, n, err)
		}
	}
	if res[mirrors] != -int32(syscall.EBADF) {
		t.Errorf("dead mirror res %d, want -EBADF", res[mirrors])
	}

	// An empty batch is done at once; one larger than the SQ is refused
	// rather than split (which could break its links).
	b.Reset()
	if err := e.Run(b); err != nil || len(b.Results()) != 0 {
		t.Fatalf("empty batch: %v, %v", err, b.Results())
	}
	for range e.Ring().SQEntries() + 1 {
		b.Add(func(s *SQE) { s.PrepNop() })
	}
	if err := e.Run(b); err == nil || len(b.Results()) != 0 {
		t.Fatalf("batch of %d on a %d-entry SQ: %v, results %v", b.Len(), e.Ring().SQEntries(), err, b.Results())
	}

	b.Reset()
	for _, fd := range files {
		b.Fsync(fd, true)
	}
	if err := e.Run(b); err != nil {
		t.Fatal(err)
	}
	for i, r := range b.Results() {
		if r != 0 {
			t.Errorf("fsync %d: res %d", i, r)
		}
	}
}

func TestEngineConcurrent(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 16, MaxInflight: 8})
	const blocks, size = 64, 4096
	content := make([]byte, blocks*size)
	for i := range content {
		content[i] = byte(i*7 + i/size)
	}
	f := tempFile(t, content)
	out := tempFile(t, nil)
	fd, outFd := int(f.Fd()), int(out.Fd())

	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, size)
			for i := range 200 {
				blk := (g*31 + i*17) % blocks
				n, err := e.Pread(fd, buf, int64(blk*size))
				if err != nil || n != size || !bytes.Equal(buf, content[blk*size:(blk+1)*size]) {
					errs <- fmt.Errorf("goroutine %d read block %d: n=%d err=%v", g, blk, n, err)
					return
				}
				if i%10 == 0 {
					b := e.NewBatch()
					b.Pwrite(outFd, buf, int64(blk*size))
					b.Pread(fd, buf[:0], 0)
					b.Add(func(s *SQE) { s.PrepNop() })
					if err := e.Run(b); err != nil || b.Results()[0] != size || b.Results()[2] != 0 {
						errs <- fmt.Errorf("batch: %v %v", err, b.Results())
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Every batch wrote a block read from its own position: the copy
	// must equal the source wherever it was written.
	got := make([]byte, len(content))
	if _, err := unix.Pread(outFd, got, 0); err != nil {
		t.Fatal(err)
	}
	zero := make([]byte, size)
	for blk := range blocks {
		b := got[blk*size : (blk+1)*size]
		if !bytes.Equal(b, zero) && !bytes.Equal(b, content[blk*size:(blk+1)*size]) {
			t.Errorf("block %d written with wrong data", blk)
		}
	}
}

func TestEngineClose(t *testing.T) {
	e, err := NewEngine(EngineOptions{})
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Pread(0, make([]byte, 1), 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pread after Close: %v, want ErrClosed", err)
	}
	if err := e.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func openFds(t *testing.T) int {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestEngineBackPressureAndClose blocks requests on an empty pipe: only
// MaxInflight of them enter the ring, the others wait; Close cancels the
// blocked ones, waits for every caller, and leaves no goroutine or fd.
func TestEngineBackPressureAndClose(t *testing.T) {
	fdsBefore, goroutinesBefore := openFds(t), runtime.NumGoroutine()
	e, err := NewEngine(EngineOptions{Entries: 4, MaxInflight: 2})
	if errors.Is(err, ErrUnavailable) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	rfd, wfd := pipe(t)
	const callers = 5
	results := make(chan error, callers)
	for range callers {
		go func() {
			_, err := e.Pread(rfd, make([]byte, 1), -1)
			results <- err
		}()
	}
	waitFor(t, "two requests in flight and three callers waiting", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.inflight == 2 && e.spaceWaiters == 3
	})
	// One byte completes one read and lets one waiting caller in.
	if _, err := unix.Write(wfd, []byte{1}); err != nil {
		t.Fatal(err)
	}
	if err := <-results; err != nil {
		t.Fatalf("read of the written byte: %v", err)
	}
	waitFor(t, "the freed slot reused", func() bool {
		e.mu.Lock()
		defer e.mu.Unlock()
		return e.inflight == 2 && e.spaceWaiters == 2
	})
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	var cancelled, closed int
	for range callers - 1 {
		switch err := <-results; {
		case errors.Is(err, syscall.ECANCELED), errors.Is(err, syscall.EINTR):
			cancelled++
		case errors.Is(err, ErrClosed):
			closed++
		default:
			t.Errorf("caller after Close: %v", err)
		}
	}
	if cancelled != 2 || closed != 2 {
		t.Errorf("%d cancelled, %d refused; want 2 and 2", cancelled, closed)
	}
	if n := openFds(t); n != fdsBefore+2 { // the pipe is closed by cleanup
		t.Errorf("%d fds open after Close, want %d", n, fdsBefore+2)
	}
	waitFor(t, "caller goroutines gone", func() bool { return runtime.NumGoroutine() <= goroutinesBefore })
}

// waitFor polls cond; the test fails if it does not hold within 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func TestEngineDoAndLinkedBatch(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 8})
	res, err := e.Do(func(s *SQE) { s.PrepNop() })
	if res != 0 || err != nil {
		t.Fatalf("Do(nop) = %d, %v", res, err)
	}
	res, err = e.Do(func(s *SQE) { s.PrepClose(-1) })
	if res != -int32(syscall.EBADF) || !errors.Is(err, syscall.EBADF) {
		t.Fatalf("Do(close(-1)) = %d, %v; want -EBADF", res, err)
	}

	// A chain whose head fails cancels the rest; a link flag on the
	// last request must not leak into requests of other callers.
	f := tempFile(t, []byte("keep"))
	b := e.NewBatch()
	b.Add(func(s *SQE) { s.PrepRead(-1, nil, 0); s.SetFlags(SQEIOLink) })
	b.Add(func(s *SQE) { s.PrepWrite(int(f.Fd()), []byte("lost"), 0); s.SetFlags(SQEIOLink) })
	if err := e.Run(b); err != nil {
		t.Fatal(err)
	}
	if r := b.Results(); r[0] != -int32(syscall.EBADF) || r[1] != -int32(syscall.ECANCELED) {
		t.Fatalf("chain results %v, want [-EBADF -ECANCELED]", r)
	}
	if res, err := e.Do(func(s *SQE) { s.PrepNop() }); res != 0 || err != nil {
		t.Fatalf("request after a batch ending in a link: %d, %v", res, err)
	}
}

// TestEngineHandoff mixes requests that complete inline (file reads) with
// requests that block until another goroutine acts (pipe reads), so that
// callers park, pollers leave with others' requests in flight and hand
// polling over. Every read must return its own pipe's bytes.
func TestEngineHandoff(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 8, MaxInflight: 12})
	const pipes, rounds = 10, 40
	type p struct{ r, w int }
	ps := make([]p, pipes)
	for i := range ps {
		ps[i].r, ps[i].w = pipe(t)
	}
	file := int(tempFile(t, bytes.Repeat([]byte{7}, 4096)).Fd())

	var wg sync.WaitGroup
	errs := make(chan error, pipes+4)
	for i, pp := range ps {
		wg.Add(2)
		go func() { // reader: one blocking read per byte the writer sends
			defer wg.Done()
			buf := make([]byte, 1)
			for round := range rounds {
				if n, err := e.Pread(pp.r, buf, -1); n != 1 || err != nil || buf[0] != byte(i*rounds+round) {
					errs <- fmt.Errorf("pipe %d round %d: n=%d err=%v byte=%d", i, round, n, err, buf[0])
					return
				}
			}
		}()
		go func() { // writer: sends bytes one by one, through the engine too
			defer wg.Done()
			for round := range rounds {
				runtime.Gosched()
				if _, err := e.Pwrite(pp.w, []byte{byte(i*rounds + round)}, -1); err != nil {
					errs <- fmt.Errorf("pipe %d write: %v", i, err)
					return
				}
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 4096)
			for range rounds * 5 {
				if n, err := e.Pread(file, buf, 0); n != 4096 || err != nil || buf[4095] != 7 {
					errs <- fmt.Errorf("file read: %d, %v", n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.inflight != 0 || len(e.parked) != 0 || e.polling || len(e.free) != e.maxInflight {
		t.Errorf("engine not idle: inflight %d parked %d polling %v free %d", e.inflight, len(e.parked), e.polling, len(e.free))
	}
}

// TestEnginePollerNotRobbed puts a second caller into the window between
// the poller releasing the lock and entering the kernel. The second caller's
// submission sends the poller's SQE too, and both reads complete inline. The
// completions must stay in the CQ for the poller: io_uring_enter waits for
// the CQ tail to pass the head it sees on entry, so a poller whose SQE was
// already submitted and whose completion was consumed by another caller
// would sleep until an unrelated completion arrives, forever on an idle ring.
func TestEnginePollerNotRobbed(t *testing.T) {
	e := newEngine(t, EngineOptions{Entries: 8})
	fd := int(tempFile(t, bytes.Repeat([]byte{3}, 4096)).Fd())

	second := make(chan error, 1)
	var once sync.Once
	testHookBeforePoll = func() {
		once.Do(func() {
			go func() {
				buf := make([]byte, 4096)
				_, err := e.Pread(fd, buf, 0)
				second <- err
			}()
			// Wait until the second caller either returned, or parked
			// with both reads complete. (Reads from a page cache
			// complete inline; where the kernel hands them to io-wq,
			// as 7.3 does for tmpfs, they complete a little later.)
			for deadline := time.Now().Add(10 * time.Second); len(second) == 0 && time.Now().Before(deadline); runtime.Gosched() {
				e.mu.Lock()
				parked := len(e.parked)
				e.mu.Unlock()
				if parked > 0 && e.ring.CQReady() >= 2 {
					break
				}
			}
			if n := e.ring.CQReady(); n != 2 {
				t.Errorf("%d completions left for the poller, want both (another caller consumed them)", n)
			}
		})
	}
	t.Cleanup(func() { testHookBeforePoll = nil })

	buf := make([]byte, 4096)
	if _, err := e.Pread(fd, buf, 0); err != nil {
		t.Fatalf("poller: %v", err)
	}
	if err := <-second; err != nil {
		t.Fatalf("second caller: %v", err)
	}
}
