package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"runtime"
	"sync"
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

// ScratchSize is the size of each FUSE entry's scratch (FUSEQueue.ScratchOff),
// SCRATCH_SIZE of loop.bpf.c.
const ScratchSize = 384

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
	if unsafe.Sizeof(loopFsyncScratch{}) > ScratchSize {
		panic("bpf: struct fsync_scratch outgrew ScratchSize")
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
	// own and in are the program's extra CQs (extraCQs; nil without).
	// With in, the ring's CQ holds the completions handed to Go, not the
	// hand-off queue; peeked is scratch space for reading them. Once
	// detached, Go reads what the program left in in too.
	own, in  *uring.ExtraCQ
	peeked   []*uring.CQE
	detached bool
	// scratchOff is FUSEQueue.ScratchOff.
	scratchOff int

	// mu guards closed and final against Stats, which other goroutines
	// call; final holds the counters as Close found them.
	mu     sync.Mutex
	closed bool
	final  Stats
}

// FUSEQueue describes the FUSE-over-io_uring queue whose ring a Loop runs
// (AttachFUSE): where its entries sit in the parameter region, and which
// open files the program may serve.
type FUSEQueue struct {
	DevFd int // the /dev/fuse fd the queue's commands go to
	QID   int
	Depth int // entries
	// HeaderOff is the region offset of entry 0's struct
	// fuse_uring_req_header; entry k's follows at k*288. The program's
	// own state takes the first SharedSize bytes.
	HeaderOff int
	// ScratchOff is the region offset of entry 0's scratch, ScratchSize
	// bytes each, where the program keeps what a request without a
	// payload buffer needs (the times of a mirrored FSYNC).
	ScratchOff int
	// PayloadOff is the region offset of entry 0's payload buffer;
	// entry k's is PayloadStride bytes further on each.
	PayloadOff, PayloadStride int
	// ZeroCopy says the queue was created with FUSE_URING_ZERO_COPY
	// (Linux 7.3): the payload buffers are a pool the kernel lends from
	// per request, and the program serves a READ or WRITE whose caller's
	// pages the kernel registered as the entry's fixed buffer with
	// READ_FIXED/WRITE_FIXED on those pages.
	ZeroCopy bool
	// Files are the open files the program serves, shared by every
	// queue of the connection.
	Files *Files
}

// fuseHeaderSize is sizeof(struct fuse_uring_req_header).
const fuseHeaderSize = 288

// Files is the set of open FUSE files whose READs and WRITEs the loop
// programs serve with backing I/O themselves: the BPF hash map
// offload_files, keyed by the file handle the daemon gave the kernel at
// OPEN.
type Files struct {
	m *ebpf.Map
	// futimens: the kernel has our series' IORING_OP_FUTIMENS, which the
	// program needs for a mirrored FSYNC.
	futimens bool
	// keepHoles: the kernel's IORING_OP_COPY_FILE_RANGE (our series)
	// takes IORING_COPY_KEEP_HOLES, which the program's copies need.
	keepHoles bool
}

// MaxReplicas is the most backing files one WRITE can be served to.
const MaxReplicas = len(loopOffloadFile{}.WriteFd)

// File says how the programs serve an open file.
type File struct {
	// ReadFd is the backing file READs are served from.
	ReadFd int
	// WriteFds are the backing files every WRITE goes to, one per
	// replica (at most MaxReplicas); none leaves WRITEs to the daemon.
	WriteFds []int
	// SyncFds are the backing files an FSYNC syncs, one per replica (at
	// most MaxReplicas), the one whose times the others get first: the
	// program copies its access and modification times to the others
	// and fsyncs them all, where the kernel has our series'
	// IORING_OP_FUTIMENS (else FSYNCs of more than one stay the daemon's).
	// None leaves FSYNCs to the daemon.
	SyncFds []int
	// CopyFds are the file's backing files by replica, every replica
	// having one (at most MaxReplicas). A COPY_FILE_RANGE (root's, or
	// anyone's into a CopyAnyCaller file) between two files with as many
	// CopyFds copies replica i of the
	// source to replica i of the destination, keeping holes, where the
	// kernel has our series' IORING_COPY_KEEP_HOLES. None leaves copies
	// to and from the file to the daemon.
	CopyFds []int
	// CopyAnyCaller says the file has no set-ID bits or capabilities
	// that a copy into it by another caller than root would drop: such
	// copies are the program's too.
	CopyAnyCaller bool
}

