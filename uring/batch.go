package uring

import (
	"runtime"
	"unsafe"
)

type opKind uint8

const (
	opRead opKind = iota
	opWrite
	opFsync
	opPrep
)

// op is one queued request: the engine's own kinds carry their arguments,
// opPrep carries the caller's prep function.
type op struct {
	kind  opKind
	fd    int
	buf   []byte
	off   int64
	flags uint32
	prep  func(*SQE)
}

// fill fills sqe and pins the buffer the kernel will access.
func (o *op) fill(sqe *SQE, pin *runtime.Pinner) {
	if len(o.buf) > 0 {
		pin.Pin(unsafe.SliceData(o.buf))
	}
	switch o.kind {
	case opRead:
		sqe.PrepRead(o.fd, o.buf, uint64(o.off))
	case opWrite:
		sqe.PrepWrite(o.fd, o.buf, uint64(o.off))
	case opFsync:
		sqe.PrepFsync(o.fd, o.flags)
	case opPrep:
		o.prep(sqe)
	}
}

// Batch is a set of requests submitted together by Engine.Run, which
// returns once all of them completed: the fan-out of one write to every
// mirror, or a read ahead in several pieces. A Batch is reusable after
// Reset and not safe for concurrent use.
type Batch struct {
	e       *Engine
	ops     []op
	results []int32
}

// NewBatch returns an empty batch for e.
func (e *Engine) NewBatch() *Batch { return &Batch{e: e} }

// Pread queues a read of len(p) bytes at off.
func (b *Batch) Pread(fd int, p []byte, off int64) {
	b.ops = append(b.ops, op{kind: opRead, fd: fd, buf: p, off: off})
}

// Pwrite queues a write of p at off.
func (b *Batch) Pwrite(fd int, p []byte, off int64) {
	b.ops = append(b.ops, op{kind: opWrite, fd: fd, buf: p, off: off})
}

// Fsync queues fsync(fd), or fdatasync(fd) when datasync.
func (b *Batch) Fsync(fd int, datasync bool) {
	o := op{kind: opFsync, fd: fd}
	if datasync {
		o.flags = FsyncDatasync
	}
	b.ops = append(b.ops, o)
}

// Add queues a request prepared by prep (called while submitting). prep
// may set SQEIOLink to chain it to the next request of the batch. Memory
// the SQE points to must be pinned (runtime.Pinner) until Run returns.
func (b *Batch) Add(prep func(*SQE)) {
	b.ops = append(b.ops, op{kind: opPrep, prep: prep})
}

// Len returns the number of queued requests.
func (b *Batch) Len() int { return len(b.ops) }

// Results returns the CQE result of each request in queue order (bytes
// or 0 on success, -errno on failure), valid after Run.
func (b *Batch) Results() []int32 { return b.results }

// Reset empties the batch for reuse.
func (b *Batch) Reset() {
	clear(b.ops) // drop buffer references
	b.ops = b.ops[:0]
	b.results = b.results[:0]
}

// Run submits all requests of b in one io_uring_enter and returns when all
// completed. The error reports an engine failure only; per-request
// failures are in b.Results.
func (e *Engine) Run(b *Batch) error {
	if len(b.ops) == 0 {
		return nil
	}
	b.results = append(b.results[:0], make([]int32, len(b.ops))...)
	w := waiterPool.Get().(*waiter)
	if err := e.run(b.ops, w, b.results); err != nil {
		b.results = b.results[:0]
		return err // w may still be referenced by a slot: not pooled
	}
	waiterPool.Put(w)
	return nil
}
