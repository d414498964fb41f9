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
// On a kernel with bpfusefs's series (kernel/patches/), whose rings can
// have extra CQs, Attach gives the program two (see uring.ExtraCQ): one
// takes the completions of its own requests (user_data bit 63), which the
// program reaps with the kfunc bpf_io_uring_reap_cqe, one every other CQE,
// which it reaps through its region instead of the ring's CQ. The ring's
// CQ is then Go's: the program hands completions over by posting them
// there (kfunc bpf_io_uring_post_cqe) rather than through the hand-off
// queue, Completions reads them from it, and Close stops both extra CQs,
// so the ring's CQ takes every CQE again. The program's own completions
// never sit between the FUSE requests; Stats.OwnCqCqes counts them. The
// series' kfunc bpf_io_uring_submit_sqes_flags lets the program issue the
// backing reads and writes that would go to io-wq (every buffered write to
// ext4 or tmpfs) blocking, in the loop: they complete while issued, as the
// daemon's pread and pwrite do in its queue thread, instead of costing a
// worker's wake-up and a second one of the loop (SubmitBlockAvailable).
// Mirrored WRITEs over 64 KiB still go to io-wq, where the replicas' copies
// run in parallel.
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
// # The FUSE queue loop
//
// AttachFUSE runs the same program on a FUSE-over-io_uring queue ring
// (fs/fusering with Options.BPF) and lets it serve READ, WRITE, FSYNC,
// FLUSH and COPY_FILE_RANGE of the open files in a Files map, which the
// daemon fills at OPEN and empties at RELEASE:
//
//   - Ring. The queue rings have SQE128 (URING_CMD) as well as RingFlags;
//     the program writes 128-byte SQEs (sqe_size) at index 0.
//   - Region. The loop's state takes the region's first SharedSize bytes;
//     fusering puts entry k's fuse_uring_req_header at HeaderOff+k*288 and
//     its payload buffer at PayloadOff+k*PayloadStride, load-time
//     constants of the program, which reads the request from the header
//     and writes fuse_out_header, fuse_write_out and payload_sz back. The
//     SQEs name payloads by user address (region_uaddr in loop_shared):
//     they run in the daemon's mm.
//   - Zero-copy queues (FUSEQueue.ZeroCopy, Linux 7.3). The payload
//     buffers are a pool the kernel lends from per request, at the offset
//     in the header's ring_ent_in_out; and for a READ or WRITE flagged
//     FUSE_URING_ENT_ZERO_COPY the caller's pages are the ring's fixed
//     buffer k, which the program's READ_FIXED/WRITE_FIXED (buf_index k,
//     address 0) read into or write from: the data never passes through
//     the daemon's memory. Stats.FuseZeroCopy counts them.
//   - A FUSE request (a CQE of the entry's REGISTER or COMMIT_AND_FETCH,
//     user_data = k) for a file in Files: READ becomes a READ of the file's
//     read replica into the payload; WRITE one WRITE from the payload per
//     replica (at most MaxReplicas), counted in a per-entry array map.
//     WRITEs that would drop set-ID bits (FUSE_WRITE_KILL_SUIDGID) stay
//     with the daemon. FSYNC becomes one FSYNC per replica (File.SyncFds);
//     of a mirrored file, after a STATX of the first replica into the
//     entry's scratch and an IORING_OP_FUTIMENS (kernel/patches) giving
//     each mirror its access and modification times, as the daemon does
//     before it syncs. FLUSH, which the daemon only counts, is answered
//     at once. COPY_FILE_RANGE between two files of Files, from a caller
//     with uid 0 or into a file the daemon would drop nothing of for
//     others (File.CopyAnyCaller: no set-ID bits, no capabilities),
//     becomes one IORING_OP_COPY_FILE_RANGE per replica with
//     IORING_COPY_KEEP_HOLES (kernel/patches), replica i of the source to
//     replica i of the destination (File.CopyFds), holes kept as the
//     daemon's copy keeps them; every replica must copy as much. The SQEs
//     carry LOOP_TAG, so their CQEs stay in the kernel.
//   - When the entry's last backing CQE arrives the program writes the
//     reply and queues COMMIT_AND_FETCH for k with the daemon's own
//     user_data, so the entry's next request comes back the same way. An
//     entry is owned by the program or by Go at any moment, never both.
//   - Anything doubtful goes to Go: any other opcode or file; a backing
//     read or write that fails or falls short (the request is handed off
//     as it arrived, Go serves it again under its replica rules, and the
//     file leaves Files; rewriting the same bytes at the same offset is
//     harmless); a commit the kernel would not take (handed off as
//     CommitTag|k, and Go commits the reply the program wrote). The daemon
//     empties Files whenever a replica degrades. A failed FSYNC is the
//     exception, because the kernel reports a writeback error to one fsync
//     of a descriptor only, and the daemon's retry would succeed: on one
//     replica the program replies with the error; of a mirrored file, it
//     hands the request off as SyncedTag|k, and Go settles the outcomes
//     the program left in the entry's scratch (SyncOutcome) by its replica
//     rules, degrading the failed replica, without syncing again.
//
// Which backing requests complete inline: on the 7.3 guest kernel
// (io_uring tracepoint io_uring_queue_async_work) a buffered READ from
// ext4's page cache and a WRITE to /dev/zero complete inline inside
// bpf_io_uring_submit_sqes, so one loop_step chains many of them; a READ
// from tmpfs and a buffered WRITE to ext4 are punted to io-wq (no
// FMODE_NOWAIT / buffered async write support), and each such completion
// wakes the loop once. BenchmarkCopy4K measures it (run it with TMPDIR on
// a disk filesystem).
//
// # The sparse copy (patched kernel)
//
// On a kernel with bpfusefs's series (kernel/patches/), io_uring_bpf_ops
// has a second program, handle_req, which an IORING_OP_BPF request runs
// inline with the SQE's fields and, with IORING_BPF_FIXED_BUFFER, access
// to a range of a registered buffer (kfuncs bpf_io_uring_req_read and
// bpf_io_uring_req_write). SparseCopy (c/sparse.bpf.c, a separate object:
// its struct_ops type has a member stock kernels lack) links, per 64 KiB
// block, READ_FIXED -> BPF -> WRITE_FIXED: the program adds the block into
// a checksum and fails for a block of zeros, which cancels the WRITE, so
// the destination keeps the hole; Go only queues chains and reaps CQEs.
// Its loop_step is the minimal one: submit what Go queued, stop once the
// CQ is not empty. SparseAvailable probes the BTF for it.
package bpf
