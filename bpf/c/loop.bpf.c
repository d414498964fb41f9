// SPDX-License-Identifier: (MIT OR GPL-2.0)
/*
 * The event loop of one io_uring, run by the kernel on every io_uring_enter
 * once attached (struct_ops io_uring_bpf_ops, Linux 7.1+).
 *
 * Each loop_step:
 *   1. submits the SQEs the Go side queued (struct loop_shared.sq_pending;
 *      the ring has SQ_REWIND, so they sit at SQ index 0..n-1);
 *   2. reaps the CQ: completions tagged LOOP_TAG belong to work the program
 *      drives itself (the copy job) and are consumed here; every other CQE
 *      is moved to the hand-off queue in the parameter region for Go;
 *   3. stops, returning to Go, once the hand-off queue holds as many
 *      completions as Go asked for (want), or the queue is full; otherwise
 *      sleeps until the next CQE (cq_wait_idx) and runs again.
 *
 * With bpfusefs's kernel series the ring has two extra CQs for the program
 * (own_cq_id, in_cq_*): its own requests complete on one, reaped with
 * bpf_io_uring_reap_cqe, everything else arrives on the other (reaped
 * through its region, in batches) instead of the ring's CQ, and the
 * hand-off goes to the ring's CQ by bpf_io_uring_post_cqe, which leaves the
 * ring's CQ to Go.
 *
 * The copy job is the offload mechanism in its smallest form: READ a chunk
 * of one file into a buffer in the parameter region, WRITE it to another,
 * repeat, without returning to userspace between the steps.
 *
 * On a FUSE-over-io_uring queue ring (fuse_depth > 0) the program also
 * serves FUSE requests on files in the offload_files map: a READ becomes a
 * READ of one backing file into the entry's payload buffer, a WRITE one
 * WRITE from the payload to every replica's backing file, an FSYNC one
 * FSYNC per replica; their completion becomes the reply and the entry's
 * COMMIT_AND_FETCH. Before a mirrored file's FSYNCs, the mirrors get the
 * first replica's access and modification times, as the daemon gives them
 * (each replica stamps its own clock on a write): a STATX of the first
 * replica, then an IORING_OP_FUTIMENS (kernel/patches) of each mirror. On
 * a zero-copy queue the READ or WRITE of a file opened for zero copy moves
 * its data between the backing file and the caller's pages
 * (READ_FIXED/WRITE_FIXED on the buffer the kernel registered for the
 * entry): it never passes through the daemon's memory. A COPY_FILE_RANGE
 * between two offloaded files (a root caller's, or into a file without
 * set-ID bits or capabilities) becomes one IORING_OP_COPY_FILE_RANGE per
 * replica that keeps holes (IORING_COPY_KEEP_HOLES, kernel/patches), as the
 * daemon's copy does. A FLUSH, which the daemon answers without doing
 * anything, is answered at once. The daemon never sees those requests. Everything else, and any
 * READ, WRITE or copy whose backing I/O fails or falls short, is handed to
 * it as it arrived: the daemon's rules for replicas decide, and rewriting
 * the same bytes at the same offset is harmless (a copy's ranges never
 * overlap: the kernel refuses that); so is an FSYNC whose STATX or
 * FUTIMENS fails, before any replica is synced. A failed FSYNC is never
 * served again: the kernel reports a writeback error to one fsync of the
 * descriptor, so the daemon's second try could find nothing wrong. The
 * program answers it with the error on one replica; of a mirrored file, it
 * hands the daemon the outcomes (FUSE_TAG_SYNCED), which its rules settle.
 */
#include "iou.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define SHARED_SIZE 4096 /* bpf.SharedSize: struct loop_shared, page-rounded */

/* Set by the loader before load: the verifier needs constant region sizes
 * and index masks. Both are powers of two (io_uring rounds them up). */
const volatile __u32 sq_entries = 1;
const volatile __u32 cq_entries = 1;
const volatile __u32 sqe_size = 64; /* 128 on SQE128 rings */
/* Bytes of the parameter region the program maps (at least SHARED_SIZE). */
const volatile __u32 region_size = SHARED_SIZE;

/* The FUSE queue: entries, and where their buffers sit in the region. */
const volatile __u32 fuse_depth = 0; /* 0: not a FUSE queue */
const volatile __u32 fuse_hdr_off = 0; /* entry 0's fuse_uring_req_header */
const volatile __u32 fuse_payload_off = 0; /* entry 0's payload buffer */
const volatile __u32 fuse_payload_stride = 0;
/* Entry k's scratch, SCRATCH_SIZE bytes at fuse_scratch_off + k *
 * SCRATCH_SIZE: room for requests that have no payload buffer (an FSYNC
 * has none on a zero-copy queue). */
const volatile __u32 fuse_scratch_off = 0;
#define SCRATCH_SIZE 384 /* bpf.ScratchSize */
/* A zero-copy queue (FUSE_URING_ZERO_COPY, Linux 7.3): the payload buffers
 * are a pool the kernel lends from, at ring_ent_in_out.offset, instead of
 * one per entry; and a READ or WRITE flagged FUSE_URING_ENT_ZERO_COPY has
 * the caller's pages registered as the ring's fixed buffer k, k being the
 * entry, starting at address 0. */
const volatile __u32 fuse_zero_copy = 0;

/* The program's own CQ (kernel/patches: IORING_REGISTER_CQ taking every CQE
 * with LOOP_TAG), reaped with bpf_io_uring_reap_cqe; 0 when the ring has
 * none and the program's CQEs arrive on the ring's CQ among the others. */
const volatile __u32 own_cq_id = 0;
/* The CQ the program reaps the rest from (kernel/patches: an extra CQ
 * taking every other CQE): FUSE requests and the completions of Go's
 * SQEs. With one, the ring's CQ is Go's: the program hands completions
 * over by posting them there (bpf_io_uring_post_cqe) instead of through
 * the hand-off queue. 0: the program reaps the ring's CQ. */
const volatile __u32 in_cq_id = 0;
const volatile __u32 in_cq_entries = 0;
/* The kernel has bpf_io_uring_submit_sqes_flags (kernel/patches): backing
 * reads and writes that would go to io-wq (every buffered write to ext4)
 * block the loop instead, as the daemon's pread and pwrite block its queue
 * thread: the request completes while it is issued, without a worker's
 * wake-up and the task work that wakes the loop again. */
const volatile __u32 submit_block = 0;
/* Except a mirrored WRITE longer than this: through io-wq the replicas'
 * copies run in parallel, a worker each. Measured in the guest on ext4 with
 * two replicas (BENCHMARKS.md): 4 KiB writes 1.6x as fast blocking, 64 KiB
 * the same either way, 1 MiB 1.2x as fast through io-wq. */
#define BLOCK_MIRRORED_MAX (64 << 10)

