package features

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

// Status says whether a feature can be used here and, when not, why.
type Status struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason"`
}

func available() Status                          { return Status{Available: true} }
func unavailable(format string, a ...any) Status { return Status{Reason: fmt.Sprintf(format, a...)} }

// Report is everything doctor prints; Accel and Auto are what mount uses.
type Report struct {
	Kernel      string `json:"kernel"`
	UID         int    `json:"uid"`
	CapSysAdmin bool   `json:"cap_sys_admin"`
	FUSE        FUSE   `json:"fuse"`
	IOURing     URing  `json:"io_uring"`
	BPFOps      Status `json:"io_uring_bpf_ops"`
	// Accel maps each acceleration and each patched-kernel feature to
	// whether it can be used here.
	Accel map[Name]Status `json:"accel"`
	// Auto is what --accel auto turns on.
	Auto []Name `json:"auto"`
}

// FUSE describes the kernel's FUSE.
type FUSE struct {
	Status
	// Protocol is the kernel's FUSE protocol version ("7.44") as sent in
	// FUSE_INIT to a test mount; empty when no test mount was possible.
	Protocol string `json:"protocol,omitempty"`
	// EnableURing is the module parameter enable_uring ("Y", "N"), or
	// empty when the kernel has no FUSE-over-io_uring.
	EnableURing string `json:"enable_uring,omitempty"`
}

// URing describes the kernel's io_uring.
type URing struct {
	Status
	Opcodes []string `json:"opcodes"`
}

// EnvDisable names the environment variable that marks accelerations or
// features unavailable, as if the kernel lacked them. It exists so that
// tests can exercise the "kernel without X" paths on a kernel that has X.
const EnvDisable = "BPFUSEFS_TEST_DISABLE"

// Probe examines the kernel and the calling user, and asks check which
// accelerations this build serves, alone and (for auto) together. It mounts
// small test filesystems when it can (root and /dev/fuse).
func Probe(check Checker) *Report {
	r := ProbeKernel()
	for _, n := range Accels {
		if !r.Accel[n].Available {
			continue
		}
		if err := check(Set{}.with(n)); err != nil {
			r.Accel[n] = unavailable("%v", err)
		}
	}
	set, _ := Resolve(Request{Auto: true}, r.Accel, check)
	r.Auto = set.Names()
	return r
}

// ProbeKernel examines the kernel and the calling user only: Accel says
// what the kernel offers, Auto is left empty. It mounts a small test
// filesystem when it can, to read the kernel's FUSE_INIT and to try a
// passthrough backing file.
func ProbeKernel() *Report {
	r := &Report{
		Kernel:      kernelRelease(),
		UID:         os.Geteuid(),
		CapSysAdmin: HasCapability(unix.CAP_SYS_ADMIN),
		Accel:       map[Name]Status{},
		Auto:        []Name{},
	}
	var k kernelFUSE
	r.FUSE, k = r.probeFUSE()
	var u ioURing
	r.IOURing, r.Accel[Engine], u = probeIOURing()
	r.BPFOps = probeBPFOps()

	r.Accel[Passthrough] = r.passthrough(k)
	r.Accel[Fusering] = r.fusering(k)
	r.Accel[BPF] = r.bpf()
	for _, n := range Patched {
		if n == SubmitBlock {
			r.Accel[n] = probeSubmitBlock()
			continue
		}
		r.Accel[n] = u.patched(n)
	}
	if !r.FUSE.Available {
		// Every acceleration speeds up a mount that cannot happen.
		for _, n := range Accels {
			if r.Accel[n].Available {
				r.Accel[n] = unavailable("FUSE unusable: %s", r.FUSE.Reason)
			}
		}
	}
	applyEnvDisable(r.Accel, os.Getenv(EnvDisable))
	return r
}

