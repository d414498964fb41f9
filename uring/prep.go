package uring

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// Prep helpers, named and laid out like liburing's io_uring_prep_*. Each one
// overwrites the first 64 bytes of the SQE (flags and user data included).
//
// Memory: the SQE carries raw addresses, which the garbage collector does
// not see. Everything it points to must be pinned (runtime.Pinner, which
// also moves it off the goroutine stack, where stack growth would move it)
// or allocated outside Go (unix.Mmap). Buffers, iovecs and result structs
// (statx) must stay so until the request completes; paths, timespecs and
// open_how are copied by the kernel while submitting and only until Submit
// returns.

func (s *SQE) prepRW(op Op, fd int, addr unsafe.Pointer, length uint32, off uint64) {
	*s = SQE{Opcode: op, Fd: int32(fd), Off: off, Addr: uint64(uintptr(addr)), Len: length}
}

func bufAddr(b []byte) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(b)) }

// PrepNop prepares a request that does nothing and completes with 0.
func (s *SQE) PrepNop() { s.prepRW(OpNop, -1, nil, 0, 0) }

// PrepRead prepares pread(fd, buf, off); off ^uint64(0) uses and moves the
// file position.
func (s *SQE) PrepRead(fd int, buf []byte, off uint64) {
	s.prepRW(OpRead, fd, bufAddr(buf), uint32(len(buf)), off)
}

// PrepWrite prepares pwrite(fd, buf, off).
func (s *SQE) PrepWrite(fd int, buf []byte, off uint64) {
	s.prepRW(OpWrite, fd, bufAddr(buf), uint32(len(buf)), off)
}

// PrepReadv prepares preadv(fd, iovecs, off).
func (s *SQE) PrepReadv(fd int, iovecs []unix.Iovec, off uint64) {
	s.prepRW(OpReadv, fd, unsafe.Pointer(unsafe.SliceData(iovecs)), uint32(len(iovecs)), off)
}

// PrepWritev prepares pwritev(fd, iovecs, off).
func (s *SQE) PrepWritev(fd int, iovecs []unix.Iovec, off uint64) {
	s.prepRW(OpWritev, fd, unsafe.Pointer(unsafe.SliceData(iovecs)), uint32(len(iovecs)), off)
}

// PrepReadFixed reads into buf, which must lie inside registered buffer
// bufIndex.
func (s *SQE) PrepReadFixed(fd int, buf []byte, off uint64, bufIndex uint16) {
	s.prepRW(OpReadFixed, fd, bufAddr(buf), uint32(len(buf)), off)
	s.BufIndex = bufIndex
}

// PrepWriteFixed writes from buf, which must lie inside registered buffer
// bufIndex.
func (s *SQE) PrepWriteFixed(fd int, buf []byte, off uint64, bufIndex uint16) {
	s.prepRW(OpWriteFixed, fd, bufAddr(buf), uint32(len(buf)), off)
	s.BufIndex = bufIndex
}

// PrepFsync prepares fsync(fd), or fdatasync(fd) with flags FsyncDatasync.
func (s *SQE) PrepFsync(fd int, flags uint32) {
	s.prepRW(OpFsync, fd, nil, 0, 0)
	s.OpFlags = flags
}

// PrepFallocate prepares fallocate(fd, mode, off, length).
func (s *SQE) PrepFallocate(fd int, mode uint32, off, length uint64) {
	s.prepRW(OpFallocate, fd, nil, mode, off)
	s.Addr = length
}

// PrepSplice prepares splice(fdIn, offIn, fdOut, offOut, nbytes, flags). An
// offset of -1 means "no offset" (required for pipes). With SpliceFdInFixed
// in flags, fdIn is a registered file index.
func (s *SQE) PrepSplice(fdIn int, offIn int64, fdOut int, offOut int64, nbytes, flags uint32) {
	s.prepRW(OpSplice, fdOut, nil, nbytes, uint64(offOut))
	s.Addr = uint64(offIn)
	s.FileIndex = uint32(fdIn)
	s.OpFlags = flags
}

