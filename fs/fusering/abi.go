package fusering

import (
	"encoding/binary"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The FUSE-over-io_uring uapi (include/uapi/linux/fuse.h, Linux 6.14+;
// the buffer pool and zero-copy parts are protocol 7.46, Linux 7.3, checked
// against Debian's linux-source-7.3 7.3.4). Every entry the daemon registers
// owns a header buffer laid out as struct fuse_uring_req_header and a
// payload buffer; the kernel writes a request into them and completes the
// entry's REGISTER or COMMIT_AND_FETCH command, and reads the reply back
// from the same buffers when the next COMMIT_AND_FETCH arrives.

// Commands, the cmd_op of an IORING_OP_URING_CMD on the /dev/fuse fd
// (enum fuse_uring_cmd).
const (
	cmdRegister       = 1 // FUSE_IO_URING_CMD_REGISTER: hand an entry to the kernel
	cmdCommitAndFetch = 2 // FUSE_IO_URING_CMD_COMMIT_AND_FETCH: reply, then wait for the next request
	cmdAddQueue       = 3 // FUSE_IO_URING_CMD_ADD_QUEUE (7.3): create a queue with options
	cmdAddBufpool     = 4 // FUSE_IO_URING_CMD_ADD_BUFPOOL (7.3): give a queue its payload pool
)

const (
	// queueZeroCopy is FUSE_URING_ZERO_COPY, an ADD_QUEUE flag: READ and
	// WRITE pages of files opened with fopenZeroCopy are registered in
	// the entry's fixed-buffer slot instead of being copied.
	queueZeroCopy = 1 << 0
	// entZeroCopy is FUSE_URING_ENT_ZERO_COPY in fuse_uring_ent_in_out.flags:
	// this request's data lives in the entry's fixed-buffer slot.
	entZeroCopy = 1 << 0
	// fopenZeroCopy is FOPEN_IO_URING_ZERO_COPY in fuse_open_out.open_flags.
	fopenZeroCopy = 1 << 8
)

// Sizes of struct fuse_uring_req_header and its parts.
const (
	inOutSize    = 128 // in_out: fuse_in_header on fetch, fuse_out_header on commit
	opInSize     = 128 // op_in: the opcode's fixed argument (in_args[0])
	entInOutSize = 32  // ring_ent_in_out
	headerSize   = inOutSize + opInSize + entInOutSize

	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
)

// entInOut is struct fuse_uring_ent_in_out, written by the kernel with
// each request and read back (payload_sz) at commit.
type entInOut struct {
	Flags     uint64 // entZeroCopy
	CommitID  uint64 // the request's unique, echoed in the commit
	PayloadSz uint32 // bytes in the payload buffer (request, then reply)
	Offset    uint32 // 7.3 buffer pools: payload offset within the pool
	Reserved  uint64
}

// reqHeader is one entry's struct fuse_uring_req_header.
type reqHeader struct {
	InOut [inOutSize]byte
	OpIn  [opInSize]byte
	Ent   entInOut
}

func init() {
	if unsafe.Sizeof(reqHeader{}) != headerSize || unsafe.Sizeof(entInOut{}) != entInOutSize {
		panic("fusering: fuse_uring_req_header layout mismatch")
	}
}

// inHeader returns the request's fuse_in_header.
func (h *reqHeader) inHeader() *fuse.InHeader {
	return (*fuse.InHeader)(unsafe.Pointer(&h.InOut[0]))
}

// outHeader returns the reply's fuse_out_header, which overwrites the
// request's fuse_in_header.
func (h *reqHeader) outHeader() *fuse.OutHeader {
	return (*fuse.OutHeader)(unsafe.Pointer(&h.InOut[0]))
}

// cmdReq is struct fuse_uring_cmd_req, the first bytes of an SQE128's
// 80-byte command area:
//
//	 0 flags      u64   ADD_QUEUE: queueZeroCopy
//	 8 commit_id  u64   COMMIT_AND_FETCH: the request's unique
//	16 qid        u16
//	18 padding    [6]u8
//	24 union (7.3): bufpool {uaddr u64, len u32, reserved u32} for
//	   ADD_BUFPOOL, or ent_zero_copy_buf_index u16 for REGISTER
type cmdReq struct {
	flags    uint64
	commitID uint64
	qid      uint16
	// bufpoolAddr/bufpoolLen are ADD_BUFPOOL's pool; zeroCopySlot is
	// REGISTER's ent_zero_copy_buf_index (the same bytes, never both).
	bufpoolAddr  uint64
	bufpoolLen   uint32
	zeroCopySlot uint16
}

// encode writes c into an SQE command area, which GetSQE zeroed.
func (c *cmdReq) encode(cmd *[80]byte) {
	le := binary.NativeEndian
	le.PutUint64(cmd[0:], c.flags)
	le.PutUint64(cmd[8:], c.commitID)
	le.PutUint16(cmd[16:], c.qid)
	if c.bufpoolAddr != 0 {
		le.PutUint64(cmd[24:], c.bufpoolAddr)
		le.PutUint32(cmd[32:], c.bufpoolLen)
	} else {
		le.PutUint16(cmd[24:], c.zeroCopySlot)
	}
}