#define LOOP_TAG (1ULL << 63) /* user_data of SQEs the program issues */
#define TAG_COPY_READ (LOOP_TAG | 1)
#define TAG_COPY_WRITE (LOOP_TAG | 2)
/* The backing requests of the FUSE request in entry k: user_data is the
 * tag | replica << 16 | k, replica indexing offload_file's fds. */
#define TAG_FUSE_READ (LOOP_TAG | (1ULL << 32))  /* its backing READ */
#define TAG_FUSE_WRITE (LOOP_TAG | (2ULL << 32)) /* one of its backing WRITEs */
#define TAG_FUSE_FSYNC (LOOP_TAG | (3ULL << 32)) /* one of its backing FSYNCs */
#define TAG_FUSE_STATX (LOOP_TAG | (4ULL << 32)) /* the first replica's times */
#define TAG_FUSE_TIMES (LOOP_TAG | (5ULL << 32)) /* one mirror's FUTIMENS */
#define TAG_FUSE_COPY (LOOP_TAG | (6ULL << 32))  /* one replica's COPY_FILE_RANGE */
#define MAX_REPLICAS 4

/* user_data of the daemon's FUSE queue (fs/fusering): the entry in the low
 * 32 bits, the kind above them. */
#define FUSE_TAG_MASK 0xffffffff00000000ULL
#define FUSE_TAG_ENTRY 0ULL	      /* the entry's REGISTER or COMMIT_AND_FETCH */
#define FUSE_TAG_COMMIT (5ULL << 32) /* hand-off only: commit the entry's reply */
#define FUSE_TAG_SYNCED (6ULL << 32) /* hand-off only: settle the entry's FSYNCs */

#define HANDOFF_ENTRIES 128 /* power of two */
/* CQEs reaped per step; the loop runs again for more. The verifier walks
 * every iteration, so this bounds the cost of loading the program too. */
#define MAX_REAP 32

enum copy_state {
	COPY_IDLE = 0,
	COPY_START = 1, /* set by Go after filling the job */
	COPY_READING = 2,
	COPY_WRITING = 3,
};

/*
 * The first bytes of the parameter region (IOU_REGION_MEM), shared with Go.
 * Go writes only while it is outside io_uring_enter and the program runs
 * only inside it, on the same task, so plain loads and stores suffice.
 */
struct loop_shared {
	__u32 sq_pending;   /* Go: SQEs queued at index 0.., for the next enter */
	__s32 sq_submitted; /* program: bpf_io_uring_submit_sqes result for them */
	__u32 want;	    /* Go: hand-off completions to wait for */
	__u32 handoff_head; /* Go consumes */
	__u32 handoff_tail; /* program produces */
	__u32 copy_state;   /* enum copy_state */
	__s32 copy_in_fd;
	__s32 copy_out_fd;
	__u64 copy_user_data; /* of the hand-off completion that ends the job */
	__u64 copy_buf;	      /* user address of the chunk buffer */
	__u32 copy_chunk;     /* bytes per READ */
	__u32 copy_write_len; /* bytes of the WRITE in flight */
	__u64 copy_len;	      /* bytes to copy */
	__u64 copy_done;      /* bytes copied so far */
	__u64 region_uaddr;   /* user address of the region, for payload SQEs */
	__s32 fuse_dev_fd;    /* the queue's /dev/fuse fd, for commits */
	__u32 fuse_qid;
	struct io_uring_cqe handoff[HANDOFF_ENTRIES];
};

struct loop_stats {
	__u64 steps;	    /* loop_step calls */
	__u64 go_sqes;	    /* SQEs of Go submitted */
	__u64 own_sqes;	    /* SQEs the program issued */
	__u64 own_cqes;	    /* CQEs the program consumed itself */
	__u64 handed_off;   /* CQEs moved to the hand-off queue */
	__u64 copy_bytes;   /* bytes the copy job wrote */
	__u64 submit_errors; /* bpf_io_uring_submit_sqes shortfalls */
	__u64 fuse_reads;	/* FUSE READs answered by the program */
	__u64 fuse_read_bytes;	/* bytes in those answers */
	__u64 fuse_fallbacks;	/* offloaded requests handed back to the daemon */
	__u64 fuse_writes;	/* FUSE WRITEs answered by the program */
	__u64 fuse_write_bytes; /* bytes they wrote (once, not per replica) */
	__u64 fuse_fsyncs;	/* FUSE FSYNCs answered by the program, mirrored or not */
	__u64 fuse_flushes;	/* FUSE FLUSHes answered by the program */
	__u64 own_cq_cqes;	/* own_cqes reaped from the program's own CQ */
	__u64 fuse_zero_copy;	/* fuse_reads and fuse_writes done on the caller's pages */
	__u64 fuse_copies;	/* FUSE COPY_FILE_RANGEs answered by the program */
	__u64 fuse_copy_bytes;	/* bytes they copied (once, not per replica) */
};

/* An open file whose I/O the program serves, filled by the daemon at OPEN
 * and removed at RELEASE, or when a replica degrades. Keyed by the FUSE
 * file handle. */
struct offload_file {
	__s32 read_fd;		     /* the replica READs go to */
	__u32 nwrite;		     /* replicas WRITEs go to; 0: the daemon's */
	__s32 write_fd[MAX_REPLICAS]; /* their fds */
	__u32 nsync;		     /* replicas FSYNCs go to; 0: the daemon's */
	__s32 sync_fd[MAX_REPLICAS]; /* their fds; the mirrors get sync_fd[0]'s times */
	__u32 ncopy;		     /* replicas; 0: COPY_FILE_RANGE is the daemon's */
	__s32 copy_fd[MAX_REPLICAS]; /* by replica: a copy goes from replica i to replica i */
	__u32 copy_any_caller;	     /* no set-ID bits or caps a copy into it must drop */
};

/* The backing requests of an entry's FUSE request in flight: its WRITEs or
 * COPY_FILE_RANGEs, or one step of its FSYNC. */
struct entry_state {
	__u32 pending; /* requests not completed */
	__s32 error;   /* the first failure (-errno, -EIO a short WRITE); 1: not all were issued */
	__s32 copied;  /* a COPY_FILE_RANGE's bytes, which every replica's must equal; -1: none yet */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4096); /* fusering's maxDepth */
	__type(key, __u32);
	__type(value, struct entry_state);
} entries SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct offload_file);
} offload_files SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_stats);
} stats SEC(".maps");

/* Queue one CQE for Go: on the ring's CQ when the program reaps its input
 * from an extra CQ, else in the hand-off queue; false when there is no
 * room. */
