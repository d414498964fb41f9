package uring

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// probeHeader mirrors struct io_uring_probe; probeOp mirrors struct
// io_uring_probe_op.
type probeHeader struct {
	lastOp uint8
	opsLen uint8
	resv   uint16
	resv2  [3]uint32
}

type probeOp struct {
	op    uint8
	resv  uint8
	flags uint16
	resv2 uint32
}

// OpProbe is the answer of IORING_REGISTER_PROBE: which opcodes this kernel
// implements.
type OpProbe struct {
	LastOp Op // the newest opcode the kernel knows
	ops    [256]bool
}

// Supports reports whether the kernel implements op.
func (p *OpProbe) Supports(op Op) bool { return p.ops[op] }

// ProbeOps asks the kernel which opcodes it supports.
func (r *Ring) ProbeOps() (*OpProbe, error) {
	const maxOps = 256
	var buf struct {
		h   probeHeader
		ops [maxOps]probeOp
	}
	if _, err := register(r.fd, RegisterProbe, unsafe.Pointer(&buf), maxOps); err != nil {
		return nil, err
	}
	p := &OpProbe{LastOp: Op(buf.h.lastOp)}
	for _, o := range buf.ops[:buf.h.opsLen] {
		if o.flags&opSupported != 0 {
			p.ops[o.op] = true
		}
	}
	return p, nil
}

// Features describes what the running kernel's io_uring offers; doctor
// prints it and callers test for what they need.
type Features struct {
	Ring       uint32   // Feat* bits reported at setup
	SetupFlags uint32   // Setup* flags a ring can be created with
	Ops        *OpProbe // opcodes present
	// RegisterOps are the io_uring_register opcodes the kernel knows (all
	// below its IORING_REGISTER_LAST).
	RegisterOps RegisterOp
}

// HasSetup reports whether every flag in flags is accepted.
func (f *Features) HasSetup(flags uint32) bool { return f.SetupFlags&flags == flags }

// HasOp reports whether the kernel implements op.
func (f *Features) HasOp(op Op) bool { return f.Ops.Supports(op) }

// HasRegister reports whether the kernel knows the register opcode op.
func (f *Features) HasRegister(op RegisterOp) bool { return op < f.RegisterOps }

// setupProbes lists each setup flag with the companions it needs to be
// accepted on its own. NO_MMAP and REGISTERED_FD_ONLY need caller memory
// and are not probed; ATTACH_WQ needs another ring and is probed with one.
var setupProbes = []struct {
	flag, with uint32
}{
	{SetupIOPoll, 0},
	{SetupSQPoll, 0},
	{SetupSQAff, SetupSQPoll},
	{SetupCQSize, 0},
	{SetupClamp, 0},
	{SetupRDisabled, 0},
	{SetupSubmitAll, 0},
	{SetupCoopTaskrun, 0},
	{SetupTaskrunFlag, SetupCoopTaskrun},
	{SetupSQE128, 0},
	{SetupCQE32, 0},
	{SetupSingleIssuer, 0},
	{SetupDeferTaskrun, SetupSingleIssuer},
	{SetupNoSQArray, 0},
	{SetupHybridIOPoll, SetupIOPoll},
	{SetupCQEMixed, 0},
	{SetupSQEMixed, 0},
	{SetupSQRewind, SetupNoSQArray},
}

// Probe creates short-lived rings to find out what this kernel supports.
// It fails with ErrUnavailable when io_uring cannot be used at all.
func Probe() (*Features, error) {
	r, err := New(4, nil)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	f := &Features{Ring: r.features}
	if f.Ops, err = r.ProbeOps(); err != nil {
		return nil, err
	}
	for _, p := range setupProbes {
		opts := &Options{Flags: p.flag | p.with}
		if p.flag == SetupCQSize {
			opts.CQEntries = 8
		}
		if probeSetup(opts) {
			f.SetupFlags |= p.flag
		}
	}
	if probeSetup(&Options{Flags: SetupAttachWQ, WQFd: uint32(r.fd)}) {
		f.SetupFlags |= SetupAttachWQ
	}
	if f.RegisterOps, err = probeRegisterLast(); err != nil {
		return nil, err
	}
	return f, nil
}

func probeSetup(opts *Options) bool {
	r, err := New(4, opts)
	if err != nil {
		return false
	}
	r.Close()
	return true
}