func (r *Report) probeFUSE() (FUSE, kernelFUSE) {
	var f FUSE
	switch b, err := os.ReadFile("/sys/module/fuse/parameters/enable_uring"); {
	case err == nil:
		f.EnableURing = strings.TrimSpace(string(b))
	case !errors.Is(err, os.ErrNotExist):
		f.EnableURing = "unreadable: " + err.Error()
	}
	dev, err := os.OpenFile("/dev/fuse", os.O_RDWR, 0)
	if err != nil {
		f.Status = unavailable("%v", err)
		return f, kernelFUSE{}
	}
	dev.Close()
	if !r.CapSysAdmin {
		// Without fusermount only mount(2) can mount, and it needs CAP_SYS_ADMIN.
		f.Status = unavailable("mounting needs CAP_SYS_ADMIN (run as root)")
		return f, kernelFUSE{}
	}
	k, err := probeTestMount()
	if err != nil {
		f.Status = unavailable("%v", err)
		return f, kernelFUSE{}
	}
	f.Status = available()
	f.Protocol = fmt.Sprintf("%d.%d", k.major, k.minor)
	return f, k
}

func (r *Report) passthrough(k kernelFUSE) Status {
	switch {
	case !r.FUSE.Available:
		return unavailable("FUSE unusable: %s", r.FUSE.Reason)
	}
	// The filesystem's own precondition first, so that what doctor says
	// and what fs.Mount accepts cannot differ.
	if err := passthrough.Probe(); err != nil {
		return unavailable("%v", err)
	}
	switch {
	case !k.offersPassthrough:
		return unavailable("kernel %s lacks FUSE passthrough (FUSE_INIT without FUSE_PASSTHROUGH; needs Linux 6.9+ with CONFIG_FUSE_PASSTHROUGH)", r.Kernel)
	case k.backingErr != nil:
		return unavailable("registering a backing file failed: %v", k.backingErr)
	}
	return available()
}

func (r *Report) fusering(k kernelFUSE) Status {
	switch {
	case r.FUSE.EnableURing == "":
		return unavailable("kernel %s lacks FUSE-over-io_uring (no /sys/module/fuse/parameters/enable_uring; needs Linux 6.14+ with CONFIG_FUSE_IO_URING)", r.Kernel)
	case r.FUSE.EnableURing != "Y":
		return unavailable("enable_uring is %s (as root: echo Y > /sys/module/fuse/parameters/enable_uring)", r.FUSE.EnableURing)
	case !r.FUSE.Available:
		return unavailable("FUSE unusable: %s", r.FUSE.Reason)
	case !k.offersURing:
		return unavailable("kernel did not offer FUSE_OVER_IO_URING in FUSE_INIT")
	case !r.IOURing.Available:
		return unavailable("io_uring unusable: %s", r.IOURing.Reason)
	}
	return available()
}

func (r *Report) bpf() Status {
	switch {
	case !r.BPFOps.Available:
		return r.BPFOps
	case !r.Accel[Fusering].Available:
		// The BPF program runs the event loop of the FUSE queue rings.
		return unavailable("needs fusering: %s", r.Accel[Fusering].Reason)
	}
	return available()
}

// probeBPFOps looks for struct io_uring_bpf_ops (Linux 7.1+) in the
// kernel's BTF: its presence means struct_ops programs can drive a ring.
func probeBPFOps() Status {
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return unavailable("cannot read kernel BTF: %v", err)
	}
	var ops *btf.Struct
	switch err := spec.TypeByName("io_uring_bpf_ops", &ops); {
	case errors.Is(err, btf.ErrNotFound):
		return unavailable("kernel lacks io_uring bpf-ops (no struct io_uring_bpf_ops in BTF; needs Linux 7.1+)")
	case err != nil:
		return unavailable("kernel BTF: %v", err)
	}
	return available()
}

// probeSubmitBlock says whether the BPF loop can issue the backing I/O
// that would go to io-wq blocking instead (a kfunc of the series).
func probeSubmitBlock() Status {
	if err := bpf.SubmitBlockAvailable(); err != nil {
		return unavailable("%v", err)
	}
	return available()
}

func applyEnvDisable(accel map[Name]Status, list string) {
	for _, field := range strings.Split(list, ",") {
		n := Name(strings.TrimSpace(field))
		if _, ok := accel[n]; ok {
			accel[n] = unavailable("disabled by %s", EnvDisable)
		}
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

// HasCapability reports whether capability c (unix.CAP_*) is in this
// process's effective set, read from /proc/self/status so that no
// capability library is needed.
func HasCapability(c int) bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		hex, ok := strings.CutPrefix(line, "CapEff:")
		if !ok {
			continue
		}
		eff, err := strconv.ParseUint(strings.TrimSpace(hex), 16, 64)
		return err == nil && eff&(1<<c) != 0
	}
	return false
}
