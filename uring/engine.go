package uring

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"syscall"
)

// ErrClosed is returned by Engine calls after Close.
var ErrClosed = errors.New("uring: engine closed")

// EngineOptions configures NewEngine.
type EngineOptions struct {
	Entries     uint32 // SQ size; 0 means 256
	MaxInflight int    // bound on requests in flight; 0 or more than the CQ means the CQ size
}

// Engine runs I/O for many goroutines on one ring. There is no engine
// goroutine: the caller that finds nobody waiting on the ring becomes the
// poller and waits in io_uring_enter for completions, delivering the
// results of other callers as they arrive; the rest park on a channel until
// their results are in or they are asked to take over polling. A lone
// caller thus submits and reaps in one io_uring_enter, and a hot-cache read
// costs one system call, like pread. See the package documentation.
type Engine struct {
	ring *Ring

	mu           sync.Mutex
	space        sync.Cond // signalled when slots free or entering drops
	spaceWaiters int
	slots        []slot
	free         []uint32 // indexes of unused slots
	maxInflight  int
	inflight     int
	entering     int       // goroutines inside io_uring_enter
	polling      bool      // one of them waits for completions
	submitting   bool      // one of them only submits, and rechecks the SQ after
	parked       []*waiter // callers sleeping until woken
	cqes         []*CQE    // reap scratch space
	stats        EngineStats
	closed       bool
	ringClosed   bool  // Close unmapped the ring; woken callers must not touch it
	err          error // the ring failed; the engine is unusable
}

// slot tracks one request in flight; its index is the SQE's user data.
type slot struct {
	w   *waiter
	res *int32
	pin runtime.Pinner // keeps the request's buffer in place until completion
}

// waiter is one caller waiting for its requests.
type waiter struct {
	remaining int
	parkIdx   int           // index in Engine.parked, or -1
	wake      chan struct{} // capacity 1; a send removes the waiter from parked
	one       [1]int32      // result storage for single requests
}

var waiterPool = sync.Pool{New: func() any { return &waiter{parkIdx: -1, wake: make(chan struct{}, 1)} }}

// cancelTag marks the user data of the engine's own cancel request.
const cancelTag = ^uint64(0)

// NewEngine creates a ring and an Engine on it.
func NewEngine(opts EngineOptions) (*Engine, error) {
	entries := opts.Entries
	if entries == 0 {
		entries = 256
	}
	ring, err := New(entries, nil)
	if err != nil {
		return nil, err
	}
	max := int(ring.CQEntries())
	if opts.MaxInflight > 0 && opts.MaxInflight < max {
		max = opts.MaxInflight
	}
	e := &Engine{
		ring:        ring,
		slots:       make([]slot, max),
		free:        make([]uint32, max),
		maxInflight: max,
		cqes:        make([]*CQE, ring.CQEntries()),
	}
	for i := range e.free {
		e.free[i] = uint32(max - 1 - i)
	}
	e.space.L = &e.mu
	return e, nil
}

// EngineStats counts the engine's work since NewEngine.
type EngineStats struct {
	Requests uint64 // requests submitted
	Enters   uint64 // io_uring_enter calls: below Requests when submissions were combined
	Parks    uint64 // times a caller slept waiting for another to deliver its result
}

// Stats returns the counters.
func (e *Engine) Stats() EngineStats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Ring exposes the engine's ring for registration (files, buffers). Do
// not submit or reap on it directly.
func (e *Engine) Ring() *Ring { return e.ring }

// Pread reads like unix.Pread; failures are syscall.Errno.
func (e *Engine) Pread(fd int, p []byte, off int64) (int, error) {
	return e.single(op{kind: opRead, fd: fd, buf: p, off: off})
}

// Pwrite writes like unix.Pwrite; failures are syscall.Errno.
func (e *Engine) Pwrite(fd int, p []byte, off int64) (int, error) {
	return e.single(op{kind: opWrite, fd: fd, buf: p, off: off})
}

// Fsync is fsync(fd), or fdatasync(fd) when datasync.
func (e *Engine) Fsync(fd int, datasync bool) error {
	o := op{kind: opFsync, fd: fd}
	if datasync {
		o.flags = FsyncDatasync
	}
	_, err := e.single(o)
	return err
}

// Do runs one request prepared by prep and returns its CQE result; err is
// the syscall.Errno of a negative result, or an engine failure. The engine
// sets the user data and clears SQECQESkipSuccess and link flags. Memory
// the SQE points to must be pinned (runtime.Pinner) until Do returns.
func (e *Engine) Do(prep func(*SQE)) (res int32, err error) {
	return e.one(op{kind: opPrep, prep: prep})
}

