package fs

import (
	"sync"
	"sync/atomic"
)

// handle is an open file or directory (the kernel's fh).
type handle struct {
	node *inode
	// fds holds one open descriptor per replica, indexed like
	// node.replicas, -1 where the replica is out of service.
	fds []int
	// reader is the replica reads go to (see readReplica).
	reader atomic.Int32
	// written is set once a write, truncate or fallocate went through the
	// handle, so release copies the leader's times to the mirrors.
	written atomic.Bool
	// passthrough is set when the kernel serves this open's I/O through
	// node.backing.
	passthrough bool
	// direct is set for O_DIRECT opens, whose backing I/O needs aligned
	// buffers.
	direct bool
	// appending is set for O_APPEND opens, writable for those that may
	// write.
	appending, writable bool
	// dir is the stream of a directory handle.
	dir *dirStream

	// writeback serves the kernel's page-cache writeback (WRITE_CACHE
	// requests, from shared mappings) when fds cannot: see
	// fileSystem.writebackHandle. Opened on first use, closed with h.
	writebackOnce sync.Once
	writeback     *handle
	writebackErr  error

	// zeroCopy is this open's backing I/O when the transport may do its
	// READs and WRITEs on the caller's pages (fileSystem.ZeroCopyFile),
	// nil when it may not; decided once: the kernel sends them that way
	// for as long as the file is open.
	zeroCopyOnce sync.Once
	zeroCopy     *zeroCopyFile
}

// fd returns the descriptor of the leading replica.
func (h *handle) fd() int { return h.fds[h.node.rs.leader()] }

func (h *handle) close() {
	closeFDs(h.fds)
	if h.writeback != nil {
		h.writeback.close()
	}
}

type handleTable struct {
	mu     sync.RWMutex
	byID   map[uint64]*handle
	nextID uint64
}

func newHandleTable() *handleTable {
	return &handleTable{byID: make(map[uint64]*handle), nextID: 1}
}

func (t *handleTable) add(h *handle) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	id := t.nextID
	t.nextID++
	t.byID[id] = h
	return id
}

func (t *handleTable) get(id uint64) *handle {
	t.mu.RLock()
	h := t.byID[id]
	t.mu.RUnlock()
	return h
}

func (t *handleTable) remove(id uint64) *handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.byID[id]
	delete(t.byID, id)
	return h
}

// drain removes and returns every handle still open at unmount.
func (t *handleTable) drain() []*handle {
	t.mu.Lock()
	defer t.mu.Unlock()
	var hs []*handle
	for id, h := range t.byID {
		hs = append(hs, h)
		delete(t.byID, id)
	}
	return hs
}