static int hand_off(struct iou_ctx *ctx, struct loop_shared *sh, __u64 user_data, __s32 res,
		    __u32 flags)
{
	__u32 tail = sh->handoff_tail;
	struct io_uring_cqe *dst;

	if (in_cq_entries)
		return !bpf_io_uring_post_cqe(ctx, 0, user_data, res, flags);
	if (tail - sh->handoff_head >= HANDOFF_ENTRIES)
		return 0;
	dst = &sh->handoff[tail & (HANDOFF_ENTRIES - 1)];
	dst->user_data = user_data;
	dst->res = res;
	dst->flags = flags;
	sh->handoff_tail = tail + 1;
	return 1;
}

/* Fill the SQE at SQ index 0 (SQ_REWIND): op_flags are the opcode's flags
 * (rw_flags, fsync_flags...), buf_index the fixed buffer of READ_FIXED and
 * WRITE_FIXED. */
static __always_inline void prep(struct io_uring_sqe *sqe, __u8 opcode, __s32 fd, __u64 addr,
				 __u32 len, __u64 off, __u32 op_flags, __u16 buf_index,
				 __u64 user_data)
{
	*sqe = (struct io_uring_sqe){};
	sqe->opcode = opcode;
	sqe->fd = fd;
	sqe->addr = addr;
	sqe->len = len;
	sqe->off = off;
	sqe->rw_flags = op_flags;
	sqe->buf_index = buf_index;
	sqe->user_data = user_data;
}

/* Submit the SQE at index 0 now; block: it may block the loop rather than
 * go to io-wq (submit_block). */
static __always_inline int submit_one(struct iou_ctx *ctx, struct loop_stats *st, int block)
{
	int ret;

	if (submit_block && block)
		ret = bpf_io_uring_submit_sqes_flags(ctx, 1, IOU_SUBMIT_BLOCK);
	else
		ret = bpf_io_uring_submit_sqes(ctx, 1);
	if (ret != 1) {
		__sync_fetch_and_add(&st->submit_errors, 1);
		return ret < 0 ? ret : -11; /* EAGAIN: the kernel took nothing */
	}
	__sync_fetch_and_add(&st->own_sqes, 1);
	return 0;
}

/* Issue one request (see prep) and submit it now. */
static __always_inline int issue_fixed(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				       struct loop_stats *st, __u8 opcode, __s32 fd, __u64 addr,
				       __u32 len, __u64 off, __u32 op_flags, __u16 buf_index,
				       __u64 user_data, int block)
{
	prep(sqe, opcode, fd, addr, len, off, op_flags, buf_index, user_data);
	return submit_one(ctx, st, block);
}

static __always_inline int issue(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				 struct loop_stats *st, __u8 opcode, __s32 fd, __u64 addr,
				 __u32 len, __u64 off, __u32 op_flags, __u64 user_data)
{
	return issue_fixed(ctx, sqe, st, opcode, fd, addr, len, off, op_flags, 0, user_data, 1);
}

static void copy_finish(struct iou_ctx *ctx, struct loop_shared *sh, __s32 res)
{
	sh->copy_state = COPY_IDLE;
	/* The hand-off queue always has room for the job's end: Go does not
	 * start a job while completions are unread (see Loop.Copy). */
	hand_off(ctx, sh, sh->copy_user_data, res, 0);
}

static void copy_read_next(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
			   struct loop_shared *sh, struct loop_stats *st)
{
	__u64 left = sh->copy_len - sh->copy_done;
	__u32 len = sh->copy_chunk;
	int ret;

	if (left == 0) {
		copy_finish(ctx, sh, 0);
		return;
	}
	if (left < len)
		len = left;
	ret = issue(ctx, sqe, st, IORING_OP_READ, sh->copy_in_fd, sh->copy_buf, len,
		    sh->copy_done, 0, TAG_COPY_READ);
	if (ret) {
		copy_finish(ctx, sh, ret);
		return;
	}
	sh->copy_state = COPY_READING;
}

/* One of the copy job's own completions. */
static __always_inline void copy_step(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				      struct loop_shared *sh, struct loop_stats *st,
				      __u64 user_data, __s32 res)
{
	int ret;

	if (res < 0) {
		copy_finish(ctx, sh, res);
		return;
	}
	if (user_data == TAG_COPY_READ) {
		if (res == 0) { /* the source ended early: report what was copied */
			copy_finish(ctx, sh, 0);
			return;
		}
		ret = issue(ctx, sqe, st, IORING_OP_WRITE, sh->copy_out_fd, sh->copy_buf, res,
			    sh->copy_done, 0, TAG_COPY_WRITE);
		if (ret) {
			copy_finish(ctx, sh, ret);
			return;
		}
		sh->copy_write_len = res;
		sh->copy_state = COPY_WRITING;
		return;
	}
	/* A short write resumes from where it stopped: the next READ starts
	 * at copy_done, so no byte is skipped or duplicated. */
	sh->copy_done += res;
	__sync_fetch_and_add(&st->copy_bytes, res);
	copy_read_next(ctx, sqe, sh, st);
}

/* The parts of struct fuse_uring_req_header (include/uapi/linux/fuse.h)
 * the program reads and writes. */
#define FUSE_HDR_SIZE 288 /* in_out[128], op_in[128], ring_ent_in_out[32] */
#define FUSE_OP_IN 128
#define FUSE_ENT 256

struct fuse_in_header {
	__u32 len;
	__u32 opcode;
	__u64 unique;
	__u64 nodeid;
	__u32 uid, gid, pid;
	__u16 total_extlen;
	__u16 padding;
};

struct fuse_out_header {
	__u32 len;
	__s32 error;
	__u64 unique;
};

struct fuse_read_in {
	__u64 fh;
	__u64 offset;
	__u32 size;
	__u32 read_flags;
	__u64 lock_owner;
	__u32 flags;
	__u32 padding;
};

struct fuse_write_in {
	__u64 fh;
	__u64 offset;
	__u32 size;
	__u32 write_flags;
	__u64 lock_owner;
	__u32 flags;
	__u32 padding;
};

struct fuse_write_out {
	__u32 size;
	__u32 padding;
};

struct fuse_fsync_in {
	__u64 fh;
	__u32 fsync_flags;
	__u32 padding;
};

struct fuse_copy_file_range_in {
	__u64 fh_in;
	__u64 off_in;
	__u64 nodeid_out;
	__u64 fh_out;
	__u64 off_out;
	__u64 len;
	__u64 flags;
};

/* The most one COPY_FILE_RANGE reply says was copied (its size field is 32
 * bits); the caller's copy_file_range(2) asks again for the rest. As the
 * daemon's maxCopyChunk. */
#define MAX_COPY_CHUNK (1U << 30)

struct fuse_uring_ent_in_out {
	__u64 flags;
	__u64 commit_id;
	__u32 payload_sz;
	__u32 offset;
	__u64 reserved;
};

