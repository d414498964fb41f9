package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A system is one way of serving a backing directory that the bench
// measures: the directory itself, or a FUSE daemon mounting it.
type system struct {
	name string
	// skip, when not empty, is why the system cannot run here.
	skip string
	// daemon returns the command that serves backing (and mirrors) at mnt
	// in the foreground; nil for native access.
	daemon func(backing, mnt string, mirrors []string) (*exec.Cmd, error)
	// unmount asks the daemon to unmount mnt and exit; nil sends SIGTERM.
	unmount func(ctx context.Context, mnt string) error
}

// errNoMirrors is returned by daemons that cannot replicate.
var errNoMirrors = errors.New("no replication (mirrors) support")

// An instance is a system serving one backing directory.
type instance struct {
	// dir is where workloads run: the mount point, or the backing
	// directory itself natively.
	dir string
	// backings are the directories that hold the data: the backing
	// directory, then the mirrors.
	backings []string
	// writeDirs receive every replicated write: dir through a mount
	// (which replicates), every backing natively (the bench writes each
	// copy itself).
	writeDirs []string
	// pid is the daemon serving dir, 0 natively.
	pid  int
	stop func(ctx context.Context) error
	// kill ends a hung daemon; nil natively.
	kill   func()
	killed atomic.Bool
}

// abort kills a hung daemon, which aborts its FUSE connection.
func (inst *instance) abort() {
	if inst.kill != nil {
		inst.killed.Store(true)
		inst.kill()
	}
}

// aborted reports whether abort killed the daemon.
func (inst *instance) aborted() bool { return inst.killed.Load() }

// daemonCPU is the CPU time the daemon has used so far; none natively.
func (inst *instance) daemonCPU() (cpuTime, error) {
	if inst.pid == 0 {
		return cpuTime{}, nil
	}
	return processCPU(inst.pid)
}

// mountTimeout bounds how long a daemon may take to mount.
const mountTimeout = 20 * time.Second

func (s *system) start(ctx context.Context, backing, mnt string, mirrors []string) (*instance, error) {
	backings := append([]string{backing}, mirrors...)
	if s.daemon == nil {
		return &instance{dir: backing, backings: backings, writeDirs: backings,
			stop: func(context.Context) error { return nil }}, nil
	}
	cmd, err := s.daemon(backing, mnt, mirrors)
	if err != nil {
		return nil, err
	}
	output := &tailBuffer{}
	cmd.Stdout, cmd.Stderr = output, output
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.name, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	d := &daemonProcess{sys: s, cmd: cmd, exited: exited, mnt: mnt, output: output}
	if err := d.waitMounted(); err != nil {
		return nil, err
	}
	return &instance{dir: mnt, backings: backings, writeDirs: []string{mnt},
		pid: cmd.Process.Pid, stop: d.stop, kill: d.kill}, nil
}

// daemonProcess is a running FUSE daemon the bench started.
type daemonProcess struct {
	sys    *system
	cmd    *exec.Cmd
	exited chan error
	mnt    string
	output *tailBuffer
}

func (d *daemonProcess) waitMounted() error {
	deadline := time.Now().Add(mountTimeout)
	for {
		mounted, err := isMounted(d.mnt)
		if err != nil {
			d.kill()
			return fmt.Errorf("%s: read mountinfo: %w", d.sys.name, err)
		}
		if mounted {
			return nil
		}
		if time.Now().After(deadline) {
			d.kill()
			return fmt.Errorf("%s did not mount %s within %v: %s", d.sys.name, d.mnt, mountTimeout, d.output)
		}
		select {
		case err := <-d.exited:
			return fmt.Errorf("%s exited before mounting (%v): %s", d.sys.name, err, d.output)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// stop unmounts and waits for the daemon to exit; a daemon that does not
// exit in time is killed and its mount detached.
func (d *daemonProcess) stop(ctx context.Context) error {
	var stopErr error
	if d.sys.unmount != nil {
		stopErr = d.sys.unmount(ctx, d.mnt)
	} else {
		stopErr = d.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-d.exited:
	case <-time.After(mountTimeout):
		d.kill()
		if stopErr == nil {
			stopErr = fmt.Errorf("%s did not exit after unmount: killed", d.sys.name)
		}
	}
	if mounted, _ := isMounted(d.mnt); mounted {
		if err := unix.Unmount(d.mnt, unix.MNT_DETACH); err != nil {
			return fmt.Errorf("unmount %s: %w", d.mnt, err)
		}
	}
	return stopErr
}

func (d *daemonProcess) kill() {
	if err := d.cmd.Process.Kill(); err == nil {
		<-d.exited
	}
	if mounted, _ := isMounted(d.mnt); mounted {
		_ = unix.Unmount(d.mnt, unix.MNT_DETACH)
	}
}

// System names.
const (
	native        = "native"
	loopback      = "loopback"
	loopbackNoPT  = "loopback-nopt"
	passthroughHP = "passthrough_hp"
	bpfusefsName  = "bpfusefs-"
)

// bpfusefsModes are the --accel values measured, one system each.
var bpfusefsModes = []string{"none", "engine", "passthrough", "fusering", "bpf"}

// systemNames lists every system in report order.
func systemNames() []string {
	names := []string{native}
	for _, m := range bpfusefsModes {
		names = append(names, bpfusefsName+m)
	}
	return append(names, loopback, loopbackNoPT, passthroughHP)
}

// probeSystems builds the systems selected by cfg, finding out which can
// run here. Only selected systems are probed.
func probeSystems(ctx context.Context, cfg *Config) []*system {
	var systems []*system
	var doctor map[string]accelStatus
	var doctorErr error
	for _, name := range systemNames() {
		if !cfg.Systems.match(name) {
			continue
		}
		switch {
		case name == native:
			systems = append(systems, &system{name: native})
		case strings.HasPrefix(name, bpfusefsName):
			if doctor == nil && doctorErr == nil {
				doctor, doctorErr = runDoctor(ctx, cfg.Bpfusefs)
			}
			systems = append(systems, bpfusefsSystem(cfg.Bpfusefs, strings.TrimPrefix(name, bpfusefsName), doctor, doctorErr))
		case name == loopback:
			systems = append(systems, loopbackSystem(ctx, cfg))
		case name == loopbackNoPT:
			systems = append(systems, loopbackNoPTSystem(cfg))
		case name == passthroughHP:
			systems = append(systems, passthroughHPSystem(cfg.PassthroughHP))
		}
	}
	return systems
}

// accelStatus is one entry of `bpfusefs doctor --json`'s "accel" map.
type accelStatus struct {
	Available bool   `json:"available"`
	Reason    string `json:"reason"`
}

func runDoctor(ctx context.Context, bin string) (map[string]accelStatus, error) {
	out, err := exec.CommandContext(ctx, bin, "doctor", "--json").Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			err = fmt.Errorf("%w: %s", err, strings.TrimSpace(string(exitErr.Stderr)))
		}
		return nil, fmt.Errorf("%s doctor --json: %w", bin, err)
	}
	return parseDoctor(out)
}

func parseDoctor(data []byte) (map[string]accelStatus, error) {
	var report struct {
		Accel map[string]accelStatus `json:"accel"`
	}
	if err := json.Unmarshal(data, &report); err != nil {
		return nil, fmt.Errorf("parse doctor --json: %w", err)
	}
	if report.Accel == nil {
		return nil, errors.New(`parse doctor --json: no "accel" map`)
	}
	return report.Accel, nil
}

// binaryVersion is the first line of `bin --version`, with the binary's path.
func binaryVersion(ctx context.Context, bin string) string {
	out, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fmt.Sprintf("%s (--version: %v)", bin, err)
	}
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return fmt.Sprintf("%s (%s)", line, bin)
}

