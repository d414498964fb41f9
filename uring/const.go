package uring

// Constants from include/uapi/linux/io_uring.h (Linux 7.3). Names follow the
// C macros with the IORING_/IOSQE_ prefixes turned into Go-style prefixes.

// Setup flags for Options.Flags (IORING_SETUP_*).
const (
	SetupIOPoll           uint32 = 1 << 0  // busy-poll for I/O completion
	SetupSQPoll           uint32 = 1 << 1  // kernel thread polls the SQ
	SetupSQAff            uint32 = 1 << 2  // Options.SQThreadCPU is valid
	SetupCQSize           uint32 = 1 << 3  // Options.CQEntries is valid
	SetupClamp            uint32 = 1 << 4  // clamp ring sizes to the maximum
	SetupAttachWQ         uint32 = 1 << 5  // share the io-wq of Options.WQFd
	SetupRDisabled        uint32 = 1 << 6  // start disabled; see Ring.Enable
	SetupSubmitAll        uint32 = 1 << 7  // keep submitting after a failing SQE
	SetupCoopTaskrun      uint32 = 1 << 8  // no IPI to run completion task work
	SetupTaskrunFlag      uint32 = 1 << 9  // report pending task work in SQ flags
	SetupSQE128           uint32 = 1 << 10 // 128-byte SQEs (80-byte command area)
	SetupCQE32            uint32 = 1 << 11 // 32-byte CQEs
	SetupSingleIssuer     uint32 = 1 << 12 // only one task submits
	SetupDeferTaskrun     uint32 = 1 << 13 // run task work only when waiting
	SetupNoMmap           uint32 = 1 << 14 // application provides ring memory
	SetupRegisteredFdOnly uint32 = 1 << 15 // return a registered ring index only
	SetupNoSQArray        uint32 = 1 << 16 // no SQ index array
	SetupHybridIOPoll     uint32 = 1 << 17 // hybrid polling for IOPOLL
	SetupCQEMixed         uint32 = 1 << 18 // 16- and 32-byte CQEs in one ring
	SetupSQEMixed         uint32 = 1 << 19 // 64- and 128-byte SQEs in one ring
	SetupSQRewind         uint32 = 1 << 20 // kernel takes SQEs from index 0 on every enter
)

// SQE flags (IOSQE_*), see SQE.SetFlags.
const (
	SQEFixedFile      uint8 = 1 << 0 // Fd is an index into the registered file table
	SQEIODrain        uint8 = 1 << 1 // issue after all earlier requests completed
	SQEIOLink         uint8 = 1 << 2 // the next SQE starts when this one succeeded
	SQEIOHardlink     uint8 = 1 << 3 // like SQEIOLink, but the chain survives failure
	SQEAsync          uint8 = 1 << 4 // always issue from an io-wq worker
	SQEBufferSelect   uint8 = 1 << 5 // pick a provided buffer from group BufIndex
	SQECQESkipSuccess uint8 = 1 << 6 // post no CQE when the request succeeds
)

// io_uring_enter(2) flags (IORING_ENTER_*).
const (
	EnterGetEvents      uint32 = 1 << 0
	EnterSQWakeup       uint32 = 1 << 1
	EnterSQWait         uint32 = 1 << 2
	EnterExtArg         uint32 = 1 << 3
	EnterRegisteredRing uint32 = 1 << 4
	EnterAbsTimer       uint32 = 1 << 5
	EnterExtArgReg      uint32 = 1 << 6
	EnterNoIOWait       uint32 = 1 << 7
	// EnterCQShift places an extra CQ's ID in the flags: GetEvents then
	// waits on that CQ (kernel series, see ExtraCQ.Wait).
	EnterCQShift = 24
)

// SQ ring flags (IORING_SQ_*), see Ring.SQFlags.
const (
	SQNeedWakeup uint32 = 1 << 0 // the SQPOLL thread sleeps
	SQCQOverflow uint32 = 1 << 1 // completions wait in the overflow list
	SQTaskrun    uint32 = 1 << 2 // task work needs a kernel entry
)