/* The parts of struct statx (include/uapi/linux/stat.h) the program reads. */
struct statx_timestamp {
	__s64 tv_sec;
	__u32 tv_nsec;
	__s32 reserved;
};

#define STATX_SIZE 256
#define STATX_ATIME_AT 64  /* stx_atime */
#define STATX_MTIME_AT 112 /* stx_mtime */

struct kernel_timespec {
	__s64 tv_sec;
	__s64 tv_nsec;
};

enum {
	STATX_ATIME = 0x20,
	STATX_MTIME = 0x40,
	AT_EMPTY_PATH = 0x1000,
};

/* An FSYNC's use of its entry's scratch, shared with Go (bpf.Loop.SyncOutcome). */
struct fsync_scratch {
	__u8 statx[STATX_SIZE];		  /* the first replica's struct statx */
	struct kernel_timespec times[2];  /* its times, for the mirrors' FUTIMENS */
	char path[8];			  /* "": STATX of the file itself */
	__s32 fd[MAX_REPLICAS];		  /* the FSYNCs' files (offload_file.sync_fd) */
	__s32 res[MAX_REPLICAS];	  /* their results; NOT_SYNCED: not issued */
};
_Static_assert(sizeof(struct fsync_scratch) <= SCRATCH_SIZE, "struct fsync_scratch exceeds SCRATCH_SIZE");

#define NOT_SYNCED 1

enum {
	FUSE_READ = 15,
	FUSE_WRITE = 16,
	FUSE_FSYNC = 20,
	FUSE_FLUSH = 25,
	FUSE_COPY_FILE_RANGE = 47,
	FUSE_WRITE_KILL_SUIDGID = 1 << 2, /* the daemon drops set-ID bits and caps */
	FUSE_FSYNC_FDATASYNC = 1 << 0,
	FUSE_IO_URING_CMD_COMMIT_AND_FETCH = 2,
	FUSE_URING_ENT_ZERO_COPY = 1 << 0, /* fuse_uring_ent_in_out.flags */
	IORING_OP_URING_CMD = 46,
};

/* Entry k's header, or NULL when k is not an entry of this queue. */
static __u8 *fuse_header(__u8 *region, __u32 k)
{
	__u64 off;

	if (k >= fuse_depth)
		return 0;
	off = fuse_hdr_off + (__u64)k * FUSE_HDR_SIZE;
	if (off + FUSE_HDR_SIZE > region_size)
		return 0;
	return region + off;
}

/* Whether the data of the request in entry k (header hdr) is in the
 * caller's pages, registered as fixed buffer k. */
static __always_inline int fuse_on_pages(__u8 *hdr)
{
	return fuse_zero_copy &&
	       ((struct fuse_uring_ent_in_out *)(hdr + FUSE_ENT))->flags & FUSE_URING_ENT_ZERO_COPY;
}

/* The region offset of the payload buffer of the request in entry k
 * (header hdr), or 0 when the kernel named none inside the payload area. */
static __always_inline __u64 fuse_payload_at(__u8 *hdr, __u32 k)
{
	__u64 off = (__u64)k * fuse_payload_stride;

	if (fuse_zero_copy)
		off = ((struct fuse_uring_ent_in_out *)(hdr + FUSE_ENT))->offset;
	if (k >= fuse_depth || off + fuse_payload_stride > (__u64)fuse_depth * fuse_payload_stride)
		return 0;
	return fuse_payload_off + off;
}

/* Entry k's scratch as the program sees it, or NULL when k is not an entry
 * of this queue; scratch_uaddr is its user address. Not inlined, which
 * also puts struct fsync_scratch in the object's BTF for Go. */
static __noinline struct fsync_scratch *fuse_scratch(__u8 *region, __u32 k)
{
	__u64 off;

	if (k >= fuse_depth || !fuse_scratch_off)
		return 0;
	off = fuse_scratch_off + (__u64)k * SCRATCH_SIZE;
	if (off + SCRATCH_SIZE > region_size)
		return 0;
	return (struct fsync_scratch *)(region + off);
}

static __always_inline __u64 scratch_uaddr(struct loop_shared *sh, __u32 k)
{
	return sh->region_uaddr + fuse_scratch_off + (__u64)k * SCRATCH_SIZE;
}

/* The offload_files entry of the request in entry k (header hdr), or NULL
 * once the file is the daemon's. */
static __always_inline struct offload_file *fuse_file(__u8 *hdr)
{
	/* fh leads the arguments of every opcode the program serves. */
	__u64 fh = *(__u64 *)(hdr + FUSE_OP_IN);

	return bpf_map_lookup_elem(&offload_files, &fh);
}

/* The payload buffer of the request in entry k as the program sees it, or
 * NULL. */
static __u8 *fuse_payload(__u8 *region, __u8 *hdr, __u32 k)
{
	__u64 off = fuse_payload_at(hdr, k);

	if (!off || off + sizeof(struct fuse_write_out) > region_size)
		return 0;
	return region + off;
}

/* Issue a backing READ or WRITE (opcode) for the request in entry k: on the
 * caller's pages (its _FIXED form on buffer k, which starts at address 0)
 * where the kernel registered them, else on the payload buffer. */
static __always_inline int fuse_issue_rw(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					 struct loop_shared *sh, struct loop_stats *st, __u8 *hdr,
					 __u32 k, __u8 opcode, __s32 fd, __u32 len, __u64 off,
					 __u64 user_data, int block)
{
	__u64 at;

	if (fuse_on_pages(hdr))
		return issue_fixed(ctx, sqe, st,
				   opcode == IORING_OP_READ ? IORING_OP_READ_FIXED :
							      IORING_OP_WRITE_FIXED,
				   fd, 0, len, off, 0, k, user_data, block);
	at = fuse_payload_at(hdr, k);
	if (!at)
		return -22; /* EINVAL */
	return issue_fixed(ctx, sqe, st, opcode, fd, sh->region_uaddr + at, len, off, 0, 0,
			   user_data, block);
}

/* Issue opcode for entry k on each of fds[first..n) (user_data tag | i << 16 | k),
 * and count them in the entry's state: a WRITE of the request's data; a
 * COPY_FILE_RANGE to each from the same replica's src_fds[i], keeping
 * holes; or an FSYNC or FUTIMENS with op_flags and addr. Returns whether
 * any was issued; if not all were, the last completion finds error 1. */
