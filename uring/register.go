package uring

import (
	"runtime"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// RestrictionOp is the kind of a Restriction (IORING_RESTRICTION_*).
type RestrictionOp uint16

const (
	RestrictionRegisterOp       RestrictionOp = 0 // allow an io_uring_register opcode
	RestrictionSQEOp            RestrictionOp = 1 // allow an SQE opcode
	RestrictionSQEFlagsAllowed  RestrictionOp = 2 // allow SQE flags
	RestrictionSQEFlagsRequired RestrictionOp = 3 // require SQE flags on every SQE
)

// Restriction mirrors struct io_uring_restriction: one entry of the
// allow-list installed by RegisterRestrictions.
type Restriction struct {
	Opcode RestrictionOp
	Arg    uint8 // register op, SQE op or SQE flags, by Opcode
	resv   uint8
	resv2  [3]uint32
}

// AllowRegisterOp permits io_uring_register opcode op.
func AllowRegisterOp(op RegisterOp) Restriction {
	return Restriction{Opcode: RestrictionRegisterOp, Arg: uint8(op)}
}

// AllowSQEOp permits SQE opcode op.
func AllowSQEOp(op Op) Restriction { return Restriction{Opcode: RestrictionSQEOp, Arg: uint8(op)} }

// AllowSQEFlags permits the SQE flags in flags.
func AllowSQEFlags(flags uint8) Restriction {
	return Restriction{Opcode: RestrictionSQEFlagsAllowed, Arg: flags}
}

// RequireSQEFlags makes flags mandatory on every SQE.
func RequireSQEFlags(flags uint8) Restriction {
	return Restriction{Opcode: RestrictionSQEFlagsRequired, Arg: flags}
}

// RegisterRestrictions installs an allow-list of opcodes and flags. The
// ring must have been created with SetupRDisabled; call Enable afterwards.
func (r *Ring) RegisterRestrictions(res []Restriction) error {
	_, err := register(r.fd, RegisterRestrictions, unsafe.Pointer(unsafe.SliceData(res)), uint32(len(res)))
	return err
}

// Enable starts a ring created with SetupRDisabled.
func (r *Ring) Enable() error {
	_, err := register(r.fd, RegisterEnableRings, nil, 0)
	return err
}

// rsrcRegister mirrors struct io_uring_rsrc_register.
type rsrcRegister struct {
	nr    uint32
	flags uint32
	resv2 uint64
	data  uint64
	tags  uint64
}

// rsrcUpdate mirrors struct io_uring_rsrc_update.
type rsrcUpdate struct {
	offset uint32
	resv   uint32
	data   uint64
}

// rsrcUpdate2 mirrors struct io_uring_rsrc_update2.
type rsrcUpdate2 struct {
	offset uint32
	resv   uint32
	data   uint64
	tags   uint64
	nr     uint32
	resv2  uint32
}

// RegisterFiles installs fds as the registered file table; SQEs with
// SQEFixedFile then name a file by its index. -1 leaves a slot empty.
func (r *Ring) RegisterFiles(fds []int32) error {
	_, err := register(r.fd, RegisterFiles, unsafe.Pointer(unsafe.SliceData(fds)), uint32(len(fds)))
	return err
}

// RegisterFilesSparse installs an empty file table of n slots, to be
// filled by UpdateFiles or by direct-descriptor opens.
func (r *Ring) RegisterFilesSparse(n uint32) error {
	reg := rsrcRegister{nr: n, flags: rsrcSparse}
	_, err := register(r.fd, RegisterFiles2, unsafe.Pointer(&reg), uint32(unsafe.Sizeof(reg)))
	return err
}

// UpdateFiles replaces slots off.. of the file table with fds (-1 clears a
// slot, RegisterFilesSkip keeps it) and returns how many were updated.
func (r *Ring) UpdateFiles(off uint32, fds []int32) (int, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	up := rsrcUpdate{offset: off, data: uint64(pinnedAddr(&pin, unsafe.SliceData(fds)))}
	return register(r.fd, RegisterFilesUpdate, unsafe.Pointer(&up), uint32(len(fds)))
}

// UnregisterFiles removes the file table.
func (r *Ring) UnregisterFiles() error {
	_, err := register(r.fd, UnregisterFiles, nil, 0)
	return err
}

// pinnedAddr returns the address of *p for a pointer nested in a syscall
// argument. Pinning moves the object to the heap and keeps it there and
// alive until pin is unpinned: the kernel reads it by address, which a
// moving goroutine stack would invalidate.
func pinnedAddr[T any](pin *runtime.Pinner, p *T) uintptr {
	if p == nil {
		return 0
	}
	pin.Pin(p)
	return uintptr(unsafe.Pointer(p))
}

func iovecsOf(bufs [][]byte) []unix.Iovec {
	iovs := make([]unix.Iovec, len(bufs))
	for i, b := range bufs {
		iovs[i].Base = unsafe.SliceData(b)
		iovs[i].SetLen(len(b))
	}
	return iovs
}

// RegisterBuffers installs bufs as the registered buffer table, for
// PrepReadFixed/PrepWriteFixed by index. The kernel pins their pages; the
// ring keeps the slices reachable until UnregisterBuffers or Close. Use
// memory that lives as long as the registration (for example from
// unix.Mmap).
func (r *Ring) RegisterBuffers(bufs [][]byte) error {
	iovs := iovecsOf(bufs)
	if _, err := register(r.fd, RegisterBuffers, unsafe.Pointer(unsafe.SliceData(iovs)), uint32(len(iovs))); err != nil {
		return err
	}
	r.keepBuffers(0, bufs)
	return nil
}

// RegisterBuffersSparse installs an empty buffer table of n slots, to be
// filled by UpdateBuffers.
func (r *Ring) RegisterBuffersSparse(n uint32) error {
	reg := rsrcRegister{nr: n, flags: rsrcSparse}
	_, err := register(r.fd, RegisterBuffers2, unsafe.Pointer(&reg), uint32(unsafe.Sizeof(reg)))
	return err
}

// UpdateBuffers replaces slots off.. of the buffer table with bufs (an
// empty slice clears a slot) and returns how many were updated.
func (r *Ring) UpdateBuffers(off uint32, bufs [][]byte) (int, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	iovs := iovecsOf(bufs)
	up := rsrcUpdate2{offset: off, data: uint64(pinnedAddr(&pin, unsafe.SliceData(iovs))), nr: uint32(len(bufs))}
	n, err := register(r.fd, RegisterBuffersUpdate, unsafe.Pointer(&up), uint32(unsafe.Sizeof(up)))
	if err == nil {
		r.keepBuffers(off, bufs[:n])
	}
	return n, err
}

// UnregisterBuffers removes the buffer table.
func (r *Ring) UnregisterBuffers() error {
	if _, err := register(r.fd, UnregisterBuffers, nil, 0); err != nil {
		return err
	}
	clear(r.keep)
	return nil
}

func (r *Ring) keepBuffers(off uint32, bufs [][]byte) {
	for i, b := range bufs {
		if len(b) == 0 {
			delete(r.keep, off+uint32(i))
		} else {
			r.keep[off+uint32(i)] = b
		}
	}
}

// RegisterRingFd registers the ring fd with the calling thread, so that
// io_uring_enter skips the fd lookup (IORING_REGISTER_RING_FDS). The
// registration belongs to the OS thread: use it only from a goroutine
// locked with runtime.LockOSThread, which must also do every Submit and
// wait on this ring.
func (r *Ring) RegisterRingFd() error {
	up := rsrcUpdate{offset: ^uint32(0), data: uint64(r.fd)} // offset -1: any free slot
	if _, err := register(r.fd, RegisterRingFds, unsafe.Pointer(&up), 1); err != nil {
		return err
	}
	r.enterFd, r.enterReg = int(up.offset), EnterRegisteredRing
	return nil
}

// UnregisterRingFd drops the registration made by RegisterRingFd.
func (r *Ring) UnregisterRingFd() error {
	if r.enterReg == 0 {
		return nil
	}
	up := rsrcUpdate{offset: uint32(r.enterFd)}
	if _, err := register(r.fd, UnregisterRingFds, unsafe.Pointer(&up), 1); err != nil {
		return err
	}
	r.enterFd, r.enterReg = r.fd, 0
	return nil
}

// regionDesc mirrors struct io_uring_region_desc. The region is always
// kernel-allocated here, so user_addr, flags and id stay zero.
type regionDesc struct {
	_          uint64 // user_addr
	size       uint64
	_          uint32 // flags
	_          uint32 // id
	mmapOffset uint64
	_          [4]uint64
}

// memRegionReg mirrors struct io_uring_mem_region_reg.
type memRegionReg struct {
	regionUptr uint64
	flags      uint64
	resv       [2]uint64
}

// RegWait mirrors struct io_uring_reg_wait: wait arguments the kernel reads
// from a region registered with MemRegionWaitArg instead of copying them
// from the caller on every wait.
type RegWait struct {
	Timeout     Timespec // relative, or absolute with EnterAbsTimer
	MinWaitUsec uint32
	Flags       uint32 // RegWaitTimeout when Timeout is set
	Sigmask     uint64
	SigmaskSz   uint32
	pad         [3]uint32
	pad2        [2]uint64
}

// RegWaitTimeout marks RegWait.Timeout as valid (IORING_REG_WAIT_TS).
const RegWaitTimeout uint32 = 1 << 0

// RegWaits views a region registered with MemRegionWaitArg as RegWait slots.
func RegWaits(region []byte) []RegWait {
	return unsafe.Slice((*RegWait)(unsafe.Pointer(unsafe.SliceData(region))), uintptr(len(region))/unsafe.Sizeof(RegWait{}))
}

// SubmitAndWaitReg is SubmitAndWait with the wait arguments (timeout,
// minimum wait) taken from slot index of the registered wait region. On
// timeout it returns an error wrapping syscall.ETIME.
func (r *Ring) SubmitAndWaitReg(n uint32, index int) (int, error) {
	offset := uintptr(index) * unsafe.Sizeof(RegWait{})
	pending, submitted := r.sq.flush(), 0
	for {
		got, errno := enterRegWait(r.enterFd, pending, n, EnterGetEvents|r.enterReg, offset)
		if errno == syscall.EINTR {
			continue // nothing was consumed
		}
		if errno != 0 {
			return submitted, enterError(errno)
		}
		submitted += got
		pending -= uint32(got)
		if r.cq.ready() >= n {
			return submitted, nil
		}
	}
}

// MemRegionWaitArg exposes the region as registered wait arguments
// (IORING_MEM_REGION_REG_WAIT_ARG); it needs a ring still disabled
// (SetupRDisabled).
const MemRegionWaitArg uint64 = 1

// RegisterMemRegion makes the kernel allocate the ring's parameter region
// of size bytes (a multiple of the page size) and maps it
// (IORING_REGISTER_MEM_REGION, 6.13+). BPF programs attached to the ring
// reach the same memory as IOU_REGION_MEM. A ring has at most one; it is
// unmapped by Close.
func (r *Ring) RegisterMemRegion(size int, flags uint64) ([]byte, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	desc := &regionDesc{size: uint64(size)}
	reg := memRegionReg{regionUptr: uint64(pinnedAddr(&pin, desc)), flags: flags}
	_, err := register(r.fd, RegisterMemRegion, unsafe.Pointer(&reg), 1)
	if err != nil {
		return nil, err
	}
	mem, err := mapRegion(r.fd, int64(desc.mmapOffset), size)
	if err != nil {
		return nil, err
	}
	r.regionMem = mem
	return mem, nil
}
