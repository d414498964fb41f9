package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"runtime"

	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/bpfusefs/bpfusefs/uring"
)

// SparseBlock is the block size of SparseCopy; the program examines at
// most 64 KiB per request.
const SparseBlock = 64 << 10

// sparseDepth is how many blocks are in flight at once.
const sparseDepth = 8

// SparseResult is what a SparseCopy did.
type SparseResult struct {
	Bytes      int64 // bytes copied: the source's size
	Blocks     int   // blocks examined by the program
	ZeroBlocks int   // of those, all zeros and left as holes
	// Checksum is the sum of the source's little-endian 64-bit words, the
	// last one zero-padded, modulo 2^64 (SparseChecksum computes it in Go).
	Checksum uint64
}

// SparseAvailable reports whether the running kernel has IORING_OP_BPF
// (bpfusefs's series, kernel/patches/): struct iou_bpf_req and the kfuncs
// that reach its buffer in the kernel's BTF.
func SparseAvailable() error {
	if err := Available(); err != nil {
		return err
	}
	return kernelHas("iou_bpf_req", "bpf_io_uring_req_read", "bpf_io_uring_req_write")
}

// SparseCopy copies src to dst, which it truncates first, without the data
// passing through Go: per block, a READ_FIXED into a registered buffer is
// linked to an IORING_OP_BPF, whose program (sparse.bpf.c) checksums the
// block and, for a block of zeros, fails, cancelling the linked WRITE_FIXED,
// so dst keeps a hole there. It needs a kernel with our series
// (SparseAvailable) and the privileges to load BPF.
func SparseCopy(dst, src *os.File) (SparseResult, error) {
	var res SparseResult
	if err := SparseAvailable(); err != nil {
		return res, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(src.Fd()), &st); err != nil {
		return res, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	if err := dst.Truncate(0); err != nil {
		return res, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	// bpf-ops need a DEFER_TASKRUN ring, which only its creator may enter.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c, err := newSparseCopier()
	if err != nil {
		return res, err
	}
	defer c.close()
	if err := c.copy(int(dst.Fd()), int(src.Fd()), st.Size); err != nil {
		return res, err
	}
	if err := dst.Truncate(st.Size); err != nil { // a trailing hole sets no size
		return res, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	var s sparseSparseStats
	if err := c.objs.Stats.Lookup(uint32(0), &s); err != nil {
		return res, fmt.Errorf("bpf: sparse copy: read stats: %w", err)
	}
	if s.Errors != 0 {
		return res, fmt.Errorf("bpf: sparse copy: the program refused %d requests", s.Errors)
	}
	res = SparseResult{Bytes: st.Size, Blocks: int(s.Blocks), ZeroBlocks: int(s.ZeroBlocks), Checksum: s.Checksum}
	return res, nil
}

// SparseChecksum is SparseResult.Checksum of data, computed in Go.
func SparseChecksum(data []byte) uint64 {
	var sum uint64
	for len(data) > 0 {
		var w [8]byte
		n := copy(w[:], data)
		sum += binary.LittleEndian.Uint64(w[:])
		data = data[n:]
	}
	return sum
}

// sparseCopier is one SparseCopy's ring, program and buffer.
type sparseCopier struct {
	ring *uring.Ring
	objs sparseObjects
	link link.Link
	buf  []byte // registered buffer 0: sparseDepth blocks
}

func newSparseCopier() (*sparseCopier, error) {
	ring, err := uring.New(3*sparseDepth, &uring.Options{Flags: uring.SetupSingleIssuer | uring.SetupDeferTaskrun})
	if err != nil {
		return nil, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	c := &sparseCopier{ring: ring}
	c.buf, err = unix.Mmap(-1, 0, sparseDepth*SparseBlock, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err == nil {
		err = ring.RegisterBuffers([][]byte{c.buf})
	}
	if err == nil {
		err = c.attach()
	}
	if err != nil {
		c.close()
		return nil, fmt.Errorf("bpf: sparse copy: %w", err)
	}
	return c, nil
}

func (c *sparseCopier) attach() error {
	spec, err := loadSparse()
	if err != nil {
		return fmt.Errorf("parse sparse object: %w", err)
	}
	if err := setRingFd(spec.Maps["sparse_ops"], c.ring.Fd()); err != nil {
		return fmt.Errorf("set ring_fd: %w", err)
	}
	if err := spec.LoadAndAssign(&c.objs, nil); err != nil {
		return fmt.Errorf("load sparse program: %w", err)
	}
	c.link, err = link.AttachStructOps(link.StructOpsOptions{Map: c.objs.SparseOps})
	if err != nil {
		return fmt.Errorf("attach to ring fd %d: %w", c.ring.Fd(), err)
	}
	return nil
}

// close detaches the program before closing the ring, then unmaps the
// buffer (the ring's teardown releases its pages).
func (c *sparseCopier) close() {
	if c.link != nil {
		c.link.Close()
	}
	c.objs.Close()
	c.ring.Close()
	if c.buf != nil {
		unix.Munmap(c.buf)
	}
}

// Stages of a block's chain, in the low bits of its SQEs' user data.
const (
	stageRead = iota
	stageFilter
	stageWrite
	numStages
)

var stageNames = [numStages]string{"READ", "the program", "WRITE"}

// copy runs the chains of the size bytes of src, sparseDepth blocks at a
// time, and checks every completion.
func (c *sparseCopier) copy(dst, src int, size int64) error {
	var (
		next    int64             // offset of the next block to queue
		pending [sparseDepth]int  // completions each slot still awaits
		lens    [sparseDepth]int  // the slot's block length
		zero    [sparseDepth]bool // the program found the slot's block all zeros
		busy    int
		cqes    = make([]*uring.CQE, 3*sparseDepth)
	)
	for next < size || busy > 0 {
		for k := range sparseDepth {
			if pending[k] > 0 || next >= size {
				continue
			}
			n := int(min(size-next, SparseBlock))
			c.queue(k, dst, src, next, n)
			pending[k], lens[k], zero[k] = numStages, n, false
			next += int64(n)
			busy++
		}
		if _, err := c.ring.Submit(); err != nil {
			return fmt.Errorf("bpf: sparse copy: submit: %w", err)
		}
		got := c.ring.PeekCQEs(cqes)
		if got == 0 {
			// Runs the program's loop until a completion is posted.
			if err := c.ring.GetEvents(); err != nil {
				return fmt.Errorf("bpf: sparse copy: wait: %w", err)
			}
			continue
		}
		for _, cqe := range cqes[:got] {
			k, stage := int(cqe.UserData/numStages), int(cqe.UserData%numStages)
			if err := checkStage(stage, cqe, lens[k], &zero[k]); err != nil {
				c.ring.CQAdvance(uint32(got))
				return err
			}
			if pending[k]--; pending[k] == 0 {
				busy--
			}
		}
		c.ring.CQAdvance(uint32(got))
	}
	runtime.KeepAlive(c.buf)
	return nil
}

// filterLen is the length the program gets for a block of n bytes: whole
// words, the last one zero-padded.
func filterLen(n int) int { return (n + 7) &^ 7 }

// queue prepares slot k's chain for the n bytes of src at off.
func (c *sparseCopier) queue(k, dst, src int, off int64, n int) {
	block := c.buf[k*SparseBlock : (k+1)*SparseBlock]
	padded := filterLen(n)
	clear(block[n:padded]) // the READ fills n bytes; the program reads whole words
	sqe := c.ring.GetSQE()
	sqe.PrepReadFixed(src, block[:n], uint64(off), 0)
	sqe.SetFlags(uring.SQEIOLink)
	sqe.SetUserData(uint64(k*numStages + stageRead))
	sqe = c.ring.GetSQE()
	sqe.PrepBPF(block[:padded], 0, uint64(off))
	sqe.SetFlags(uring.SQEIOLink)
	sqe.SetUserData(uint64(k*numStages + stageFilter))
	sqe = c.ring.GetSQE()
	sqe.PrepWriteFixed(dst, block[:n], uint64(off), 0)
	sqe.SetUserData(uint64(k*numStages + stageWrite))
}

// checkStage checks one completion of a block of n bytes; zero records
// that the program found the block all zeros, so its WRITE must have been
// cancelled.
func checkStage(stage int, cqe *uring.CQE, n int, zero *bool) error {
	err := cqe.Err()
	switch {
	case stage == stageFilter && errors.Is(err, unix.ENODATA): // a block of zeros
		*zero = true
	case stage == stageWrite && *zero:
		if !errors.Is(err, unix.ECANCELED) {
			return fmt.Errorf("bpf: sparse copy: the WRITE after a block of zeros: res %d, want ECANCELED", cqe.Res)
		}
	case err != nil:
		return fmt.Errorf("bpf: sparse copy: %s of a block: %w", stageNames[stage], err)
	case stage == stageFilter && int(cqe.Res) != filterLen(n),
		stage != stageFilter && int(cqe.Res) != n:
		return fmt.Errorf("bpf: sparse copy: %s of a %d-byte block returned %d (the source changed?)",
			stageNames[stage], n, cqe.Res)
	}
	return nil
}