static __always_inline int fan_out(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				   struct loop_shared *sh, struct loop_stats *st, __u8 *hdr,
				   __u32 k, __u8 opcode, __s32 *fds, __s32 *src_fds, __u32 first,
				   __u32 n, __u64 addr, __u32 op_flags, __u64 tag, int block)
{
	struct fuse_copy_file_range_in *cp = (struct fuse_copy_file_range_in *)(hdr + FUSE_OP_IN);
	struct fuse_write_in *wr = (struct fuse_write_in *)(hdr + FUSE_OP_IN);
	struct entry_state *es = bpf_map_lookup_elem(&entries, &k);
	__u32 i;
	int ret;

	if (!es || first >= n || n > MAX_REPLICAS)
		return 0;
	/* Set before issuing: a request may complete inline, though its CQE
	 * is reaped only after this returns. */
	es->pending = n - first;
	es->error = 0;
	es->copied = -1;
	for (i = 0; i < MAX_REPLICAS; i++) {
		if (i < first)
			continue;
		if (i >= n)
			break;
		if (opcode == IORING_OP_WRITE) {
			ret = fuse_issue_rw(ctx, sqe, sh, st, hdr, k, opcode, fds[i], wr->size,
					    wr->offset, tag | i << 16 | k, block);
		} else if (opcode == IORING_OP_COPY_FILE_RANGE) {
			/* splice's layout: addr is the source's offset */
			prep(sqe, opcode, fds[i], cp->off_in, addr, cp->off_out,
			     IORING_COPY_KEEP_HOLES, 0, tag | i << 16 | k);
			sqe->splice_fd_in = src_fds[i];
			ret = submit_one(ctx, st, block);
		} else {
			ret = issue(ctx, sqe, st, opcode, fds[i], addr, 0, 0, op_flags,
				    tag | i << 16 | k);
		}
		if (ret) {
			es->pending = i - first;
			es->error = 1;
			return i > first;
		}
	}
	return 1;
}

/* One of entry k's backing requests completed, with error 0 or -errno: its
 * state once all have, else NULL. */
static __always_inline struct entry_state *entry_done(__u32 k, __s32 error)
{
	struct entry_state *es = bpf_map_lookup_elem(&entries, &k);

	if (!es || es->pending == 0)
		return 0;
	if (error < 0 && es->error >= 0)
		es->error = error;
	if (--es->pending)
		return 0;
	return es;
}

/* Entry k's WRITE: one WRITE of the payload per replica. */
static __always_inline int fuse_start_write(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    struct loop_shared *sh, struct loop_stats *st,
					    struct offload_file *f, __u8 *hdr, __u32 k)
{
	struct fuse_write_in *wr = (struct fuse_write_in *)(hdr + FUSE_OP_IN);
	__u32 n = f->nwrite;

	if (wr->write_flags & FUSE_WRITE_KILL_SUIDGID)
		return 0;
	return fan_out(ctx, sqe, sh, st, hdr, k, IORING_OP_WRITE, f->write_fd, 0, 0, n, 0, 0,
		       TAG_FUSE_WRITE, n == 1 || wr->size <= BLOCK_MIRRORED_MAX);
}

/* Entry k's COPY_FILE_RANGE from file src: one copy per replica, from the
 * source's to the destination's, keeping holes as the daemon's copy does
 * (IORING_COPY_KEEP_HOLES, kernel/patches). For callers other than root
 * the daemon first drops the destination's set-ID bits and capabilities,
 * which a copy, unlike a WRITE, gives no flag for: theirs are the
 * program's only into a file that has none (copy_any_caller, which the
 * daemon clears for every file once any gains some). */
static __always_inline int fuse_start_copy(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					   struct loop_shared *sh, struct loop_stats *st,
					   struct offload_file *src, __u8 *hdr, __u32 k)
{
	struct fuse_copy_file_range_in *in = (struct fuse_copy_file_range_in *)(hdr + FUSE_OP_IN);
	__u32 len = in->len < MAX_COPY_CHUNK ? in->len : MAX_COPY_CHUNK;
	struct offload_file *dst;
	__u64 fh_out = in->fh_out;

	if (in->flags || !src->ncopy)
		return 0;
	dst = bpf_map_lookup_elem(&offload_files, &fh_out);
	if (!dst || dst->ncopy != src->ncopy ||
	    (((struct fuse_in_header *)hdr)->uid != 0 && !dst->copy_any_caller))
		return 0;
	/* A copy always runs in io-wq: it may block in any of its methods. */
	return fan_out(ctx, sqe, sh, st, hdr, k, IORING_OP_COPY_FILE_RANGE, dst->copy_fd,
		       src->copy_fd, 0, dst->ncopy, len, 0, TAG_FUSE_COPY, 0);
}

/* Entry k's FSYNCs, one per replica (fdatasync's where FUSE asks for it),
 * noted in its scratch for Go. */
static __always_inline int fuse_sync_all(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					 __u8 *region, struct loop_shared *sh,
					 struct loop_stats *st, struct offload_file *f, __u8 *hdr,
					 __u32 k)
{
	struct fuse_fsync_in *in = (struct fuse_fsync_in *)(hdr + FUSE_OP_IN);
	struct fsync_scratch *sc = fuse_scratch(region, k);
	__u32 i;

	if (!sc)
		return 0;
	for (i = 0; i < MAX_REPLICAS; i++) {
		sc->fd[i] = i < f->nsync ? f->sync_fd[i] : -1;
		sc->res[i] = NOT_SYNCED;
	}
	return fan_out(ctx, sqe, sh, st, hdr, k, IORING_OP_FSYNC, f->sync_fd, 0, 0, f->nsync, 0,
		       in->fsync_flags & FUSE_FSYNC_FDATASYNC ? IORING_FSYNC_DATASYNC : 0,
		       TAG_FUSE_FSYNC, 1);
}

/* Entry k's FSYNC: of a mirrored file, first a STATX of the first replica
 * for the times its mirrors get; then the FSYNCs. */
static __always_inline int fuse_start_fsync(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    __u8 *region, struct loop_shared *sh,
					    struct loop_stats *st, struct offload_file *f,
					    __u8 *hdr, __u32 k)
{
	struct fsync_scratch *sc = fuse_scratch(region, k);
	__u64 at = scratch_uaddr(sh, k);

	if (f->nsync == 1)
		return fuse_sync_all(ctx, sqe, region, sh, st, f, hdr, k);
	if (f->nsync == 0 || f->nsync > MAX_REPLICAS || !sc)
		return 0;
	sc->path[0] = 0;
	return !issue(ctx, sqe, st, IORING_OP_STATX, f->sync_fd[0],
		      at + __builtin_offsetof(struct fsync_scratch, path), STATX_ATIME | STATX_MTIME,
		      at + __builtin_offsetof(struct fsync_scratch, statx), AT_EMPTY_PATH,
		      TAG_FUSE_STATX | k);
}

/* Queue entry k's COMMIT_AND_FETCH: the reply in its header goes to the
 * kernel, and the entry's next request comes back as its completion. */
