package uring

import "fmt"

// Op is an SQE opcode (enum io_uring_op in the uapi header).
type Op uint8

// Opcodes in uapi order; OpLast is one past the newest opcode this package knows.
const (
	OpNop Op = iota
	OpReadv
	OpWritev
	OpFsync
	OpReadFixed
	OpWriteFixed
	OpPollAdd
	OpPollRemove
	OpSyncFileRange
	OpSendmsg
	OpRecvmsg
	OpTimeout
	OpTimeoutRemove
	OpAccept
	OpAsyncCancel
	OpLinkTimeout
	OpConnect
	OpFallocate
	OpOpenat
	OpClose
	OpFilesUpdate
	OpStatx
	OpRead
	OpWrite
	OpFadvise
	OpMadvise
	OpSend
	OpRecv
	OpOpenat2
	OpEpollCtl
	OpSplice
	OpProvideBuffers
	OpRemoveBuffers
	OpTee
	OpShutdown
	OpRenameat
	OpUnlinkat
	OpMkdirat
	OpSymlinkat
	OpLinkat
	OpMsgRing
	OpFsetxattr
	OpSetxattr
	OpFgetxattr
	OpGetxattr
	OpSocket
	OpUringCmd
	OpSendZC
	OpSendmsgZC
	OpReadMultishot
	OpWaitid
	OpFutexWait
	OpFutexWake
	OpFutexWaitv
	OpFixedFdInstall
	OpFtruncate
	OpBind
	OpListen
	OpRecvZC
	OpEpollWait
	OpReadvFixed
	OpWritevFixed
	OpPipe
	OpNop128
	OpUringCmd128
	// OpCopyFileRange is copy_file_range(2) as a request. It is not
	// upstream: bpfusefs's kernel series (kernel/patches/) adds it after
	// 7.3's last opcode, so a kernel lists it only when it carries the series.
	OpCopyFileRange
	// OpBPF runs the handle_req program of the ring's attached bpf-ops
	// (also from the series, numbered after OpCopyFileRange).
	OpBPF
	// OpFutimens is futimens(3) as a request (also from the series, after
	// OpBPF).
	OpFutimens
	OpLast
)

var opNames = [...]string{
	OpNop:            "NOP",
	OpReadv:          "READV",
	OpWritev:         "WRITEV",
	OpFsync:          "FSYNC",
	OpReadFixed:      "READ_FIXED",
	OpWriteFixed:     "WRITE_FIXED",
	OpPollAdd:        "POLL_ADD",
	OpPollRemove:     "POLL_REMOVE",
	OpSyncFileRange:  "SYNC_FILE_RANGE",
	OpSendmsg:        "SENDMSG",
	OpRecvmsg:        "RECVMSG",
	OpTimeout:        "TIMEOUT",
	OpTimeoutRemove:  "TIMEOUT_REMOVE",
	OpAccept:         "ACCEPT",
	OpAsyncCancel:    "ASYNC_CANCEL",
	OpLinkTimeout:    "LINK_TIMEOUT",
	OpConnect:        "CONNECT",
	OpFallocate:      "FALLOCATE",
	OpOpenat:         "OPENAT",
	OpClose:          "CLOSE",
	OpFilesUpdate:    "FILES_UPDATE",
	OpStatx:          "STATX",
	OpRead:           "READ",
	OpWrite:          "WRITE",
	OpFadvise:        "FADVISE",
	OpMadvise:        "MADVISE",
	OpSend:           "SEND",
	OpRecv:           "RECV",
	OpOpenat2:        "OPENAT2",
	OpEpollCtl:       "EPOLL_CTL",
	OpSplice:         "SPLICE",
	OpProvideBuffers: "PROVIDE_BUFFERS",
	OpRemoveBuffers:  "REMOVE_BUFFERS",
	OpTee:            "TEE",
	OpShutdown:       "SHUTDOWN",
	OpRenameat:       "RENAMEAT",
	OpUnlinkat:       "UNLINKAT",
	OpMkdirat:        "MKDIRAT",
	OpSymlinkat:      "SYMLINKAT",
	OpLinkat:         "LINKAT",
	OpMsgRing:        "MSG_RING",
	OpFsetxattr:      "FSETXATTR",
	OpSetxattr:       "SETXATTR",
	OpFgetxattr:      "FGETXATTR",
	OpGetxattr:       "GETXATTR",
	OpSocket:         "SOCKET",
	OpUringCmd:       "URING_CMD",
	OpSendZC:         "SEND_ZC",
	OpSendmsgZC:      "SENDMSG_ZC",
	OpReadMultishot:  "READ_MULTISHOT",
	OpWaitid:         "WAITID",
	OpFutexWait:      "FUTEX_WAIT",
	OpFutexWake:      "FUTEX_WAKE",
	OpFutexWaitv:     "FUTEX_WAITV",
	OpFixedFdInstall: "FIXED_FD_INSTALL",
	OpFtruncate:      "FTRUNCATE",
	OpBind:           "BIND",
	OpListen:         "LISTEN",
	OpRecvZC:         "RECV_ZC",
	OpEpollWait:      "EPOLL_WAIT",
	OpReadvFixed:     "READV_FIXED",
	OpWritevFixed:    "WRITEV_FIXED",
	OpPipe:           "PIPE",
	OpNop128:         "NOP128",
	OpUringCmd128:    "URING_CMD128",
	OpCopyFileRange:  "COPY_FILE_RANGE",
	OpBPF:            "BPF",
	OpFutimens:       "FUTIMENS",
}

