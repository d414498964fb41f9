// Command watchdog runs one command as the child subreaper of everything it
// starts and kills it if it outlives a bound.
//
// xfstests needs both: PID 1 on the machines this project runs on does not
// reap orphans, so the daemons and background workers a test leaves behind
// would pile up as zombies unless an ancestor reaps them; and a test that hangs
// (typically in a FUSE request the daemon never answers) must not stall the
// whole run.
//
//	watchdog [-timeout 15m] [-idle 15m] [-grace 10s] [-linger 0] [-abort-fuse MNT]... -- cmd args...
//
// -idle bounds the time between two writes of the command to its stdout
// rather than its whole run: xfstests' check prints one line per test,
// so a single check run over many tests gets a per-test bound.
//
// The command runs in its own process group with SIGPIPE and SIGXFSZ at their
// default disposition (a shell that ignores them would otherwise pass that on,
// and tests that expect EFBIG-by-signal would see plain errors). On timeout the
// group gets SIGTERM, then SIGKILL after -grace; a process blocked in a FUSE
// request ignores even SIGKILL, so the FUSE connections of the -abort-fuse
// mount points are then aborted, which fails the request and lets it die.
// The exit status is the command's, 128+signal if it was killed by a signal,
// or 124 after a timeout, as with timeout(1).
//
// When the command exits, descendants that outlive it (a FUSE daemon a mount
// helper daemonized, say) are left running and pass on to the next subreaper
// up; -linger keeps reaping them for that long first, for the outermost
// watchdog of a run whose mounts are being torn down.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// exitTimeout is timeout(1)'s status for a command that ran out of time.
const exitTimeout = 124

type mountList []string

func (m *mountList) String() string     { return strings.Join(*m, ",") }
func (m *mountList) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	timeout := flag.Duration("timeout", 0, "kill the command after this long (0: never)")
	idle := flag.Duration("idle", 0, "kill the command after this long without writing to stdout (0: never)")
	grace := flag.Duration("grace", 10*time.Second, "time between SIGTERM, SIGKILL and aborting FUSE connections")
	linger := flag.Duration("linger", 0, "after the command exits, keep reaping its orphans for up to this long")
	var abortMounts mountList
	flag.Var(&abortMounts, "abort-fuse", "FUSE mount point whose connection is aborted if killing does not end the command (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: %s [flags] -- command [args...]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	status, err := run(flag.Args(), limits{*timeout, *idle, *grace, *linger}, abortMounts)
	if err != nil {
		fmt.Fprintf(os.Stderr, "watchdog: %v\n", err)
	}
	os.Exit(status)
}

// limits are the bounds run enforces; zero means none.
type limits struct {
	timeout, idle time.Duration // on the whole run, between two writes
	grace         time.Duration // between escalation steps
	linger        time.Duration // reaping orphans after the command is done
}

// run starts argv and reaps every process that ends up as our child until argv
// itself is done, enforcing the limits. It returns the exit status to use.
func run(argv []string, lim limits, abortMounts []string) (int, error) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		return 1, fmt.Errorf("prctl(PR_SET_CHILD_SUBREAPER): %w", err)
	}
	// A signal with a Go handler is reset to SIG_DFL by execve; an ignored one
	// would stay ignored in the child. Handling them here is what makes the
	// command start with the default disposition.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE, syscall.SIGXFSZ)
	forwarded := make(chan os.Signal, 4)
	signal.Notify(forwarded, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)

	path, err := lookPath(argv[0])
	if err != nil {
		return 127, err
	}
	stdout := os.Stdout
	var out *outputWatch
	if lim.idle > 0 {
		if out, err = watchOutput(); err != nil {
			return 1, err
		}
		stdout = out.w
	}
	proc, err := os.StartProcess(path, argv, &os.ProcAttr{
		Files: []*os.File{os.Stdin, stdout, os.Stderr},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	})
	if err != nil {
		return 127, fmt.Errorf("start %s: %w", argv[0], err)
	}
	pid := proc.Pid
	var progress <-chan struct{}
	if out != nil {
		out.w.Close() // the child holds the write end now
		progress = out.progress
		defer out.drain()
	}

	exited := make(chan syscall.WaitStatus)
	go reap(pid, exited)

	var deadline, idleDeadline <-chan time.Time
	if lim.timeout > 0 {
		deadline = time.After(lim.timeout)
	}
	idleTimer := time.NewTimer(lim.idle)
	if lim.idle > 0 {
		idleDeadline = idleTimer.C
	}
	for {
		select {
		case ws := <-exited:
			lingerReaping(lim.linger)
			return exitStatus(ws), nil
		case sig := <-forwarded:
			_ = syscall.Kill(-pid, sig.(syscall.Signal))
		case <-progress:
			idleTimer.Reset(lim.idle)
		case <-deadline:
			fmt.Fprintf(os.Stderr, "watchdog: %s still running after %v, killing it\n", argv[0], lim.timeout)
			terminate(pid, lim.grace, abortMounts, exited)
			return exitTimeout, nil
		case <-idleDeadline:
			fmt.Fprintf(os.Stderr, "watchdog: %s silent for %v, killing it\n", argv[0], lim.idle)
			terminate(pid, lim.grace, abortMounts, exited)
			return exitTimeout, nil
		}
	}
}