static __always_inline int fuse_commit(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				       struct loop_shared *sh, struct loop_stats *st, __u8 *hdr,
				       __u32 k)
{
	struct fuse_uring_ent_in_out *ent = (struct fuse_uring_ent_in_out *)(hdr + FUSE_ENT);
	__u64 *cmd = (__u64 *)&sqe->addr3; /* struct fuse_uring_cmd_req */
	int ret;

	if (sqe_size < 128)
		return -22; /* EINVAL: uring_cmd needs SQE128 */
	*(struct io_uring_sqe128 *)sqe = (struct io_uring_sqe128){};
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = sh->fuse_dev_fd;
	sqe->off = FUSE_IO_URING_CMD_COMMIT_AND_FETCH; /* cmd_op */
	sqe->user_data = FUSE_TAG_ENTRY | k;
	cmd[1] = ent->commit_id;
	cmd[2] = sh->fuse_qid;
	ret = bpf_io_uring_submit_sqes(ctx, 1);
	if (ret != 1) {
		__sync_fetch_and_add(&st->submit_errors, 1);
		return ret < 0 ? ret : -11;
	}
	__sync_fetch_and_add(&st->own_sqes, 1);
	return 0;
}

/* Hand the request in entry k back to the daemon as it arrived, and leave
 * its file to the daemon from now on: it fails over between replicas and
 * degrades them by its rules. */
static void fuse_fall_back(struct iou_ctx *ctx, struct loop_shared *sh, struct loop_stats *st,
			   __u8 *hdr, __u32 k)
{
	struct fuse_copy_file_range_in *cp = (struct fuse_copy_file_range_in *)(hdr + FUSE_OP_IN);
	__u64 fh = cp->fh_in, fh_out = cp->fh_out;

	bpf_map_delete_elem(&offload_files, &fh);
	if (((struct fuse_in_header *)hdr)->opcode == FUSE_COPY_FILE_RANGE)
		bpf_map_delete_elem(&offload_files, &fh_out);
	__sync_fetch_and_add(&st->fuse_fallbacks, 1);
	hand_off(ctx, sh, FUSE_TAG_ENTRY | k, 0, 0);
}

/* Reply to the request in entry k with error (0 or -errno) and the
 * payload_sz bytes of arguments in its payload buffer, and commit it. */
static __always_inline void fuse_reply(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
				       struct loop_shared *sh, struct loop_stats *st, __u8 *hdr,
				       __u32 k, __s32 error, __u32 payload_sz)
{
	struct fuse_out_header *out = (struct fuse_out_header *)hdr;

	out->unique = ((struct fuse_in_header *)hdr)->unique;
	out->len = sizeof(*out) + payload_sz;
	out->error = error;
	((struct fuse_uring_ent_in_out *)(hdr + FUSE_ENT))->payload_sz = payload_sz;
	if (fuse_commit(ctx, sqe, sh, st, hdr, k))
		hand_off(ctx, sh, FUSE_TAG_COMMIT | k, 0, 0); /* the reply is ready: Go commits it */
}

/* The backing READ of entry k completed with res. */
static __always_inline void fuse_read_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					   __u8 *region, struct loop_shared *sh,
					   struct loop_stats *st, __u32 k, __s32 res)
{
	__u8 *hdr = fuse_header(region, k);

	if (!hdr)
		return;
	if (res < 0) {
		fuse_fall_back(ctx, sh, st, hdr, k);
		return;
	}
	__sync_fetch_and_add(&st->fuse_reads, 1);
	__sync_fetch_and_add(&st->fuse_read_bytes, res);
	if (fuse_on_pages(hdr))
		__sync_fetch_and_add(&st->fuse_zero_copy, 1);
	fuse_reply(ctx, sqe, sh, st, hdr, k, 0, res);
}

/* One backing WRITE of entry k completed with res; the last one replies. */
static __always_inline void fuse_write_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    __u8 *region, struct loop_shared *sh,
					    struct loop_stats *st, __u32 k, __s32 res)
{
	__u8 *hdr = fuse_header(region, k);
	struct entry_state *es;
	__u8 *payload;
	__u32 size;

	if (!hdr)
		return;
	size = ((struct fuse_write_in *)(hdr + FUSE_OP_IN))->size;
	es = entry_done(k, res < 0 ? res : (__u32)res != size ? -5 /* EIO */ : 0);
	if (!es)
		return;
	/* The reply's fuse_write_out goes in the payload buffer, also on a
	 * zero-copy queue, where the kernel lends one for it. */
	payload = fuse_payload(region, hdr, k);
	if (es->error || !payload) {
		fuse_fall_back(ctx, sh, st, hdr, k);
		return;
	}
	__sync_fetch_and_add(&st->fuse_writes, 1);
	__sync_fetch_and_add(&st->fuse_write_bytes, size);
	if (fuse_on_pages(hdr))
		__sync_fetch_and_add(&st->fuse_zero_copy, 1);
	*(struct fuse_write_out *)payload = (struct fuse_write_out){ .size = size };
	fuse_reply(ctx, sqe, sh, st, hdr, k, 0, sizeof(struct fuse_write_out));
}

/* One replica's COPY_FILE_RANGE for entry k completed with res; the last
 * replies with the bytes copied, which every replica's count must equal
 * (they copy the same source); otherwise the daemon serves it again. */
static __always_inline void fuse_copy_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					   __u8 *region, struct loop_shared *sh,
					   struct loop_stats *st, __u32 k, __s32 res)
{
	struct entry_state *es = bpf_map_lookup_elem(&entries, &k);
	__u8 *hdr = fuse_header(region, k);
	__u8 *payload;

	if (!es || !hdr)
		return;
	if (res >= 0 && es->copied >= 0 && res != es->copied)
		res = -5; /* EIO: the replicas' sources differ */
	if (res >= 0)
		es->copied = res;
	es = entry_done(k, res < 0 ? res : 0);
	if (!es)
		return;
	payload = fuse_payload(region, hdr, k);
	if (es->error || es->copied < 0 || !payload) {
		fuse_fall_back(ctx, sh, st, hdr, k);
		return;
	}
	__sync_fetch_and_add(&st->fuse_copies, 1);
	__sync_fetch_and_add(&st->fuse_copy_bytes, es->copied);
	*(struct fuse_write_out *)payload = (struct fuse_write_out){ .size = es->copied };
	fuse_reply(ctx, sqe, sh, st, hdr, k, 0, sizeof(struct fuse_write_out));
}

/* The STATX of a mirrored file's first replica for entry k's FSYNC
 * completed with res: its mirrors get the times it read. */
static __always_inline void fuse_statx_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    __u8 *region, struct loop_shared *sh,
					    struct loop_stats *st, __u32 k, __s32 res)
{
	struct fsync_scratch *sc = fuse_scratch(region, k);
	__u8 *hdr = fuse_header(region, k);
	struct statx_timestamp *at, *mt;
	struct offload_file *f;

