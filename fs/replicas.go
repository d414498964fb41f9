package fs

import (
	"errors"
	"fmt"
	"log"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// A mount serves one or more replicas of a tree: the backing directory and
// its mirrors. Every mutation reaches every healthy replica; reads and
// attributes come from one. Each inode and open file holds one descriptor
// per replica, indexed like replicaSet.r, or -1 where the replica had
// already failed when the descriptor would have been opened.
//
// Agreement rules, shared by every operation:
//
//   - The leader is the first healthy replica. Its attributes are the ones
//     the kernel sees, and a mutation runs on it first: when it fails for
//     an ordinary reason (ENOENT, EEXIST, EACCES...), that is the answer
//     and the other replicas are not touched.
//   - Once a replica succeeded, a replica that fails the same mutation has
//     diverged: it is degraded (never written again during this mount) and
//     the caller gets success. So nothing acknowledged is missing from any
//     healthy replica, and the mount keeps working while one survives.
//   - When every replica fails, nothing is degraded and the caller gets the
//     error: the leader's when they agree, EIO when they do not.
//
// Degrading is permanent for the mount: a degraded replica may have missed
// any later change, so only `--mirror-repair` at the next mount brings it
// back.
type replicaSet struct {
	r []*replica
	// lead is the index of the leader; it only moves forward.
	lead atomic.Int32
	mu   sync.Mutex // serialises degrade
	log  *log.Logger
	// degraded are called, under mu, after a replica is degraded.
	degraded []func()
}

// onDegrade registers f to run whenever a replica is degraded, before
// degrade returns.
func (s *replicaSet) onDegrade(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.degraded = append(s.degraded, f)
}

type replica struct {
	path string
	// rootFD is the O_PATH descriptor of the replica's root (owned by the
	// root inode); openFD an O_RDONLY one for open_by_handle_at, which
	// refuses O_PATH descriptors.
	rootFD, openFD int
	// procPath is the root as /proc/self/fd links name it.
	procPath string
	// asyncWrites is set when the replica's filesystem does buffered
	// writes without blocking (see probeAsyncWrites).
	asyncWrites bool
	degraded    atomic.Bool
	errors      atomic.Uint64
	cause       atomic.Pointer[string]
}

// openReplica opens a replica's root directory.
func openReplica(path string) (*replica, *unix.Stat_t, error) {
	rootFD, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("open backing directory %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := statFD(rootFD, &st); err != nil {
		unix.Close(rootFD)
		return nil, nil, fmt.Errorf("stat backing directory %s: %w", path, err)
	}
	procPath, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(rootFD))
	if err != nil {
		unix.Close(rootFD)
		return nil, nil, fmt.Errorf("resolve backing directory %s: %w", path, err)
	}
	openFD, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		unix.Close(rootFD)
		return nil, nil, fmt.Errorf("open backing directory %s: %w", path, err)
	}
	return &replica{path: path, rootFD: rootFD, openFD: openFD, procPath: procPath, asyncWrites: probeAsyncWrites(openFD)}, &st, nil
}

// probeAsyncWrites reports whether the filesystem of directory dir can do
// a buffered write without blocking (RWF_NOWAIT; XFS and btrfs can, ext4
// and tmpfs cannot). io_uring completes such writes inline; elsewhere it
// hands every buffered write to an io-wq worker thread, which costs more
// than the write itself, so the engine path leaves those writes to
// pwrite(2). It writes one byte to an unnamed temporary file.
func probeAsyncWrites(dir int) bool {
	fd, err := unix.Openat(dir, ".", unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0600)
	if err != nil {
		return false
	}
	defer unix.Close(fd)
	_, err = unix.Pwritev2(fd, [][]byte{{0}}, 0, unix.RWF_NOWAIT)
	return err == nil || err == unix.EAGAIN
}

// newReplicaSet opens the replicas at paths, the backing directory first,
// and returns them with the stat of each root.
func newReplicaSet(paths []string, logger *log.Logger) (*replicaSet, []unix.Stat_t, error) {
	s := &replicaSet{log: logger}
	sts := make([]unix.Stat_t, 0, len(paths))
	for _, p := range paths {
		r, st, err := openReplica(p)
		if err != nil {
			s.closeOpenFDs()
			for _, r := range s.r {
				unix.Close(r.rootFD)
			}
			return nil, nil, err
		}
		s.r = append(s.r, r)
		sts = append(sts, *st)
	}
	return s, sts, nil
}

func (s *replicaSet) mirrored() bool { return len(s.r) > 1 }

// backingReplica is the index of the backing directory; the mirrors follow.
const backingReplica = 0

// pathOf returns the path of the object open as fd, relative to r's root,
// as /proc/self/fd names it: one of a file's links. It fails with ENOENT
// when the object has none (it was unlinked) or lies outside the root, and
// with errNoPath when the filesystem does not know where it is.
func (r *replica) pathOf(fd int) (string, error) {
	path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd))
	if err != nil {
		return "", err
	}
	if path == "/" {
		return "", errNoPath
	}
	rel, ok := strings.CutPrefix(path, r.procPath+"/")
	if !ok {
		return "", unix.ENOENT // unlinked ("... (deleted)") or moved away
	}
	return rel, nil
}

