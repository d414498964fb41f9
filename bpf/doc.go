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
package bpf
