package fs

import (
	"strconv"
	"sync/atomic"
)

// Stats is a snapshot of a mount's counters. The JSON names are a contract
// with `bpfusefs stats --json` and its users: add fields, never rename.
type Stats struct {
	// Accel lists the data paths this mount may use.
	Accel []string `json:"accel"`
	// Ops counts requests by FUSE opcode name (LOOKUP, READ...).
	Ops map[string]uint64 `json:"ops"`
	// Paths counts requests by the path that served their data: syscall,
	// engine, passthrough (opens handed to the kernel), fusering (requests
	// that arrived by ring), zero_copy (READ and WRITE the ring transport
	// served with READ_FIXED/WRITE_FIXED, never reaching the daemon's
	// memory), bpf.
	Paths map[string]uint64 `json:"paths"`
	// BytesRead and BytesWritten count file data served by the daemon;
	// passthrough I/O never reaches the daemon and is not counted.
	BytesRead    uint64 `json:"bytes_read"`
	BytesWritten uint64 `json:"bytes_written"`
	// Errors counts failed data operations on backing files (read, write,
	// fsync, fallocate, copy_file_range), not ordinary lookup misses.
	Errors uint64 `json:"errors"`
	// Transport counts the requests of a FUSE-over-io_uring mount by how
	// they arrived: "ring" completions, or read from "dev" (/dev/fuse:
	// INIT, interrupts, forgets, requests before the rings were ready).
	// Empty for a mount served from /dev/fuse alone.
	Transport map[string]uint64 `json:"transport,omitempty"`
	// Copies counts the backing copies COPY_FILE_RANGE made, by method:
	// copy_file_range, splice, readwrite (see copyData).
	Copies map[string]uint64 `json:"copies"`
	// BPFFallbacks counts requests the BPF loop handed back to the
	// daemon after their backing I/O failed or fell short (their files
	// are served by the daemon from then on), and mirrored FSYNCs whose
	// outcomes it handed over to be settled.
	BPFFallbacks uint64 `json:"bpf_fallbacks,omitempty"`
	// BPFOwnCQ counts the backing completions the BPF loop reaped from a
	// CQ of its own (the kernel series' extra CQs; 0 elsewhere).
	BPFOwnCQ uint64 `json:"bpf_own_cq,omitempty"`
	// BPFZeroCopy counts the READs and WRITEs the BPF loop served on the
	// caller's pages (zero-copy queues, Linux 7.3+).
	BPFZeroCopy uint64 `json:"bpf_zero_copy,omitempty"`
	// BPFCopyBytes counts the bytes of the COPY_FILE_RANGEs the BPF loop
	// served (once, not per replica).
	BPFCopyBytes uint64         `json:"bpf_copy_bytes,omitempty"`
	Replicas     []ReplicaStats `json:"replicas"`
}

// ReplicaStats describes one backing directory.
type ReplicaStats struct {
	Path   string `json:"path"`
	State  string `json:"state"` // ReplicaOK or ReplicaDegraded
	Errors uint64 `json:"errors"`
	// Cause is the failure that degraded the replica.
	Cause string `json:"cause,omitempty"`
	// Leader is set for the replica that reads and attributes come from
	// (the first in service).
	Leader bool `json:"leader,omitempty"`
}

// Replica states.
const (
	ReplicaOK       = "ok"
	ReplicaDegraded = "degraded" // out of service for the rest of the mount
)

// Data paths, in the order Stats.Paths lists them.
const (
	pathSyscall = iota
	pathEngine
	pathPassthrough
	pathFusering
	pathZeroCopy
	pathBPF
	numPaths
)

var pathNames = [numPaths]string{"syscall", "engine", "passthrough", "fusering", "zero_copy", "bpf"}

// maxOpcode bounds the per-opcode array; FUSE opcodes are small integers
// (the highest in Linux 6.18 is FUSE_STATX = 52), CUSE_INIT (4096) is never
// seen by a filesystem.
const maxOpcode = 64

// opNames maps FUSE opcodes (include/uapi/linux/fuse.h) to the names
// `stats` prints.
var opNames = [maxOpcode]string{
	1: "LOOKUP", 2: "FORGET", 3: "GETATTR", 4: "SETATTR", 5: "READLINK",
	6: "SYMLINK", 8: "MKNOD", 9: "MKDIR", 10: "UNLINK", 11: "RMDIR",
	12: "RENAME", 13: "LINK", 14: "OPEN", 15: "READ", 16: "WRITE",
	17: "STATFS", 18: "RELEASE", 20: "FSYNC", 21: "SETXATTR", 22: "GETXATTR",
	23: "LISTXATTR", 24: "REMOVEXATTR", 25: "FLUSH", 26: "INIT", 27: "OPENDIR",
	28: "READDIR", 29: "RELEASEDIR", 30: "FSYNCDIR", 31: "GETLK", 32: "SETLK",
	33: "SETLKW", 34: "ACCESS", 35: "CREATE", 36: "INTERRUPT", 37: "BMAP",
	38: "DESTROY", 39: "IOCTL", 40: "POLL", 41: "NOTIFY_REPLY", 42: "BATCH_FORGET",
	43: "FALLOCATE", 44: "READDIRPLUS", 45: "RENAME2", 46: "LSEEK",
	47: "COPY_FILE_RANGE", 48: "SETUPMAPPING", 49: "REMOVEMAPPING",
	50: "SYNCFS", 51: "TMPFILE", 52: "STATX",
}

// Opcodes the daemon counts without an InHeader in hand.
const (
	opForget      = 2
	opBatchForget = 42
)

// counters are the live, lock-free statistics of a mount: every request
// bumps one array slot, so counting costs one atomic add.
type counters struct {
	ops          [maxOpcode]atomic.Uint64
	paths        [numPaths]atomic.Uint64
	bytesRead    atomic.Uint64
	bytesWritten atomic.Uint64
	errors       atomic.Uint64
	copies       [numCopies]atomic.Uint64
}

func (c *counters) op(opcode uint32) {
	if opcode < maxOpcode {
		c.ops[opcode].Add(1)
	}
}

func (c *counters) snapshot() Stats {
	s := Stats{
		Ops:          make(map[string]uint64),
		Paths:        make(map[string]uint64, numPaths),
		BytesRead:    c.bytesRead.Load(),
		BytesWritten: c.bytesWritten.Load(),
		Errors:       c.errors.Load(),
	}
	for code := range c.ops {
		n := c.ops[code].Load()
		if n == 0 {
			continue
		}
		name := opNames[code]
		if name == "" {
			name = "OPCODE_" + strconv.Itoa(code)
		}
		s.Ops[name] = n
	}
	for i, name := range pathNames {
		s.Paths[name] = c.paths[i].Load()
	}
	s.Copies = make(map[string]uint64, numCopies)
	for i, name := range copyNames {
		s.Copies[name] = c.copies[i].Load()
	}
	return s
}