// String returns the uapi name without its IORING_OP_ prefix, e.g. "READ_FIXED".
func (op Op) String() string {
	if int(op) < len(opNames) {
		return opNames[op]
	}
	return fmt.Sprintf("OP_%d", uint8(op))
}

// RegisterOp is an io_uring_register(2) opcode (enum io_uring_register_op).
type RegisterOp uint32

// Register opcodes in uapi order; RegisterLast is one past the newest this package knows.
const (
	RegisterBuffers RegisterOp = iota
	UnregisterBuffers
	RegisterFiles
	UnregisterFiles
	RegisterEventfd
	UnregisterEventfd
	RegisterFilesUpdate
	RegisterEventfdAsync
	RegisterProbe
	RegisterPersonality
	UnregisterPersonality
	RegisterRestrictions
	RegisterEnableRings
	RegisterFiles2
	RegisterFilesUpdate2
	RegisterBuffers2
	RegisterBuffersUpdate
	RegisterIOWQAff
	UnregisterIOWQAff
	RegisterIOWQMaxWorkers
	RegisterRingFds
	UnregisterRingFds
	RegisterPBufRing
	UnregisterPBufRing
	RegisterSyncCancel
	RegisterFileAllocRange
	RegisterPBufStatus
	RegisterNAPI
	UnregisterNAPI
	RegisterClock
	RegisterCloneBuffers
	RegisterSendMsgRing
	RegisterZCRXIFQ
	RegisterResizeRings
	RegisterMemRegion
	RegisterQuery
	RegisterZCRXCtrl
	RegisterBPFFilter
	// RegisterCQ adds an extra completion queue (Ring.RegisterCQ). It is
	// not upstream: bpfusefs's kernel series (kernel/patches/) adds it.
	RegisterCQ
	RegisterLast

	// RegisterUseRegisteredRing is or-ed into the opcode when fd is a registered ring index.
	RegisterUseRegisteredRing RegisterOp = 1 << 31
)

var registerOpNames = [...]string{
	RegisterBuffers:        "REGISTER_BUFFERS",
	UnregisterBuffers:      "UNREGISTER_BUFFERS",
	RegisterFiles:          "REGISTER_FILES",
	UnregisterFiles:        "UNREGISTER_FILES",
	RegisterEventfd:        "REGISTER_EVENTFD",
	UnregisterEventfd:      "UNREGISTER_EVENTFD",
	RegisterFilesUpdate:    "REGISTER_FILES_UPDATE",
	RegisterEventfdAsync:   "REGISTER_EVENTFD_ASYNC",
	RegisterProbe:          "REGISTER_PROBE",
	RegisterPersonality:    "REGISTER_PERSONALITY",
	UnregisterPersonality:  "UNREGISTER_PERSONALITY",
	RegisterRestrictions:   "REGISTER_RESTRICTIONS",
	RegisterEnableRings:    "REGISTER_ENABLE_RINGS",
	RegisterFiles2:         "REGISTER_FILES2",
	RegisterFilesUpdate2:   "REGISTER_FILES_UPDATE2",
	RegisterBuffers2:       "REGISTER_BUFFERS2",
	RegisterBuffersUpdate:  "REGISTER_BUFFERS_UPDATE",
	RegisterIOWQAff:        "REGISTER_IOWQ_AFF",
	UnregisterIOWQAff:      "UNREGISTER_IOWQ_AFF",
	RegisterIOWQMaxWorkers: "REGISTER_IOWQ_MAX_WORKERS",
	RegisterRingFds:        "REGISTER_RING_FDS",
	UnregisterRingFds:      "UNREGISTER_RING_FDS",
	RegisterPBufRing:       "REGISTER_PBUF_RING",
	UnregisterPBufRing:     "UNREGISTER_PBUF_RING",
	RegisterSyncCancel:     "REGISTER_SYNC_CANCEL",
	RegisterFileAllocRange: "REGISTER_FILE_ALLOC_RANGE",
	RegisterPBufStatus:     "REGISTER_PBUF_STATUS",
	RegisterNAPI:           "REGISTER_NAPI",
	UnregisterNAPI:         "UNREGISTER_NAPI",
	RegisterClock:          "REGISTER_CLOCK",
	RegisterCloneBuffers:   "REGISTER_CLONE_BUFFERS",
	RegisterSendMsgRing:    "REGISTER_SEND_MSG_RING",
	RegisterZCRXIFQ:        "REGISTER_ZCRX_IFQ",
	RegisterResizeRings:    "REGISTER_RESIZE_RINGS",
	RegisterMemRegion:      "REGISTER_MEM_REGION",
	RegisterQuery:          "REGISTER_QUERY",
	RegisterZCRXCtrl:       "REGISTER_ZCRX_CTRL",
	RegisterBPFFilter:      "REGISTER_BPF_FILTER",
	RegisterCQ:             "REGISTER_CQ",
}

// String returns the uapi name without its IORING_ prefix, e.g. "REGISTER_PROBE".
func (op RegisterOp) String() string {
	if int(op) < len(registerOpNames) {
		return registerOpNames[op]
	}
	return fmt.Sprintf("REGISTER_OP_%d", uint32(op))
}
