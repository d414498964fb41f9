// Package fusering serves a FUSE mount over FUSE-over-io_uring (Linux
// 6.14+): requests arrive as completions of IORING_OP_URING_CMD on the
// /dev/fuse fd, and replies go back in COMMIT_AND_FETCH commands that also
// ask for the next request, so one io_uring_enter both answers and waits.
//
// The kernel wants a queue for every possible CPU before it uses the ring,
// and a request lands in the queue of the CPU its caller runs on. Each
// queue here is one io_uring (SQE128) owned by one locked OS thread, which
// registers Options.Depth entries, each a header buffer (struct
// fuse_uring_req_header) plus a payload buffer. The thread serves a request
// in place (go-fuse's ProtocolServer reads the request from the entry and
// writes the reply into it) and commits it; operations that may block for
// long run on their own goroutine and hand the entry back to the thread,
// which is the only one that ever submits on its ring, so the ring can be
// SINGLE_ISSUER and DEFER_TASKRUN (Options.DeferTaskrun), as an io_uring
// BPF loop attached to it requires.
//
// What the kernel does not send over the ring (INIT, FORGET, INTERRUPT,
// notify replies, and requests queued before the ring was ready) still
// arrives on /dev/fuse; the Server reads it with the same ProtocolServer,
// so interrupts reach requests whichever way they came. go-fuse's
// fuse.Server is created only to answer INIT and to be the handle the file
// system sends notifications through (RawFileSystem.Init); it never reads
// the device, so its InodeRetrieveCache is not supported.
//
// Entry buffers are placed in an io_uring parameter region
// (IORING_REGISTER_MEM_REGION, Linux 6.13+) when the kernel has it, so a
// BPF program running on the ring reaches them as IOU_REGION_MEM; in plain
// anonymous memory otherwise.
//
// On Linux 7.3+ (and CAP_SYS_ADMIN) Options.ZeroCopy creates zero-copy
// queues (ADD_QUEUE with FUSE_URING_ZERO_COPY, ADD_BUFPOOL): READ and WRITE
// of files the file system names through ZeroCopyFiles are done with
// READ_FIXED/WRITE_FIXED straight between the backing files (a WRITE to
// each replica) and the caller's pages, which the kernel registers in the
// entry's slot of the ring's buffer table. Kernels without it get ordinary
// queues.
//
// With Options.BPF (Linux 7.1+ io_uring bpf-ops) each queue's ring runs the
// io_uring BPF loop of package bpf: the program serves READ, WRITE, FSYNC,
// FLUSH and COPY_FILE_RANGE of the files the file system names through
// OffloadFiles in the kernel (backing READ into the entry's payload, or the
// caller's pages on a zero-copy queue, WRITE from there to every replica,
// FSYNC, or the copy per replica; reply, COMMIT_AND_FETCH) and hands every
// other request to the queue thread, which serves it as above. A queue
// whose program cannot be attached is served without it, and says so once.
package fusering

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/uring"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// ErrUnavailable is wrapped by Available and Mount when the kernel cannot
// serve FUSE over io_uring here; callers fall back to /dev/fuse.
var ErrUnavailable = errors.New("FUSE-over-io_uring unavailable")

const enableURingParam = "/sys/module/fuse/parameters/enable_uring"

// Options configures the transport. The zero value is usable.
type Options struct {
	// Depth is the number of entries per queue, the requests one CPU's
	// callers can have in the daemon at once (default 8). Each entry
	// holds a payload buffer of the kernel's max_payload_sz (max_write,
	// at least 8 KiB), so the buffers take possible CPUs x Depth x that.
	Depth int
	// DeferTaskrun sets up the rings with SINGLE_ISSUER and
	// DEFER_TASKRUN (Linux 6.1+), which the io_uring BPF loop needs.
	DeferTaskrun bool
	// ZeroCopy asks for zero-copy queues where the kernel has them
	// (Linux 7.3+, CAP_SYS_ADMIN); see ZeroCopyFiles. Without kernel
	// support the queues are ordinary and Stats.ZeroCopyQueues is 0.
	ZeroCopy bool
	// BPF attaches the io_uring BPF loop to every queue's ring, serving
	// I/O of the files OffloadFiles names in the kernel (see
	// package bpf). It implies DeferTaskrun's ring flags (bpf.RingFlags).
	// With ZeroCopy too, the program moves the data of zero-copy READs
	// and WRITEs between the backing file and the caller's pages itself.
	// A kernel or process that cannot load the program gets ordinary
	// queues and one log line (Stats.BPFQueues counts the others).
	BPF bool
	// Logger receives unexpected errors (default: MountOptions.Logger,
	// else log.Default()).
	Logger *log.Logger
}

// ZeroCopyFiles is implemented by a RawFileSystem whose open files may be
// read and written by the transport itself: with zero-copy queues it marks
// such opens FOPEN_IO_URING_ZERO_COPY and serves their READ and WRITE with
// READ_FIXED/WRITE_FIXED at the request's offset, without calling the file
// system's Read or Write.
type ZeroCopyFiles interface {
	// ZeroCopyFile returns the backing I/O of the open file fh, or
	// ok=false to serve the file through Read and Write. It is asked at
	// OPEN and CREATE, which settle the matter for that open, and again
	// for each of its READs and WRITEs.
	ZeroCopyFile(fh uint64) (f ZeroCopyIO, ok bool)
}

