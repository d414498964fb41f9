package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// Machine identifies where a report was measured.
type Machine struct {
	Kernel    string `json:"kernel"`
	CPU       string `json:"cpu"`
	CPUs      int    `json:"cpus"`
	Commit    string `json:"commit"`
	LoadStart string `json:"load_start"`
	LoadEnd   string `json:"load_end"`
}

func probeMachine(ctx context.Context) Machine {
	return Machine{
		Kernel:    kernelRelease(),
		CPU:       cpuModel(),
		CPUs:      runtime.NumCPU(),
		Commit:    commit(ctx),
		LoadStart: loadAverage(),
	}
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:])
}

func cpuModel() string {
	data, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(data), "\n") {
		if key, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(key) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "unknown"
}

// loadAverage is /proc/loadavg's 1, 5 and 15 minute averages: the machine
// may be shared, and a report should say how busy it was.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	fields := strings.Fields(string(data))
	if len(fields) < 3 {
		return "unknown"
	}
	return strings.Join(fields[:3], " ")
}

// commit is the revision the running binary was built from, or failing that
// the checkout in the working directory.
func commit(ctx context.Context) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		var rev, dirty string
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if rev != "" {
			return shortRev(rev) + dirty
		}
	}
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func shortRev(rev string) string {
	if len(rev) > 12 {
		return rev[:12]
	}
	return rev
}

// userHZ is the unit of the CPU times in /proc/PID/stat: USER_HZ, which the
// kernel fixes at 100 on every architecture Go supports.
const userHZ = 100

// cpuTime is a process's CPU time in seconds, over all its threads. System
// time is the kernel's work on the process's behalf: its syscalls, and the
// BPF loop, which runs inside the queue threads' io_uring_enter.
type cpuTime struct {
	user, system float64
}

func (c cpuTime) total() float64 { return c.user + c.system }

func (c cpuTime) sub(d cpuTime) cpuTime { return cpuTime{c.user - d.user, c.system - d.system} }

// processCPU returns the CPU time the process pid has used.
func processCPU(pid int) (cpuTime, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return cpuTime{}, fmt.Errorf("daemon cpu time: %w", err)
	}
	return parseStatCPU(data)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/PID/stat line. The command name (field 2) is parenthesised and may
// contain spaces, so fields are counted from its closing parenthesis.
func parseStatCPU(stat []byte) (cpuTime, error) {
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return cpuTime{}, errors.New("parse /proc/PID/stat: no command name")
	}
	fields := strings.Fields(string(stat[end+1:]))
	// fields[0] is field 3 (state), so field n is fields[n-3].
	if len(fields) < 13 {
		return cpuTime{}, errors.New("parse /proc/PID/stat: too few fields")
	}
	var seconds [2]float64
	for i, f := range fields[11:13] {
		n, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			return cpuTime{}, fmt.Errorf("parse /proc/PID/stat: %w", err)
		}
		seconds[i] = float64(n) / userHZ
	}
	return cpuTime{user: seconds[0], system: seconds[1]}, nil
}

// isMounted reports whether a FUSE filesystem is mounted at dir.
func isMounted(dir string) (bool, error) {
	e, ok, err := mountinfo.Find(dir)
	return ok && strings.HasPrefix(e.FSType, "fuse"), err
}

// runCommand runs a program to completion in dir with its output sent to
// /dev/null; when it fails, the error carries the end of its stderr.
func runCommand(ctx context.Context, dir, name string, args ...string) error {
	return runCommandEnv(ctx, dir, nil, name, args...)
}

// runCommandEnv is runCommand with env added to the environment.
func runCommandEnv(ctx context.Context, dir string, env []string, name string, args ...string) error {
	return command(ctx, dir, env, nil, name, args...)
}

// commandOutput is runCommandEnv returning the program's standard output.
func commandOutput(ctx context.Context, dir string, env []string, name string, args ...string) (string, error) {
	var out bytes.Buffer
	err := command(ctx, dir, env, &out, name, args...)
	return out.String(), err
}

func command(ctx context.Context, dir string, env []string, stdout io.Writer, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	cmd.Stdout = stdout
	var stderr tailBuffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return nil
}

// tailBuffer keeps the last few KiB written to it: enough of a failing
// command's stderr to explain it.
// A daemon's stderr is read while the daemon still writes it, hence the lock.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

const tailSize = 2048

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > tailSize {
		t.b = t.b[len(t.b)-tailSize:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