// NewFiles creates an empty Files. It needs the same privileges as
// loading the loop (CAP_BPF).
func NewFiles() (*Files, error) {
	spec, err := loadLoop()
	if err != nil {
		return nil, fmt.Errorf("bpf: parse loop object: %w", err)
	}
	m, err := ebpf.NewMap(spec.Maps["offload_files"])
	if err != nil {
		return nil, fmt.Errorf("bpf: create offload_files map: %w", err)
	}
	return &Files{m: m, futimens: uring.VerifyFutimens() == nil, keepHoles: uring.VerifyCopyKeepHoles() == nil}, nil
}

// Add lets the programs serve file handle fh as file says; its descriptors
// must stay open until Remove.
func (f *Files) Add(fh uint64, file File) error {
	if n := max(len(file.WriteFds), len(file.SyncFds), len(file.CopyFds)); n > MaxReplicas {
		return fmt.Errorf("bpf: offload file handle %d: %d replicas, at most %d", fh, n, MaxReplicas)
	}
	v := loopOffloadFile{ReadFd: int32(file.ReadFd), Nwrite: uint32(len(file.WriteFds))}
	for i, fd := range file.WriteFds {
		v.WriteFd[i] = int32(fd)
	}
	if len(file.SyncFds) == 1 || f.futimens {
		v.Nsync = uint32(len(file.SyncFds))
		for i, fd := range file.SyncFds {
			v.SyncFd[i] = int32(fd)
		}
	}
	if f.keepHoles {
		v.Ncopy = uint32(len(file.CopyFds))
		if file.CopyAnyCaller {
			v.CopyAnyCaller = 1
		}
		for i, fd := range file.CopyFds {
			v.CopyFd[i] = int32(fd)
		}
	}
	if err := f.m.Put(fh, v); err != nil {
		return fmt.Errorf("bpf: offload file handle %d: %w", fh, err)
	}
	return nil
}

// Remove takes fh back to the daemon; a missing fh is not an error.
func (f *Files) Remove(fh uint64) error {
	if err := f.m.Delete(fh); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: stop offloading file handle %d: %w", fh, err)
	}
	return nil
}

// Clear takes every file back to the daemon.
func (f *Files) Clear() error {
	var (
		fh   uint64
		keys []uint64
	)
	iter := f.m.Iterate()
	for iter.Next(&fh, new(loopOffloadFile)) {
		keys = append(keys, fh)
	}
	err := iter.Err()
	for _, k := range keys {
		err = errors.Join(err, f.Remove(k))
	}
	return err
}

// Close frees the map once no program uses it any more.
func (f *Files) Close() error { return f.m.Close() }

// Attach loads the loop program for ring and attaches it. ring must have
// been set up with RingFlags and region must be its parameter region
// (uring.Ring.RegisterMemRegion, at least SharedSize bytes); Attach resets
// the region's first SharedSize bytes. A kernel without bpf-ops yields an
// error wrapping ErrUnavailable; a verifier rejection wraps
// *ebpf.VerifierError, whose %+v prints the log.
func Attach(ring *uring.Ring, region []byte) (*Loop, error) {
	return attachLoop(ring, region, nil)
}