// ZeroCopyIO is the backing I/O of an open file that the transport does on
// the caller's pages, while the file system keeps the say over its
// replicas. The descriptors must stay open until the file is released.
type ZeroCopyIO interface {
	// ReadFd returns the descriptor a READ is served from.
	ReadFd() int
	// ReadFailed is told that a READ from fd failed with err, and says
	// whether to try again (from ReadFd) rather than answer err.
	ReadFailed(fd int, err error) bool
	// WriteFds returns the descriptors a WRITE goes to, one per
	// replica; -1 skips one.
	WriteFds() []int
	// WriteDone turns the outcome of a WRITE to each of fds (errs[i]
	// nil: written in full; ignored where fds[i] is -1) into its answer.
	WriteDone(fds []int, errs []error) error
}

// OffloadFiles is implemented by a RawFileSystem whose open files the BPF
// loop may serve itself (Options.BPF): it serves their READ, WRITE and
// FSYNC requests with backing I/O, and FLUSH with a reply, without calling
// the file system's Read, Write, Fsync or Flush.
type OffloadFiles interface {
	// OffloadFile returns how I/O of open file fh may be served
	// (descriptors that stay open until fh is released), or ok=false to
	// serve it through the file system.
	OffloadFile(fh uint64) (f bpf.File, ok bool)
	// OnOffloadChange registers f to be called, before the call that
	// made the change returns, whenever an answer of OffloadFile stops
	// holding: a descriptor it gave out is no longer the right one to read
	// (a replica degraded), or a file gained set-ID bits or capabilities
	// (File.CopyAnyCaller).
	OnOffloadChange(f func())
	// FsyncDone answers the FSYNC in, for which the BPF loop ran the
	// backing fsyncs of fds (File.SyncFds) with outcomes errs, and one of
	// a mirrored file's failed or was not run (bpf.ErrNotSynced), as Fsync
	// would have answered it. The outcomes are final: the kernel reports
	// a writeback error to one fsync of a descriptor only.
	FsyncDone(in *fuse.FsyncIn, fds []int, errs []error) fuse.Status
}

// Counters count requests that arrived by one channel.
type Counters struct {
	Requests uint64
	Reads    uint64 // FUSE_READ
	Writes   uint64 // FUSE_WRITE
}

// Stats describe a Server; the counters are cumulative.
type Stats struct {
	Queues         int  // one per possible CPU
	Depth          int  // entries per queue
	PayloadSize    int  // bytes per entry payload buffer: the kernel's max_payload_sz
	MemRegion      bool // entry buffers live in io_uring parameter regions
	ZeroCopyQueues int  // queues created with FUSE_URING_ZERO_COPY

	Ring      Counters // arrived as ring completions
	Dev       Counters // read from /dev/fuse
	Offloaded uint64   // ring requests served off their queue thread
	// ZeroCopyReads and ZeroCopyWrites count READ and WRITE requests
	// served with READ_FIXED/WRITE_FIXED on the entry's slot.
	ZeroCopyReads  uint64
	ZeroCopyWrites uint64

	// BPFQueues counts queues whose ring runs the BPF loop. BPFReads,
	// BPFWrites and their bytes, BPFFsyncs, BPFFlushes and BPFCopies
	// (COPY_FILE_RANGE) and their bytes count the requests it answered in
	// the kernel (a mirrored WRITE or copy once), and
	// BPFFallbacks the ones it handed back to the daemon after their
	// backing I/O failed or fell short.
	BPFQueues                   int
	BPFReads, BPFWrites         uint64
	BPFReadBytes, BPFWriteBytes uint64
	BPFFsyncs, BPFFlushes       uint64
	BPFCopies, BPFCopyBytes     uint64
	BPFFallbacks                uint64
	// BPFOwnCQ counts the completions of the loop's backing requests
	// that it reaped from a CQ of its own, apart from the FUSE requests
	// (extra CQs of the kernel series, kernel/patches; 0 elsewhere).
	BPFOwnCQ uint64
	// BPFZeroCopy counts the BPFReads and BPFWrites whose data moved
	// between the backing file and the caller's pages (zero-copy queues).
	BPFZeroCopy uint64
}

// counters is the lock-free form of Counters.
type counters struct {
	requests, reads, writes atomic.Uint64
}

func (c *counters) count(opcode uint32) {
	c.requests.Add(1)
	switch opcode {
	case opRead:
		c.reads.Add(1)
	case opWrite:
		c.writes.Add(1)
	}
}

func (c *counters) load() Counters {
	return Counters{Requests: c.requests.Load(), Reads: c.reads.Load(), Writes: c.writes.Load()}
}

