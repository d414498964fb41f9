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
	return p != nil && fds > p.highWater && !p.unsupported.Load()
}

// ask asks the kernel to drop nodes and reports whether it did. The kernel
// evicts each one it is not using before the notify returns, queueing its
// FORGET; the daemon reads those afterwards.
func (p *pruner) ask(nodes []uint64) bool {
	switch st := p.notify(nodes); st {
	case fuse.OK:
		return true
	case fuse.ENOSYS:
		p.unsupported.Store(true)
		p.log.Printf("the kernel cannot prune inodes (FUSE_NOTIFY_PRUNE needs Linux 6.17+): large trees may run the daemon out of descriptors")
	default:
		p.log.Printf("prune %d inodes: %v", len(nodes), st)
	}
	return false
}

// startPrune begins a prune if the table, holding fds descriptors, is above
// the high-water mark and none is running; t.mu held.
func (t *inodeTable) startPrune(fds int) {
	if t.pruning || !t.pruner.pressure(fds) {
		return
	}
	if ids, mark := t.pruneVictims(0); len(ids) > 0 {
		t.pruning = true
		go t.prune(ids, mark)
	}
}

// prune asks the kernel to drop ids, then, for as long as lookups made
// while it asked keep the table above the high-water mark, the next least
// recently used inodes: a lookup never waits for a prune, so without this
// a burst of lookups that outran one would leave its excess for good.
// t.pruning is cleared under t.mu, so a lookup either sees this prune
// running or starts the next.
func (t *inodeTable) prune(ids []uint64, mark uint64) {
	for len(ids) > 0 {
		asked := t.pruner.ask(ids)
		t.mu.Lock()
		ids = nil
		if asked {
			ids, mark = t.pruneVictims(mark)
		}
		t.pruning = len(ids) > 0
		t.mu.Unlock()
	}
}

// pruneVictims returns the ids of the least recently looked-up inodes whose
// descriptors bring the table down to the low-water mark, and the newest
// victim's lookup time, or none while the table is not above the
// high-water mark. Inodes last looked up at or before mark are ones this
// prune already asked the kernel to drop: their FORGETs are on the way (or
// the kernel is using them), so they are neither counted nor asked for
// again. The caller holds t.mu.
func (t *inodeTable) pruneVictims(mark uint64) ([]uint64, uint64) {
	perInode := max(len(t.rs.r), 1)
	nodes := make([]*inode, 0, len(t.byID))
	for id, n := range t.byID {
		if id != rootID && n.used > mark {
			nodes = append(nodes, n)
		}
	}
	fds := (len(nodes) + 1) * perInode // the root's too
	if !t.pruner.pressure(fds) {
		return nil, mark
	}
	slices.SortFunc(nodes, func(a, b *inode) int { return cmp.Compare(a.used, b.used) })
	victims := nodes[:min((fds-t.pruner.lowWater)/perInode, len(nodes))]
	if len(victims) == 0 {
		return nil, mark
	}
	ids := make([]uint64, len(victims))
	for i, n := range victims {
		ids[i] = n.id
	}
	return ids, victims[len(victims)-1].used
}
