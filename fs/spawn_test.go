package fs

import (
	"encoding/gob"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
)

// The tests' commands (sh, chattr, cp, python3) are started by a spawner,
// a copy of the test binary started before anything is mounted, never by
// the test process itself. The daemon under test runs in the test process,
// and Go starts a child with vfork: the parent thread stays in the kernel
// until the child's exec, which first closes the child's copies of every
// CLOEXEC descriptor. Closing a file of the mount sends the daemon a FLUSH,
// and if a garbage collection begins meanwhile, the daemon's goroutines
// wait for the world to stop, which waits for the thread in vfork, which
// waits for the FLUSH: the test hangs. The spawner has no file of any mount
// to close.

// spawnerEnv marks the test binary started as the spawner.
const spawnerEnv = "BPFUSEFS_TEST_SPAWNER"

// A spawnRequest is one command for the spawner to run to completion.
type spawnRequest struct {
	Args []string
	Dir  string
	UID  uint32 // and gid; 0 runs as the test's user
}

// A spawnResult is what the command printed (stdout and stderr together)
// and how it ended.
type spawnResult struct {
	Output []byte
	Exit   int    // the exit status, -1 if a signal ended it
	Err    string // why it could not start
}

// spawner is the client end of the spawner; spawnMu lets one request at a
// time use it.
var (
	spawnMu sync.Mutex
	spawner struct {
		enc *gob.Encoder
		dec *gob.Decoder
	}
)

func TestMain(m *testing.M) {
	if os.Getenv(spawnerEnv) != "" {
		serveSpawns(os.Stdin, os.Stdout)
		return
	}
	if err := startSpawner(); err != nil {
		log.Fatalf("starting the command spawner: %v", err)
	}
	os.Exit(m.Run())
}

// startSpawner starts the spawner; it exits when this process does, its
// requests reaching EOF.
func startSpawner() error {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), spawnerEnv+"=1")
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	spawner.enc, spawner.dec = gob.NewEncoder(in), gob.NewDecoder(out)
	return nil
}

// serveSpawns runs each request read from r and writes its result to w.
func serveSpawns(r io.Reader, w io.Writer) {
	dec, enc := gob.NewDecoder(r), gob.NewEncoder(w)
	for {
		var req spawnRequest
		if err := dec.Decode(&req); err != nil {
			return
		}
		cmd := exec.Command(req.Args[0], req.Args[1:]...)
		cmd.Dir = req.Dir
		if req.UID != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: req.UID, Gid: req.UID}}
		}
		var res spawnResult
		var err error
		res.Output, err = cmd.CombinedOutput()
		if exit, ok := err.(*exec.ExitError); ok {
			res.Exit = exit.ExitCode()
		} else if err != nil {
			res.Err = err.Error()
		}
		if err := enc.Encode(&res); err != nil {
			return
		}
	}
}

// exitError is a command's unsuccessful end.
type exitError struct{ code int }

func (e *exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// spawn runs args in dir (the spawner's when empty) as uid through the
// spawner and returns its combined output; a command that fails returns
// an *exitError.
func spawn(dir string, uid uint32, args ...string) ([]byte, error) {
	spawnMu.Lock()
	defer spawnMu.Unlock()
	if err := spawner.enc.Encode(&spawnRequest{Args: args, Dir: dir, UID: uid}); err != nil {
		return nil, fmt.Errorf("spawner: %w", err)
	}
	var res spawnResult
	if err := spawner.dec.Decode(&res); err != nil {
		return nil, fmt.Errorf("spawner: %w", err)
	}
	switch {
	case res.Err != "":
		return res.Output, fmt.Errorf("%s: %s", args[0], res.Err)
	case res.Exit != 0:
		return res.Output, &exitError{res.Exit}
	}
	return res.Output, nil
}