// Available returns nil if this kernel and process can serve FUSE over
// io_uring, or an error wrapping ErrUnavailable that says why not.
func Available() error {
	v, err := os.ReadFile(enableURingParam)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("%w: kernel has no FUSE-over-io_uring (needs Linux 6.14+ with CONFIG_FUSE_IO_URING; no %s)", ErrUnavailable, enableURingParam)
	case err != nil:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	case strings.TrimSpace(string(v)) != "Y":
		return fmt.Errorf("%w: %s is %s, not Y", ErrUnavailable, enableURingParam, strings.TrimSpace(string(v)))
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	r, err := uring.New(2, &uring.Options{Flags: uring.SetupSQE128})
	if err != nil {
		return fmt.Errorf("%w: 128-byte SQE ring: %w", ErrUnavailable, err)
	}
	return r.Close()
}

// Server is a mounted file system served over FUSE-over-io_uring.
type Server struct {
	mountpoint string
	devFd      int // our /dev/fuse fd: ring commands and the device reader
	ps         *fuse.ProtocolServer
	fs         fuse.RawFileSystem
	logger     *log.Logger
	// initialized: INIT was answered and fs.Init called, so fs.OnUnmount
	// is due at the end.
	// initSrv is go-fuse's Server that answered INIT on a dup of the
	// connection; nil until then.
	initSrv        *fuse.Server
	kernelSettings fuse.InitIn

	queues      []*queue
	depth       int
	payloadSize int
	// zcFiles serves zero-copy READ and WRITE (nil without
	// Options.ZeroCopy); zeroCopyActive is set once a queue is zero-copy.
	zcFiles        ZeroCopyFiles
	zeroCopyActive atomic.Bool
	// offload names the files the BPF loop serves, and files holds them
	// for the programs (both nil without Options.BPF); bpfFailed makes
	// a queue that runs without the loop say so once.
	offload   OffloadFiles
	files     *bpf.Files
	bpfFailed sync.Once

	ring, dev       counters
	offloaded       atomic.Uint64
	zcRead, zcWrite atomic.Uint64

	devBufs  sync.Pool      // request and reply buffers of the device reader
	loops    sync.WaitGroup // the device reader and the queue threads
	waitOnce sync.Once
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	st := Stats{
		Queues:         len(s.queues),
		Depth:          s.depth,
		PayloadSize:    s.payloadSize,
		Ring:           s.ring.load(),
		Dev:            s.dev.load(),
		Offloaded:      s.offloaded.Load(),
		ZeroCopyReads:  s.zcRead.Load(),
		ZeroCopyWrites: s.zcWrite.Load(),
		MemRegion:      len(s.queues) > 0,
	}
	for _, q := range s.queues {
		st.MemRegion = st.MemRegion && q.mem.region
		if q.zc != nil {
			st.ZeroCopyQueues++
		}
		if q.loop == nil {
			continue
		}
		st.BPFQueues++
		ls, err := q.loop.Stats()
		if err != nil {
			s.logf("queue %d: %v", q.qid, err)
			continue
		}
		st.BPFReads += ls.FuseReads
		st.BPFReadBytes += ls.FuseReadBytes
		st.BPFWrites += ls.FuseWrites
		st.BPFWriteBytes += ls.FuseWriteBytes
		st.BPFFsyncs += ls.FuseFsyncs
		st.BPFFlushes += ls.FuseFlushes
		st.BPFCopies += ls.FuseCopies
		st.BPFCopyBytes += ls.FuseCopyBytes
		st.BPFFallbacks += ls.FuseFallbacks
		st.BPFOwnCQ += ls.OwnCqCqes
		st.BPFZeroCopy += ls.FuseZeroCopy
	}
	return st
}

// KernelSettings returns the kernel's FUSE_INIT request, as
// fuse.Server.KernelSettings does.
func (s *Server) KernelSettings() *fuse.InitIn {
	in := s.kernelSettings
	return &in
}

// Mountpoint returns the absolute path the file system is mounted on.
func (s *Server) Mountpoint() string { return s.mountpoint }

// Unmount unmounts the file system and waits until every queue thread and
// the device reader have exited and their rings are closed. Like go-fuse,
// it retries for a moment while the mount is busy, since RELEASE of a
// just-closed file may still be in flight.
func (s *Server) Unmount() error {
	if err := unmount(s.mountpoint); err != nil {
		return err
	}
	s.Wait()
	return nil
}

// Wait returns once the connection has ended (unmount, abort through
// /sys/fs/fuse/connections, or a fatal error) and everything the server
// owned is released.
func (s *Server) Wait() {
	s.loops.Wait()
	s.waitOnce.Do(func() {
		closeFd(s.devFd)
		if s.files != nil {
			s.files.Close()
		}
		if s.initSrv != nil {
			// It never served, so it still holds its descriptor of the
			// connection. Serving now sees the connection gone at once
			// (ENODEV): it closes that descriptor and calls the file
			// system's OnUnmount, as after any go-fuse mount.
			s.initSrv.Serve()
		}
	})
}

func (s *Server) logf(format string, args ...any) {
	s.logger.Printf("fusering %s: "+format, append([]any{s.mountpoint}, args...)...)
}
