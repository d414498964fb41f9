package fs

import (
	"fmt"
	"sync"
	"syscall"

	"github.com/bpfusefs/bpfusefs/uring"
	"golang.org/x/sys/unix"
)

// enginePath does backing I/O through an io_uring Engine shared by all of a
// mount's requests: concurrent FUSE requests become SQEs on one ring, a
// lone request costs one io_uring_enter like the syscall it replaces, and a
// write to N replicas is one batch of N SQEs.
type enginePath struct {
	e       *uring.Engine
	batches sync.Pool
}

func newEnginePath() (dataPath, error) {
	e, err := uring.NewEngine(uring.EngineOptions{Entries: 256, MaxInflight: 1024})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	p := &enginePath{e: e}
	p.batches.New = func() any { return e.NewBatch() }
	return p, nil
}

func (p *enginePath) read(fd int, buf []byte, off int64) (int, error) {
	return p.e.Pread(fd, buf, off)
}

func (p *enginePath) pwrite(fd int) func([]byte, int64) (int, error) {
	return func(b []byte, off int64) (int, error) { return p.e.Pwrite(fd, b, off) }
}

func (p *enginePath) write(fds []int, buf []byte, off int64, errs []error) {
	if len(fds) == 1 {
		errs[0] = fullWrite(buf, off, p.pwrite(fds[0]))
		return
	}
	p.fanOut(fds, errs, func(b *uring.Batch, fd int) { b.Pwrite(fd, buf, off) }, func(i int, res int32) error {
		if res < 0 {
			return syscall.Errno(-res)
		}
		// A short write is finished on its own.
		return fullWrite(buf[res:], off+int64(res), p.pwrite(fds[i]))
	})
}

func (p *enginePath) fsync(fds []int, datasync bool, errs []error) {
	if len(fds) == 1 {
		errs[0] = p.e.Fsync(fds[0], datasync)
		return
	}
	p.fanOut(fds, errs, func(b *uring.Batch, fd int) { b.Fsync(fd, datasync) }, func(_ int, res int32) error {
		if res < 0 {
			return syscall.Errno(-res)
		}
		return nil
	})
}

// splice moves each pipe's worth as two linked SQEs, file to pipe and
// pipe to file, in one submission. A short first splice cancels the second
// (io_uring fails a link on a short splice); the pipe is then drained with
// splice(2).
func (p *enginePath) splice(src int, offIn int64, dst int, offOut int64, n int64, pp pipe) (int64, error) {
	b := p.batches.Get().(*uring.Batch)
	defer func() {
		b.Reset()
		p.batches.Put(b)
	}()
	var done int64
	for done < n {
		chunk := uint32(min(n-done, pp.size))
		in, out := offIn+done, offOut+done
		b.Reset()
		b.Add(func(sqe *uring.SQE) {
			sqe.PrepSplice(src, in, pp.w, -1, chunk, unix.SPLICE_F_MOVE)
			sqe.SetFlags(uring.SQEIOLink)
		})
		b.Add(func(sqe *uring.SQE) { sqe.PrepSplice(pp.r, -1, dst, out, chunk, unix.SPLICE_F_MOVE) })
		if err := p.e.Run(b); err != nil {
			return done, err
		}
		res := b.Results()
		filled, drained := res[0], res[1]
		switch {
		case filled < 0:
			return done, syscall.Errno(-filled)
		case filled == 0:
			return done, unix.EIO // the source shrank under the copy
		case drained == -int32(unix.ECANCELED):
			drained = 0
		case drained < 0:
			return done, syscall.Errno(-drained)
		}
		if drained < filled {
			if err := drainPipe(pp, dst, out+int64(drained), int64(filled-drained)); err != nil {
				return done, err
			}
		}
		done += int64(filled)
	}
	return done, nil
}

// fanOut queues one request per descriptor of fds with queue, submits them
// as one batch, and sets errs[i] to done(i, result).
func (p *enginePath) fanOut(fds []int, errs []error, queue func(*uring.Batch, int), done func(int, int32) error) {
	b := p.batches.Get().(*uring.Batch)
	defer func() {
		b.Reset()
		p.batches.Put(b)
	}()
	for _, fd := range fds {
		if fd >= 0 {
			queue(b, fd)
		}
	}
	if err := p.e.Run(b); err != nil {
		forEach(fds, errs, func(int) error { return err })
		return
	}
	res := b.Results()
	for i, fd := range fds {
		if fd < 0 {
			errs[i] = errSkipped
			continue
		}
		errs[i] = done(i, res[0])
		res = res[1:]
	}
}

func (p *enginePath) path() int    { return pathEngine }
func (p *enginePath) close() error { return p.e.Close() }
