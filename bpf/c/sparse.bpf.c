/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The in-kernel step of a sparse, checksummed file copy on a kernel with
 * bpfusefs's series (kernel/patches/): Go links, per block, a READ_FIXED
 * into a registered buffer, an IORING_OP_BPF over that buffer and a
 * WRITE_FIXED from it. handle_req adds the block into the checksum and
 * fails when the block is all zeros, which cancels the linked WRITE: the
 * destination keeps a hole there and the data never leaves the kernel.
 *
 * loop_step is the plain loop every bpf-ops ring needs: it submits what Go
 * queued and stops once the CQ holds a completion, so Go reaps the CQ as
 * on any ring.
 */
#define IOU_PATCHED
#include "iou.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define PIECE 4096	/* bytes examined per kfunc copy */
#define MAX_PIECES 16	/* so a block is at most 64 KiB */
#define ENODATA 61

/* Counters, read by Go (struct sparse_stats in sparse.go). */
struct sparse_stats {
	__u64 blocks;	   /* blocks examined */
	__u64 zero_blocks; /* of those, all zeros: their WRITE was cancelled */
	__u64 bytes;	   /* bytes examined */
	__u64 checksum;	   /* sum of every block's little-endian 64-bit words */
	__u64 errors;	   /* requests refused: no buffer, or a bad length */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sparse_stats);
} stats SEC(".maps");

/* One piece of the block at a time: the BPF stack is 512 bytes. */
struct piece {
	__u64 w[PIECE / 8];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct piece);
} scratch SEC(".maps");

SEC("struct_ops.s/sparse_loop_step")
int sparse_loop_step(unsigned long long *args)
{
	struct iou_ctx *ctx = (struct iou_ctx *)args[0];
	struct iou_loop_params *lp = (struct iou_loop_params *)args[1];
	__u32 cqes_off = __builtin_preserve_field_info(((struct io_rings *)0)->cqes, 0);
	struct io_rings *rings;
	__u32 queued, tail;

	rings = (void *)bpf_io_uring_get_region(ctx, IOU_REGION_CQ, cqes_off);
	if (!rings)
		return IOU_LOOP_STOP;
	queued = READ_ONCE(rings->sq.tail) - READ_ONCE(rings->sq.head);
	if (queued)
		bpf_io_uring_submit_sqes(ctx, queued);
	tail = READ_ONCE(rings->cq.tail);
	if (tail != READ_ONCE(rings->cq.head))
		return IOU_LOOP_STOP;
	lp->cq_wait_idx = tail + 1;
	return IOU_LOOP_CONTINUE;
}

/* What add_word adds up: the loop's callback gets the piece from the
 * per-CPU map itself, a one-instruction lookup once inlined. */
struct scan {
	__u64 sum;
	__u64 any; /* the OR of every word: zero for a block of zeros */
};

static long add_word(__u64 i, void *data)
{
	struct scan *s = data;
	__u32 key = 0;
	struct piece *buf = bpf_map_lookup_elem(&scratch, &key);

	if (!buf || i >= PIECE / 8)
		return 1;
	s->sum += buf->w[i];
	s->any |= buf->w[i];
	return 0;
}

/* Returns the block's length, or -ENODATA for a block of zeros. The length
 * must be a multiple of 8 (Go pads the last block with zeros). bpf_loop
 * walks the words: the verifier checks its callback once, where a plain
 * loop over 8192 words would be unrolled past its limits. */
SEC("struct_ops/sparse_block")
int sparse_block(unsigned long long *args)
{
	struct iou_bpf_req *req = (struct iou_bpf_req *)args[0];
	__u32 key = 0, len = req->len, off, p;
	struct scan scan = {};
	struct sparse_stats *st;
	struct piece *buf;

	st = bpf_map_lookup_elem(&stats, &key);
	buf = bpf_map_lookup_elem(&scratch, &key);
	if (!st || !buf)
		return -22; /* EINVAL */
	if (len == 0 || len % 8 || len > PIECE * MAX_PIECES) {
		__sync_fetch_and_add(&st->errors, 1);
		return -22;
	}
	for (p = 0; p < MAX_PIECES; p++) {
		__u32 n;

		off = p * PIECE;
		if (off >= len)
			break;
		n = len - off;
		if (n > PIECE)
			n = PIECE;
		if (bpf_io_uring_req_read(req, off, buf, n)) {
			__sync_fetch_and_add(&st->errors, 1);
			return -14; /* EFAULT */
		}
		bpf_loop(n / 8, add_word, &scan, 0);
	}
	__sync_fetch_and_add(&st->blocks, 1);
	__sync_fetch_and_add(&st->bytes, len);
	__sync_fetch_and_add(&st->checksum, scan.sum);
	if (!scan.any) {
		__sync_fetch_and_add(&st->zero_blocks, 1);
		return -ENODATA;
	}
	return len;
}

SEC(".struct_ops.link")
struct io_uring_bpf_ops sparse_ops = {
	.loop_step = (void *)sparse_loop_step,
	.handle_req = (void *)sparse_block,
};
