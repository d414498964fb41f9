package fusering

import (
	"errors"
	"fmt"
	"unsafe"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/uring"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// startBPF prepares Options.BPF: the file set the queues' programs share,
// and the file system's say in it. A kernel without io_uring bpf-ops fails
// the mount, since the caller asked for the loop; a program that cannot be
// attached later only costs its queue the offload (attachLoop).
func (s *Server) startBPF() error {
	offload, ok := s.fs.(OffloadFiles)
	if !ok {
		return fmt.Errorf("fusering: Options.BPF: %T does not implement OffloadFiles", s.fs)
	}
	if err := bpf.Available(); err != nil {
		return fmt.Errorf("fusering: %w", err)
	}
	files, err := bpf.NewFiles()
	if err != nil {
		return fmt.Errorf("fusering: %w", err)
	}
	s.offload, s.files = offload, files
	// A degraded replica may still hold data the mount no longer
	// writes there, and a file that gained set-ID bits needs them
	// dropped by a copy into it: from then on the daemon, which knows
	// both, serves every open file until it is opened anew.
	offload.OnOffloadChange(func() {
		if err := files.Clear(); err != nil {
			s.logf("%v", err)
		}
	})
	return nil
}

// attachLoop attaches the BPF loop to the queue's ring once its entries
// are registered. Without it the queue serves everything itself.
func (q *queue) attachLoop() {
	var err error
	if !q.mem.region {
		err = errors.New("the entry buffers are not in an io_uring parameter region (needs Linux 6.13+)")
	} else {
		q.loop, err = bpf.AttachFUSE(q.ring, q.mem.buf, bpf.FUSEQueue{
			DevFd:         q.s.devFd,
			QID:           q.qid,
			Depth:         q.depth,
			HeaderOff:     q.mem.headerOff,
			ScratchOff:    q.mem.scratchOff,
			PayloadOff:    q.mem.headerArea,
			PayloadStride: q.mem.payloadStride,
			ZeroCopy:      q.zc != nil,
			Files:         q.s.files,
		})
	}
	if err != nil {
		q.s.bpfFailed.Do(func() {
			q.s.logf("queue %d: no BPF offload, requests are served by the daemon: %v", q.qid, err)
		})
	}
}

// serveLoop is serve for a queue whose ring runs the BPF loop: the program
// submits what the thread queued, and only the completions it hands off
// wake the thread.
func (q *queue) serveLoop() error {
	cqes := make([]uring.CQE, 2*q.depth+2)
	for q.live > 0 {
		if err := q.loop.Enter(1); err != nil {
			return err
		}
		q.drainLoop(cqes)
	}
	return nil
}

// drainLoop handles every completion the program has handed off.
func (q *queue) drainLoop(cqes []uring.CQE) {
	for n := q.loop.Completions(cqes); n > 0; n = q.loop.Completions(cqes) {
		for _, c := range cqes[:n] {
			q.complete(c.UserData, c.Res)
		}
	}
}

// detachLoop gives the ring back to the thread before it is closed. The
// program is out of the way first, so completions it has not handed off
// stay in the CQ, where close finds them.
func (q *queue) detachLoop() {
	if err := q.loop.Close(); err != nil {
		q.s.logf("queue %d: %v", q.qid, err)
	}
	q.drainLoop(make([]uring.CQE, 2*q.depth+2))
}

// The BPF loop's file set follows the open files, whichever way their OPEN
// and RELEASE arrive (ring or /dev/fuse): a released file leaves it before
// the file system closes its descriptors (beforeRelease), and an opened
// one joins it once the file system says it may (afterOpen).

// beforeRelease is called with RELEASE's argument (fuse_release_in, which
// starts with fh) before the file system serves it.
func (s *Server) beforeRelease(arg []byte) {
	if s.files == nil || len(arg) < 8 {
		return
	}
	if err := s.files.Remove(*(*uint64)(unsafe.Pointer(&arg[0]))); err != nil {
		s.logf("%v", err)
	}
}

// afterOpen is called with a served OPEN or CREATE's reply header and
// arguments.
func (s *Server) afterOpen(opcode uint32, oh *fuse.OutHeader, reply []byte) {
	if s.files == nil {
		return
	}
	o := openOut(opcode, oh, reply)
	if o == nil || o.OpenFlags&fuse.FOPEN_PASSTHROUGH != 0 {
		return
	}
	if f, ok := s.offload.OffloadFile(o.Fh); ok {
		if err := s.files.Add(o.Fh, f); err != nil {
			s.logf("%v", err)
		}
	}
}