// AttachFUSE attaches the loop to the ring of FUSE queue q, as Attach does,
// and has it serve READ, WRITE, FSYNC, FLUSH and COPY_FILE_RANGE of q.Files
// itself: it reads the backing file into the entry's payload buffer, writes
// the payload to every replica's, fsyncs them (File.SyncFds), or copies
// between two files' replicas (File.CopyFds), writes the reply and commits
// the entry, and hands every other request to Go through Completions
// unchanged. A READ or WRITE whose backing I/O fails or falls short is
// handed to Go too (as the request it was), and its file leaves q.Files; a
// failed FSYNC of one replica is answered with its error, one of a mirrored
// file's handed to Go with the outcomes (SyncedTag). The ring must have
// SetupSQE128 as well as RingFlags.
// Go must treat a completion with user_data CommitTag|k as "commit entry
// k": the program wrote its reply but could not queue the commit; and one
// with SyncedTag|k as "answer the FSYNC in entry k from SyncOutcome".
func AttachFUSE(ring *uring.Ring, region []byte, q FUSEQueue) (*Loop, error) {
	return attachLoop(ring, region, &q)
}

// CommitTag marks a handed-off completion that asks Go to commit an entry
// whose reply the program wrote (FUSE_TAG_COMMIT of loop.bpf.c); the entry
// is in the low 32 bits.
const CommitTag = 5 << 32

// SyncedTag marks a handed-off completion for an FSYNC whose backing
// FSYNCs the program issued, one per File.SyncFds, when one of a mirrored
// file's failed or not all could be issued (FUSE_TAG_SYNCED of
// loop.bpf.c): Go settles the outcomes (SyncOutcome) by its rules for
// replicas and answers the request, in entry k (the low 32 bits). It is
// never served again: the kernel reports a writeback error to one fsync of
// a descriptor, so a second would find none.
const SyncedTag = 6 << 32

// ErrNotSynced is the outcome SyncOutcome gives a backing file whose FSYNC
// the program could not issue.
var ErrNotSynced = errors.New("bpf: backing fsync not issued")

// notSynced is NOT_SYNCED of loop.bpf.c.
const notSynced = 1

// SyncOutcome returns the backing files the FSYNC in entry k went to, and
// the outcome of each: nil, the error it failed with, or ErrNotSynced. It
// is for a completion with SyncedTag|k, before the entry is committed.
func (l *Loop) SyncOutcome(k int) (fds []int, errs []error) {
	sc := (*loopFsyncScratch)(unsafe.Pointer(&l.region[l.scratchOff+k*ScratchSize]))
	for i, fd := range sc.Fd {
		if fd < 0 {
			continue
		}
		var err error
		switch res := sc.Res[i]; {
		case res == notSynced:
			err = ErrNotSynced
		case res < 0:
			err = syscall.Errno(-res)
		}
		fds, errs = append(fds, int(fd)), append(errs, err)
	}
	return fds, errs
}

