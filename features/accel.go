// Package features finds out what this kernel and this user can do for
// bpfusefs (FUSE protocol, passthrough, FUSE-over-io_uring, io_uring opcodes,
// io_uring bpf-ops, the features of our patched kernel) and turns an --accel
// request into the set of data paths a mount turns on. `bpfusefs doctor` and
// `bpfusefs mount` share this code, so what doctor says auto would use is
// what a mount uses.
package features

import (
	"fmt"
	"slices"
	"strings"
)

// Name is an acceleration (a data path a mount can turn on) or a feature of
// the patched kernel that those data paths use when present.
type Name string

// The accelerations, in the order auto prefers them.
const (
	Passthrough Name = "passthrough"
	BPF         Name = "bpf"
	Fusering    Name = "fusering"
	Engine      Name = "engine"
)

// Features of the patched kernel series (kernel/patches). They are not
// accelerations of their own: the bpf path uses them when present.
const (
	MultiCQ         Name = "multi_cq"
	OpBPF           Name = "op_bpf"
	OpCopyFileRange Name = "op_copy_file_range"
	// SubmitBlock: the BPF loop issues backing I/O that would go to io-wq
	// blocking instead (bpf_io_uring_submit_sqes_flags).
	SubmitBlock Name = "bpf_submit_block"
	// OpFutimens: the BPF loop copies a mirrored file's times to its
	// mirrors and serves its FSYNC itself.
	OpFutimens Name = "op_futimens"
	// CopyKeepHoles: IORING_OP_COPY_FILE_RANGE keeps the source's holes,
	// so the BPF loop serves COPY_FILE_RANGE itself.
	CopyKeepHoles Name = "copy_keep_holes"
)

// Accels lists the accelerations --accel accepts by name.
var Accels = []Name{Engine, Passthrough, Fusering, BPF}

// preference is the order in which auto takes accelerations: the kernel
// serving a file beats BPF in the kernel, which beats the daemon on a ring,
// which beats the daemon with plain system calls.
var preference = []Name{Passthrough, BPF, Fusering, Engine}

// Patched lists the patched-kernel features doctor reports.
var Patched = []Name{MultiCQ, OpBPF, OpCopyFileRange, SubmitBlock, OpFutimens, CopyKeepHoles}

// Request is a parsed --accel value.
type Request struct {
	// Auto turns on every acceleration that is available, skipping the rest.
	Auto bool
	// Names are the accelerations asked for by name; each must be available.
	// Empty with Auto false means none: plain pread/pwrite in the daemon.
	Names []Name
}

// ParseRequest parses an --accel value: "auto", "none", or a comma separated
// list of accelerations.
func ParseRequest(spec string) (Request, error) {
	switch spec {
	case "auto", "":
		return Request{Auto: true}, nil
	case "none":
		return Request{}, nil
	}
	var req Request
	for _, field := range strings.Split(spec, ",") {
		name := Name(strings.TrimSpace(field))
		switch {
		case name == "auto" || name == "none":
			return Request{}, fmt.Errorf("accel %q: %q cannot be combined with other accelerations", spec, name)
		case !isAccel(name):
			return Request{}, fmt.Errorf("unknown accel %q (want auto, none, or a comma list of %s)", name, Join(Accels, ", "))
		}
		if !slices.Contains(req.Names, name) {
			req.Names = append(req.Names, name)
		}
	}
	return req, nil
}

// Set is the accelerations a mount turns on.
type Set struct {
	Engine, Passthrough, Fusering, BPF bool
}

// Has reports whether the set contains the acceleration.
func (s Set) Has(n Name) bool {
	switch n {
	case Engine:
		return s.Engine
	case Passthrough:
		return s.Passthrough
	case Fusering:
		return s.Fusering
	case BPF:
		return s.BPF
	}
	return false
}

// with returns the set with the acceleration added.
func (s Set) with(n Name) Set {
	switch n {
	case Engine:
		s.Engine = true
	case Passthrough:
		s.Passthrough = true
	case Fusering:
		s.Fusering = true
	case BPF:
		s.BPF = true
	}
	return s
}

// Names lists the accelerations in the set in auto's order of preference,
// never nil, so that JSON shows an empty list rather than null.
func (s Set) Names() []Name {
	names := []Name{}
	for _, n := range preference {
		if s.Has(n) {
			names = append(names, n)
		}
	}
	return names
}

func (s Set) String() string {
	if names := s.Names(); len(names) > 0 {
		return Join(names, ",")
	}
	return "none"
}

// UnavailableError is returned by Resolve when an acceleration asked for by
// name cannot run here.
type UnavailableError struct {
	Name   Name
	Reason string
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("accel %s is not available: %s", e.Name, e.Reason)
}

// Checker tells whether this build of bpfusefs can serve a set of
// accelerations together (nil) or why not. The kernel may support more than
// the filesystem serves, or serves in combination; the fs package has the
// last word.
type Checker func(Set) error

// Resolve turns a request into the set of accelerations to turn on, given
// what the kernel offers. Auto takes, in order of preference, each
// available acceleration that check accepts together with those taken
// before it. A name asked for explicitly that is unavailable is an
// *UnavailableError; whether the build serves the names together is left
// to the mount, which fails with the reason.
func Resolve(req Request, avail map[Name]Status, check Checker) (Set, error) {
	var set Set
	if req.Auto {
		for _, n := range preference {
			if !avail[n].Available {
				continue
			}
			if candidate := set.with(n); check(candidate) == nil {
				set = candidate
			}
		}
		return set, nil
	}
	for _, n := range req.Names {
		st, ok := avail[n]
		if !ok {
			return Set{}, &UnavailableError{Name: n, Reason: "not probed"}
		}
		if !st.Available {
			return Set{}, &UnavailableError{Name: n, Reason: st.Reason}
		}
		set = set.with(n)
	}
	return set, nil
}

func isAccel(n Name) bool { return slices.Contains(Accels, n) }

// Join joins the names with sep.
func Join(names []Name, sep string) string {
	s := make([]string, len(names))
	for i, n := range names {
		s[i] = string(n)
	}
	return strings.Join(s, sep)
}
