package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"

	"github.com/bpfusefs/bpfusefs/uring"
)

// RingFlags are the setup flags a ring needs to run a Loop: bpf-ops require
// DEFER_TASKRUN (hence SINGLE_ISSUER), and with SQ_REWIND both Go and the
// program queue SQEs from index 0, so neither has to track the other's
// SQ tail.
const RingFlags = uring.SetupSingleIssuer | uring.SetupDeferTaskrun | uring.SetupSQRewind | uring.SetupNoSQArray

// SharedSize is the part of the parameter region the loop owns: its
// struct loop_shared, rounded up to a page. The rest of the region is the
// caller's (the copy job's buffer, later the FUSE entry headers).
const SharedSize = 4096

// handoffEntries mirrors HANDOFF_ENTRIES of loop.bpf.c.
const handoffEntries = uint32(len(loopLoopShared{}.Handoff))

// Copy job states (enum copy_state).
const (
	copyIdle  = 0
	copyStart = 1
)

func init() {
	if unsafe.Sizeof(loopLoopShared{}) > SharedSize {
		panic("bpf: struct loop_shared outgrew SharedSize")
	}
}

// Stats are the loop's counters, read from its BPF map.
type Stats loopLoopStats

// Loop is the BPF program that runs the event loop of one ring (struct_ops
// io_uring_bpf_ops). While it is attached, every io_uring_enter on the ring
// runs the program instead of the kernel's submit-and-wait: Go queues SQEs
// with GetSQE and calls Enter, the program submits them, and completions it
// does not consume itself reach Go through a hand-off queue in the ring's
// parameter region (Completions), never through the CQ. A Loop belongs to the
// goroutine (locked OS thread, SINGLE_ISSUER) that drives the ring.
type Loop struct {
	ring   *uring.Ring
	region []byte
	shared *loopLoopShared
	objs   loopObjects
	link   link.Link
	queued uint32
}

// Attach loads the loop program for ring and attaches it. ring must have
// been set up with RingFlags and region must be its parameter region
// (uring.Ring.RegisterMemRegion, at least SharedSize bytes); Attach resets
// the region's first SharedSize bytes. A kernel without bpf-ops yields an
// error wrapping ErrUnavailable; a verifier rejection wraps
// *ebpf.VerifierError, whose %+v prints the log.
func Attach(ring *uring.Ring, region []byte) (*Loop, error) {
	if err := Available(); err != nil {
		return nil, fmt.Errorf("bpf: attach loop: %w", err)
	}
	if ring.Flags()&RingFlags != RingFlags {
		return nil, fmt.Errorf("bpf: attach loop: ring lacks setup flags %#x", RingFlags&^ring.Flags())
	}
	if len(region) < SharedSize {
		return nil, fmt.Errorf("bpf: attach loop: parameter region of %d bytes, need %d", len(region), SharedSize)
	}
	l := &Loop{ring: ring, region: region, shared: (*loopLoopShared)(unsafe.Pointer(&region[0]))}
	clear(region[:SharedSize])
	var err error
	if l.objs, err = loadObjects(ring.SQEntries(), ring.CQEntries(), ring.Fd()); err != nil {
		return nil, err
	}
	l.link, err = link.AttachStructOps(link.StructOpsOptions{Map: l.objs.LoopOps})
	if err != nil {
		l.objs.Close()
		return nil, fmt.Errorf("bpf: attach loop to ring fd %d: %w", ring.Fd(), err)
	}
	return l, nil
}

// loadObjects loads the program for a ring of the given queue sizes (powers
// of two, which the program's index masks rely on) and fd.
func loadObjects(sqEntries, cqEntries uint32, ringFd int) (loopObjects, error) {
	var objs loopObjects
	spec, err := loadLoop()
	if err != nil {
		return objs, fmt.Errorf("bpf: parse loop object: %w", err)
	}
	if err := spec.Variables["sq_entries"].Set(sqEntries); err != nil {
		return objs, fmt.Errorf("bpf: set sq_entries: %w", err)
	}
	if err := spec.Variables["cq_entries"].Set(cqEntries); err != nil {
		return objs, fmt.Errorf("bpf: set cq_entries: %w", err)
	}
	if err := setRingFd(spec.Maps["loop_ops"], ringFd); err != nil {
		return objs, fmt.Errorf("bpf: set ring_fd: %w", err)
	}
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		return objs, fmt.Errorf("bpf: load loop program: %w", err)
	}
	return objs, nil
}

// setRingFd writes ring_fd into the struct_ops map's initial value, found
// by name in the object's BTF rather than by a hard-coded offset.
func setRingFd(ms *ebpf.MapSpec, fd int) error {
	st, ok := btf.As[*btf.Struct](ms.Value)
	if !ok || len(ms.Contents) != 1 {
		return fmt.Errorf("map %s is not a struct_ops value", ms.Name)
	}
	value, ok := ms.Contents[0].Value.([]byte)
	if !ok {
		return fmt.Errorf("map %s: value is %T", ms.Name, ms.Contents[0].Value)
	}
	for _, m := range st.Members {
		if m.Name == "ring_fd" {
			value = append([]byte(nil), value...)
			binary.NativeEndian.PutUint32(value[m.Offset.Bytes():], uint32(fd))
			ms.Contents[0].Value = value
			return nil
		}
	}
	return fmt.Errorf("struct %s has no ring_fd", st.Name)
}

