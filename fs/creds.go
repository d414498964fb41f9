package fs

import (
	"fmt"
	"runtime"
	"sync"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// credWorkers create backing objects with the caller's identity, so that the
// backing filesystem itself applies every ownership rule of a local create:
// owner = caller, group = caller or the setgid parent's, S_ISGID stripped
// from files made by non-members, default ACLs instead of the umask, and the
// umask the kernel passed (FUSE_DONT_MASK) where there is no default ACL.
//
// Linux keeps fsuid, fsgid, groups, capabilities and (after
// unshare(CLONE_FS)) the umask per thread, so each worker owns a locked OS
// thread for its whole life and never unlocks it: Go then discards the
// thread when the worker exits instead of reusing its altered credentials.
//
// Permission to create was already checked by the kernel against the real
// caller (default_permissions), so while impersonating a worker keeps
// CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH and CAP_MKNOD (the caller's own group
// memberships are not known to the daemon) but not CAP_FSETID, CAP_FOWNER or
// CAP_CHOWN, whose absence is what makes the setgid rules apply.
type credWorkers struct {
	jobs chan credJob
	wg   sync.WaitGroup
}

type credJob struct {
	caller   fuse.Caller
	umask    uint32
	override bool // keep the DAC override capabilities (false for ACCESS)
	fn       func() error
	done     chan error
}

const numCredWorkers = 4

// Capabilities dropped while acting for a non-root caller, so that the
// backing filesystem applies the caller's setgid and ownership rules.
var droppedCaps = []int{unix.CAP_FSETID, unix.CAP_FOWNER, unix.CAP_CHOWN}

// Further capabilities dropped when the kernel has not checked permissions
// already (ACCESS).
var overrideCaps = []int{unix.CAP_DAC_OVERRIDE, unix.CAP_DAC_READ_SEARCH}

func startCredWorkers() (*credWorkers, error) {
	w := &credWorkers{jobs: make(chan credJob)}
	started := make(chan error, numCredWorkers)
	for range numCredWorkers {
		w.wg.Add(1)
		go w.loop(started)
	}
	var firstErr error
	for range numCredWorkers {
		if err := <-started; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		w.stop()
		return nil, firstErr
	}
	return w, nil
}

func (w *credWorkers) stop() {
	close(w.jobs)
	w.wg.Wait()
}

// run executes fn on a worker thread whose filesystem identity is the caller's.
func (w *credWorkers) run(caller fuse.Caller, umask uint32, override bool, fn func() error) error {
	done := make(chan error, 1)
	w.jobs <- credJob{caller: caller, umask: umask, override: override, fn: fn, done: done}
	return <-done
}

func (w *credWorkers) loop(started chan<- error) {
	defer w.wg.Done()
	runtime.LockOSThread() // never unlocked, see credWorkers

	caps, err := prepareThread()
	started <- err
	if err != nil {
		for job := range w.jobs {
			job.done <- err
		}
		return
	}
	for job := range w.jobs {
		job.done <- caps.runAs(job)
	}
}

// threadCaps holds the capability sets a worker switches between.
type threadCaps struct {
	hdr             unix.CapUserHeader
	root            [2]unix.CapUserData // as the thread started
	impersonating   [2]unix.CapUserData // without droppedCaps
	withoutOverride [2]unix.CapUserData // without droppedCaps and overrideCaps
}

func clearCaps(set *[2]unix.CapUserData, caps []int) {
	for _, c := range caps {
		set[c/32].Effective &^= 1 << (c % 32)
	}
}

// prepareThread gives the calling thread its own umask and an empty group
// list, and computes the capability sets used while impersonating.
func prepareThread() (*threadCaps, error) {
	if err := unix.Unshare(unix.CLONE_FS); err != nil {
		return nil, fmt.Errorf("unshare(CLONE_FS): %w", err)
	}
	if err := unix.Setgroups(nil); err != nil {
		return nil, fmt.Errorf("setgroups: %w", err)
	}
	c := &threadCaps{hdr: unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}}
	if err := unix.Capget(&c.hdr, &c.root[0]); err != nil {
		return nil, fmt.Errorf("capget: %w", err)
	}
	c.impersonating = c.root
	clearCaps(&c.impersonating, droppedCaps)
	c.withoutOverride = c.impersonating
	clearCaps(&c.withoutOverride, overrideCaps)
	return c, nil
}

func (c *threadCaps) capset(set *[2]unix.CapUserData) error {
	hdr := c.hdr
	if err := unix.Capset(&hdr, &set[0]); err != nil {
		return fmt.Errorf("capset: %w", err)
	}
	return nil
}

func (c *threadCaps) runAs(job credJob) error {
	unix.Umask(int(job.umask))
	unix.Setfsgid(int(job.caller.Gid))
	defer unix.Setfsgid(0)
	if job.caller.Uid == 0 {
		return job.fn()
	}
	unix.Setfsuid(int(job.caller.Uid))
	defer func() {
		unix.Setfsuid(0)
		if err := c.capset(&c.root); err != nil {
			// A worker that cannot get its rights back must not serve
			// again with the wrong ones.
			panic(err)
		}
	}()
	set := &c.impersonating
	if !job.override {
		set = &c.withoutOverride
	}
	if err := c.capset(set); err != nil {
		return err
	}
	return job.fn()
}
