// Package bpf holds bpfusefs's io_uring BPF programs and their Go loader:
// struct_ops io_uring_bpf_ops programs (Linux 7.1+, CONFIG_IO_URING_BPF_OPS)
// that run a ring's event loop inside the kernel, so that requests the
// program can serve never wake the daemon.
//
// # Building
//
// The C sources are in c/ (c/iou.h declares the few kernel types the
// programs use, CO-RE relocatable, instead of a vmlinux.h). gen.sh compiles
// them with clang (installing Debian's clang-19 when missing) through
// cilium/ebpf's bpf2go; `go generate ./bpf/...` (`make bpf`) regenerates
// loop_bpfel.o and loop_bpfel.go, which are committed, so building
// bpfusefs needs no clang.
//
// # The loop
//
// Once a Loop is attached (Attach), every io_uring_enter on the ring runs
// loop_step instead of the kernel's submit-and-wait, so Go never submits or
// reaps on that ring directly:
//
//   - Go queues SQEs with Loop.GetSQE and calls Loop.Enter. The ring has
//     SQ_REWIND (RingFlags): the SQEs sit at SQ index 0..n-1 and Go
//     publishes n in the parameter region; the program submits them with
//     bpf_io_uring_submit_sqes. Later SQEs of the program itself also go at
//     index 0, which is free once Go's batch is submitted.
//   - The program owns the CQ. A CQE whose user_data has bit 63 set belongs
//     to work the program drives and is consumed in the kernel; any other
//     is copied to a hand-off queue in the parameter region, which Go reads
//     with Loop.Completions. The CQ head only moves under the program, so
//     the CQ's FIFO order never forces the program to wait for Go.
//   - loop_step returns IOU_LOOP_STOP, ending Go's io_uring_enter, once
//     the hand-off queue holds the number of completions Go asked for;
//     otherwise it sets cq_wait_idx one past the CQ entries it consumed and
//     returns IOU_LOOP_CONTINUE, and the kernel sleeps until the next CQE
//     (completions of a DEFER_TASKRUN ring are posted inside that loop).
//
// The parameter region's first SharedSize bytes are the program's shared
// state (struct loop_shared); the rest belongs to the caller. Counters are
// kept in the program's "stats" array map (Loop.Stats).
//
// The copy job (Loop.Copy) is the offload mechanism in its smallest form and
// the headline case of the 2021 io_uring BPF work: READ a chunk of one file
// into a buffer in the parameter region, WRITE it to another, and chain the
// next READ, all inside one io_uring_enter; BenchmarkCopy4K compares it with
// a pread/pwrite loop in the same run.
//
// Available probes the kernel BTF for the struct_ops type and the kfuncs;
// its errors, and Attach's on such kernels, wrap ErrUnavailable. A verifier
// rejection surfaces as a wrapped *ebpf.VerifierError.
//
// # Next: the FUSE queue loop (design, not built yet)
//
// What the loop above already settles for issue 8's FUSE offload, and what
// the FUSE program adds:
//
//   - Ring. fusering's DeferTaskrun queues already have SINGLE_ISSUER and
//     DEFER_TASKRUN; with --accel bpf they add SQ_REWIND and NO_SQARRAY
//     (RingFlags). They use SQE128 for URING_CMD, so the program needs the
//     SQE size as a load-time constant (index << 7) and must zero both
//     halves. The queue thread's getSQE/SubmitAndWait/PeekCQEs become
//     Loop.GetSQE, Loop.Enter(1) and Loop.Completions; everything else in
//     fusering's dispatch stays.
//   - Region. fusering's queueMemory puts entry k's fuse_uring_req_header
//     at k*headerSize from the region's start, so loop_shared must move:
//     Attach takes the offset of loop_shared (a load-time constant of the
//     program) and fusering reserves it after its wake word. The program
//     reads fuse_in_header and the op header of entry k from the region,
//     writes fuse_out_header and ent_in_out.payload_sz back, and gets the
//     user addresses of the payloads (for READ/WRITE SQEs, which run in the
//     task's mm) from loop_shared, filled by Go.
//   - Per entry CQE (a FUSE request in entry k, user_data tagEntry|k): if
//     the opcode is READ or WRITE and fuse_read_in.fh / fuse_write_in.fh is
//     in an "offload" hash map (filled by Go at OPEN, cleared at RELEASE:
//     replica count, fixed-file index per replica, flags), the program
//     issues the backing I/O with IOSQE_FIXED_FILE and user_data
//     LOOP_TAG|k|replica<<16: READ on one healthy replica into k's payload,
//     WRITE on every healthy replica from it. Per-entry state (opcode,
//     unique, requests outstanding, result) lives in an array map indexed
//     by k. Anything else is handed to Go untouched, exactly as now.
//   - Per backing CQE: record the result; when the entry's last one
//     arrives, write the reply (fuse_out_header, fuse_write_out) and issue
//     COMMIT_AND_FETCH for k with the same user_data Go uses (tagEntry|k):
//     its completion is the entry's next request, which comes back to the
//     program through the same path. An entry is owned by either the
//     program or Go at any moment, so their commits never race. A failing
//     replica is marked in a "replicas" map shared with the daemon path
//     (rule 2: degrade loudly; Go logs it on its next wake); a short read
//     or write is finished like the daemon path does, and a submission the
//     kernel refuses is retried a bounded number of times and then the
//     entry is handed to Go (a synthetic hand-off carrying the original
//     CQE), so nothing hangs.
//   - Fixed files. Registering backing fds at OPEN must happen on the queue
//     thread (SINGLE_ISSUER rejects io_uring_register from other tasks):
//     queue IORING_OP_FILES_UPDATE through Loop.GetSQE, or hand the update
//     to the queue thread the way fusering's workers hand finished replies
//     (the wake eventfd, whose read completion is handed off to Go).
//   - Which requests stay inline. On the 7.3 guest kernel (io_uring
//     tracepoint io_uring_queue_async_work) a buffered READ from ext4's
//     page cache and a WRITE to /dev/zero complete inline inside
//     bpf_io_uring_submit_sqes, so one loop_step chains many of them; a
//     READ from tmpfs and a buffered WRITE to ext4 are punted to io-wq
//     (no FMODE_NOWAIT / buffered async write support), and each such
//     completion wakes the loop once. The FUSE path's backing files are on
//     disk filesystems: READ offload stays inline, WRITE fan-out costs an
//     io-wq hop per replica unless the filesystem does async buffered
//     writes (XFS and btrfs do). BenchmarkCopy4K measures it (run it with
//     TMPDIR on a disk filesystem).
package bpf
