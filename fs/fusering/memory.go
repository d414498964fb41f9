package fusering

import (
	"os"
	"unsafe"

	"github.com/bpfusefs/bpfusefs/uring"
	"golang.org/x/sys/unix"
)

// queueMemory is the memory of a queue's entries, laid out so that a BPF
// program on the ring can find entry k from the region base alone:
//
//	0                            the BPF loop's state (bpf.SharedSize
//	                             bytes), on queues that run it
//	headerOff + k*headerSize     entry k's fuse_uring_req_header
//	headerOff + depth*headerSize the eventfd word (8 bytes)
//	scratchOff + k*scratchSize   entry k's scratch for the BPF loop
//	                             (bpf.ScratchSize bytes), on queues that
//	                             run it
//	headerArea + k*payloadStride entry k's payload buffer (not used by
//	                             zero-copy queues, whose payloads are in
//	                             the kernel's buffer pool)
//
// headerOff, headerArea and payloadStride are multiples of the page size.
type queueMemory struct {
	buf           []byte
	region        bool // the ring's parameter region, unmapped by the ring
	depth         int
	headerOff     int
	scratchOff    int
	headerArea    int
	payloadStride int
}

// loopLayout is the room a queue that runs the BPF loop needs in its
// memory: the loop's state before the headers, the scratch after them.
type loopLayout struct{ state, scratchSize int }

// newQueueMemory places the entries in the ring's parameter region if the
// kernel has IORING_REGISTER_MEM_REGION (6.13+), else in anonymous memory,
// with room for the BPF loop as loop says.
func newQueueMemory(ring *uring.Ring, depth, payloadSize int, loop loopLayout) (queueMemory, error) {
	page := os.Getpagesize()
	m := queueMemory{
		depth:         depth,
		headerOff:     loop.state,
		scratchOff:    roundUp(loop.state+depth*headerSize+8, 64),
		payloadStride: roundUp(payloadSize, page),
	}
	m.headerArea = roundUp(m.scratchOff+depth*loop.scratchSize, page)
	size := m.headerArea + depth*m.payloadStride
	var err error
	if m.buf, err = ring.RegisterMemRegion(size, 0); err == nil {
		m.region = true
		return m, nil
	}
	m.buf, err = unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
	if err != nil {
		return queueMemory{}, os.NewSyscallError("mmap entry buffers", err)
	}
	return m, nil
}

func roundUp(n, to int) int { return (n + to - 1) / to * to }

func (m *queueMemory) header(k int) *reqHeader {
	return (*reqHeader)(unsafe.Pointer(&m.buf[m.headerOff+k*headerSize]))
}

func (m *queueMemory) wakeWord() *uint64 {
	return (*uint64)(unsafe.Pointer(&m.buf[m.headerOff+m.depth*headerSize]))
}

func (m *queueMemory) payload(k int) []byte {
	off := m.headerArea + k*m.payloadStride
	return m.buf[off : off+m.payloadStride : off+m.payloadStride]
}

// release unmaps anonymous memory; a parameter region goes with its ring.
func (m *queueMemory) release() error {
	if m.buf == nil || m.region {
		return nil
	}
	err := unix.Munmap(m.buf)
	m.buf = nil
	return os.NewSyscallError("munmap entry buffers", err)
}