// CQE flags (IORING_CQE_F_*).
const (
	CQEFBuffer       uint32 = 1 << 0
	CQEFMore         uint32 = 1 << 1
	CQEFSockNonempty uint32 = 1 << 2
	CQEFNotif        uint32 = 1 << 3
	CQEFBufMore      uint32 = 1 << 4
	CQEFSkip         uint32 = 1 << 5
	CQEF32           uint32 = 1 << 15
	CQEBufferShift          = 16
)

// Ring features reported by the kernel at setup (IORING_FEAT_*).
const (
	FeatSingleMmap     uint32 = 1 << 0
	FeatNoDrop         uint32 = 1 << 1
	FeatSubmitStable   uint32 = 1 << 2
	FeatRWCurPos       uint32 = 1 << 3
	FeatCurPersonality uint32 = 1 << 4
	FeatFastPoll       uint32 = 1 << 5
	FeatPoll32Bits     uint32 = 1 << 6
	FeatSQPollNonfixed uint32 = 1 << 7
	FeatExtArg         uint32 = 1 << 8
	FeatNativeWorkers  uint32 = 1 << 9
	FeatRsrcTags       uint32 = 1 << 10
	FeatCQESkip        uint32 = 1 << 11
	FeatLinkedFile     uint32 = 1 << 12
	FeatRegRegRing     uint32 = 1 << 13
	FeatRecvSendBundle uint32 = 1 << 14
	FeatMinTimeout     uint32 = 1 << 15
	FeatRWAttr         uint32 = 1 << 16
	FeatNoIOWait       uint32 = 1 << 17
)

// Per-opcode flag values.
const (
	FsyncDatasync uint32 = 1 << 0 // IORING_FSYNC_DATASYNC

	TimeoutAbs          uint32 = 1 << 0 // IORING_TIMEOUT_ABS
	TimeoutUpdate       uint32 = 1 << 1
	TimeoutBoottime     uint32 = 1 << 2
	TimeoutRealtime     uint32 = 1 << 3
	LinkTimeoutUpdate   uint32 = 1 << 4
	TimeoutETimeSuccess uint32 = 1 << 5
	TimeoutMultishot    uint32 = 1 << 6

	AsyncCancelAll      uint32 = 1 << 0 // IORING_ASYNC_CANCEL_ALL
	AsyncCancelFd       uint32 = 1 << 1
	AsyncCancelAny      uint32 = 1 << 2
	AsyncCancelFdFixed  uint32 = 1 << 3
	AsyncCancelUserdata uint32 = 1 << 4
	AsyncCancelOp       uint32 = 1 << 5

	NopInjectResult uint32 = 1 << 0 // IORING_NOP_INJECT_RESULT: complete with SQE.Len as res
	NopCQE32        uint32 = 1 << 5 // IORING_NOP_CQE32: big CQE carrying SQE.Off and SQE.Addr

	UringCmdFixed uint32 = 1 << 0 // IORING_URING_CMD_FIXED

	SpliceFdInFixed uint32 = 1 << 31 // SPLICE_F_FD_IN_FIXED
	BPFFixedBuffer  uint32 = 1 << 0  // IORING_BPF_FIXED_BUFFER (OpBPF; our kernel series)
	// CopyKeepHoles makes OpCopyFileRange keep the source's holes
	// (IORING_COPY_KEEP_HOLES; our kernel series): see PrepCopyFileRange.
	CopyKeepHoles uint32 = 1 << 30

	// FileIndexAlloc lets openat/openat2 with a direct descriptor pick a free
	// slot (IORING_FILE_INDEX_ALLOC).
	FileIndexAlloc uint32 = ^uint32(0)
	// RegisterFilesSkip leaves a slot unchanged in UpdateFiles.
	RegisterFilesSkip int32 = -2
)

// Mmap offsets of the ring regions.
const (
	offSQRing      = 0
	offCQRing      = 0x8000000
	offSQEs        = 0x10000000
	offParamRegion = 0x20000000 // IORING_MAP_OFF_PARAM_REGION (io_uring/memmap.h)
)

const (
	sqeSize     = 64
	cqeSize     = 16
	rsrcSparse  = 1 << 0 // IORING_RSRC_REGISTER_SPARSE
	opSupported = 1 << 0 // IO_URING_OP_SUPPORTED
)
