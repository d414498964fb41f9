package uring

import (
	"sync/atomic"
	"unsafe"
)

// The SQ and CQ are single-producer/single-consumer rings of free-running
// uint32 indices: an entry lives at index&mask, the number of entries between
// head and tail is tail-head in wrapping uint32 arithmetic, so neither side
// ever resets a counter. The kernel reads the SQ tail and writes the SQ head;
// we write the CQ head and the kernel writes the CQ tail. Every shared index
// is read and written with sync/atomic, whose sequentially consistent loads
// and stores give the acquire/release ordering the uapi requires (SQE
// contents visible before the tail moves, CQE contents read after the tail).

// submissionQueue is the application side of the SQ ring.
type submissionQueue struct {
	khead, ktail, kflags, kdropped *atomic.Uint32

	sqes    unsafe.Pointer // entries<<sqeShift bytes
	shift   uint           // log2 of the SQE size: 6, or 7 with SetupSQE128
	mask    uint32
	entries uint32

	// sqeHead..sqeTail are SQEs handed out by next but not yet published
	// to the kernel by flush.
	sqeHead, sqeTail uint32
	// rewind: with SetupSQRewind the kernel ignores head and tail and
	// always starts at index 0, so the local tail restarts after each
	// submit and head stays 0.
	rewind bool
}

func word(mem []byte, off uint32) *atomic.Uint32 {
	return (*atomic.Uint32)(unsafe.Pointer(&mem[off]))
}

// newSubmissionQueue maps the SQ described by off inside ring. sqes holds
// the SQE array. With an SQ index array (no SetupNoSQArray) it is filled
// once with the identity mapping, so slot i always submits SQE i.
func newSubmissionQueue(ring []byte, off *sqringOffsets, sqes []byte, flags uint32) submissionQueue {
	q := submissionQueue{
		khead:    word(ring, off.head),
		ktail:    word(ring, off.tail),
		kflags:   word(ring, off.flags),
		kdropped: word(ring, off.dropped),
		sqes:     unsafe.Pointer(unsafe.SliceData(sqes)),
		shift:    6,
		mask:     word(ring, off.ringMask).Load(),
		entries:  word(ring, off.ringEntries).Load(),
		rewind:   flags&SetupSQRewind != 0,
	}
	if flags&SetupSQE128 != 0 {
		q.shift = 7
	}
	if flags&SetupNoSQArray == 0 {
		array := unsafe.Slice((*uint32)(unsafe.Pointer(&ring[off.array])), q.entries)
		for i := range array {
			array[i] = uint32(i)
		}
	}
	q.sqeHead = q.ktail.Load()
	q.sqeTail = q.sqeHead
	return q
}

// next returns the next free SQE, or nil when all entries are either
// waiting for flush or not yet consumed by the kernel.
func (q *submissionQueue) next() *SQE {
	if q.full() {
		return nil
	}
	sqe := (*SQE)(unsafe.Add(q.sqes, uintptr(q.sqeTail&q.mask)<<q.shift))
	q.sqeTail++
	return sqe
}

// full reports whether every entry is waiting for flush or not yet
// consumed by the kernel.
func (q *submissionQueue) full() bool {
	var head uint32
	if !q.rewind {
		head = q.khead.Load()
	}
	return q.sqeTail-head >= q.entries
}

// clear zeroes an SQE, including the second half of a 128-byte one.
func (q *submissionQueue) clear(sqe *SQE) {
	*sqe = SQE{}
	if q.shift == 7 {
		*(*SQE)(unsafe.Add(unsafe.Pointer(sqe), sqeSize)) = SQE{}
	}
}

// flush publishes the handed-out SQEs to the kernel and returns how many
// SQEs the kernel has not consumed yet: the to_submit for io_uring_enter.
func (q *submissionQueue) flush() uint32 {
	if q.rewind {
		n := q.sqeTail
		q.sqeTail = 0
		return n
	}
	if q.sqeHead != q.sqeTail {
		q.sqeHead = q.sqeTail
		q.ktail.Store(q.sqeTail)
	}
	return q.sqeTail - q.khead.Load()
}

// completionQueue is the application side of the CQ ring.
type completionQueue struct {
	khead, ktail, koverflow *atomic.Uint32

	cqes    unsafe.Pointer
	shift   uint // log2 of the CQE size: 4, or 5 with SetupCQE32
	mask    uint32
	entries uint32
}

func newCompletionQueue(ring []byte, off *cqringOffsets, flags uint32) completionQueue {
	q := completionQueue{
		khead:     word(ring, off.head),
		ktail:     word(ring, off.tail),
		koverflow: word(ring, off.overflow),
		cqes:      unsafe.Pointer(&ring[off.cqes]),
		shift:     4,
		mask:      word(ring, off.ringMask).Load(),
		entries:   word(ring, off.ringEntries).Load(),
	}
	if flags&SetupCQE32 != 0 {
		q.shift = 5
	}
	return q
}

// ready is the number of CQEs posted and not yet consumed.
func (q *completionQueue) ready() uint32 {
	return q.ktail.Load() - q.khead.Load()
}

// peek fills dst with the oldest ready CQEs without consuming them.
func (q *completionQueue) peek(dst []*CQE) int {
	head := q.khead.Load()
	n := q.ktail.Load() - head
	if uint64(n) > uint64(len(dst)) {
		n = uint32(len(dst))
	}
	for i := uint32(0); i < n; i++ {
		dst[i] = (*CQE)(unsafe.Add(q.cqes, uintptr((head+i)&q.mask)<<q.shift))
	}
	return int(n)
}

// advance hands n CQE slots back to the kernel.
func (q *completionQueue) advance(n uint32) {
	if n != 0 {
		q.khead.Store(q.khead.Load() + n)
	}
}
