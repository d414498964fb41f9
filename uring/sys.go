package uring

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ErrUnavailable is wrapped by New when the kernel has no io_uring or the
// administrator disabled it (kernel.io_uring_disabled). errors.Is(err,
// ErrUnavailable) tells callers to fall back to plain syscalls.
var ErrUnavailable = errors.New("io_uring unavailable")

// params mirrors struct io_uring_params.
type params struct {
	sqEntries    uint32
	cqEntries    uint32
	flags        uint32
	sqThreadCPU  uint32
	sqThreadIdle uint32
	features     uint32
	wqFd         uint32
	resv         [3]uint32
	sqOff        sqringOffsets
	cqOff        cqringOffsets
}

// sqringOffsets mirrors struct io_sqring_offsets.
type sqringOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

// cqringOffsets mirrors struct io_cqring_offsets.
type cqringOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

func setup(entries uint32, p *params) (int, error) {
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(p)), 0)
	if errno != 0 {
		return -1, setupError(errno)
	}
	return int(fd), nil
}

// setupError explains the two ways a kernel refuses io_uring as a whole.
func setupError(errno syscall.Errno) error {
	err := os.NewSyscallError("io_uring_setup", errno)
	switch errno {
	case unix.ENOSYS:
		return fmt.Errorf("%w: kernel built without CONFIG_IO_URING: %w", ErrUnavailable, err)
	case unix.EPERM:
		if v, rerr := os.ReadFile("/proc/sys/kernel/io_uring_disabled"); rerr == nil {
			if s := strings.TrimSpace(string(v)); s != "0" {
				return fmt.Errorf("%w: kernel.io_uring_disabled=%s: %w", ErrUnavailable, s, err)
			}
		}
	}
	return err
}

// enter calls io_uring_enter(2); it returns the raw errno so that callers can
// retry EINTR before wrapping.
func enter(fd int, toSubmit, minComplete, flags uint32, arg unsafe.Pointer, argSize uintptr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags), uintptr(arg), argSize)
	return int(n), errno
}

// enterRegWait calls io_uring_enter with EnterExtArgReg: instead of a
// pointer, the argument is the byte offset of a RegWait in the ring's
// registered wait region.
func enterRegWait(fd int, toSubmit, minComplete, flags uint32, offset uintptr) (int, syscall.Errno) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(fd), uintptr(toSubmit),
		uintptr(minComplete), uintptr(flags|EnterExtArg|EnterExtArgReg), offset, unsafe.Sizeof(RegWait{}))
	return int(n), errno
}

// register calls io_uring_register(2) and names the opcode in its error.
func register(fd int, op RegisterOp, arg unsafe.Pointer, nrArgs uint32) (int, error) {
	n, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(fd), uintptr(op),
		uintptr(arg), uintptr(nrArgs), 0, 0)
	if errno != 0 {
		return 0, os.NewSyscallError("io_uring_register "+op.String(), errno)
	}
	return int(n), nil
}

func enterError(errno syscall.Errno) error {
	return os.NewSyscallError("io_uring_enter", errno)
}
