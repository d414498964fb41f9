package features

import (
	"slices"

	"github.com/bpfusefs/bpfusefs/uring"
)

// engineOps are the opcodes uring.Engine submits (Pread, Pwrite, Fsync).
var engineOps = []uring.Op{uring.OpRead, uring.OpWrite, uring.OpFsync}

// patchedOps are the opcodes our kernel series adds, by the name the io_uring
// probe would list them under once uring knows their numbers (for a flag of
// an opcode, the opcode's).
var patchedOps = map[Name]string{
	OpBPF:           "BPF",
	OpCopyFileRange: "COPY_FILE_RANGE",
	OpFutimens:      "FUTIMENS",
	CopyKeepHoles:   "COPY_FILE_RANGE",
}

// patchedChecks confirm that a listed opcode or register opcode does what
// the series' does (see uring.VerifyCopyFileRange for why a listing is not
// enough).
var patchedChecks = map[Name]func() error{
	OpCopyFileRange: uring.VerifyCopyFileRange,
	OpBPF:           uring.VerifyOpBPF,
	OpFutimens:      uring.VerifyFutimens,
	CopyKeepHoles:   uring.VerifyCopyKeepHoles,
	MultiCQ:         uring.VerifyRegisterCQ,
}

// patchedRegisterOps are the register opcodes the series adds, by name.
var patchedRegisterOps = map[Name]string{
	MultiCQ: "REGISTER_CQ",
}

// ioURing is what the io_uring probe found, kept for the patched-kernel
// checks.
type ioURing struct {
	features *uring.Features
	err      error
}

func probeIOURing() (URing, Status, ioURing) {
	f, err := uring.Probe()
	if err != nil {
		st := unavailable("io_uring unusable: %v", err)
		return URing{Status: st, Opcodes: []string{}}, st, ioURing{err: err}
	}
	u := URing{Status: available(), Opcodes: opNames(f)}
	engine := available()
	for _, op := range engineOps {
		if !f.HasOp(op) {
			engine = unavailable("kernel lacks IORING_OP_%s, which the io_uring engine uses", op)
			break
		}
	}
	return u, engine, ioURing{features: f}
}

// opNames lists the supported opcodes by their uapi names; opcodes newer
// than the uring package are listed by number.
func opNames(f *uring.Features) []string {
	names := []string{}
	for op := uring.Op(0); ; op++ {
		if f.HasOp(op) {
			names = append(names, op.String())
		}
		if op == f.Ops.LastOp {
			return names
		}
	}
}

// patched answers for one feature of our kernel series from the probe:
// an opcode or register opcode is present only if the kernel lists it.
func (u ioURing) patched(n Name) Status {
	if u.err != nil {
		return unavailable("io_uring unusable: %v", u.err)
	}
	if name, ok := patchedOps[n]; ok {
		names := opNames(u.features)
		if slices.Contains(names, name) {
			if err := patchedChecks[n](); err != nil {
				return unavailable("kernel lists IORING_OP_%s but it does not do what the series' does: %v", name, err)
			}
			return available()
		}
		return unavailable("kernel lacks IORING_OP_%s (not among the %d opcodes its io_uring probe lists)", name, len(names))
	}
	name := patchedRegisterOps[n]
	for op := range u.features.RegisterOps {
		if op.String() == name {
			if err := patchedChecks[n](); err != nil {
				return unavailable("kernel knows IORING_%s but it is not the series' register opcode: %v", name, err)
			}
			return available()
		}
	}
	return unavailable("kernel lacks IORING_%s (not among its %d io_uring register opcodes)", name, u.features.RegisterOps)
}