func (e *Engine) single(o op) (int, error) {
	res, err := e.one(o)
	if err != nil {
		return 0, err
	}
	return int(res), nil
}

// one runs o and returns its CQE result; err is the errno of a negative
// result or an engine failure.
func (e *Engine) one(o op) (int32, error) {
	w := waiterPool.Get().(*waiter)
	if err := e.run([]op{o}, w, w.one[:]); err != nil {
		return 0, err // w may still be referenced by a slot: not pooled
	}
	res := w.one[0]
	waiterPool.Put(w)
	if res < 0 {
		return res, syscall.Errno(-res)
	}
	return res, nil
}

// run queues ops, submits them together and returns when all completed,
// with their results in results.
func (e *Engine) run(ops []op, w *waiter, results []int32) error {
	e.mu.Lock()
	if err := e.reserve(len(ops)); err != nil {
		e.mu.Unlock()
		return err
	}
	for i := range ops {
		id := e.free[len(e.free)-1]
		e.free = e.free[:len(e.free)-1]
		s := &e.slots[id]
		s.w, s.res = w, &results[i]
		sqe := e.ring.GetSQE()
		ops[i].fill(sqe, &s.pin)
		sqe.Flags &^= SQECQESkipSuccess // every request must complete visibly
		sqe.UserData = uint64(id)
		if i == len(ops)-1 {
			// A chain must end inside the batch, not link to the
			// next caller's request.
			sqe.Flags &^= SQEIOLink | SQEIOHardlink
		}
	}
	e.inflight += len(ops)
	e.stats.Requests += uint64(len(ops))
	w.remaining = len(ops)
	e.wait(w)
	var err error
	if w.remaining > 0 { // the ring failed before w's requests completed
		err = e.err
	}
	e.mu.Unlock()
	return err
}

// reserve waits until n more requests fit in flight and n SQEs are free.
func (e *Engine) reserve(n int) error {
	if n > e.maxInflight || uint32(n) > e.ring.SQEntries() {
		return fmt.Errorf("uring: %d requests exceed the engine's limit of %d", n, min(e.maxInflight, int(e.ring.SQEntries())))
	}
	for {
		if e.closed {
			return ErrClosed
		}
		if e.err != nil {
			return e.err
		}
		if e.inflight+n <= e.maxInflight {
			if e.sqSpace() >= uint32(n) {
				return nil
			}
			// SQEs published by callers that have not entered yet:
			// submit them now rather than wait for those callers.
			if err := e.submitLocked(); err != nil {
				return err
			}
			if e.sqSpace() >= uint32(n) {
				return nil
			}
		}
		e.spaceWaiters++
		e.space.Wait()
		e.spaceWaiters--
	}
}

func (e *Engine) sqSpace() uint32 {
	q := &e.ring.sq
	return q.entries - (q.sqeTail - q.khead.Load())
}

// submitLocked submits unconsumed SQEs without waiting, holding e.mu.
func (e *Engine) submitLocked() error {
	if n := e.ring.sq.flush(); n > 0 {
		e.stats.Enters++
		if _, errno := enter(e.ring.enterFd, n, 0, 0, nil, 0); errno != 0 && !retryable(errno) {
			e.fail(errno)
			return e.err
		}
	}
	return nil
}

func retryable(errno syscall.Errno) bool {
	return errno == syscall.EINTR || errno == syscall.EAGAIN || errno == syscall.EBUSY
}

// wait drives the ring until w's requests completed or the engine failed.
// It is called and returns with e.mu held, but never holds it in a system
// call.
func (e *Engine) wait(w *waiter) {
	for w.remaining > 0 && e.err == nil {
		pending := e.ring.sq.flush()
		switch {
		case !e.polling:
			// Become the poller: submit and wait for at least one
			// completion, ours or anybody's.
			e.polling = true
			e.enter(pending, 1, EnterGetEvents)
			e.polling = false
		case pending > 0 && !e.submitting:
			// Someone else polls; submit everything queued so far.
			e.submit(pending)
		default:
			// Our SQEs are in, or the caller now in e.submit takes
			// them when it returns: many requests, one system call.
			e.park(w)
			continue
		}
		e.reapUnlessPolled()
	}
	if e.err == nil && !e.ringClosed {
		e.leave()
	}
}

// submit calls io_uring_enter to submit pending SQEs without waiting.
func (e *Engine) submit(pending uint32) {
	e.submitting = true
	e.enter(pending, 0, 0)
	e.submitting = false
}

