// Package control is the control socket of a running bpfusefs daemon: the
// way `bpfusefs stats` and `bpfusefs umount` talk to the daemon serving a
// mount. The socket lives outside the mount (nothing visible inside it), in a
// directory only its owner can enter, and the daemon also checks the peer's
// credentials (SO_PEERCRED): only the user who mounted, or root, is served.
//
// The protocol is one JSON request and one JSON response per connection:
//
//	-> {"method":"stats"}
//	<- {"result":{...}}   or   {"error":"..."}
package control

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// methodWait is answered twice: at once, that the wait is taken, and
// when the daemon shuts down (see Wait).
const methodWait = "wait"

// Dir returns the directory that holds the control sockets of the calling
// user: /run/bpfusefs for root, $XDG_RUNTIME_DIR/bpfusefs otherwise.
func Dir() (string, error) {
	if os.Geteuid() == 0 {
		return "/run/bpfusefs", nil
	}
	runtime := os.Getenv("XDG_RUNTIME_DIR")
	if runtime == "" {
		return "", errors.New("control socket: XDG_RUNTIME_DIR is not set")
	}
	return filepath.Join(runtime, "bpfusefs"), nil
}

// SocketPath returns the control socket of the mount at mountpoint, which
// must be absolute and clean. The name is a hash of the path: mount points
// can be longer than a unix socket path may be.
func SocketPath(mountpoint string) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(mountpoint))
	return filepath.Join(dir, hex.EncodeToString(sum[:16])+".sock"), nil
}

// requestTimeout bounds how long a client may take to send its request.
const requestTimeout = 5 * time.Second

// Handler answers one request; the result is encoded as JSON.
type Handler func(method string) (any, error)

type request struct {
	Method string `json:"method"`
}

