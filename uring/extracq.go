package uring

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// ExtraCQ is a completion queue of a Ring besides its own, which takes every
// CQE whose user_data&Mask == Value (IORING_REGISTER_CQ, from bpfusefs's
// kernel series in kernel/patches/). One consumer, say a bpf-ops program,
// can reap its completions there while another waits on the ring's CQ for
// the rest. When an extra CQ is full the kernel posts the CQE to the ring's
// own CQ instead and counts it in Overflow: no completion is lost, but it
// may arrive on the other queue. Extra CQs hold 16-byte CQEs only, so a
// ring with SetupCQE32 cannot have them. A ring has at most eight; they
// live as long as the ring (Stop only ends the steering), and its Close
// unmaps them.
//
// IORING_OP_TIMEOUT's completion count and the ring's eventfd see only the
// ring's own CQ.
type ExtraCQ struct {
	ID          uint32 // the kernel's number for the CQ, 1..
	Mask, Value uint64

	ring *Ring
	mem  []byte
	q    completionQueue
}

// extraCQOffsets is the layout of struct io_uring_cq_ring: head, tail and
// the read-only fields on cache lines of their own, then the CQEs.
var extraCQOffsets = cqringOffsets{head: 0, tail: 64, ringMask: 128, ringEntries: 132, overflow: 136, cqes: 192}

// cqReg mirrors struct io_uring_cq_reg.
type cqReg struct {
	regionUptr uint64
	mask       uint64
	value      uint64
	entries    uint32
	id         uint32
	flags      uint32
	_          [5]uint32
}

// RegisterCQ adds an extra completion queue of entries CQEs (a power of
// two) taking the CQEs whose user_data&mask == value; the first registered
// CQ that matches a CQE takes it. A kernel without the series fails with
// EINVAL (the opcode is unknown to it).
func (r *Ring) RegisterCQ(entries uint32, mask, value uint64) (*ExtraCQ, error) {
	if entries == 0 || entries&(entries-1) != 0 {
		return nil, fmt.Errorf("uring: extra CQ of %d entries: want a power of two", entries)
	}
	if value&^mask != 0 {
		return nil, fmt.Errorf("uring: extra CQ value %#x has bits outside mask %#x: it would match nothing", value, mask)
	}
	page := uint32(os.Getpagesize())
	size := (extraCQOffsets.cqes + entries*cqeSize + page - 1) &^ (page - 1)
	var pin runtime.Pinner
	defer pin.Unpin()
	desc := &regionDesc{size: uint64(size)}
	reg := &cqReg{regionUptr: uint64(pinnedAddr(&pin, desc)), mask: mask, value: value, entries: entries}
	if _, err := register(r.fd, RegisterCQ, unsafe.Pointer(reg), 1); err != nil {
		return nil, err
	}
	q := &ExtraCQ{ID: reg.id, Mask: mask, Value: value, ring: r}
	mem, err := mapRegion(r.fd, int64(desc.mmapOffset), int(size))
	if err != nil {
		// Unmapped, its CQEs would be out of reach.
		return nil, errors.Join(err, q.Stop())
	}
	q.mem, q.q = mem, newCompletionQueue(mem, &extraCQOffsets, 0)
	r.extraCQs = append(r.extraCQs, q)
	return q, nil
}

// Entries is the CQ's size.
func (q *ExtraCQ) Entries() uint32 { return q.q.entries }

// cqStop is IORING_REGISTER_CQ_STOP.
const cqStop = 1

// Stop makes the kernel post no more CQEs here: from then on they go where
// they would without this CQ. The CQEs it holds stay readable; its memory
// goes with the ring.
func (q *ExtraCQ) Stop() error {
	reg := &cqReg{id: q.ID, flags: cqStop}
	_, err := register(q.ring.fd, RegisterCQ, unsafe.Pointer(reg), 1)
	return err
}

// Ready is the number of CQEs posted and not yet consumed.
func (q *ExtraCQ) Ready() uint32 { return q.q.ready() }

// Overflow counts the CQEs that found the CQ full and went to the ring's CQ.
func (q *ExtraCQ) Overflow() uint32 { return q.q.koverflow.Load() }

// Peek fills dst with up to len(dst) of the oldest ready CQEs without
// consuming them; Advance consumes them.
func (q *ExtraCQ) Peek(dst []*CQE) int { return q.q.peek(dst) }

// Advance hands the n oldest CQEs' slots back to the kernel.
func (q *ExtraCQ) Advance(n uint32) { q.q.advance(n) }

// Wait blocks until at least n CQEs are ready on this CQ (io_uring_enter
// with GetEvents and the CQ's ID in the flags). It runs the ring's pending
// task work, as any wait does, so completions bound for the ring's own CQ
// are posted meanwhile too; they do not end the wait.
func (q *ExtraCQ) Wait(n uint32) error {
	r := q.ring
	for q.q.ready() < n {
		_, errno := enter(r.enterFd, 0, n, EnterGetEvents|r.enterReg|q.ID<<EnterCQShift, nil, 0)
		if errno != 0 && errno != syscall.EINTR {
			return enterError(errno)
		}
	}
	return nil
}