// Close detaches the program; from then on the ring submits and waits the
// ordinary way. Completions still in the hand-off queue are dropped.
func (l *Loop) Close() error {
	err := l.link.Close()
	if cerr := l.objs.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("bpf: detach loop: %w", err)
	}
	return nil
}

// GetSQE returns a zeroed SQE that the next Enter submits, or nil when the
// SQ is full (Enter, then retry). Its UserData must not have bit 63 set:
// that bit marks the program's own requests.
func (l *Loop) GetSQE() *uring.SQE {
	sqe := l.ring.GetSQE()
	if sqe != nil {
		l.queued++
	}
	return sqe
}

// Enter runs the loop: the program submits the queued SQEs and returns once
// at least want completions wait in the hand-off queue (want 0: as soon as
// the SQEs are submitted and the CQ is drained).
func (l *Loop) Enter(want uint32) error {
	sh := l.shared
	queued := l.queued
	l.queued = 0
	sh.Want = want
	sh.SqSubmitted = 0
	sh.SqPending = queued

	var err error
	if queued > 0 {
		// Publishes the SQEs (resetting the local SQ tail to index 0)
		// and enters; the kernel ignores to_submit and runs the loop.
		_, err = l.ring.Submit()
	} else {
		err = l.ring.GetEvents()
	}
	if err != nil {
		return fmt.Errorf("bpf: enter loop: %w", err)
	}
	if queued > 0 && uint32(sh.SqSubmitted) != queued {
		if sh.SqSubmitted < 0 {
			return fmt.Errorf("bpf: loop submitted none of %d SQEs: %w", queued, syscall.Errno(-sh.SqSubmitted))
		}
		return fmt.Errorf("bpf: loop submitted %d of %d SQEs", sh.SqSubmitted, queued)
	}
	if ready := l.Ready(); ready < want {
		return fmt.Errorf("bpf: loop stopped with %d of %d completions (program error; see Stats)", ready, want)
	}
	return nil
}

// Ready is the number of completions waiting in the hand-off queue.
func (l *Loop) Ready() uint32 {
	return atomic.LoadUint32(&l.shared.HandoffTail) - l.shared.HandoffHead
}

// Completions moves up to len(dst) handed-off completions into dst, oldest
// first, and returns how many.
func (l *Loop) Completions(dst []uring.CQE) int {
	sh := l.shared
	n := min(int(l.Ready()), len(dst))
	for i := range n {
		c := &sh.Handoff[(sh.HandoffHead+uint32(i))&(handoffEntries-1)]
		dst[i] = uring.CQE{UserData: c.UserData, Res: c.Res, Flags: c.Flags}
	}
	atomic.StoreUint32(&sh.HandoffHead, sh.HandoffHead+uint32(n))
	return n
}

// Stats reads the loop's counters.
func (l *Loop) Stats() (Stats, error) {
	var s Stats
	if err := l.objs.Stats.Lookup(uint32(0), &s); err != nil {
		return s, fmt.Errorf("bpf: read loop stats: %w", err)
	}
	return s, nil
}

// Copy copies length bytes from fd in to fd out, both from offset 0, in
// chunks of chunk bytes staged in the parameter region right after
// SharedSize: the program chains each READ to its WRITE and the WRITE to
// the next READ inside the kernel, and Go is woken once, at the end. It
// returns the bytes copied (fewer than length if in ends first). The loop
// must be otherwise idle: nothing queued, no completion waiting or due.
func (l *Loop) Copy(in, out int, length int64, chunk int) (int64, error) {
	if chunk <= 0 || SharedSize+chunk > len(l.region) {
		return 0, fmt.Errorf("bpf: copy: chunk of %d bytes does not fit the %d-byte parameter region", chunk, len(l.region))
	}
	if l.queued > 0 || l.Ready() > 0 || l.shared.CopyState != copyIdle {
		return 0, errors.New("bpf: copy: the loop is busy")
	}
	const copyUserData = 1
	sh := l.shared
	sh.CopyInFd, sh.CopyOutFd = int32(in), int32(out)
	sh.CopyBuf = uint64(uintptr(unsafe.Pointer(&l.region[SharedSize])))
	sh.CopyChunk = uint32(chunk)
	sh.CopyLen, sh.CopyDone = uint64(length), 0
	sh.CopyUserData = copyUserData
	sh.CopyState = copyStart
	if err := l.Enter(1); err != nil {
		return 0, fmt.Errorf("bpf: copy: %w", err)
	}
	var done [1]uring.CQE
	l.Completions(done[:])
	runtime.KeepAlive(l.region)
	if done[0].UserData != copyUserData {
		return 0, fmt.Errorf("bpf: copy: unexpected completion %#x while copying", done[0].UserData)
	}
	if err := done[0].Err(); err != nil {
		return int64(sh.CopyDone), fmt.Errorf("bpf: copy: %w", err)
	}
	return int64(sh.CopyDone), nil
}