// probeRegisterLast finds the kernel's IORING_REGISTER_LAST: restriction
// parsing rejects a register opcode at or above it with EINVAL, so a binary
// search over disabled rings finds the boundary without side effects.
func probeRegisterLast() (RegisterOp, error) {
	known := func(op RegisterOp) (bool, error) {
		r, err := New(1, &Options{Flags: SetupRDisabled})
		if err != nil {
			return false, err
		}
		defer r.Close()
		err = r.RegisterRestrictions([]Restriction{AllowRegisterOp(op)})
		if errors.Is(err, unix.EINVAL) {
			return false, nil
		}
		return err == nil, err
	}
	lo, hi := RegisterOp(0), RegisterOp(255) // the restriction field is a u8
	for lo < hi {
		mid := (lo + hi) / 2
		ok, err := known(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo, nil
}

// String renders the report used by bpfusefs doctor.
func (f *Features) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "ring features: %s\n", strings.Join(flagNames(f.Ring, featNames), " "))
	fmt.Fprintf(&b, "setup flags:   %s\n", strings.Join(flagNames(f.SetupFlags, setupNames), " "))
	var ops []string
	for op := range f.Ops.LastOp + 1 {
		if f.Ops.Supports(op) {
			ops = append(ops, op.String())
		}
	}
	fmt.Fprintf(&b, "opcodes (%d):  %s\n", len(ops), strings.Join(ops, " "))
	var regs []string
	for op := range f.RegisterOps {
		regs = append(regs, op.String())
	}
	fmt.Fprintf(&b, "register ops (%d): %s\n", len(regs), strings.Join(regs, " "))
	return b.String()
}

var setupNames = []string{"IOPOLL", "SQPOLL", "SQ_AFF", "CQSIZE", "CLAMP", "ATTACH_WQ",
	"R_DISABLED", "SUBMIT_ALL", "COOP_TASKRUN", "TASKRUN_FLAG", "SQE128", "CQE32",
	"SINGLE_ISSUER", "DEFER_TASKRUN", "NO_MMAP", "REGISTERED_FD_ONLY", "NO_SQARRAY",
	"HYBRID_IOPOLL", "CQE_MIXED", "SQE_MIXED", "SQ_REWIND"}

var featNames = []string{"SINGLE_MMAP", "NODROP", "SUBMIT_STABLE", "RW_CUR_POS",
	"CUR_PERSONALITY", "FAST_POLL", "POLL_32BITS", "SQPOLL_NONFIXED", "EXT_ARG",
	"NATIVE_WORKERS", "RSRC_TAGS", "CQE_SKIP", "LINKED_FILE", "REG_REG_RING",
	"RECVSEND_BUNDLE", "MIN_TIMEOUT", "RW_ATTR", "NO_IOWAIT"}

// flagNames names the set bits of v, numbering unknown ones.
func flagNames(v uint32, names []string) []string {
	var out []string
	for bit := range 32 {
		if v&(1<<bit) == 0 {
			continue
		}
		if bit < len(names) {
			out = append(out, names[bit])
		} else {
			out = append(out, fmt.Sprintf("bit%d", bit))
		}
	}
	return slices.Clip(out)
}

// VerifyCopyFileRange checks that the kernel's OpCopyFileRange is ours: the
// series numbers it after 7.3's last opcode, where a later upstream kernel
// may put something else, so a listing alone is not proof. It copies a few
// bytes between two memfds with the opcode and compares them.
func VerifyCopyFileRange() error {
	want := []byte("bpfusefs copy_file_range probe")
	var fds [2]int
	for i := range fds {
		fd, err := unix.MemfdCreate("bpfusefs-probe", unix.MFD_CLOEXEC)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		fds[i] = fd
	}
	if _, err := unix.Write(fds[0], want); err != nil {
		return err
	}
	res, err := runOne(func(s *SQE) { s.PrepCopyFileRange(fds[0], 0, fds[1], 0, uint32(len(want)), 0) })
	if err != nil {
		return fmt.Errorf("IORING_OP_%v between two memfds: %w", OpCopyFileRange, err)
	}
	got := make([]byte, len(want)+1)
	n, err := unix.Pread(fds[1], got, 0)
	if err != nil {
		return err
	}
	if int(res) != len(want) || !slices.Equal(got[:n], want) {
		return fmt.Errorf("IORING_OP_%v between two memfds returned %d and left %q, not the copy of %q", OpCopyFileRange, res, got[:n], want)
	}
	return nil
}

