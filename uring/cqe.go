package uring

import (
	"syscall"
	"unsafe"
)

// CQE is a completion queue entry, laid out as struct io_uring_cqe.
type CQE struct {
	UserData uint64 // the SQE's UserData
	Res      int32  // result: >= 0 on success, -errno on failure
	Flags    uint32 // CQEF* flags
}

// Err returns the failure of the request as a syscall.Errno, or nil.
func (c *CQE) Err() error {
	if c.Res < 0 {
		return syscall.Errno(-c.Res)
	}
	return nil
}

// Big returns the 16 extra bytes of a 32-byte CQE (big_cqe[]). Only valid
// on a ring set up with SetupCQE32.
func (c *CQE) Big() *[2]uint64 {
	return (*[2]uint64)(unsafe.Add(unsafe.Pointer(c), cqeSize))
}

// BufferID returns the provided buffer a CQEFBuffer completion used.
func (c *CQE) BufferID() (uint16, bool) {
	return uint16(c.Flags >> CQEBufferShift), c.Flags&CQEFBuffer != 0
}
