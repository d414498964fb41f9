package fusering

import (
	"errors"
	"fmt"
	"slices"
	"syscall"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// zeroCopyQueue is the state of a queue created with FUSE_URING_ZERO_COPY
// (Linux 7.3). Its entries have no payload buffer of their own: the kernel
// lends each request that carries arguments a buffer from the queue's pool
// (the payload area of its memory, given with ADD_BUFPOOL) and says where
// in ring_ent_in_out.offset. For READ and WRITE of a file opened with
// FOPEN_IO_URING_ZERO_COPY it instead registers the caller's pages as
// fixed buffer k of the ring, k being the entry's slot, and sets
// FUSE_URING_ENT_ZERO_COPY; the data then moves by READ_FIXED/WRITE_FIXED
// between the backing file and those pages, never through the daemon.
type zeroCopyQueue struct {
	files  ZeroCopyFiles
	pool   []byte
	stride int         // the kernel's max_payload_sz: its pool buffer size
	reqs   []zcRequest // by entry
}

// rwIn is fuse_read_in and fuse_write_in as they sit in op_in.
type rwIn struct {
	Fh        uint64
	Offset    uint64
	Size      uint32
	Flags     uint32
	LockOwner uint64
	OpenFlags uint32
	Padding   uint32
}

// setupZeroCopy makes the queue zero-copy if the kernel can: a sparse
// buffer table with a slot per entry, ADD_QUEUE with FUSE_URING_ZERO_COPY,
// ADD_BUFPOOL. A kernel without these commands (before 7.3) or a daemon
// without CAP_SYS_ADMIN leaves the queue ordinary: it returns nil, nil.
func (q *queue) setupZeroCopy(files ZeroCopyFiles) (*zeroCopyQueue, error) {
	if q.mem.payloadStride != q.s.payloadSize {
		// The kernel cuts the pool at max_payload_sz exactly.
		return nil, nil
	}
	if err := q.ring.RegisterBuffersSparse(uint32(q.depth)); err != nil {
		return nil, nil
	}
	err := q.control(cmdAddQueue, cmdReq{flags: queueZeroCopy, qid: uint16(q.qid)})
	switch {
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.EPERM), errors.Is(err, unix.EOPNOTSUPP):
		return nil, q.ring.UnregisterBuffers()
	case err != nil:
		return nil, fmt.Errorf("FUSE_IO_URING_CMD_ADD_QUEUE: %w", err)
	}
	// From here the queue is zero-copy: its entries need the pool.
	pool := q.mem.buf[q.mem.headerArea:]
	err = q.control(cmdAddBufpool, cmdReq{qid: uint16(q.qid),
		bufpoolAddr: uint64(uintptr(unsafe.Pointer(&pool[0]))), bufpoolLen: uint32(len(pool))})
	if err != nil {
		return nil, fmt.Errorf("FUSE_IO_URING_CMD_ADD_BUFPOOL: %w", err)
	}
	q.s.zeroCopyActive.Store(true)
	return &zeroCopyQueue{files: files, pool: pool, stride: q.mem.payloadStride,
		reqs: make([]zcRequest, q.depth)}, nil
}

// control runs a queue command that the kernel completes at once
// (ADD_QUEUE, ADD_BUFPOOL) and returns its result.
func (q *queue) control(op uint32, req cmdReq) error {
	// Nothing else is in flight yet: the next completion is this one.
	sqe := q.getSQE()
	sqe.PrepUringCmd(op, q.s.devFd)
	req.encode(sqe.Cmd())
	sqe.SetUserData(tagControl)
	c, err := q.ring.WaitCQE()
	if err != nil {
		return err
	}
	defer q.ring.CQESeen()
	if c.UserData != tagControl {
		return fmt.Errorf("unexpected completion %#x", c.UserData)
	}
	return c.Err()
}

// payload returns the pool buffer the kernel lent to the request in h. A
// request without arguments and whose reply has none gets no buffer
// (offset 0); then nothing reads or writes the slice.
func (z *zeroCopyQueue) payload(h *reqHeader) []byte {
	off := int(h.Ent.Offset)
	return z.pool[off : off+z.stride : off+z.stride]
}

// zcRequest is the backing I/O of the zero-copy READ or WRITE in one
// entry: a READ_FIXED from one replica, or a WRITE_FIXED to each, which a
// short write resumes where it stopped.
type zcRequest struct {
	io      ZeroCopyIO
	fds     []int    // READ: the one descriptor; WRITE: one per replica, -1 skipped
	done    []uint32 // bytes each WRITE has written
	errs    []error
	pending int // backing requests in flight
}

// start issues the backing I/O of the zero-copy READ or WRITE in entry k.
func (z *zeroCopyQueue) start(q *queue, k int) {
	h := q.headers[k]
	in := h.inHeader()
	a := (*rwIn)(unsafe.Pointer(&h.OpIn[0]))
	f, ok := z.files.ZeroCopyFile(a.Fh)
	if !ok || (in.Opcode != opRead && in.Opcode != opWrite) {
		q.s.logf("zero-copy request opcode %d on a file without a backing fd", in.Opcode)
		replyError(h, in.Unique, fuse.EIO)
		q.commit(k)
		return
	}
	r := &z.reqs[k]
	r.io, r.pending = f, 0
	if in.Opcode == opRead {
		r.fds = append(r.fds[:0], f.ReadFd())
	} else {
		r.fds = append(r.fds[:0], f.WriteFds()...)
	}
	r.done = slices.Grow(r.done[:0], len(r.fds))[:len(r.fds)]
	r.errs = slices.Grow(r.errs[:0], len(r.fds))[:len(r.fds)]
	for i, fd := range r.fds {
		r.done[i], r.errs[i] = 0, nil
		if fd >= 0 {
			z.issue(q, k, i)
		}
	}
}