// outputWatch copies the command's stdout to ours and signals every write.
type outputWatch struct {
	w        *os.File // the command's stdout
	r        *os.File
	progress chan struct{}
	done     chan struct{}
}

func watchOutput() (*outputWatch, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("pipe for the command's output: %w", err)
	}
	o := &outputWatch{w: w, r: r, progress: make(chan struct{}, 1), done: make(chan struct{})}
	go o.copy()
	return o, nil
}

func (o *outputWatch) copy() {
	defer close(o.done)
	buf := make([]byte, 32<<10)
	for {
		n, err := o.r.Read(buf)
		if n > 0 {
			_, _ = os.Stdout.Write(buf[:n])
			select {
			case o.progress <- struct{}{}:
			default:
			}
		}
		if err != nil {
			return
		}
	}
}

// drain copies what the command wrote before it exited. The pipe may never
// reach EOF (a daemon the command started can hold the write end), so the
// copy gets a short deadline instead.
func (o *outputWatch) drain() {
	_ = o.r.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	<-o.done
}

// reap waits for any child until the direct child pid has exited, whose status
// it then sends. Orphans reparented to us are reaped silently along the way.
func reap(pid int, exited chan<- syscall.WaitStatus) {
	for {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			// ECHILD: nothing left, which cannot happen before pid is
			// reaped unless someone else reaped it; report it as killed.
			exited <- syscall.WaitStatus(syscall.SIGKILL)
			return
		}
		if got == pid {
			exited <- ws
			return
		}
	}
}

// lingerReaping keeps reaping orphans for up to d, or until none is left.
func lingerReaping(d time.Duration) {
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		var ws syscall.WaitStatus
		got, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		switch {
		case errors.Is(err, syscall.ECHILD):
			return
		case err == nil && got > 0:
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// terminate escalates from SIGTERM to SIGKILL to aborting FUSE connections
// until the direct child has exited or every step has been tried.
func terminate(pid int, grace time.Duration, abortMounts []string, exited <-chan syscall.WaitStatus) {
	steps := []func(){
		func() { _ = syscall.Kill(-pid, syscall.SIGTERM) },
		func() { _ = syscall.Kill(-pid, syscall.SIGKILL) },
		func() {
			for _, mnt := range abortMounts {
				if err := abortFUSE(mnt); err != nil {
					fmt.Fprintf(os.Stderr, "watchdog: %v\n", err)
				}
			}
			_ = syscall.Kill(-pid, syscall.SIGKILL)
		},
	}
	for _, step := range steps {
		step()
		select {
		case <-exited:
			return
		case <-time.After(grace):
		}
	}
	fmt.Fprintf(os.Stderr, "watchdog: process group %d did not exit; leaving it\n", pid)
}

// abortFUSE aborts the FUSE connection mounted at mnt, if any. The connection
// is found through mountinfo rather than stat, which would hang on the very
// connection that needs aborting; fusectl names it by the superblock's device
// number in the kernel's encoding (major<<20 | minor).
func abortFUSE(mnt string) error {
	mnt = filepath.Clean(mnt)
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return fmt.Errorf("abort FUSE connection of %s: %w", mnt, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		// mountinfo: id parent major:minor root mountpoint opts ... - fstype source superopts
		fields := strings.Fields(line)
		sep := indexOf(fields, "-")
		if len(fields) < 5 || sep < 0 || sep+1 >= len(fields) {
			continue
		}
		if fields[4] != mnt || !strings.HasPrefix(fields[sep+1], "fuse") {
			continue
		}
		major, minor, ok := strings.Cut(fields[2], ":")
		if !ok {
			continue
		}
		ma, err1 := strconv.ParseUint(major, 10, 32)
		mi, err2 := strconv.ParseUint(minor, 10, 32)
		if err1 != nil || err2 != nil {
			continue
		}
		abort := fmt.Sprintf("/sys/fs/fuse/connections/%d/abort", ma<<20|mi)
		if err := os.WriteFile(abort, []byte("1"), 0); err != nil {
			return fmt.Errorf("abort FUSE connection of %s: %w", mnt, err)
		}
		fmt.Fprintf(os.Stderr, "watchdog: aborted the FUSE connection of %s\n", mnt)
	}
	return nil
}

func indexOf(fields []string, s string) int {
	for i, f := range fields {
		if f == s {
			return i
		}
	}
	return -1
}

// lookPath resolves name like exec.LookPath, without os/exec: the command is
// started with os.StartProcess because Wait4(-1) here reaps it, not exec.Cmd.
func lookPath(name string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	for _, dir := range filepath.SplitList(os.Getenv("PATH")) {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH", name)
}

func exitStatus(ws syscall.WaitStatus) int {
	if ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ws.ExitStatus()
}