// openHandle opens the object of replica r's filesystem that h names,
// O_PATH.
func (r *replica) openHandle(h unix.FileHandle) (int, error) {
	return unix.OpenByHandleAt(r.openFD, h, unix.O_PATH|unix.O_CLOEXEC)
}

// sameType reports whether the objects open as fds (-1 for none) all have
// one file type.
func sameType(fds []int) bool {
	var mode uint32
	for _, fd := range fds {
		if fd < 0 {
			continue
		}
		var st unix.Stat_t
		if statFD(fd, &st) != nil || mode != 0 && st.Mode&unix.S_IFMT != mode {
			return false
		}
		mode = st.Mode & unix.S_IFMT
	}
	return true
}

// asyncWrites reports whether every replica does buffered writes without
// blocking.
func (s *replicaSet) asyncWrites() bool {
	for _, r := range s.r {
		if !r.asyncWrites {
			return false
		}
	}
	return true
}

// leader returns the index of the replica that answers reads and
// attributes and runs each mutation first.
func (s *replicaSet) leader() int { return int(s.lead.Load()) }

func (s *replicaSet) healthy(i int) bool { return !s.r[i].degraded.Load() }

// rootFDs returns the root descriptors, indexed by replica.
func (s *replicaSet) rootFDs() []int {
	fds := make([]int, len(s.r))
	for i, r := range s.r {
		fds[i] = r.rootFD
	}
	return fds
}

// degrade takes replica i out of service after err, logging the cause
// once, and moves the leader past it. The last healthy replica is never
// degraded: its failures are the caller's. It reports whether replica i
// is out of service now.
func (s *replicaSet) degrade(i int, op string, err error) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.r[i]
	r.errors.Add(1)
	if r.degraded.Load() {
		return true
	}
	healthy := 0
	for j := range s.r {
		if s.healthy(j) {
			healthy++
		}
	}
	if healthy == 1 {
		return false
	}
	cause := fmt.Sprintf("%s: %v", op, err)
	r.cause.Store(&cause)
	r.degraded.Store(true)
	s.log.Printf("replica %s degraded: %s; it is no longer written, repair it with --mirror-repair at the next mount", r.path, cause)
	for j := range s.r {
		if s.healthy(j) {
			if s.lead.Swap(int32(j)) != int32(j) {
				s.log.Printf("replica %s leads now: reads and attributes come from it", s.r[j].path)
			}
			break
		}
	}
	for _, f := range s.degraded {
		f()
	}
	return true
}

// errSkipped marks the outcome of a replica an operation did not reach.
var errSkipped = errors.New("replica not in service")

// settle applies the agreement rules to the outcome of one mutation on
// every replica (errs indexed by replica, errSkipped where it did not run)
// and returns the caller's answer.
func (s *replicaSet) settle(op string, errs []error) error {
	var first error
	ok, disagree := false, false
	for _, err := range errs {
		switch {
		case err == errSkipped:
		case err == nil:
			ok = true
		case first == nil:
			first = err
		case !errors.Is(err, first):
			disagree = true
		}
	}
	if !ok {
		if first == nil || disagree {
			return unix.EIO
		}
		return first
	}
	for i, err := range errs {
		if err != nil && err != errSkipped {
			s.degrade(i, op, err)
		}
	}
	return nil
}

// apply runs a mutation on every healthy replica whose descriptor in fds
// is open (fn gets the replica index and the descriptor): the leader
// first, then the others unless the leader failed for an ordinary reason
// (see replicaSet). With one replica it is just fn.
func (s *replicaSet) apply(op string, fds []int, fn func(i, fd int) error) error {
	lead := s.leader()
	err := fn(lead, fds[lead])
	if !s.mirrored() {
		return err
	}
	if err != nil && !replicaFault(err) {
		return err
	}
	errs := make([]error, len(s.r))
	for i := range errs {
		switch {
		case i == lead:
			errs[i] = err
		case !s.healthy(i) || fds[i] < 0:
			errs[i] = errSkipped
		default:
			errs[i] = fn(i, fds[i])
		}
	}
	return s.settle(op, errs)
}

// replicaFault reports whether err from a backing syscall may mean the
// replica itself is failing rather than that the operation is wrong: then
// the other replicas are tried before answering.
func replicaFault(err error) bool {
	switch err {
	case unix.EIO, unix.ENOSPC, unix.EDQUOT, unix.EROFS, unix.ENODEV, unix.ENXIO,
		unix.ENOTCONN, unix.ECONNABORTED, unix.ESTALE, unix.EUCLEAN, unix.EBADF:
		return true
	}
	return false
}

// stats describes every replica for Stats.
func (s *replicaSet) stats() []ReplicaStats {
	out := make([]ReplicaStats, len(s.r))
	lead := s.leader()
	for i, r := range s.r {
		out[i] = ReplicaStats{Path: r.path, State: ReplicaOK, Errors: r.errors.Load(), Leader: i == lead}
		if r.degraded.Load() {
			out[i].State = ReplicaDegraded
			out[i].Cause = *r.cause.Load()
		}
	}
	return out
}

// closeOpenFDs closes the descriptors the replica set owns; the root
// descriptors belong to the root inode.
func (s *replicaSet) closeOpenFDs() {
	for _, r := range s.r {
		unix.Close(r.openFD)
	}
}