// VerifyCopyKeepHoles checks that the kernel's OpCopyFileRange takes
// CopyKeepHoles (a later patch of the series than the opcode): it copies a
// memfd with a hole over one full of data and checks the bytes and that
// the hole was punched.
func VerifyCopyKeepHoles() error {
	const size = 3 * 4096
	var src, dst int
	for _, fd := range []*int{&src, &dst} {
		var err error
		if *fd, err = unix.MemfdCreate("bpfusefs-probe", unix.MFD_CLOEXEC); err != nil {
			return err
		}
		defer unix.Close(*fd)
	}
	data := bytes.Repeat([]byte{'d'}, 4096)
	if _, err := unix.Pwrite(src, data, 0); err != nil {
		return err
	}
	if _, err := unix.Pwrite(src, data, 2*4096); err != nil {
		return err
	}
	if _, err := unix.Pwrite(dst, bytes.Repeat([]byte{'x'}, size), 0); err != nil {
		return err
	}
	res, err := runOne(func(s *SQE) { s.PrepCopyFileRange(src, 0, dst, 0, size, CopyKeepHoles) })
	if err != nil {
		return fmt.Errorf("IORING_OP_%v with IORING_COPY_KEEP_HOLES: %w", OpCopyFileRange, err)
	}
	got := make([]byte, size)
	if _, err := unix.Pread(dst, got, 0); err != nil {
		return err
	}
	want := slices.Concat(data, make([]byte, 4096), data)
	if res != size || !bytes.Equal(got, want) {
		return fmt.Errorf("IORING_OP_%v with IORING_COPY_KEEP_HOLES returned %d and left other bytes than the source's", OpCopyFileRange, res)
	}
	if next, err := unix.Seek(dst, 4096, unix.SEEK_DATA); err != nil || next != 2*4096 {
		return fmt.Errorf("IORING_OP_%v with IORING_COPY_KEEP_HOLES left data where the source has a hole (SEEK_DATA from 4096: %d, %v)", OpCopyFileRange, next, err)
	}
	return nil
}

// VerifyOpBPF checks that the kernel's OpBPF is the series' (see
// VerifyCopyFileRange): on a ring without bpf-ops it must fail with
// EOPNOTSUPP, where an unknown or different opcode fails otherwise.
func VerifyOpBPF() error {
	res, err := runOne(func(s *SQE) {
		s.PrepNop()
		s.Opcode = OpBPF // with no buffer, which needs no registration
	})
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return fmt.Errorf("IORING_OP_%v on a ring without bpf-ops: res %d (%v), want EOPNOTSUPP", OpBPF, res, err)
	}
	return nil
}

// VerifyFutimens checks that the kernel's OpFutimens is the series' (see
// VerifyCopyFileRange): it sets a memfd's times with the opcode and reads
// them back.
func VerifyFutimens() error {
	fd, err := unix.MemfdCreate("bpfusefs-probe", unix.MFD_CLOEXEC)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	want := [2]unix.Timespec{{Sec: 1_000_000_007, Nsec: 11}, {Sec: 2_000_000_003, Nsec: 13}}
	if _, err := runOne(func(s *SQE) { s.PrepFutimens(fd, &want) }); err != nil {
		return fmt.Errorf("IORING_OP_%v on a memfd: %w", OpFutimens, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	if got := [2]unix.Timespec{st.Atim, st.Mtim}; got != want {
		return fmt.Errorf("IORING_OP_%v on a memfd left times %v, not %v", OpFutimens, got, want)
	}
	return nil
}

// runOne runs one SQE on a fresh ring and returns its result, as an error
// when negative.
func runOne(prep func(*SQE)) (int32, error) {
	r, err := New(1, nil)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	prep(r.GetSQE())
	if _, err := r.SubmitAndWait(1); err != nil {
		return 0, err
	}
	c, err := r.WaitCQE()
	if err != nil {
		return 0, err
	}
	defer r.CQESeen()
	return c.Res, c.Err()
}

// VerifyRegisterCQ checks that the kernel's RegisterCQ is the series' (see
// VerifyCopyFileRange): a NOP whose user_data the extra CQ selects must
// complete there, and one it does not select on the ring's own CQ.
func VerifyRegisterCQ() error {
	const tag = 1 << 63
	r, err := New(2, nil)
	if err != nil {
		return err
	}
	defer r.Close()
	q, err := r.RegisterCQ(2, tag, tag)
	if err != nil {
		return err
	}
	for _, ud := range []uint64{tag | 1, 2} {
		s := r.GetSQE()
		s.PrepNop()
		s.UserData = ud
	}
	if _, err := r.SubmitAndWait(1); err != nil {
		return err
	}
	var mine, theirs [2]*CQE
	n, m := q.Peek(mine[:]), r.PeekCQEs(theirs[:])
	if n != 1 || m != 1 || mine[0].UserData != tag|1 || theirs[0].UserData != 2 {
		return fmt.Errorf("IORING_%v: %d CQEs on the extra CQ and %d on the ring's, want the tagged NOP on the extra CQ and the other on the ring's", RegisterCQ, n, m)
	}
	return nil
}