func attachLoop(ring *uring.Ring, region []byte, q *FUSEQueue) (*Loop, error) {
	if err := Available(); err != nil {
		return nil, fmt.Errorf("bpf: attach loop: %w", err)
	}
	if ring.Flags()&RingFlags != RingFlags {
		return nil, fmt.Errorf("bpf: attach loop: ring lacks setup flags %#x", RingFlags&^ring.Flags())
	}
	if len(region) < SharedSize {
		return nil, fmt.Errorf("bpf: attach loop: parameter region of %d bytes, need %d", len(region), SharedSize)
	}
	p := loadParams{sqEntries: ring.SQEntries(), cqEntries: ring.CQEntries(), ringFd: ring.Fd(),
		sqeSize: 64, regionSize: SharedSize}
	if ring.Flags()&uring.SetupSQE128 != 0 {
		p.sqeSize = 128
	}
	if q != nil {
		end := q.HeaderOff + q.Depth*fuseHeaderSize
		switch {
		case p.sqeSize != 128:
			return nil, errors.New("bpf: attach FUSE loop: ring lacks SetupSQE128")
		case q.Depth <= 0 || q.HeaderOff < SharedSize || q.ScratchOff < end ||
			q.PayloadOff < q.ScratchOff+q.Depth*ScratchSize || q.PayloadOff+q.Depth*q.PayloadStride > len(region):
			return nil, fmt.Errorf("bpf: attach FUSE loop: %d entries at %d, scratch at %d, payloads at %d (stride %d) do not fit a %d-byte region after %d bytes of loop state",
				q.Depth, q.HeaderOff, q.ScratchOff, q.PayloadOff, q.PayloadStride, len(region), SharedSize)
		case q.Files == nil:
			return nil, errors.New("bpf: attach FUSE loop: no Files")
		}
		p.fuse, p.regionSize = q, uint32(q.PayloadOff+q.Depth*q.PayloadStride)
	}
	depth := 0
	if q != nil {
		depth = q.Depth
	}
	var err error
	if p.ownCQ, p.inCQ, err = extraCQs(ring, depth); err != nil {
		return nil, err
	}
	l := &Loop{ring: ring, region: region, shared: (*loopLoopShared)(unsafe.Pointer(&region[0])),
		own: p.ownCQ, in: p.inCQ}
	if q != nil {
		l.scratchOff = q.ScratchOff
	}
	if l.in != nil {
		l.peeked = make([]*uring.CQE, ring.CQEntries())
	}
	clear(region[:SharedSize])
	l.shared.RegionUaddr = uint64(uintptr(unsafe.Pointer(&region[0])))
	if q != nil {
		l.shared.FuseDevFd = int32(q.DevFd)
		l.shared.FuseQid = uint32(q.QID)
	}
	if l.objs, err = loadObjects(p); err != nil {
		return nil, errors.Join(err, l.stopCQs())
	}
	l.link, err = link.AttachStructOps(link.StructOpsOptions{Map: l.objs.LoopOps})
	if err != nil {
		l.objs.Close()
		return nil, errors.Join(fmt.Errorf("bpf: attach loop to ring fd %d: %w", ring.Fd(), err), l.stopCQs())
	}
	return l, nil
}

// loopTag marks the user_data of the requests the program issues (LOOP_TAG).
const loopTag = 1 << 63

// extraCQs gives the program two CQs of its own on kernels with extra CQs
// (kernel/patches): own takes the completions of the requests it issues
// (loopTag), in every other CQE (FUSE requests, Go's completions), and the
// ring's CQ is left to what the program hands to Go. own is registered
// first, so it wins for loopTag, and has room for every request the
// program can have in flight (a WRITE per replica per entry, and the copy
// job), so none spills to the ring's CQ. Close stops both, which gives the
// ring back its CQEs. A kernel without extra CQs (EINVAL: an unknown
// register opcode) gives neither.
func extraCQs(ring *uring.Ring, depth int) (own, in *uring.ExtraCQ, err error) {
	entries := max(ring.CQEntries(), uint32(depth*MaxReplicas+1))
	own, err = ring.RegisterCQ(1<<bits.Len32(entries-1), loopTag, loopTag)
	if errors.Is(err, syscall.EINVAL) {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, fmt.Errorf("bpf: attach loop: own CQ: %w", err)
	}
	if in, err = ring.RegisterCQ(ring.CQEntries(), 0, 0); err != nil {
		return nil, nil, errors.Join(fmt.Errorf("bpf: attach loop: input CQ: %w", err), own.Stop())
	}
	return own, in, nil
}

// loadParams are the load-time constants of one program instance.
type loadParams struct {
	// sqEntries and cqEntries are powers of two, which the program's
	// index masks rely on.
	sqEntries, cqEntries uint32
	ringFd               int
	sqeSize              uint32
	regionSize           uint32 // bytes of the parameter region the program maps
	fuse                 *FUSEQueue
	ownCQ, inCQ          *uring.ExtraCQ // nil: none (extraCQs)
}

