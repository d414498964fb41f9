package fusering

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/uring"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// FUSE opcodes the transport looks at.
const (
	opOpen          = 14
	opRead          = 15
	opWrite         = 16
	opRelease       = 18
	opFsync         = 20
	opFsyncdir      = 30
	opSetlkw        = 33
	opCreate        = 35
	opIoctl         = 39
	opFallocate     = 43
	opCopyFileRange = 47
	opCopyRange64   = 53
)

// runsLong reports operations that may block for long (waiting for a lock,
// for storage to flush, for a large copy or allocation, or whatever an
// ioctl does) and so are served off the queue thread, which meanwhile
// goes on serving its other entries. Everything else is served in place:
// a round trip through a worker would cost every request its latency.
func runsLong(opcode uint32) bool {
	switch opcode {
	case opSetlkw, opFsync, opFsyncdir, opFallocate, opCopyFileRange, opCopyRange64, opIoctl:
		return true
	}
	return false
}

// The user_data of a queue's SQEs: the low 32 bits name an entry, the high
// bits say what the SQE is.
const (
	tagEntry   = 0 << 32 // the entry's REGISTER or COMMIT_AND_FETCH
	tagBacking = 1 << 32 // zero-copy backing I/O for the entry's request (| replica<<16)
	tagWake    = 2 << 32 // the eventfd read that worker goroutines signal
	tagCancel  = 3 << 32 // the cancellation of the eventfd read
	tagControl = 4 << 32 // ADD_QUEUE, ADD_BUFPOOL
	tagMask    = ^uint64(0xffffffff)
)

// queue is one FUSE ring queue: its io_uring, entry buffers and thread.
type queue struct {
	s     *Server
	qid   int
	ring  *uring.Ring
	mem   queueMemory
	depth int

	headers []*reqHeader // entry k's fuse_uring_req_header
	// iovs holds each entry's (header, payload) iovec pair, which the
	// REGISTER command points at.
	iovs [][2]unix.Iovec
	// live counts entries the kernel holds or the daemon is serving; the
	// queue ends when the kernel has given all of them back with an error.
	live int

	zc *zeroCopyQueue // nil unless the queue is zero-copy
	// loop is the queue's BPF loop (Options.BPF), set before the queue
	// serves and never cleared, so Stats can read it; looping is set
	// while it is attached and only the queue thread reads it.
	loop    *bpf.Loop
	looping bool

	// Worker goroutines put the entries they served in finished and
	// write wakeFd; the queue thread commits them.
	wakeFd    int
	wakeBuf   *uint64 // the eventfd read's target, in mem
	wakeArmed bool
	mu        sync.Mutex
	finished  []int
}

// startQueues starts a thread per possible CPU and waits until each has
// registered its entries.
func (s *Server) startQueues(cpus int, opts *Options) error {
	errs := make(chan error, cpus)
	for qid := range cpus {
		q := &queue{s: s, qid: qid, depth: opts.Depth, wakeFd: -1}
		s.queues = append(s.queues, q)
		s.loops.Add(1)
		go q.run(opts, errs)
	}
	var err error
	for range cpus {
		err = errors.Join(err, <-errs)
	}
	return err
}

// run is the queue thread. Every submission on the ring comes from here,
// which is what SINGLE_ISSUER requires.
func (q *queue) run(opts *Options, setupErr chan<- error) {
	defer q.s.loops.Done()
	// Never unlocked: the thread exits with the queue, and its CPU
	// affinity with it.
	runtime.LockOSThread()
	pinToCPU(q.qid)
	err := q.setup(opts)
	if err != nil {
		err = fmt.Errorf("fusering: queue %d: %w", q.qid, err)
	}
	setupErr <- err
	// Entries registered before a failure are still the kernel's: serve
	// them until the connection ends, and only then free their memory.
	if q.ring == nil {
		return
	}
	if err := q.serve(); err != nil {
		// The kernel may still write into the entries of a ring that
		// cannot be waited on: leave the ring and its memory be.
		q.s.logf("queue %d: %v; abandoning its ring with %d entries", q.qid, err, q.live)
		return
	}
	q.close()
}