// issue queues replica i's backing I/O for entry k, from where it stands:
// the pages are the ring's fixed buffer k, which starts at address 0.
func (z *zeroCopyQueue) issue(q *queue, k, i int) {
	h, r := q.headers[k], &z.reqs[k]
	a := (*rwIn)(unsafe.Pointer(&h.OpIn[0]))
	done := r.done[i]
	sqe := q.getSQE()
	if h.inHeader().Opcode == opRead {
		sqe.PrepReadFixed(r.fds[i], nil, a.Offset, uint16(k))
	} else {
		sqe.PrepWriteFixed(r.fds[i], nil, a.Offset+uint64(done), uint16(k))
		sqe.Addr = uint64(done)
	}
	sqe.Len = a.Size - done
	sqe.SetUserData(tagBacking | uint64(i)<<16 | uint64(k))
	r.pending++
}

// finish takes the completion res of replica i's backing I/O for entry k;
// the request's last one replies to it and commits it.
func (z *zeroCopyQueue) finish(q *queue, k, i int, res int32) {
	h, r := q.headers[k], &z.reqs[k]
	in := h.inHeader()
	r.pending--
	if in.Opcode == opRead {
		if res < 0 && r.io.ReadFailed(r.fds[i], syscall.Errno(-res)) {
			r.fds[i] = r.io.ReadFd()
			z.issue(q, k, i)
			return
		}
		z.reply(q, k, res)
		return
	}
	size := (*rwIn)(unsafe.Pointer(&h.OpIn[0])).Size
	switch r.done[i] += uint32(max(res, 0)); {
	case res < 0:
		r.errs[i] = syscall.Errno(-res)
	case r.done[i] < size && res == 0:
		r.errs[i] = syscall.EIO // no progress: the file cannot take more
	case r.done[i] < size:
		z.issue(q, k, i)
		return
	}
	if r.pending > 0 {
		return
	}
	res = int32(size)
	if err := r.io.WriteDone(r.fds, r.errs); err != nil {
		res = -int32(fuse.ToStatus(err))
	}
	z.reply(q, k, res)
}

// reply answers the zero-copy request in entry k, whose backing I/O ended
// with res (bytes, or -errno), and commits it.
func (z *zeroCopyQueue) reply(q *queue, k int, res int32) {
	h := q.headers[k]
	in := h.inHeader()
	unique, opcode := in.Unique, in.Opcode
	z.reqs[k].io = nil
	switch {
	case res < 0:
		replyError(h, unique, fuse.Status(syscall.Errno(-res)))
	case opcode == opRead:
		// The data is in the caller's pages already; payload_sz says
		// how much of it is valid.
		*h.outHeader() = fuse.OutHeader{Length: uint32(outHeaderSize) + uint32(res), Unique: unique}
		h.Ent.PayloadSz = uint32(res)
		q.s.zcRead.Add(1)
	default:
		out := (*fuse.WriteOut)(unsafe.Pointer(&z.payload(h)[0]))
		*out = fuse.WriteOut{Size: uint32(res)}
		size := uint32(unsafe.Sizeof(*out))
		*h.outHeader() = fuse.OutHeader{Length: uint32(outHeaderSize) + size, Unique: unique}
		h.Ent.PayloadSz = size
		q.s.zcWrite.Add(1)
	}
	q.commit(k)
}

// openOut returns the fuse_open_out of a successful OPEN or CREATE reply
// whose arguments are in reply, or nil.
func openOut(opcode uint32, oh *fuse.OutHeader, reply []byte) *fuse.OpenOut {
	if oh.Status != 0 {
		return nil
	}
	off := 0
	if opcode == opCreate {
		off = int(unsafe.Sizeof(fuse.EntryOut{}))
	}
	if len(reply) < off+int(unsafe.Sizeof(fuse.OpenOut{})) {
		return nil
	}
	return (*fuse.OpenOut)(unsafe.Pointer(&reply[off]))
}

// markZeroCopy sets FOPEN_IO_URING_ZERO_COPY in a successful OPEN or
// CREATE reply when zero-copy queues exist and the file system serves the
// file from a backing fd; reply holds the reply arguments.
func (s *Server) markZeroCopy(opcode uint32, oh *fuse.OutHeader, reply []byte) {
	if !s.zeroCopyActive.Load() {
		return
	}
	o := openOut(opcode, oh, reply)
	if o == nil || o.OpenFlags&fuse.FOPEN_PASSTHROUGH != 0 {
		return
	}
	if _, ok := s.zcFiles.ZeroCopyFile(o.Fh); ok {
		o.OpenFlags |= fopenZeroCopy
	}
}
