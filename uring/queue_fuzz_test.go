package uring

import (
	"testing"
	"unsafe"
)

// fakeKernel owns the kernel side of an SQ/CQ pair laid out in ordinary
// memory, so the application side (submissionQueue, completionQueue) can
// be driven through arbitrary interleavings and index wrap-around.
type fakeKernel struct {
	ring, sqes []byte
	sqOff      sqringOffsets
	cqOff      cqringOffsets
	flags      uint32
	sq         submissionQueue
	cq         completionQueue
}

func newFakeKernel(sqEntries, cqEntries, sqStart, cqStart, flags uint32) *fakeKernel {
	k := &fakeKernel{flags: flags}
	k.sqOff = sqringOffsets{head: 0, tail: 4, ringMask: 8, ringEntries: 12, flags: 16, dropped: 20, array: 64}
	cqBase := k.sqOff.array + sqEntries*4
	k.cqOff = cqringOffsets{head: cqBase, tail: cqBase + 4, ringMask: cqBase + 8, ringEntries: cqBase + 12, overflow: cqBase + 16, cqes: cqBase + 64}
	cqeBytes := uint32(cqeSize)
	if flags&SetupCQE32 != 0 {
		cqeBytes *= 2
	}
	words := make([]uint64, (k.cqOff.cqes+cqEntries*cqeBytes)/8+1) // 8-byte aligned
	k.ring = unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), len(words)*8)
	sqeBytes := uint32(sqeSize)
	if flags&SetupSQE128 != 0 {
		sqeBytes *= 2
	}
	k.sqes = make([]byte, sqEntries*sqeBytes)
	set := func(off, v uint32) { word(k.ring, off).Store(v) }
	set(k.sqOff.ringMask, sqEntries-1)
	set(k.sqOff.ringEntries, sqEntries)
	set(k.cqOff.ringMask, cqEntries-1)
	set(k.cqOff.ringEntries, cqEntries)
	if flags&SetupSQRewind == 0 {
		set(k.sqOff.head, sqStart)
		set(k.sqOff.tail, sqStart)
	}
	set(k.cqOff.head, cqStart)
	set(k.cqOff.tail, cqStart)
	k.sq = newSubmissionQueue(k.ring, &k.sqOff, k.sqes, flags)
	k.cq = newCompletionQueue(k.ring, &k.cqOff, flags)
	return k
}

// consume plays io_uring_enter: it takes up to n SQEs and posts a CQE for
// each, stopping when the CQ is full. It returns how many it took.
func (k *fakeKernel) consume(n uint32) uint32 {
	head := word(k.ring, k.sqOff.head)
	tail := word(k.ring, k.sqOff.tail)
	ctail := word(k.ring, k.cqOff.tail)
	chead := word(k.ring, k.cqOff.head)
	mask := k.sq.mask
	var done uint32
	for ; done < n; done++ {
		var slot uint32
		if k.flags&SetupSQRewind != 0 {
			slot = done
		} else {
			if head.Load() == tail.Load() {
				break
			}
			slot = head.Load() & mask
			if k.flags&SetupNoSQArray == 0 {
				slot = *(*uint32)(unsafe.Pointer(&k.ring[k.sqOff.array+4*slot]))
			}
		}
		if ctail.Load()-chead.Load() == k.cq.entries {
			break
		}
		sqe := (*SQE)(unsafe.Add(k.sq.sqes, uintptr(slot)<<k.sq.shift))
		cqe := (*CQE)(unsafe.Add(k.cq.cqes, uintptr(ctail.Load()&k.cq.mask)<<k.cq.shift))
		*cqe = CQE{UserData: sqe.UserData, Res: int32(sqe.Opcode)}
		if k.cq.shift == 5 {
			cqe.Big()[0], cqe.Big()[1] = sqe.UserData, ^sqe.UserData
		}
		ctail.Add(1)
		if k.flags&SetupSQRewind == 0 {
			head.Add(1)
		}
	}
	return done
}

