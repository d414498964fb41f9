// Package uring is a pure-Go (no cgo) io_uring library over
// golang.org/x/sys/unix: the ring itself for code that drives io_uring
// directly (the FUSE-over-io_uring transport, rings that BPF programs
// run), and an Engine that lets many goroutines do file I/O through one
// ring.
//
// # Ring
//
// New sets up a ring (io_uring_setup) with any Setup* flags — SQE128,
// CQE32, SINGLE_ISSUER, DEFER_TASKRUN, COOP_TASKRUN, NO_SQARRAY, SQ_REWIND,
// CQSIZE, R_DISABLED, SUBMIT_ALL, SQPOLL — and maps its SQ/CQ rings (one
// mapping with FeatSingleMmap) and SQE array. Constants and struct layouts
// follow include/uapi/linux/io_uring.h of Linux 7.3; names follow liburing
// (PrepRead for io_uring_prep_read, CQAdvance for io_uring_cq_advance).
//
// The usual cycle is GetSQE, a Prep* method, SetFlags/SetUserData,
// Submit or SubmitAndWait, then PeekCQEs for a batch of completions and a
// single CQAdvance. The queues are free-running uint32 indices shared with
// the kernel; every shared head, tail and flag word is accessed with
// sync/atomic, which orders SQE writes before the tail store and CQE reads
// after the tail load (the acquire/release pairs of liburing). The index
// arithmetic is checked by a fuzz test against a simulated kernel across
// wrap-around. A Ring is not safe for concurrent use.
//
// Memory handed to the kernel by address (read buffers, iovecs, statx
// results) must stay reachable and in place until the request completes:
// pin it with runtime.Pinner (which also takes it off the movable goroutine
// stack) or use unix.Mmap for long-lived buffers. Paths, timespecs and
// open_how are copied during submission and need this only until Submit
// returns.
//
// Waiting retries EINTR, which Go's preemption signals cause routinely.
// SubmitAndWaitTimeout and WaitCQETimeout bound a wait with
// IORING_ENTER_EXT_ARG; SubmitAndWaitReg takes the wait arguments from a
// parameter region registered with MemRegionWaitArg. When the CQ is full
// the kernel keeps completions in its overflow list (FeatNoDrop) and sets
// SQCQOverflow; PeekCQEs and Submit then enter the kernel with GETEVENTS to
// move them back, so nothing is lost and order is kept.
//
// Registration covers files and buffers (dense, sparse, updated in
// place), the ring fd (per thread: only for goroutines locked with
// runtime.LockOSThread), restrictions plus Enable for R_DISABLED rings,
// IORING_REGISTER_PROBE, and IORING_REGISTER_MEM_REGION, the parameter
// region that BPF programs attached to the ring reach as IOU_REGION_MEM.
//
// bpfusefs's kernel series (kernel/patches/) adds IORING_OP_COPY_FILE_RANGE
// (PrepCopyFileRange), IORING_OP_BPF (PrepBPF), IORING_OP_FUTIMENS
// (PrepFutimens) and extra completion queues (RegisterCQ, ExtraCQ: CQEs
// steered by user_data, waited on apart). Their numbers come after Linux
// 7.3's last, so Verify* check that a kernel listing them means the
// series' and not a later upstream's.
//
// # Engine
//
// The Engine serves the daemon's backing I/O: Pread, Pwrite, Fsync, Do for
// any single request, and Batch for requests submitted together and
// finished together (a write fanned out to every mirror). Its design is
// driven by latency on a 4 KiB read from the page cache, which io_uring
// completes inline while submitting:
//
//   - There is no engine goroutine. A caller prepares its SQEs under the
//     engine mutex and, if nobody is waiting on the ring, becomes the
//     poller: one io_uring_enter both submits and waits for a completion.
//     A lone caller therefore pays one system call per read, like pread,
//     and never a goroutine hand-off.
//   - While another caller polls, a caller submits every queued SQE (one
//     io_uring_enter without waiting) and parks on its own channel; it
//     does not reap, because only the poller may consume completions
//     while it waits in the kernel (see reapUnlessPolled: a reaper racing
//     the poller's entry could leave it asleep with nothing in flight). A caller arriving while such a submission
//     is in the kernel just queues its SQE and parks: the submitter sends
//     it with everything else queued when it returns, so concurrent
//     callers share system calls (EngineStats counts them).
//   - The poller delivers every completion it reaps, waking the callers
//     whose requests are all done. When it leaves with requests of parked
//     callers still in flight, it wakes one of them to take over polling.
//   - Buffers are pinned with runtime.Pinner from preparation to
//     completion. The number of requests in flight is bounded by
//     MaxInflight and never exceeds the CQ, so the CQ cannot overflow;
//     callers beyond that, or finding the SQ full, wait (back-pressure).
//   - Close refuses new requests, cancels those in flight
//     (IORING_ASYNC_CANCEL_ANY), waits until each has completed and its
//     caller has left the kernel, then unmaps and closes the ring: no
//     goroutine or fd survives it.
//
// Request failures are returned as syscall.Errno, exactly like unix.Pread;
// failures of the ring itself are wrapped in *os.SyscallError naming the
// system call (and the register opcode). When the kernel has no io_uring,
// or kernel.io_uring_disabled forbids it, New and NewEngine return an
// error wrapping ErrUnavailable.
//
// # Features
//
// Probe reports what the running kernel offers — ring features, accepted
// setup flags, opcodes (IORING_REGISTER_PROBE) and register opcodes — for
// bpfusefs doctor and for callers choosing a data path. Tests skip, naming
// the missing feature, when the kernel lacks one (SQ_REWIND is newer than 6.18).
package uring