// loadObjects loads the program with p's constants.
func loadObjects(p loadParams) (loopObjects, error) {
	var objs loopObjects
	spec, err := loadLoop()
	if err != nil {
		return objs, fmt.Errorf("bpf: parse loop object: %w", err)
	}
	consts := map[string]uint32{
		"sq_entries":  p.sqEntries,
		"cq_entries":  p.cqEntries,
		"sqe_size":    p.sqeSize,
		"region_size": p.regionSize,
	}
	if SubmitBlockAvailable() == nil {
		consts["submit_block"] = 1
	}
	if q := p.ownCQ; q != nil {
		consts["own_cq_id"] = q.ID
	}
	if q := p.inCQ; q != nil {
		consts["in_cq_id"] = q.ID
		consts["in_cq_entries"] = q.Entries()
	}
	var opts *ebpf.CollectionOptions
	if q := p.fuse; q != nil {
		consts["fuse_depth"] = uint32(q.Depth)
		consts["fuse_hdr_off"] = uint32(q.HeaderOff)
		consts["fuse_scratch_off"] = uint32(q.ScratchOff)
		consts["fuse_payload_off"] = uint32(q.PayloadOff)
		consts["fuse_payload_stride"] = uint32(q.PayloadStride)
		if q.ZeroCopy {
			consts["fuse_zero_copy"] = 1
		}
		opts = &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{"offload_files": q.Files.m}}
	}
	for name, v := range consts {
		if err := spec.Variables[name].Set(v); err != nil {
			return objs, fmt.Errorf("bpf: set %s: %w", name, err)
		}
	}
	if err := setRingFd(spec.Maps["loop_ops"], p.ringFd); err != nil {
		return objs, fmt.Errorf("bpf: set ring_fd: %w", err)
	}
	if err := spec.LoadAndAssign(&objs, opts); err != nil {
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
// ordinary way. Completions still in the hand-off queue are dropped; those
// handed over on the ring's CQ (extra CQs) stay there.
func (l *Loop) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil
	}
	l.closed = true
	l.objs.Stats.Lookup(uint32(0), &l.final) // best effort: only Stats reads it
	// Steering stops first: from here on every CQE goes to the ring's
	// CQ, and the program, which runs only inside Enter, reaps nothing.
	err := errors.Join(l.stopCQs(), l.link.Close(), l.objs.Close())
	l.detached = true
	if err != nil {
		return fmt.Errorf("bpf: detach loop: %w", err)
	}
	return nil
}

// stopCQs gives the ring back the CQEs the program's extra CQs took.
func (l *Loop) stopCQs() error {
	var errs []error
	for _, q := range []*uring.ExtraCQ{l.own, l.in} {
		if q != nil {
			errs = append(errs, q.Stop())
		}
	}
	return errors.Join(errs...)
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

// Ready is the number of completions handed to Go and not yet consumed.
func (l *Loop) Ready() uint32 {
	if l.in == nil {
		return atomic.LoadUint32(&l.shared.HandoffTail) - l.shared.HandoffHead
	}
	n := l.ring.CQReady()
	if l.detached {
		n += l.in.Ready()
	}
	return n
}

// Completions moves up to len(dst) handed-off completions into dst, oldest
// first, and returns how many.
func (l *Loop) Completions(dst []uring.CQE) int {
	if l.in != nil {
		peeked := l.peeked[:min(len(dst), len(l.peeked))]
		n := l.ring.PeekPostedCQEs(peeked)
		advance := l.ring.CQAdvance
		if n == 0 && l.detached {
			n, advance = l.in.Peek(peeked), l.in.Advance
		}
		for i, c := range peeked[:n] {
			dst[i] = *c
		}
		advance(uint32(n))
		return n
	}
	sh := l.shared
	n := min(int(l.Ready()), len(dst))
	for i := range n {
		c := &sh.Handoff[(sh.HandoffHead+uint32(i))&(handoffEntries-1)]
		dst[i] = uring.CQE{UserData: c.UserData, Res: c.Res, Flags: c.Flags}
	}
	atomic.StoreUint32(&sh.HandoffHead, sh.HandoffHead+uint32(n))
	return n
}

// Stats reads the loop's counters. Any goroutine may call it, also after
// Close, which keeps the last values.
func (l *Loop) Stats() (Stats, error) {
	var s Stats
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return l.final, nil
	}
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