	if (!hdr)
		return;
	f = fuse_file(hdr);
	if (!f || !sc || res < 0 ||
	    (*(__u32 *)sc->statx & (STATX_ATIME | STATX_MTIME)) != (STATX_ATIME | STATX_MTIME))
		goto fall_back;
	at = (struct statx_timestamp *)(sc->statx + STATX_ATIME_AT);
	mt = (struct statx_timestamp *)(sc->statx + STATX_MTIME_AT);
	sc->times[0] = (struct kernel_timespec){ .tv_sec = at->tv_sec, .tv_nsec = at->tv_nsec };
	sc->times[1] = (struct kernel_timespec){ .tv_sec = mt->tv_sec, .tv_nsec = mt->tv_nsec };
	if (fan_out(ctx, sqe, sh, st, hdr, k, IORING_OP_FUTIMENS, f->sync_fd, 0, 1, f->nsync,
		    scratch_uaddr(sh, k) + __builtin_offsetof(struct fsync_scratch, times), 0,
		    TAG_FUSE_TIMES, 1))
		return;
fall_back:
	fuse_fall_back(ctx, sh, st, hdr, k);
}

/* One mirror's FUTIMENS for entry k's FSYNC completed with res; after the
 * last, every replica is synced. Nothing is synced yet: on a failure, the
 * daemon does it all again, by its rules for replicas. */
static __always_inline void fuse_times_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    __u8 *region, struct loop_shared *sh,
					    struct loop_stats *st, __u32 k, __s32 res)
{
	struct entry_state *es = entry_done(k, res < 0 ? res : 0);
	__u8 *hdr = fuse_header(region, k);
	struct offload_file *f;

	if (!es || !hdr)
		return;
	f = fuse_file(hdr);
	if (es->error || !f || !fuse_sync_all(ctx, sqe, region, sh, st, f, hdr, k))
		fuse_fall_back(ctx, sh, st, hdr, k);
}

/* The backing FSYNC of replica i of entry k completed with res; the last
 * one replies, when all succeeded or the file has one replica. The request
 * is never served again: the kernel reports a writeback error to one fsync
 * of the descriptor only, so the daemon's would find none. Instead, when a
 * mirrored file's replica failed, or not every FSYNC could be issued, Go
 * gets the outcomes (FUSE_TAG_SYNCED) and settles them by the daemon's
 * rules for replicas: the failed one degrades, the missing ones it syncs
 * itself. */
static __always_inline void fuse_fsync_done(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
					    __u8 *region, struct loop_shared *sh,
					    struct loop_stats *st, __u32 k, __u32 i, __s32 res)
{
	struct fsync_scratch *sc = fuse_scratch(region, k);
	__u8 *hdr = fuse_header(region, k);
	struct entry_state *es;

	if (!sc || !hdr || i >= MAX_REPLICAS)
		return;
	sc->res[i] = res < 0 ? res : 0;
	es = entry_done(k, res < 0 ? res : 0);
	if (!es)
		return;
	if (es->error == 0 || (es->error < 0 && sc->fd[1] < 0)) {
		__sync_fetch_and_add(&st->fuse_fsyncs, 1);
		fuse_reply(ctx, sqe, sh, st, hdr, k, es->error, 0);
		return;
	}
	__sync_fetch_and_add(&st->fuse_fallbacks, 1);
	hand_off(ctx, sh, FUSE_TAG_SYNCED | k, 0, 0);
}

/*
 * A FUSE request arrived in entry k: start serving it if the program can,
 * and report whether it did. The caller has freed the CQE's slot and made
 * sure the hand-off queue has room for one completion.
 */
static __always_inline int fuse_start(struct iou_ctx *ctx, struct io_uring_sqe *sqe, __u8 *region,
				      struct loop_shared *sh, struct loop_stats *st, __u32 k)
{
	struct fuse_uring_ent_in_out *ent;
	struct fuse_in_header *in;
	struct fuse_read_in *rd;
	struct offload_file *f;
	__u8 *hdr = fuse_header(region, k);

	if (!hdr)
		return 0;
	in = (struct fuse_in_header *)hdr;
	if (in->opcode != FUSE_READ && in->opcode != FUSE_WRITE && in->opcode != FUSE_FSYNC &&
	    in->opcode != FUSE_FLUSH && in->opcode != FUSE_COPY_FILE_RANGE)
		return 0;
	f = fuse_file(hdr);
	if (!f)
		return 0;
	switch (in->opcode) {
	case FUSE_FLUSH:
		__sync_fetch_and_add(&st->fuse_flushes, 1);
		fuse_reply(ctx, sqe, sh, st, hdr, k, 0, 0);
		return 1;
	case FUSE_FSYNC:
		return fuse_start_fsync(ctx, sqe, region, sh, st, f, hdr, k);
	case FUSE_COPY_FILE_RANGE:
		return fuse_start_copy(ctx, sqe, sh, st, f, hdr, k);
	case FUSE_WRITE:
		rd = (struct fuse_read_in *)(hdr + FUSE_OP_IN);
		ent = (struct fuse_uring_ent_in_out *)(hdr + FUSE_ENT);
		/* Data in the payload buffer must all be there. */
		if (rd->size > fuse_payload_stride ||
		    (!fuse_on_pages(hdr) && ent->payload_sz != rd->size))
			return 0;
		return fuse_start_write(ctx, sqe, sh, st, f, hdr, k);
	}
	rd = (struct fuse_read_in *)(hdr + FUSE_OP_IN);
	if (rd->size > fuse_payload_stride)
		return 0;
	/* On failure the daemon serves it instead. */
	return !fuse_issue_rw(ctx, sqe, sh, st, hdr, k, IORING_OP_READ, f->read_fd, rd->size,
			      rd->offset, TAG_FUSE_READ | k, 1);
}

/* A completion of a request the program issued (LOOP_TAG). */
static __always_inline void own_cqe(struct iou_ctx *ctx, struct io_uring_sqe *sqe, __u8 *region,
				    struct loop_shared *sh, struct loop_stats *st, __u64 user_data,
				    __s32 res)
{
	__u64 tag = user_data & ~0xffffffffULL;
	__u32 k = (__u16)user_data, i = (__u8)(user_data >> 16);

	__sync_fetch_and_add(&st->own_cqes, 1);
	if (tag == TAG_FUSE_READ)
		fuse_read_done(ctx, sqe, region, sh, st, k, res);
	else if (tag == TAG_FUSE_WRITE)
		fuse_write_done(ctx, sqe, region, sh, st, k, res);
	else if (tag == TAG_FUSE_FSYNC)
		fuse_fsync_done(ctx, sqe, region, sh, st, k, i, res);
	else if (tag == TAG_FUSE_STATX)
		fuse_statx_done(ctx, sqe, region, sh, st, k, res);
	else if (tag == TAG_FUSE_TIMES)
		fuse_times_done(ctx, sqe, region, sh, st, k, res);
	else if (tag == TAG_FUSE_COPY)
		fuse_copy_done(ctx, sqe, region, sh, st, k, res);
	else
		copy_step(ctx, sqe, sh, st, user_data, res);
}