func bpfusefsSystem(bin, mode string, doctor map[string]accelStatus, doctorErr error) *system {
	s := &system{
		name: bpfusefsName + mode,
		daemon: func(backing, mnt string, mirrors []string) (*exec.Cmd, error) {
			args := []string{"mount", "--accel", mode}
			if len(mirrors) > 0 {
				args = append(args, "--mirror", strings.Join(mirrors, ","))
			}
			return exec.Command(bin, append(args, backing, mnt)...), nil
		},
		unmount: func(ctx context.Context, mnt string) error {
			return runCommand(ctx, "", bin, "umount", mnt)
		},
	}
	switch st, ok := doctor[mode]; {
	case doctorErr != nil:
		s.skip = doctorErr.Error()
	case mode == "none":
	case !ok:
		s.skip = "doctor does not report accel " + mode
	case !st.Available:
		s.skip = st.Reason
	}
	return s
}

// goFuseVersion is the go-fuse version this binary was built with, which is
// the loopback example the bench builds.
func goFuseVersion() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == "github.com/hanwen/go-fuse/v2" {
				return dep.Version
			}
		}
	}
	return "v2"
}

// loopbackSystem is go-fuse's example loopback daemon, unmodified: as root it
// uses FUSE passthrough for reads and writes. It is built into the cache on
// first use, from the module graph of the working directory.
func loopbackSystem(ctx context.Context, cfg *Config) *system {
	s := &system{name: loopback}
	bin := cfg.Loopback
	if bin == "" {
		bin = filepath.Join(cfg.Cache, "loopback-go-fuse-"+goFuseVersion())
		if _, err := os.Stat(bin); err != nil {
			if err := runCommand(ctx, "", "go", "build", "-o", bin, "github.com/hanwen/go-fuse/v2/example/loopback"); err != nil {
				s.skip = fmt.Sprintf("build go-fuse loopback (run from the bpfusefs checkout, or pass --loopback): %v", err)
				return s
			}
		}
	}
	s.daemon = func(backing, mnt string, mirrors []string) (*exec.Cmd, error) {
		if len(mirrors) > 0 {
			return nil, errNoMirrors
		}
		return exec.Command(bin, "-directmountstrict", "-q", mnt, backing), nil
	}
	return s
}

// loopbackNoPTSystem is the same go-fuse loopback file system served with
// FUSE passthrough turned off, by this program itself (see serveLoopback):
// the peer for files that passthrough cannot serve, such as mirrored ones.
func loopbackNoPTSystem(cfg *Config) *system {
	s := &system{name: loopbackNoPT}
	if len(cfg.self) == 0 {
		s.skip = "the bench was not started from a command line it can re-run"
		return s
	}
	s.daemon = func(backing, mnt string, mirrors []string) (*exec.Cmd, error) {
		if len(mirrors) > 0 {
			return nil, errNoMirrors
		}
		args := append(append([]string(nil), cfg.self[1:]...), serveLoopbackCmd, mnt, backing)
		return exec.Command(cfg.self[0], args...), nil
	}
	return s
}

// passthroughHPSystem is libfuse's example/passthrough_hp, when the user
// points the bench at a build of it.
func passthroughHPSystem(bin string) *system {
	s := &system{name: passthroughHP}
	if bin == "" {
		s.skip = "no --passthrough-hp PATH given"
		return s
	}
	s.daemon = func(backing, mnt string, mirrors []string) (*exec.Cmd, error) {
		if len(mirrors) > 0 {
			return nil, errNoMirrors
		}
		return exec.Command(bin, "--foreground", backing, mnt), nil
	}
	return s
}