// PrepCopyFileRange prepares copy_file_range(fdIn, offIn, fdOut, offOut,
// nbytes, 0) (OpCopyFileRange, from our kernel series). It takes splice's
// layout: an offset of -1 means the file's position, and with
// SpliceFdInFixed in flags, fdIn is a registered file index. The result is
// the bytes copied, which may be fewer than nbytes.
//
// With CopyKeepHoles in flags (both offsets given) the destination gets
// the source's holes, as a sparse-aware cp gives them: only data is copied,
// the destination's old data across a source hole is punched out (zeroed
// where the filesystem cannot punch), and a range that ends in a hole past
// the destination's end extends it. The result is the length of the range
// up to the source's end, or an error: a copy failing part way, having
// changed part of the destination, fails as a whole.
func (s *SQE) PrepCopyFileRange(fdIn int, offIn int64, fdOut int, offOut int64, nbytes, flags uint32) {
	s.PrepSplice(fdIn, offIn, fdOut, offOut, nbytes, flags)
	s.Opcode = OpCopyFileRange
}

// PrepBPF prepares an OpBPF request (from our kernel series): the program
// gets off as is and may read and write buf, which must lie inside
// registered buffer bufIndex. The result is what the program returns.
func (s *SQE) PrepBPF(buf []byte, bufIndex uint16, off uint64) {
	s.prepRW(OpBPF, -1, bufAddr(buf), uint32(len(buf)), off)
	s.BufIndex = bufIndex
	s.OpFlags = BPFFixedBuffer
}

// PrepFutimens prepares futimens(fd, times) (OpFutimens, from our kernel
// series): times are the access and the modification time, UTIME_NOW and
// UTIME_OMIT as for utimensat(2); nil sets both to now. The kernel reads
// them when the SQE is submitted.
func (s *SQE) PrepFutimens(fd int, times *[2]unix.Timespec) {
	s.prepRW(OpFutimens, fd, unsafe.Pointer(times), 0, 0)
}

// PrepTee prepares tee(fdIn, fdOut, nbytes, flags) between two pipes.
func (s *SQE) PrepTee(fdIn, fdOut int, nbytes, flags uint32) {
	s.prepRW(OpTee, fdOut, nil, nbytes, 0)
	s.FileIndex = uint32(fdIn)
	s.OpFlags = flags
}

// PrepOpenat prepares openat(dfd, path, flags, mode); path is a
// NUL-terminated string (unix.BytePtrFromString).
func (s *SQE) PrepOpenat(dfd int, path *byte, flags int, mode uint32) {
	s.prepRW(OpOpenat, dfd, unsafe.Pointer(path), mode, 0)
	s.OpFlags = uint32(flags)
}

// PrepOpenat2 prepares openat2(dfd, path, how).
func (s *SQE) PrepOpenat2(dfd int, path *byte, how *unix.OpenHow) {
	s.prepRW(OpOpenat2, dfd, unsafe.Pointer(path), uint32(unsafe.Sizeof(*how)), uint64(uintptr(unsafe.Pointer(how))))
}

// PrepClose prepares close(fd).
func (s *SQE) PrepClose(fd int) { s.prepRW(OpClose, fd, nil, 0, 0) }

// PrepStatx prepares statx(dfd, path, flags, mask, stat); stat is written
// at completion.
func (s *SQE) PrepStatx(dfd int, path *byte, flags int, mask uint32, stat *unix.Statx_t) {
	s.prepRW(OpStatx, dfd, unsafe.Pointer(path), mask, uint64(uintptr(unsafe.Pointer(stat))))
	s.OpFlags = uint32(flags)
}

// PrepUnlinkat prepares unlinkat(dfd, path, flags).
func (s *SQE) PrepUnlinkat(dfd int, path *byte, flags int) {
	s.prepRW(OpUnlinkat, dfd, unsafe.Pointer(path), 0, 0)
	s.OpFlags = uint32(flags)
}

