package fs

import (
	"cmp"
	"log"
	"slices"
	"sync/atomic"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// Every inode the kernel holds costs the daemon one O_PATH descriptor per
// replica, and the kernel holds every inode it has looked up until memory
// pressure evicts it: a find over a large tree would run the daemon out of
// descriptors (EMFILE), long before it runs out of memory. The pruner asks
// the kernel to drop the least recently looked-up inodes it is not using
// (FUSE_NOTIFY_PRUNE, Linux 6.17+) once the descriptors reach a high-water
// mark, and their FORGETs close the descriptors. Inodes in use (open files,
// working directories, mount points) stay.
type pruner struct {
	// highWater and lowWater are descriptor counts: pruning starts above
	// the first and aims at the second.
	highWater, lowWater int
	notify              func(nodes []uint64) fuse.Status
	log                 *log.Logger
	running             atomic.Bool
	unsupported         atomic.Bool
}

// newPruner sizes the pruner to this process's descriptor limit.
func newPruner(notify func([]uint64) fuse.Status, logger *log.Logger) *pruner {
	limit := 1 << 20
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur < uint64(limit) {
		limit = int(rl.Cur)
	}
	return &pruner{highWater: limit * 3 / 4, lowWater: limit / 2, notify: notify, log: logger}
}

// pressure reports whether fds descriptors held by inodes call for pruning.
func (p *pruner) pressure(fds int) bool {
	return p != nil && fds > p.highWater && !p.unsupported.Load() && !p.running.Load()
}

// prune asks the kernel to drop nodes, oldest first, off the caller's
// goroutine; one prune runs at a time.
func (p *pruner) prune(nodes []uint64) {
	if !p.running.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer p.running.Store(false)
		switch st := p.notify(nodes); st {
		case fuse.OK:
		case fuse.ENOSYS:
			p.unsupported.Store(true)
			p.log.Printf("the kernel cannot prune inodes (FUSE_NOTIFY_PRUNE needs Linux 6.17+): large trees may run the daemon out of descriptors")
		default:
			p.log.Printf("prune %d inodes: %v", len(nodes), st)
		}
	}()
}

// pruneVictims returns the ids of the least recently looked-up inodes whose
// descriptors bring the table from fds down to the low-water mark. The
// caller holds t.mu.
func (t *inodeTable) pruneVictims(fds int) []uint64 {
	perInode := max(len(t.rs.r), 1)
	excess := (fds - t.pruner.lowWater) / perInode
	if excess <= 0 {
		return nil
	}
	nodes := make([]*inode, 0, len(t.byID))
	for id, n := range t.byID {
		if id != rootID {
			nodes = append(nodes, n)
		}
	}
	slices.SortFunc(nodes, func(a, b *inode) int { return cmp.Compare(a.used, b.used) })
	ids := make([]uint64, 0, min(excess, len(nodes)))
	for _, n := range nodes[:min(excess, len(nodes))] {
		ids = append(ids, n.id)
	}
	return ids
}