// pinToCPU runs the calling thread on cpu, where the callers whose
// requests land in queue cpu run. Failing to pin costs locality only.
func pinToCPU(cpu int) {
	var set unix.CPUSet
	set.Set(cpu)
	unix.SchedSetaffinity(0, &set)
}

// setup creates the ring and the entry memory and registers the entries.
func (q *queue) setup(opts *Options) error {
	// SUBMIT_ALL: a command the kernel refuses must not hold back the
	// ones behind it, which are other entries' commits.
	flags := uring.SetupSQE128 | uring.SetupSubmitAll
	if opts.DeferTaskrun {
		flags |= uring.SetupSingleIssuer | uring.SetupDeferTaskrun
	}
	// At most one SQE per entry is prepared between two submissions,
	// plus the eventfd read and its cancellation.
	ringOpts := uring.Options{Flags: flags}
	var loop loopLayout
	if q.s.files != nil {
		ringOpts.Flags |= bpf.RingFlags
		loop = loopLayout{state: bpf.SharedSize, scratchSize: bpf.ScratchSize}
		// The BPF loop adds up to a WRITE per replica per entry in
		// flight, whose completions must not overflow the CQ.
		ringOpts.CQEntries = uint32(q.depth*(bpf.MaxReplicas+1) + 2)
	}
	ring, err := uring.New(uint32(q.depth+2), &ringOpts)
	if err != nil {
		return err
	}
	q.ring = ring
	if q.mem, err = newQueueMemory(ring, q.depth, q.s.payloadSize, loop); err != nil {
		return err
	}
	if q.s.zcFiles != nil {
		if q.zc, err = q.setupZeroCopy(q.s.zcFiles); err != nil {
			return err
		}
	}
	if q.wakeFd, err = unix.Eventfd(0, unix.EFD_CLOEXEC); err != nil {
		return os.NewSyscallError("eventfd", err)
	}
	q.wakeBuf = q.mem.wakeWord()
	q.armWake()

	q.headers = make([]*reqHeader, q.depth)
	q.iovs = make([][2]unix.Iovec, q.depth)
	for k := range q.depth {
		q.headers[k] = q.mem.header(k)
		q.iovs[k][0] = unix.Iovec{Base: (*byte)(unsafe.Pointer(q.headers[k])), Len: headerSize}
		if q.zc == nil {
			// With a buffer pool the kernel picks a payload buffer
			// per request; the payload iovec stays empty.
			payload := q.mem.payload(k)
			q.iovs[k][1] = unix.Iovec{Base: &payload[0], Len: uint64(len(payload))}
		}
		sqe := q.getSQE()
		sqe.PrepUringCmd(cmdRegister, q.s.devFd)
		sqe.Addr = uint64(uintptr(unsafe.Pointer(&q.iovs[k][0])))
		sqe.Len = uint32(len(q.iovs[k]))
		req := cmdReq{qid: uint16(q.qid)}
		if q.zc != nil {
			req.zeroCopySlot = uint16(k)
		}
		req.encode(sqe.Cmd())
		sqe.SetUserData(tagEntry | uint64(k))
		q.live++
	}
	if n, err := q.ring.Submit(); err != nil {
		// The SQ holds the eventfd read, then the REGISTERs: the
		// kernel has the first n of them.
		q.wakeArmed = n > 0
		q.live = max(n-1, 0)
		return err
	}
	// REGISTER fails or succeeds at submission; a failure is already in
	// the CQ. Leave the CQEs for serve, which retires the failed entries.
	cqes := make([]*uring.CQE, q.ring.CQReady())
	for _, c := range cqes[:q.ring.PeekCQEs(cqes)] {
		if c.UserData&tagMask == tagEntry && c.Res < 0 {
			return fmt.Errorf("FUSE_IO_URING_CMD_REGISTER: %w", syscall.Errno(-c.Res))
		}
	}
	if q.s.files != nil {
		q.attachLoop()
		q.looping = q.loop != nil
	}
	return nil
}

// getSQE returns a free SQE, submitting what is queued if the SQ is full.
func (q *queue) getSQE() *uring.SQE {
	for {
		if q.looping {
			if sqe := q.loop.GetSQE(); sqe != nil {
				return sqe
			}
			if err := q.loop.Enter(0); err != nil {
				q.s.logf("queue %d: submit: %v", q.qid, err)
			}
			continue
		}
		if sqe := q.ring.GetSQE(); sqe != nil {
			return sqe
		}
		if _, err := q.ring.Submit(); err != nil {
			q.s.logf("queue %d: submit: %v", q.qid, err)
		}
	}
}

