package uring

import "unsafe"

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
