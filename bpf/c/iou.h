/* SPDX-License-Identifier: (MIT OR GPL-2.0) */
/*
 * The few kernel and uapi definitions the io_uring loop programs need,
 * written from Linux 7.3 (include/uapi/linux/io_uring.h, io_uring/loop.h,
 * io_uring/bpf-ops.h) instead of a multi-megabyte vmlinux.h. Kernel-internal
 * structs carry preserve_access_index, so their field offsets are relocated
 * (CO-RE) against the running kernel's BTF at load time; uapi structs are ABI.
 */
#ifndef BPFUSEFS_IOU_H
#define BPFUSEFS_IOU_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef unsigned long size_t;

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __weak __attribute__((weak))
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name
/* A BPF-to-BPF call passes at most five arguments, in registers: helpers
 * that take more must be inlined, which clang otherwise decides by size. */
#define __always_inline inline __attribute__((always_inline))
/* A subprogram of its own, for code called from more than one place. */
#define __noinline __attribute__((noinline))
#define READ_ONCE(x) (*(volatile typeof(x) *)&(x))
#define WRITE_ONCE(x, v) (*(volatile typeof(x) *)&(x) = (v))

/* Helpers by their fixed uapi numbers (include/uapi/linux/bpf.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *callback_ctx, __u64 flags) = (void *)181;

enum { BPF_MAP_TYPE_HASH = 1, BPF_MAP_TYPE_ARRAY = 2, BPF_MAP_TYPE_PERCPU_ARRAY = 6 };

/* struct io_uring_sqe, 64 bytes (uapi). */
struct io_uring_sqe {
	__u8 opcode;
	__u8 flags;
	__u16 ioprio;
	__s32 fd;
	__u64 off;
	__u64 addr;
	__u32 len;
	__u32 rw_flags;
	__u64 user_data;
	__u16 buf_index;
	__u16 personality;
	__s32 splice_fd_in;
	__u64 addr3;
	__u64 __pad2;
};

/* A 128-byte SQE (IORING_SETUP_SQE128): uring_cmd's command area runs from
 * addr3 on into the second half. */
struct io_uring_sqe128 {
	struct io_uring_sqe sqe;
	__u64 cmd_ext[8];
};

/* struct io_uring_cqe without the CQE32 extension (uapi). */
struct io_uring_cqe {
	__u64 user_data;
	__s32 res;
	__u32 flags;
};

enum {
	IORING_OP_FSYNC = 3,
	IORING_OP_READ_FIXED = 4,
	IORING_OP_WRITE_FIXED = 5,
	IORING_OP_STATX = 21,
	IORING_OP_READ = 22,
	IORING_OP_WRITE = 23,
	IORING_OP_COPY_FILE_RANGE = 65, /* kernel/patches: after IORING_OP_URING_CMD128 */
	IORING_OP_FUTIMENS = 67, /* kernel/patches: after IORING_OP_BPF */
	IORING_COPY_KEEP_HOLES = 1U << 30, /* splice_flags of IORING_OP_COPY_FILE_RANGE */
	IORING_FSYNC_DATASYNC = 1 << 0, /* fsync_flags */
};

/* io_uring/io_uring_types.h: the head of the ring region (IOU_REGION_CQ). */
struct io_uring {
	__u32 head;
	__u32 tail;
} __attribute__((preserve_access_index));

struct io_rings {
	struct io_uring sq, cq;
	struct io_uring_cqe cqes[];
} __attribute__((preserve_access_index));

/* io_uring/loop.h and io_uring/bpf-ops.h. */
struct iou_ctx {}; /* opaque; kfunc BTF matching needs a definition, not a forward */

struct iou_loop_params {
	__u32 cq_wait_idx; /* CQ tail to sleep until; a hint, wakeups may come early */
} __attribute__((preserve_access_index));

enum {
	IOU_LOOP_CONTINUE = 0,
	IOU_LOOP_STOP = 1,
};

enum {
	IOU_REGION_MEM = 0, /* the parameter region (IORING_REGISTER_MEM_REGION) */
	IOU_REGION_CQ = 1,  /* struct io_rings followed by the CQEs */
	IOU_REGION_SQ = 2,  /* the SQE array */
	/* kernel/patches: | id, extra CQ id's struct io_uring_cq_ring; other
	 * kernels answer NULL, as for any unknown region */
	IOU_REGION_EXTRA_CQ = 0x100,
};

/* kernel/patches (uapi): an extra CQ (IORING_REGISTER_CQ), plain memory in
 * its region, so no CO-RE relocation. */
struct io_uring_cq_ring {
	__u32 head;
	__u32 pad1[15];
	__u32 tail;
	__u32 pad2[15];
	__u32 ring_mask;
	__u32 ring_entries;
	__u32 overflow;
	__u32 pad3[13];
	struct io_uring_cqe cqes[];
};

#ifdef IOU_PATCHED
/* kernel/patches: what an IORING_OP_BPF request hands handle_req. With
 * IORING_BPF_FIXED_BUFFER, [addr, addr + len) is a range of a registered
 * buffer, reached with bpf_io_uring_req_read/write at offsets from addr. */
struct iou_bpf_req {
	__u64 user_data;
	__u64 addr;
	__u64 off;
	__u32 len;
	__u32 flags;
} __attribute__((preserve_access_index));
#endif

struct io_uring_bpf_ops {
	int (*loop_step)(struct iou_ctx *ctx, struct iou_loop_params *lp);
#ifdef IOU_PATCHED
	int (*handle_req)(struct iou_bpf_req *req);
#endif
	__u32 ring_fd;
};

extern int bpf_io_uring_submit_sqes(struct iou_ctx *ctx, __u32 nr) __ksym;
extern __u8 *bpf_io_uring_get_region(struct iou_ctx *ctx, __u32 region_id,
				     const size_t rdwr_buf_size) __ksym;
/* kernel/patches: post a CQE to the ring's CQ (cq_id 0, whatever extra CQ
 * its user_data selects) or to extra CQ cq_id. Weak, so that an object
 * calling it loads where it is missing, as long as the call is dead code
 * there (behind a load-time constant). */
extern int bpf_io_uring_post_cqe(struct iou_ctx *ctx, __u32 cq_id, __u64 user_data, __s32 res,
				 __u32 cflags) __ksym __weak;
/* kernel/patches: take the oldest CQE of extra CQ cq_id into cqe (cqe__sz:
 * 16, a struct io_uring_cqe) and free its slot; 1, or 0 when the CQ is
 * empty. Weak, as above. */
extern int bpf_io_uring_reap_cqe(struct iou_ctx *ctx, __u32 cq_id, void *cqe,
				 __u32 cqe__sz) __ksym __weak;
/* kernel/patches: bpf_io_uring_submit_sqes with flags; IOU_SUBMIT_BLOCK
 * issues a regular-file read or write that cannot be done without blocking
 * in the loop's task, blocking it, instead of handing it to io-wq. Weak, as
 * above. */
#define IOU_SUBMIT_BLOCK 1
extern int bpf_io_uring_submit_sqes_flags(struct iou_ctx *ctx, __u32 nr, __u32 flags) __ksym __weak;
#ifdef IOU_PATCHED
extern int bpf_io_uring_req_read(struct iou_bpf_req *req, __u32 off, void *dst,
				 __u32 dst__sz) __ksym;
extern int bpf_io_uring_req_write(struct iou_bpf_req *req, __u32 off, const void *src,
				  __u32 src__sz) __ksym;
#endif

#endif
