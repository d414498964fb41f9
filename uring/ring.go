package uring

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Options configures New. The zero value (or a nil *Options) is a plain
// ring with the kernel's default CQ size (twice the SQ).
type Options struct {
	Flags        uint32 // Setup* flags
	CQEntries    uint32 // CQ size; non-zero implies SetupCQSize
	SQThreadCPU  uint32 // CPU of the SQPOLL thread, with SetupSQAff
	SQThreadIdle uint32 // milliseconds before the SQPOLL thread sleeps
	WQFd         uint32 // ring whose io-wq to share, with SetupAttachWQ
}

// Ring is one io_uring instance: its fd and the mmapped SQ, CQ and SQE
// array. A Ring is not safe for concurrent use; Engine adds the locking
// for many goroutines.
type Ring struct {
	fd       int
	enterFd  int    // fd, or the registered ring index after RegisterRingFd
	enterReg uint32 // EnterRegisteredRing when enterFd is an index
	flags    uint32
	features uint32

	sq submissionQueue
	cq completionQueue

	ringMem, cqMem, sqeMem, regionMem []byte
	extraCQs                          []*ExtraCQ

	// waitArg is the IORING_ENTER_EXT_ARG argument of timed waits.
	waitArg struct {
		arg getEventsArg
		ts  Timespec
	}

	// keep holds memory the kernel references after registration (fixed
	// buffers), so that the GC never frees it underneath the kernel.
	keep map[uint32][]byte
}