// serve is the queue's event loop: submit what is queued, wait for a
// completion, handle the completions, until every entry is gone.
func (q *queue) serve() error {
	if q.looping {
		err := q.serveLoop()
		q.looping = false
		q.detachLoop()
		if err != nil {
			// Whatever went wrong, the ring itself still serves.
			q.s.logf("queue %d: BPF loop: %v; serving without it", q.qid, err)
		}
	}
	cqes := make([]*uring.CQE, 2*q.depth+2)
	for q.live > 0 {
		if _, err := q.ring.SubmitAndWait(1); err != nil {
			return err
		}
		n := q.ring.PeekCQEs(cqes)
		for _, c := range cqes[:n] {
			q.complete(c.UserData, c.Res)
		}
		q.ring.CQAdvance(uint32(n))
	}
	return nil
}

// complete handles one completion.
func (q *queue) complete(userData uint64, res int32) {
	k := int(uint32(userData))
	switch userData & tagMask {
	case tagWake:
		q.wakeArmed = false
		if res < 0 && res != -int32(unix.ECANCELED) {
			q.s.logf("queue %d: eventfd read: %v", q.qid, syscall.Errno(-res))
		}
		q.commitFinished()
		if q.live > 0 {
			q.armWake()
		}
	case tagBacking:
		// The replica is in bits 16-31 (see zeroCopyQueue.issue).
		q.zc.finish(q, int(uint16(k)), k>>16, res)
	case bpf.CommitTag:
		q.commit(k)
	case bpf.SyncedTag:
		q.synced(k)
	default:
		if res < 0 {
			q.retire(k, syscall.Errno(-res))
			return
		}
		q.dispatch(k)
	}
}

// synced answers the FSYNC in entry k that the BPF loop synced on every
// replica, and handed over because one failed or not all could be started:
// the file system settles the outcomes.
func (q *queue) synced(k int) {
	h := q.headers[k]
	in := fuse.FsyncIn{InHeader: *h.inHeader()}
	op := unsafe.Slice((*byte)(unsafe.Pointer(&in.Fh)), unsafe.Sizeof(in)-unsafe.Offsetof(in.Fh))
	copy(op, h.OpIn[:])
	fds, errs := q.loop.SyncOutcome(k)
	replyError(h, in.Unique, q.s.offload.FsyncDone(&in, fds, errs))
	q.commit(k)
}

// retire drops entry k, which the kernel completed with an error: the
// connection ended, or the commit was refused.
func (q *queue) retire(k int, errno syscall.Errno) {
	q.live--
	switch errno {
	case unix.ENOTCONN, unix.ECONNABORTED, unix.ECANCELED, unix.ENODEV:
	default:
		q.s.logf("queue %d entry %d: %v", q.qid, k, errno)
	}
}

// dispatch serves the request entry k holds.
func (q *queue) dispatch(k int) {
	h := q.headers[k]
	opcode := h.inHeader().Opcode
	q.s.ring.count(opcode)
	switch {
	case q.zc != nil && h.Ent.Flags&entZeroCopy != 0:
		q.zc.start(q, k)
	case runsLong(opcode):
		q.s.offloaded.Add(1)
		go func() {
			q.s.handle(h, q.payload(k))
			q.finish(k)
		}()
	default:
		q.s.handle(h, q.payload(k))
		q.commit(k)
	}
}

// payload returns the buffer holding entry k's request payload and reply.
func (q *queue) payload(k int) []byte {
	if q.zc != nil {
		return q.zc.payload(q.headers[k])
	}
	return q.mem.payload(k)
}

// commit queues the COMMIT_AND_FETCH that returns entry k's reply and asks
// for its next request.
func (q *queue) commit(k int) {
	sqe := q.getSQE()
	sqe.PrepUringCmd(cmdCommitAndFetch, q.s.devFd)
	req := cmdReq{commitID: q.headers[k].Ent.CommitID, qid: uint16(q.qid)}
	req.encode(sqe.Cmd())
	sqe.SetUserData(tagEntry | uint64(k))
}

