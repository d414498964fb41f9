package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/bpfusefs/bpfusefs/control"
	"github.com/bpfusefs/bpfusefs/features"
	"golang.org/x/sys/unix"
)

// A Go program cannot fork, so -d starts the binary again as the daemon:
// the child finds its configuration in envDaemon, runs in its own session
// with stdio on the log, and reports on the readiness pipe (its fd 3)
// "ok" once the mount is live, or the error that stopped it. The parent
// returns only then.
const (
	envDaemon = "BPFUSEFS_DAEMON"
	readyFD   = 3
	readyOK   = "ok"
)

// daemonRequest is what the parent hands the daemon.
type daemonRequest struct {
	Config mountConfig  `json:"config"`
	Accel  features.Set `json:"accel"`
}

// daemonRequestFromEnv returns the request of a parent started with -d,
// if this process is such a daemon.
func daemonRequestFromEnv() (req daemonRequest, isDaemon bool, err error) {
	v, ok := os.LookupEnv(envDaemon)
	if !ok {
		return req, false, nil
	}
	// Programs the daemon runs (none today) must not think they are one.
	os.Unsetenv(envDaemon)
	if err := json.Unmarshal([]byte(v), &req); err != nil {
		return req, true, fmt.Errorf("bad %s: %w", envDaemon, err)
	}
	return req, true, nil
}

func startDaemon(cfg mountConfig, set features.Set) error {
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	logPath, err := daemonLogPath(cfg)
	if err != nil {
		return err
	}
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("daemon log: %w", err)
	}
	defer logFile.Close()
	readR, readW, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}
	defer readR.Close()

	cfg.Daemon = false
	env, err := json.Marshal(daemonRequest{Config: cfg, Accel: set})
	if err != nil {
		return err
	}
	// Descriptors this process inherited (a caller's lock file, the
	// write end of a pipe it waits on) must not live on in the daemon:
	// os/exec passes on every descriptor without close-on-exec.
	if err := unix.CloseRange(3, math.MaxUint32, unix.CLOSE_RANGE_CLOEXEC); err != nil {
		return fmt.Errorf("daemon: close-on-exec for inherited descriptors: %w", err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envDaemon+"="+string(env))
	cmd.Dir = "/" // keep no directory busy
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.ExtraFiles = []*os.File{readW} // fd 3 == readyFD
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	err = cmd.Start()
	readW.Close() // only the child holds the write end now
	if err != nil {
		return fmt.Errorf("daemon: %w", err)
	}

	msg, err := io.ReadAll(readR)
	if err != nil {
		return fmt.Errorf("daemon: reading readiness: %w", err)
	}
	if reply := strings.TrimSpace(string(msg)); reply == readyOK {
		return cmd.Process.Release()
	} else if reply != "" {
		_ = cmd.Wait()
		return errors.New(reply)
	}
	// The pipe closed without a word: the daemon died before reporting.
	err = cmd.Wait()
	return fmt.Errorf("daemon exited before the mount was live (%v); see %s", err, logPath)
}

// daemonLogPath is --log, or a file next to the mount's control socket.
func daemonLogPath(cfg mountConfig) (string, error) {
	if cfg.LogFile != "" {
		return cfg.LogFile, nil
	}
	sock, err := control.SocketPath(cfg.Mountpoint)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Dir(sock), 0o700); err != nil {
		return "", fmt.Errorf("daemon log: %w", err)
	}
	return strings.TrimSuffix(sock, ".sock") + ".log", nil
}

func runDaemonChild(req daemonRequest) error {
	ready := &readiness{f: os.NewFile(readyFD, "ready")}
	err := serve(req.Config, req.Accel, os.Stderr, ready, func() {
		if req.Config.LogFile != "" {
			return
		}
		// A clean run leaves no default log behind: every mount point
		// would otherwise leave one in the runtime directory. Logs of
		// failed runs stay for post-mortems.
		if path, err := daemonLogPath(req.Config); err == nil {
			os.Remove(path)
		}
	})
	ready.fail(err)
	return err
}

// readiness is the write end of the readiness pipe; nil in the foreground.
type readiness struct {
	f *os.File
}

func (r *readiness) succeed() { r.send(readyOK) }

// fail reports err if readiness was not reported yet.
func (r *readiness) fail(err error) {
	if err != nil {
		r.send(err.Error())
	}
}

func (r *readiness) send(msg string) {
	if r == nil || r.f == nil {
		return
	}
	_, _ = io.WriteString(r.f, msg+"\n")
	r.f.Close()
	r.f = nil
}