// leave runs when a caller's requests are done, before it returns. SQEs
// queued by callers that parked while it was submitting are its to send;
// it sends one more round itself (cheaper than waking anyone), then wakes
// a parked caller if the ring still needs a submitter or a poller.
func (e *Engine) leave() {
	if pending := e.ring.sq.flush(); pending > 0 && !e.submitting {
		e.submit(pending)
		e.reapUnlessPolled()
	}
	needSubmitter := e.ring.sq.flush() > 0 && !e.submitting
	needPoller := !e.polling && e.inflight > 0
	if (needSubmitter || needPoller) && len(e.parked) > 0 && e.err == nil {
		e.unpark(e.parked[len(e.parked)-1])
	}
}

// testHookBeforePoll, when set by a test, runs after the poller released
// e.mu and before it enters the kernel: the window other callers race in.
var testHookBeforePoll func()

// enter calls io_uring_enter with e.mu released.
func (e *Engine) enter(toSubmit, minComplete, flags uint32) {
	e.stats.Enters++
	e.entering++
	e.mu.Unlock()
	if minComplete > 0 && testHookBeforePoll != nil {
		testHookBeforePoll()
	}
	_, errno := enter(e.ring.enterFd, toSubmit, minComplete, flags, nil, 0)
	e.mu.Lock()
	e.entering--
	if errno != 0 && !retryable(errno) {
		e.fail(errno)
	}
	if e.closed && e.entering == 0 {
		e.space.Broadcast()
	}
}

// fail makes the engine unusable and releases every waiter. Slots in
// flight stay pinned: the kernel may still write to their buffers.
func (e *Engine) fail(errno syscall.Errno) {
	if e.err == nil {
		e.err = enterError(errno)
	}
	for len(e.parked) > 0 {
		e.unpark(e.parked[len(e.parked)-1])
	}
	e.space.Broadcast()
}

func (e *Engine) park(w *waiter) {
	e.stats.Parks++
	w.parkIdx = len(e.parked)
	e.parked = append(e.parked, w)
	e.mu.Unlock()
	<-w.wake
	e.mu.Lock()
}

// unpark removes w from the parked list and wakes it.
func (e *Engine) unpark(w *waiter) {
	last := len(e.parked) - 1
	e.parked[w.parkIdx] = e.parked[last]
	e.parked[w.parkIdx].parkIdx = w.parkIdx
	e.parked[last] = nil
	e.parked = e.parked[:last]
	w.parkIdx = -1
	w.wake <- struct{}{}
}

// reapUnlessPolled reaps unless another caller is the poller. Only the
// poller may consume completions while it polls: io_uring_enter waits until
// the CQ tail passes the head it saw on entry plus one, so a caller that
// reaped the poller's own completion just before the poller entered the
// kernel would leave it asleep until some unrelated completion arrives,
// forever if none is in flight. Completions left in the CQ wake the poller,
// which delivers them.
func (e *Engine) reapUnlessPolled() {
	if !e.polling {
		e.reap()
	}
}

// reap consumes all ready completions and delivers their results.
func (e *Engine) reap() {
	freed := false
	for {
		n := e.ring.PeekCQEs(e.cqes)
		if n == 0 {
			break
		}
		for _, c := range e.cqes[:n] {
			if c.UserData == cancelTag {
				continue
			}
			s := &e.slots[c.UserData]
			*s.res = c.Res
			s.pin.Unpin()
			w := s.w
			s.w, s.res = nil, nil
			e.free = append(e.free, uint32(c.UserData))
			e.inflight--
			if w.remaining--; w.remaining == 0 && w.parkIdx >= 0 {
				e.unpark(w)
			}
		}
		e.ring.CQAdvance(uint32(n))
		freed = true
	}
	if freed && (e.spaceWaiters > 0 || e.closed) {
		e.space.Broadcast()
	}
}

// Close stops accepting requests, cancels those in flight that can be
// cancelled, waits until every request completed and its caller left the
// ring, and closes the ring.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	e.closed = true
	e.space.Broadcast()
	if e.inflight > 0 && e.err == nil {
		if sqe := e.ring.GetSQE(); sqe != nil {
			sqe.PrepCancel(0, AsyncCancelAny)
			sqe.UserData = cancelTag
			_ = e.submitLocked() // a failure just means nothing to cancel
		}
	}
	// Every request in flight has a caller driving the ring until it
	// completes, so waiting is enough. After a ring failure nobody
	// drives it: close the ring underneath the kernel's requests.
	for (e.inflight > 0 && e.err == nil) || e.entering > 0 {
		e.space.Wait()
	}
	e.ringClosed = true
	return e.ring.Close()
}