/* Reap the program's own CQ, if the ring has one, and return how many CQEs
 * it held. The kfunc frees each slot before the CQE is handled, which may
 * issue more requests (see the ring's CQ below). Not inlined: loop_step
 * calls it twice. */
static __noinline __u32 reap_own_cq(struct iou_ctx *ctx, struct io_uring_sqe *sqe, __u8 *region,
				    struct loop_shared *sh, struct loop_stats *st)
{
	struct io_uring_cqe cqe = {};
	__u32 i;

	if (!own_cq_id)
		return 0;
	for (i = 0; i < MAX_REAP; i++) {
		if (bpf_io_uring_reap_cqe(ctx, own_cq_id, &cqe, sizeof(cqe)) != 1)
			break;
		__sync_fetch_and_add(&st->own_cq_cqes, 1);
		own_cqe(ctx, sqe, region, sh, st, cqe.user_data, cqe.res);
	}
	return i;
}

/* Completions handed to Go and not yet consumed, and how many fit. */
static __always_inline __u32 handoff_ready(struct loop_shared *sh, struct io_rings *rings)
{
	if (in_cq_entries)
		return READ_ONCE(rings->cq.tail) - READ_ONCE(rings->cq.head);
	return sh->handoff_tail - sh->handoff_head;
}

static __always_inline __u32 handoff_room(void)
{
	return in_cq_entries ? cq_entries : HANDOFF_ENTRIES;
}

SEC("struct_ops.s/loop_step")
int loop_step(unsigned long long *args)
{
	struct iou_ctx *ctx = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];
	__u32 cqes_off = __builtin_preserve_field_info(((struct io_rings *)0)->cqes, 0);
	struct loop_shared *sh;
	struct io_uring_sqe *sqes;
	__u8 *region;
	struct io_rings *rings;
	struct loop_stats *st;
	struct io_uring_cq_ring *in_cq = 0;
	struct io_uring_cqe *in_cqes;
	__u32 *in_head, *in_tail, in_mask;
	__u32 head, tail, key = 0, n, i, flags, own;
	__u64 user_data;
	int ret, res, left;

	st = bpf_map_lookup_elem(&stats, &key);
	sqes = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_SQ, sq_entries * sqe_size);
	rings = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_CQ,
						cqes_off + cq_entries * sizeof(struct io_uring_cqe));
	region = bpf_io_uring_get_region(ctx, IOU_REGION_MEM, region_size);
	sh = (struct loop_shared *)region;
	if (in_cq_entries)
		in_cq = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_EXTRA_CQ | in_cq_id,
							sizeof(*in_cq) +
								in_cq_entries * sizeof(struct io_uring_cqe));
	if (!st || !sqes || !rings || !sh || (in_cq_entries && !in_cq))
		return IOU_LOOP_STOP; /* enter returns; Loop.Enter reports the missing region */
	/* The CQ to reap FUSE requests and Go's completions from. */
	if (in_cq) {
		in_head = &in_cq->head;
		in_tail = &in_cq->tail;
		in_cqes = in_cq->cqes;
		in_mask = in_cq_entries - 1;
	} else {
		in_head = &rings->cq.head;
		in_tail = &rings->cq.tail;
		in_cqes = rings->cqes;
		in_mask = cq_entries - 1;
	}
	__sync_fetch_and_add(&st->steps, 1);

	n = sh->sq_pending;
	if (n) {
		sh->sq_pending = 0;
		if (n > sq_entries)
			n = sq_entries;
		ret = bpf_io_uring_submit_sqes(ctx, n);
		sh->sq_submitted = ret;
		if (ret > 0)
			__sync_fetch_and_add(&st->go_sqes, ret);
		if (ret != n) {
			/* With SQ_REWIND the rest is gone: let Go see it now. */
			__sync_fetch_and_add(&st->submit_errors, 1);
			return IOU_LOOP_STOP;
		}
	}
	if (sh->copy_state == COPY_START)
		copy_read_next(ctx, &sqes[0], sh, st);
	reap_own_cq(ctx, &sqes[0], region, sh, st);

	head = *in_head;
	for (i = 0; i < MAX_REAP; i++) {
		struct io_uring_cqe *cqe;

		tail = READ_ONCE(*in_tail);
		if (head == tail)
			break;
		/* Every CQE hands off at most one completion: with no room,
		 * leave the CQ alone until Go has drained the queue. */
		if (handoff_ready(sh, rings) >= handoff_room())
			break;
		cqe = &in_cqes[head & in_mask];
		user_data = cqe->user_data;
		res = cqe->res;
		flags = cqe->flags;
		/* Free the slot before issuing more: requests that complete
		 * inline post their CQE at once, and a CQ the program has
		 * not released would overflow. */
		WRITE_ONCE(*in_head, ++head);
		/* Without an own CQ the program's completions come here. */
		if (user_data & LOOP_TAG) {
			own_cqe(ctx, &sqes[0], region, sh, st, user_data, res);
			continue;
		}
		if (fuse_depth && (user_data & FUSE_TAG_MASK) == FUSE_TAG_ENTRY && res >= 0 &&
		    fuse_start(ctx, &sqes[0], region, sh, st, (__u32)user_data))
			continue;
		hand_off(ctx, sh, user_data, res, flags);
		__sync_fetch_and_add(&st->handed_off, 1);
	}

	/* Requests issued while reaping the input may have completed inline
	 * onto the own CQ, and no task work is left to end a sleep for them:
	 * they are reaped now. The kfunc sees the requests that handling them
	 * issues and that complete inline too, so the own CQ is empty unless
	 * MAX_REAP stopped the reaping. */
	own = reap_own_cq(ctx, &sqes[0], region, sh, st) == MAX_REAP;
	n = handoff_ready(sh, rings);
	if (n >= sh->want || n >= handoff_room())
		return IOU_LOOP_STOP;
	/* Sleep until a CQE beyond those reaped arrives; with CQEs left over
	 * (MAX_REAP) the wait index is already reached and the loop reruns.
	 * The index counts the ring's CQ only, but every completion of this
	 * DEFER_TASKRUN ring, also one bound for an extra CQ, is task work,
	 * which ends the sleep. */
	tail = READ_ONCE(rings->cq.tail);
	/* Read after the tail: a CQE posted since counts as left over, such
	 * as the next request a COMMIT_AND_FETCH above found waiting. */
	left = own || head != READ_ONCE(*in_tail);
	lp->cq_wait_idx = left ? tail : tail + 1;
	return IOU_LOOP_CONTINUE;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops loop_ops = {
	.loop_step = (void *)loop_step,
};
