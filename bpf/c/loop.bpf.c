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
 * The copy job is the offload mechanism in its smallest form: READ a chunk
 * of one file into a buffer in the parameter region, WRITE it to another,
 * repeat, without returning to userspace between the steps.
 */
#include "iou.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader before load: the verifier needs constant region sizes
 * and index masks. Both are powers of two (io_uring rounds them up). */
const volatile __u32 sq_entries = 1;
const volatile __u32 cq_entries = 1;

#define LOOP_TAG (1ULL << 63) /* user_data of SQEs the program issues */
#define TAG_COPY_READ (LOOP_TAG | 1)
#define TAG_COPY_WRITE (LOOP_TAG | 2)

#define HANDOFF_ENTRIES 128 /* power of two */
#define MAX_REAP 256	    /* CQEs reaped per step; the loop runs again for more */

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
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct loop_stats);
} stats SEC(".maps");

/* Queue one CQE for Go; false when the hand-off queue is full. */
static int hand_off(struct loop_shared *sh, __u64 user_data, __s32 res, __u32 flags)
{
	__u32 tail = sh->handoff_tail;
	struct io_uring_cqe *dst;

	if (tail - sh->handoff_head >= HANDOFF_ENTRIES)
		return 0;
	dst = &sh->handoff[tail & (HANDOFF_ENTRIES - 1)];
	dst->user_data = user_data;
	dst->res = res;
	dst->flags = flags;
	sh->handoff_tail = tail + 1;
	return 1;
}

/* Issue one READ or WRITE at SQ index 0 (SQ_REWIND) and submit it now. */
static int issue(struct iou_ctx *ctx, struct io_uring_sqe *sqe, struct loop_stats *st,
		 __u8 opcode, __s32 fd, __u64 addr, __u32 len, __u64 off, __u64 user_data)
{
	int ret;

	*sqe = (struct io_uring_sqe){};
	sqe->opcode = opcode;
	sqe->fd = fd;
	sqe->addr = addr;
	sqe->len = len;
	sqe->off = off;
	sqe->user_data = user_data;
	ret = bpf_io_uring_submit_sqes(ctx, 1);
	if (ret != 1) {
		__sync_fetch_and_add(&st->submit_errors, 1);
		return ret < 0 ? ret : -11; /* EAGAIN: the kernel took nothing */
	}
	__sync_fetch_and_add(&st->own_sqes, 1);
	return 0;
}

static void copy_finish(struct loop_shared *sh, __s32 res)
{
	sh->copy_state = COPY_IDLE;
	/* The hand-off queue always has room for the job's end: Go does not
	 * start a job while completions are unread (see Loop.Copy). */
	hand_off(sh, sh->copy_user_data, res, 0);
}

static void copy_read_next(struct iou_ctx *ctx, struct io_uring_sqe *sqe,
			   struct loop_shared *sh, struct loop_stats *st)
{
	__u64 left = sh->copy_len - sh->copy_done;
	__u32 len = sh->copy_chunk;
	int ret;

	if (left == 0) {
		copy_finish(sh, 0);
		return;
	}
	if (left < len)
		len = left;
	ret = issue(ctx, sqe, st, IORING_OP_READ, sh->copy_in_fd, sh->copy_buf, len,
		    sh->copy_done, TAG_COPY_READ);
	if (ret) {
		copy_finish(sh, ret);
		return;
	}
	sh->copy_state = COPY_READING;
}

/* One of the copy job's own completions. */
static void copy_step(struct iou_ctx *ctx, struct io_uring_sqe *sqe, struct loop_shared *sh,
		      struct loop_stats *st, __u64 user_data, __s32 res)
{
	int ret;

	if (res < 0) {
		copy_finish(sh, res);
		return;
	}
	if (user_data == TAG_COPY_READ) {
		if (res == 0) { /* the source ended early: report what was copied */
			copy_finish(sh, 0);
			return;
		}
		ret = issue(ctx, sqe, st, IORING_OP_WRITE, sh->copy_out_fd, sh->copy_buf, res,
			    sh->copy_done, TAG_COPY_WRITE);
		if (ret) {
			copy_finish(sh, ret);
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

SEC("struct_ops.s/loop_step")
int loop_step(unsigned long long *args)
{
	struct iou_ctx *ctx = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];
	__u32 cqes_off = __builtin_preserve_field_info(((struct io_rings *)0)->cqes, 0);
	struct loop_shared *sh;
	struct io_uring_sqe *sqes;
	struct io_rings *rings;
	struct loop_stats *st;
	__u32 head, tail, key = 0, n, i;
	__u64 user_data;
	int ret, res;

	st = bpf_map_lookup_elem(&stats, &key);
	sqes = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_SQ,
					       sq_entries * sizeof(struct io_uring_sqe));
	rings = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_CQ,
						cqes_off + cq_entries * sizeof(struct io_uring_cqe));
	sh = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_MEM, sizeof(struct loop_shared));
	if (!st || !sqes || !rings || !sh)
		return IOU_LOOP_STOP; /* enter returns; Loop.Enter reports the missing region */
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

	head = rings->cq.head;
	for (i = 0; i < MAX_REAP; i++) {
		struct io_uring_cqe *cqe;

		tail = READ_ONCE(rings->cq.tail);
		if (head == tail)
			break;
		cqe = &rings->cqes[head & (cq_entries - 1)];
		user_data = cqe->user_data;
		res = cqe->res;
		if (!(user_data & LOOP_TAG)) {
			if (!hand_off(sh, user_data, res, cqe->flags))
				break;
			__sync_fetch_and_add(&st->handed_off, 1);
		}
		/* Free the slot before issuing more: requests that complete
		 * inline post their CQE at once, and a CQ the program has
		 * not released would overflow. */
		WRITE_ONCE(rings->cq.head, ++head);
		if (user_data & LOOP_TAG) {
			__sync_fetch_and_add(&st->own_cqes, 1);
			copy_step(ctx, &sqes[0], sh, st, user_data, res);
		}
	}

	n = sh->handoff_tail - sh->handoff_head;
	if (n >= sh->want || n >= HANDOFF_ENTRIES)
		return IOU_LOOP_STOP;
	/* Sleep until a CQE beyond those reaped arrives; with CQEs left over
	 * (MAX_REAP) the wait index is already reached and the loop reruns. */
	lp->cq_wait_idx = head == READ_ONCE(rings->cq.tail) ? head + 1 : head;
	return IOU_LOOP_CONTINUE;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops loop_ops = {
	.loop_step = (void *)loop_step,
};