// finish is called by a worker goroutine that served entry k.
func (q *queue) finish(k int) {
	q.mu.Lock()
	q.finished = append(q.finished, k)
	q.mu.Unlock()
	one := uint64(1)
	if _, err := unix.Write(q.wakeFd, unsafe.Slice((*byte)(unsafe.Pointer(&one)), 8)); err != nil {
		q.s.logf("queue %d: eventfd write: %v", q.qid, err)
	}
}

// commitFinished commits the entries workers have finished.
func (q *queue) commitFinished() {
	q.mu.Lock()
	done := q.finished
	q.finished = nil
	q.mu.Unlock()
	for _, k := range done {
		q.commit(k)
	}
}

// armWake queues a read of the eventfd; it completes when a worker
// finishes.
func (q *queue) armWake() {
	sqe := q.getSQE()
	sqe.PrepRead(q.wakeFd, unsafe.Slice((*byte)(unsafe.Pointer(q.wakeBuf)), 8), 0)
	sqe.SetUserData(tagWake)
	q.wakeArmed = true
}

// close releases the ring and the entry memory once no entry is left. The
// eventfd read is cancelled and reaped first, so that nothing in flight
// points into the memory when it is unmapped.
func (q *queue) close() {
	if q.wakeArmed {
		sqe := q.getSQE()
		sqe.PrepCancel(tagWake, 0)
		sqe.SetUserData(tagCancel)
		for q.wakeArmed {
			c, err := q.ring.WaitCQE()
			if err != nil {
				q.s.logf("queue %d: cancelling the eventfd read: %v; leaving the ring", q.qid, err)
				return
			}
			if c.UserData == tagWake {
				q.wakeArmed = false
			}
			q.ring.CQESeen()
		}
	}
	if err := q.ring.Close(); err != nil {
		q.s.logf("queue %d: %v", q.qid, err)
	}
	if err := q.mem.release(); err != nil {
		q.s.logf("queue %d: %v", q.qid, err)
	}
	closeFd(q.wakeFd)
}

// handle serves the request in header h and payload buffer payload, and
// leaves the reply in them: fuse_out_header in the header's in_out, the
// reply arguments in the payload and their size in ring_ent_in_out.
func (s *Server) handle(h *reqHeader, payload []byte) {
	in := h.inHeader()
	unique, opcode := in.Unique, in.Opcode
	size := int(h.Ent.PayloadSz)
	// The kernel copies the opcode's fixed argument to op_in and the
	// rest to the payload; in.Length counts all of it.
	opLen := int(in.Length) - inHeaderSize - size
	if size > len(payload) || opLen < 0 || opLen > opInSize {
		s.logf("malformed ring request: opcode %d length %d payload %d", opcode, in.Length, size)
		replyError(h, unique, fuse.EIO)
		return
	}
	reqPayload := payload[:size]
	if opcode == opRelease {
		s.beforeRelease(h.OpIn[:opLen])
	}
	if opcode == opIoctl {
		// The reply is written in place over the request payload,
		// which an ioctl handler reads while it writes its output.
		reqPayload = append([]byte(nil), reqPayload...)
	}
	n, st := s.ps.HandleRequest(
		[][]byte{h.InOut[:inHeaderSize], h.OpIn[:opLen], reqPayload},
		[][]byte{h.InOut[:outHeaderSize], payload})
	if !st.Ok() || n < outHeaderSize {
		// A reply the kernel does not wait for (n == 0) has no place
		// on the ring: every entry must be committed with a reply.
		replyError(h, unique, fuse.EIO)
		return
	}
	h.Ent.PayloadSz = uint32(n - outHeaderSize)
	if opcode == opOpen || opcode == opCreate {
		s.afterOpen(opcode, h.outHeader(), payload)
		s.markZeroCopy(opcode, h.outHeader(), payload)
	}
}

// replyError makes the entry's reply an error.
func replyError(h *reqHeader, unique uint64, st fuse.Status) {
	*h.outHeader() = fuse.OutHeader{Length: uint32(outHeaderSize), Status: -int32(st), Unique: unique}
	h.Ent.PayloadSz = 0
}