// PrepRenameat prepares renameat2(oldDfd, oldPath, newDfd, newPath, flags).
func (s *SQE) PrepRenameat(oldDfd int, oldPath *byte, newDfd int, newPath *byte, flags uint32) {
	s.prepRW(OpRenameat, oldDfd, unsafe.Pointer(oldPath), uint32(newDfd), uint64(uintptr(unsafe.Pointer(newPath))))
	s.OpFlags = flags
}

// PrepMkdirat prepares mkdirat(dfd, path, mode).
func (s *SQE) PrepMkdirat(dfd int, path *byte, mode uint32) {
	s.prepRW(OpMkdirat, dfd, unsafe.Pointer(path), mode, 0)
}

// PrepLinkat prepares linkat(oldDfd, oldPath, newDfd, newPath, flags).
func (s *SQE) PrepLinkat(oldDfd int, oldPath *byte, newDfd int, newPath *byte, flags int) {
	s.prepRW(OpLinkat, oldDfd, unsafe.Pointer(oldPath), uint32(newDfd), uint64(uintptr(unsafe.Pointer(newPath))))
	s.OpFlags = uint32(flags)
}

// PrepSymlinkat prepares symlinkat(target, newDfd, linkPath).
func (s *SQE) PrepSymlinkat(target *byte, newDfd int, linkPath *byte) {
	s.prepRW(OpSymlinkat, newDfd, unsafe.Pointer(target), 0, uint64(uintptr(unsafe.Pointer(linkPath))))
}

// PrepFtruncate prepares ftruncate(fd, length) (6.9+).
func (s *SQE) PrepFtruncate(fd int, length int64) {
	s.prepRW(OpFtruncate, fd, nil, 0, uint64(length))
}

// PrepUringCmd prepares a driver command cmdOp on fd (IORING_OP_URING_CMD).
// Fill the payload through Cmd; on an SQE128 ring it has 80 bytes.
func (s *SQE) PrepUringCmd(cmdOp uint32, fd int) {
	s.prepRW(OpUringCmd, fd, nil, 0, 0)
	s.SetCmdOp(cmdOp)
}

// PrepTimeout prepares a timeout that completes with -ETIME after ts, or
// with 0 once count other completions were posted (count 0: time only).
// flags: TimeoutAbs, TimeoutBoottime, TimeoutRealtime, ...
func (s *SQE) PrepTimeout(ts *Timespec, count, flags uint32) {
	s.prepRW(OpTimeout, -1, unsafe.Pointer(ts), 1, uint64(count))
	s.OpFlags = flags
}

// PrepLinkTimeout bounds the previous SQE in a link chain (which must have
// SQEIOLink): if it has not completed after ts it is cancelled.
func (s *SQE) PrepLinkTimeout(ts *Timespec, flags uint32) {
	s.prepRW(OpLinkTimeout, -1, unsafe.Pointer(ts), 1, 0)
	s.OpFlags = flags
}

// PrepCancel prepares cancellation of the request with the given user
// data; flags AsyncCancelAll, AsyncCancelAny, ...
func (s *SQE) PrepCancel(userData uint64, flags uint32) {
	s.prepRW(OpAsyncCancel, -1, nil, 0, 0)
	s.Addr = userData
	s.OpFlags = flags
}

// PrepCancelFd prepares cancellation of requests on fd.
func (s *SQE) PrepCancelFd(fd int, flags uint32) {
	s.prepRW(OpAsyncCancel, fd, nil, 0, 0)
	s.OpFlags = flags | AsyncCancelFd
}

// PrepFilesUpdate replaces registered files starting at slot off with fds
// (which must stay valid until completion).
func (s *SQE) PrepFilesUpdate(fds []int32, off uint32) {
	s.prepRW(OpFilesUpdate, -1, unsafe.Pointer(unsafe.SliceData(fds)), uint32(len(fds)), uint64(off))
}

// PrepMsgRing posts a CQE with res and userData on the ring ringFd.
func (s *SQE) PrepMsgRing(ringFd int, res uint32, userData uint64, flags uint32) {
	s.prepRW(OpMsgRing, ringFd, nil, res, userData)
	s.OpFlags = flags
}