// New sets up a ring with at least entries SQEs and maps its queues.
func New(entries uint32, opts *Options) (*Ring, error) {
	var p params
	if opts != nil {
		p.flags = opts.Flags
		p.cqEntries = opts.CQEntries
		p.sqThreadCPU = opts.SQThreadCPU
		p.sqThreadIdle = opts.SQThreadIdle
		p.wqFd = opts.WQFd
		if p.cqEntries != 0 {
			p.flags |= SetupCQSize
		}
	}
	if p.flags&(SetupNoMmap|SetupRegisteredFdOnly) != 0 {
		return nil, fmt.Errorf("uring: SetupNoMmap and SetupRegisteredFdOnly (caller-provided ring memory) are not supported")
	}
	fd, err := setup(entries, &p)
	if err != nil {
		return nil, err
	}
	r := &Ring{fd: fd, enterFd: fd, flags: p.flags, features: p.features, keep: map[uint32][]byte{}}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// mmap maps the rings. With FeatSingleMmap (5.4+) SQ and CQ rings share
// one mapping.
func (r *Ring) mmap(p *params) error {
	sqeBytes, cqeBytes := uint32(sqeSize), uint32(cqeSize)
	if p.flags&SetupSQE128 != 0 {
		sqeBytes *= 2
	}
	if p.flags&SetupCQE32 != 0 {
		cqeBytes *= 2
	}
	sqRingSize := p.sqOff.array + p.sqEntries*4
	cqRingSize := p.cqOff.cqes + p.cqEntries*cqeBytes
	single := p.features&FeatSingleMmap != 0
	if single {
		sqRingSize = max(sqRingSize, cqRingSize)
	}
	var err error
	if r.ringMem, err = mapRegion(r.fd, offSQRing, int(sqRingSize)); err != nil {
		return err
	}
	r.cqMem = r.ringMem
	if !single {
		if r.cqMem, err = mapRegion(r.fd, offCQRing, int(cqRingSize)); err != nil {
			return err
		}
	}
	if r.sqeMem, err = mapRegion(r.fd, offSQEs, int(p.sqEntries*sqeBytes)); err != nil {
		return err
	}
	r.sq = newSubmissionQueue(r.ringMem, &p.sqOff, r.sqeMem, p.flags)
	r.cq = newCompletionQueue(r.cqMem, &p.cqOff, p.flags)
	return nil
}

func mapRegion(fd int, off int64, size int) ([]byte, error) {
	mem, err := unix.Mmap(fd, off, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap io_uring", err)
	}
	return mem, nil
}

// Close unmaps the rings and closes the ring fd. The kernel cancels
// requests still in flight; memory they reference must stay valid until
// Close returns.
func (r *Ring) Close() error {
	var errs []error
	unmap := func(m []byte) {
		if m != nil {
			errs = append(errs, os.NewSyscallError("munmap io_uring", unix.Munmap(m)))
		}
	}
	if unsafe.SliceData(r.cqMem) != unsafe.SliceData(r.ringMem) {
		unmap(r.cqMem)
	}
	unmap(r.ringMem)
	unmap(r.sqeMem)
	unmap(r.regionMem)
	for _, q := range r.extraCQs {
		unmap(q.mem)
	}
	r.regionMem, r.sqeMem, r.cqMem, r.ringMem, r.extraCQs = nil, nil, nil, nil, nil
	if r.fd >= 0 {
		errs = append(errs, os.NewSyscallError("close io_uring", unix.Close(r.fd)))
		r.fd = -1
	}
	r.keep = nil
	return errors.Join(errs...)
}

// Fd returns the ring's file descriptor (for BPF attachment, MSG_RING,
// SetupAttachWQ).
func (r *Ring) Fd() int { return r.fd }

// Flags returns the setup flags the ring was created with.
func (r *Ring) Flags() uint32 { return r.flags }

// Features returns the Feat* bits the kernel reported at setup.
func (r *Ring) Features() uint32 { return r.features }

// SQEntries and CQEntries return the ring sizes the kernel chose.
func (r *Ring) SQEntries() uint32 { return r.sq.entries }

// CQEntries returns the number of CQ slots.
func (r *Ring) CQEntries() uint32 { return r.cq.entries }

// SQFlags returns the kernel's SQ ring flags (SQNeedWakeup, SQCQOverflow,
// SQTaskrun).
func (r *Ring) SQFlags() uint32 { return r.sq.kflags.Load() }

// SQDropped counts SQEs the kernel skipped as invalid.
func (r *Ring) SQDropped() uint32 { return r.sq.kdropped.Load() }

// CQOverflow counts completions the kernel had to drop because the CQ
// and its overflow list were full. With FeatNoDrop it stays 0 unless
// memory ran out.
func (r *Ring) CQOverflow() uint32 { return r.cq.koverflow.Load() }

// CQReady returns the number of completions waiting in the CQ.
func (r *Ring) CQReady() uint32 { return r.cq.ready() }

// GetSQE returns a zeroed SQE to fill, or nil when the SQ is full (submit
// and retry). The SQE is sent by the next Submit.
func (r *Ring) GetSQE() *SQE {
	sqe := r.sq.next()
	if sqe != nil {
		r.sq.clear(sqe)
	}
	return sqe
}

// WaitSQSpace waits until an SQPOLL ring's kernel thread has consumed at
// least one SQE, so that GetSQE has room again (liburing's
// io_uring_sqring_wait). With SQPOLL, completions can be visible before the
// thread moves the SQ head past the requests that made them, so a full SQ
// is normal there. Rings without SQPOLL return at once: their SQ empties
// on Submit.
func (r *Ring) WaitSQSpace() error {
	if r.flags&SetupSQPoll == 0 {
		return nil
	}
	for r.sq.full() {
		if _, errno := enter(r.enterFd, 0, 0, r.enterReg|EnterSQWait, nil, 0); errno != 0 && errno != syscall.EINTR {
			return enterError(errno)
		}
	}
	return nil
}

// Submit publishes the prepared SQEs and tells the kernel about them. It
// returns the number of SQEs the kernel consumed.
func (r *Ring) Submit() (int, error) {
	return r.SubmitAndWait(0)
}

// SubmitAndWait submits like Submit and waits until at least n completions
// are ready in the CQ.
func (r *Ring) SubmitAndWait(n uint32) (int, error) {
	return r.submitAndWait(n, nil)
}

// SubmitAndWaitTimeout is SubmitAndWait with a bound on the wait; on
// expiry it returns an error wrapping syscall.ETIME. It needs FeatExtArg
// (5.11).
func (r *Ring) SubmitAndWaitTimeout(n uint32, timeout time.Duration) (int, error) {
	deadline := time.Now().Add(timeout)
	return r.submitAndWait(n, &deadline)
}

// getEventsArg mirrors struct io_uring_getevents_arg.
type getEventsArg struct {
	sigmask   uint64
	sigmaskSz uint32
	minWaitUs uint32
	ts        uint64
}

func (r *Ring) submitAndWait(n uint32, deadline *time.Time) (int, error) {
	pending := r.sq.flush()
	submitted := 0
	for {
		flags := r.enterReg
		if n > 0 || r.cqNeedsFlush() {
			flags |= EnterGetEvents
		}
		if r.flags&SetupSQPoll != 0 {
			// The SQPOLL thread consumes the SQ; enter only to wake it.
			if r.sq.kflags.Load()&SQNeedWakeup != 0 {
				flags |= EnterSQWakeup
			}
			submitted += int(pending)
			pending = 0
		}
		if pending == 0 && flags&(EnterGetEvents|EnterSQWakeup) == 0 {
			return submitted, nil
		}
		var arg unsafe.Pointer
		var argSize uintptr
		if deadline != nil && n > 0 {
			left := time.Until(*deadline)
			if left <= 0 {
				return submitted, enterError(syscall.ETIME)
			}
			// The argument points to the timespec by address: both
			// live in the Ring, in the heap, where nothing moves.
			w := &r.waitArg
			w.ts = DurationTimespec(left)
			w.arg = getEventsArg{sigmaskSz: 8, ts: uint64(uintptr(unsafe.Pointer(&w.ts)))}
			arg, argSize, flags = unsafe.Pointer(&w.arg), unsafe.Sizeof(w.arg), flags|EnterExtArg
		}
		got, errno := enter(r.enterFd, pending, n, flags, arg, argSize)
		if errno == 0 {
			submitted += got
			pending -= uint32(got)
		}
		switch {
		case errno == syscall.EINTR:
			// Go's preemption signals interrupt waits. The kernel
			// reports EINTR only when it consumed no SQE, so pending
			// still holds (with SetupSQRewind it cannot be re-read).
		case errno != 0:
			return submitted, enterError(errno)
		case r.flags&SetupSQPoll == 0 && pending > 0:
			// The kernel stopped early (an SQE failed to prep and
			// SetupSubmitAll is off): report what was consumed. The
			// rest stays queued, except with SetupSQRewind, where
			// the next batch starts over at index 0.
			return submitted, nil
		}
		if r.cq.ready() >= n && pending == 0 {
			return submitted, nil
		}
	}
}

// cqNeedsFlush reports completions the kernel holds back: an overflowed
// CQ, or task work that only runs when the task enters the kernel.
func (r *Ring) cqNeedsFlush() bool {
	return r.sq.kflags.Load()&(SQCQOverflow|SQTaskrun) != 0
}

// GetEvents enters the kernel only to flush overflowed completions and run
// pending task work into the CQ.
func (r *Ring) GetEvents() error {
	for {
		_, errno := enter(r.enterFd, 0, 0, EnterGetEvents|r.enterReg, nil, 0)
		if errno != syscall.EINTR {
			if errno != 0 {
				return enterError(errno)
			}
			return nil
		}
	}
}

// PeekCQEs fills dst with up to len(dst) ready completions without
// consuming them and returns how many it filled. When the CQ looks empty
// but the kernel holds overflowed completions or task work, it flushes
// them first. Consume with CQAdvance once done with the entries.
func (r *Ring) PeekCQEs(dst []*CQE) int {
	n := r.cq.peek(dst)
	if n == 0 && len(dst) > 0 && r.cqNeedsFlush() {
		if r.GetEvents() == nil {
			n = r.cq.peek(dst)
		}
	}
	return n
}

// PeekPostedCQEs is PeekCQEs without entering the kernel: it sees the
// CQEs posted so far only. A ring whose io_uring_enter runs a BPF loop
// (package bpf) needs it: entering would run the loop.
func (r *Ring) PeekPostedCQEs(dst []*CQE) int { return r.cq.peek(dst) }

// CQAdvance marks the n oldest completions as consumed, freeing their slots.
func (r *Ring) CQAdvance(n uint32) { r.cq.advance(n) }

// CQESeen consumes one completion returned by WaitCQE.
func (r *Ring) CQESeen() { r.cq.advance(1) }

// WaitCQE returns the oldest completion, waiting for one if needed. The
// entry stays in the CQ until CQESeen or CQAdvance.
func (r *Ring) WaitCQE() (*CQE, error) {
	return r.waitCQE(nil)
}

// WaitCQETimeout is WaitCQE with a bound; on expiry it returns an error
// wrapping syscall.ETIME.
func (r *Ring) WaitCQETimeout(timeout time.Duration) (*CQE, error) {
	deadline := time.Now().Add(timeout)
	return r.waitCQE(&deadline)
}

func (r *Ring) waitCQE(deadline *time.Time) (*CQE, error) {
	var one [1]*CQE
	for {
		if r.PeekCQEs(one[:]) == 1 {
			return one[0], nil
		}
		if _, err := r.submitAndWait(1, deadline); err != nil {
			return nil, err
		}
	}
}
