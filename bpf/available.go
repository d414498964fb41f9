package bpf

import (
	"errors"
	"fmt"

	"github.com/cilium/ebpf/btf"
)

// ErrUnavailable is wrapped by the errors of Available and Attach when the
// running kernel cannot run io_uring BPF loops (no BTF, no io_uring bpf-ops).
var ErrUnavailable = errors.New("io_uring bpf-ops unavailable")

// Available reports whether the running kernel has io_uring bpf-ops (Linux
// 7.1+ with CONFIG_IO_URING_BPF_OPS): its BTF must describe struct
// io_uring_bpf_ops and the kfuncs the loop calls. A nil result says the
// program can be loaded; the verifier has the last word (see Attach).
func Available() error {
	return kernelHas("io_uring_bpf_ops", "bpf_io_uring_submit_sqes", "bpf_io_uring_get_region")
}

// SubmitBlockAvailable reports whether the kernel has the kfunc
// bpf_io_uring_submit_sqes_flags of bpfusefs's series (kernel/patches),
// with which the loop issues the backing reads and writes that would go to
// io-wq (every buffered write to ext4) blocking instead; Attach uses it
// where it is.
func SubmitBlockAvailable() error {
	return kernelHas("io_uring_bpf_ops", "bpf_io_uring_submit_sqes_flags")
}

// kernelHas reports whether the kernel's BTF describes struct structName
// and each of kfuncs, wrapping ErrUnavailable if not.
func kernelHas(structName string, kfuncs ...string) error {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return fmt.Errorf("%w: kernel BTF: %w", ErrUnavailable, err)
	}
	var st *btf.Struct
	if err := spec.TypeByName(structName, &st); err != nil {
		return fmt.Errorf("%w: kernel BTF has no struct %s: %w", ErrUnavailable, structName, err)
	}
	for _, name := range kfuncs {
		var fn *btf.Func
		if err := spec.TypeByName(name, &fn); err != nil {
			return fmt.Errorf("%w: kernel BTF has no kfunc %s: %w", ErrUnavailable, name, err)
		}
	}
	return nil
}
