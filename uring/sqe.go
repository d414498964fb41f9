package uring

import (
	"time"
	"unsafe"
)

// SQE is a submission queue entry, laid out as struct io_uring_sqe. Fields
// shared by several unions in C carry the name of their most common use;
// the prep methods fill them the way liburing does. An SQE returned by
// Ring.GetSQE is zeroed; a prep method overwrites all 64 bytes, so call
// SetFlags and SetUserData after it.
type SQE struct {
	Opcode      Op
	Flags       uint8  // SQE* flags
	IoPrio      uint16 // ioprio, or per-opcode flags (accept, send, recv)
	Fd          int32  // file descriptor, or registered index with SQEFixedFile
	Off         uint64 // file offset; addr2; cmd_op in the low 32 bits for uring_cmd
	Addr        uint64 // buffer, iovec array or path; splice_off_in
	Len         uint32 // buffer length or iovec count
	OpFlags     uint32 // rw_flags, fsync_flags, open_flags, timeout_flags, ...
	UserData    uint64 // returned unchanged in the CQE
	BufIndex    uint16 // registered buffer index, or buffer group
	Personality uint16
	FileIndex   uint32 // splice_fd_in, or direct descriptor slot + 1
	Addr3       uint64
	pad2        uint64
}

func init() {
	if unsafe.Sizeof(SQE{}) != sqeSize {
		panic("uring: SQE layout does not match struct io_uring_sqe")
	}
}

// SetFlags sets the SQE* flags (replacing earlier ones).
func (s *SQE) SetFlags(flags uint8) { s.Flags = flags }

// SetUserData sets the value returned in the CQE of this request.
func (s *SQE) SetUserData(v uint64) { s.UserData = v }

// SetCmdOp sets the command of an IORING_OP_URING_CMD request.
func (s *SQE) SetCmdOp(op uint32) {
	s.Off = uint64(op)
}

// CmdOp returns the command of an IORING_OP_URING_CMD request.
func (s *SQE) CmdOp() uint32 { return uint32(s.Off) }

// Cmd returns the command area of a uring_cmd SQE (struct io_uring_sqe's
// cmd[]), which starts at byte 48. Only the first 16 bytes exist in a
// 64-byte SQE; the whole 80 bytes are valid only on a ring set up with
// SetupSQE128.
func (s *SQE) Cmd() *[80]byte {
	return (*[80]byte)(unsafe.Pointer(&s.Addr3))
}

// Timespec mirrors struct __kernel_timespec, which is 64-bit on every
// architecture (unlike unix.Timespec on 32-bit ones).
type Timespec struct {
	Sec  int64
	Nsec int64
}

// DurationTimespec converts d for PrepTimeout, PrepLinkTimeout and RegWait.
func DurationTimespec(d time.Duration) Timespec {
	return Timespec{Sec: int64(d / time.Second), Nsec: int64(d % time.Second)}
}