// FuzzQueueIndices drives both rings through a random sequence of
// application and kernel steps starting at arbitrary (wrapping) indices
// and checks that every request completes exactly once, in order, and that
// fullness is reported exactly when the rings are full.
func FuzzQueueIndices(f *testing.F) {
	// Two-entry rings filled past capacity, in every layout.
	for mode := range uint8(5) {
		f.Add(^uint32(0), ^uint32(0)-1, uint8(0), mode, []byte{0, 0, 0, 1, 0, 3, 0, 0, 1, 2, 0, 3, 3, 0, 0, 0, 1})
	}
	f.Add(uint32(0), uint32(0), uint8(2), uint8(0), []byte{0, 0, 1, 2, 3, 0, 1, 2, 3})
	f.Add(^uint32(0)-2, ^uint32(0)-1, uint8(2), uint8(1), []byte{0, 0, 0, 0, 0, 1, 2, 2, 3, 3, 0, 0, 1, 2, 3, 3})
	f.Add(uint32(1<<31), ^uint32(0), uint8(3), uint8(2), []byte{0, 1, 0, 1, 2, 0, 0, 1, 3, 2, 3, 0, 1, 2, 3})
	f.Add(^uint32(0)-7, uint32(5), uint8(3), uint8(3), []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 1, 2, 3, 3, 3})
	f.Add(^uint32(0), ^uint32(0), uint8(1), uint8(4), []byte{0, 0, 1, 0, 1, 3, 0, 1, 2, 3, 3})
	f.Fuzz(func(t *testing.T, sqStart, cqStart uint32, log2 uint8, mode uint8, steps []byte) {
		sqEntries := uint32(1) << (log2%5 + 1) // 2..32
		layouts := []uint32{0, SetupSQE128 | SetupCQE32, SetupNoSQArray, SetupNoSQArray | SetupSQE128, SetupNoSQArray | SetupSQRewind}
		flags := layouts[int(mode)%len(layouts)]
		k := newFakeKernel(sqEntries, 2*sqEntries, sqStart, cqStart, flags)
		rewind := flags&SetupSQRewind != 0

		var nextID, wantID uint64 // user data of the next SQE and of the next CQE
		var handedOut uint32      // SQEs got but not flushed
		cqes := make([]*CQE, 2*sqEntries)
		for i, step := range steps {
			arg := uint32(i%7) + 1
			switch step % 4 {
			case 0: // get an SQE
				unconsumed := nextID - wantID - uint64(k.cq.ready())
				full := rewind && handedOut == sqEntries || !rewind && unconsumed == uint64(sqEntries)
				sqe := k.sq.next()
				if (sqe == nil) != full {
					t.Fatalf("step %d: GetSQE nil=%v, full=%v (%d unconsumed)", i, sqe == nil, full, unconsumed)
				}
				if sqe != nil {
					k.sq.clear(sqe)
					sqe.PrepNop()
					sqe.UserData = nextID
					nextID++
					handedOut++
				}
			case 1: // submit
				n := k.sq.flush()
				handedOut = 0
				if rewind {
					// The kernel must take the whole batch before the
					// next GetSQE reuses index 0: make room first.
					reap(t, k, cqes, &wantID, ^uint32(0))
					arg = n
				}
				if got := k.consume(min(n, arg)); rewind && got != n {
					t.Fatalf("step %d: kernel took %d of %d rewound SQEs", i, got, n)
				}
			case 2: // kernel consumes on its own (SQPOLL-like)
				if !rewind {
					k.consume(arg)
				}
			case 3: // reap some
				reap(t, k, cqes, &wantID, arg)
			}
			if k.cq.ready() > k.cq.entries {
				t.Fatalf("step %d: %d CQEs ready in a CQ of %d", i, k.cq.ready(), k.cq.entries)
			}
		}
		// Drain: everything handed out must complete.
		for range 2*sqEntries + 1 {
			reap(t, k, cqes, &wantID, ^uint32(0))
			k.consume(k.sq.flush())
		}
		reap(t, k, cqes, &wantID, ^uint32(0))
		if wantID != nextID {
			t.Fatalf("%d requests submitted, %d completed", nextID, wantID)
		}
	})
}

func reap(t *testing.T, k *fakeKernel, cqes []*CQE, wantID *uint64, max uint32) {
	t.Helper()
	n := k.cq.peek(cqes[:min(uint32(len(cqes)), max)])
	for _, c := range cqes[:n] {
		if c.UserData != *wantID {
			t.Fatalf("CQE user data %d, want %d", c.UserData, *wantID)
		}
		if k.cq.shift == 5 && (c.Big()[0] != c.UserData || c.Big()[1] != ^c.UserData) {
			t.Fatalf("big CQE payload %x for %d", *c.Big(), c.UserData)
		}
		*wantID++
	}
	k.cq.advance(uint32(n))
}