type response struct {
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Server serves a control socket.
type Server struct {
	path   string
	file   os.FileInfo // the socket file as created, to recognise it at Close
	owner  int
	handle Handler
	ln     *net.UnixListener
	done   chan struct{}
	conns  sync.WaitGroup
	close  sync.Once
}

// Listen creates the control socket at path, serving requests from uid
// owner and from root. The socket's directory is created 0700 if missing.
//
// A socket already at path is replaced, even one a daemon still answers
// on: the caller owns the name. A daemon listens only once its mount is
// live, and a mount point cannot be mounted twice, so another daemon there
// serves a mount that was unmounted or detached and is on its way out;
// umount(8) returns before that daemon exits, and the next mount of the
// same directory must not wait for it (xfstests remounts at once).
func Listen(path string, owner int, handle Handler) (*Server, error) {
	if err := privateDir(filepath.Dir(path)); err != nil {
		return nil, err
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("control socket: replacing %s: %w", path, err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	// Close removes the file only while it is still ours (see Close).
	ln.SetUnlinkOnClose(false)
	// The directory already keeps others out; the mode is the second lock.
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	s := &Server{path: path, file: fi, owner: owner, handle: handle, ln: ln, done: make(chan struct{})}
	go s.serve()
	return s, nil
}

// privateDir makes dir, or checks that it is a directory of ours, and
// leaves it mode 0700.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("control socket: %s is not a directory owned by uid %d", dir, os.Geteuid())
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("control socket: %w", err)
	}
	return nil
}

// RemoveStale removes the socket at path if no daemon listens on it any
// more (a daemon that was killed cannot remove its own); a live socket is
// an error, a missing one is not.
func RemoveStale(path string) error {
	conn, err := net.Dial("unix", path)
	switch {
	case err == nil:
		conn.Close()
		return fmt.Errorf("control socket %s: another daemon is serving it", path)
	case errors.Is(err, syscall.ECONNREFUSED):
		if err := os.Remove(path); err != nil {
			return fmt.Errorf("control socket: removing stale socket: %w", err)
		}
	}
	return nil
}

func (s *Server) serve() {
	for {
		conn, err := s.ln.AcceptUnix()
		if err != nil {
			return // closed
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer conn.Close()
			s.serveConn(conn)
		}()
	}
}

func (s *Server) serveConn(conn *net.UnixConn) {
	_ = json.NewEncoder(conn).Encode(s.answer(conn))
}

func (s *Server) answer(conn *net.UnixConn) response {
	// Read the request before judging it, so that a refused client gets
	// the refusal as an answer rather than a broken pipe.
	var req request
	_ = conn.SetReadDeadline(time.Now().Add(requestTimeout))
	if err := json.NewDecoder(conn).Decode(&req); err != nil {
		return response{Error: fmt.Sprintf("bad request: %v", err)}
	}
	if err := s.authorize(conn); err != nil {
		return response{Error: err.Error()}
	}
	if req.Method == methodWait {
		// Say that the wait is taken first: the client unmounts only
		// then, since a connection still in the listener's queue when
		// Close shuts it is reset unanswered.
		if err := json.NewEncoder(conn).Encode(response{Result: json.RawMessage("null")}); err != nil {
			return response{Error: err.Error()}
		}
		<-s.done
		return response{Result: json.RawMessage("null")}
	}
	result, err := s.handle(req.Method)
	if err != nil {
		return response{Error: err.Error()}
	}
	b, err := json.Marshal(result)
	if err != nil {
		return response{Error: fmt.Sprintf("encoding %s result: %v", req.Method, err)}
	}
	return response{Result: b}
}

// authorize admits the owner and root, by the peer credentials the kernel
// recorded at connect(2).
func (s *Server) authorize(conn *net.UnixConn) error {
	raw, err := conn.SyscallConn()
	if err != nil {
		return err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return err
	}
	if credErr != nil {
		return fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	if cred.Uid != 0 && int(cred.Uid) != s.owner {
		return fmt.Errorf("permission denied: uid %d did not mount this filesystem (uid %d did)", cred.Uid, s.owner)
	}
	return nil
}

// Close stops serving, answers pending waits and removes the socket.
func (s *Server) Close() error {
	var err error
	s.close.Do(func() {
		err = s.ln.Close()
		// A daemon that mounted the same directory since may have put
		// its own socket at the path: leave that one alone.
		if fi, statErr := os.Lstat(s.path); statErr == nil && os.SameFile(fi, s.file) {
			if rmErr := os.Remove(s.path); err == nil && rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
				err = rmErr
			}
		}
		// Only now answer the waits: umount returns on that answer and
		// promises the socket gone.
		close(s.done)
		s.conns.Wait()
	})
	return err
}

// Pending is a request sent and not yet answered.
type Pending struct {
	method string
	conn   net.Conn
	dec    *json.Decoder
}

// Send sends one request to the control socket at path.
func Send(path, method string) (*Pending, error) {
	conn, err := net.Dial("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := json.NewEncoder(conn).Encode(request{Method: method}); err != nil {
		conn.Close()
		return nil, fmt.Errorf("control socket: sending %s: %w", method, err)
	}
	return &Pending{method: method, conn: conn, dec: json.NewDecoder(conn)}, nil
}

// Wait asks the daemon at path to answer when it shuts down and returns
// once the daemon has taken the request: from then on, however soon the
// daemon shuts down (say, on an unmount the caller makes next), Result
// waits for it to finish.
func Wait(path string) (*Pending, error) {
	p, err := Send(path, methodWait)
	if err != nil {
		return nil, err
	}
	_ = p.SetDeadline(time.Now().Add(requestTimeout))
	if err := p.read(nil); err != nil {
		p.Close()
		return nil, err
	}
	_ = p.SetDeadline(time.Time{})
	return p, nil
}

// SetDeadline bounds the wait for the answer.
func (p *Pending) SetDeadline(t time.Time) error { return p.conn.SetDeadline(t) }

// Close abandons the request.
func (p *Pending) Close() error { return p.conn.Close() }

// Result reads the answer and decodes it into result (which may be nil).
func (p *Pending) Result(result any) error {
	defer p.conn.Close()
	return p.read(result)
}

// read reads one answer and decodes it into result (which may be nil).
func (p *Pending) read(result any) error {
	var resp response
	if err := p.dec.Decode(&resp); err != nil {
		return fmt.Errorf("control socket: reading %s reply: %w", p.method, err)
	}
	if resp.Error != "" {
		return fmt.Errorf("daemon: %s", resp.Error)
	}
	if result == nil {
		return nil
	}
	return json.Unmarshal(resp.Result, result)
}

// Call sends one request to the control socket at path and decodes the
// result into result (which may be nil).
func Call(path, method string, result any) error {
	p, err := Send(path, method)
	if err != nil {
		return err
	}
	return p.Result(result)
}
