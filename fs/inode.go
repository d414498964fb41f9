package fs

import (
	"encoding/binary"
	"slices"
	"sync"

	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// inodeKey identifies a backing object. Keying inodes by it makes every hard
// link of a file one FUSE inode, and lets st_ino be the backing st_ino.
type inodeKey struct {
	dev, ino uint64
}

func keyOf(st *unix.Stat_t) inodeKey { return inodeKey{st.Dev, st.Ino} }

// inode is one object the kernel knows by node id. It holds O_PATH
// descriptors rather than paths, so renames in the backing tree never make it
// point at the wrong object and nothing is resolved twice.
type inode struct {
	id   uint64
	key  inodeKey // the leader's identity of the object at lookup
	mode uint32   // S_IFMT bits; a backing object never changes type

	// ino is the object's st_ino for as long as the kernel knows it, even
	// after a mirror whose copy has another number took over (see
	// inodeTable.stIno).
	ino uint64

	// keys are, on a mirrored mount, each replica's identity of the
	// object (zero where it has no descriptor), so that a lookup through
	// a mirror that took over finds this inode rather than making a
	// second one for the object (two kernel inodes, two page caches). A
	// held descriptor keeps each identity from being reused.
	keys []inodeKey

	// replicas holds one O_PATH descriptor per replica of the object, or
	// -1 for a replica that was out of service when it was looked up (see
	// replicaSet).
	replicas []int
	rs       *replicaSet

	// lookups counts the kernel's references (LOOKUP, CREATE, ...) minus
	// its FORGETs; guarded by inodeTable.mu.
	lookups uint64

	// backing is the passthrough id shared by all opens of this inode.
	backing passthrough.Slot

	// fromHandle is set when id is the backing file handle itself (see
	// inodeTable.handleIDs).
	fromHandle bool

	// used is the inode table's clock at the last lookup; guarded by
	// inodeTable.mu.
	used uint64

	// syncingTimes serialises fileSystem.syncTimes, a stat of the leader
	// and a copy to the mirrors: two interleaved could leave the mirrors
	// with the older times of the two.
	syncingTimes sync.Mutex
}

// fd returns the O_PATH descriptor of the leading replica.
func (n *inode) fd() int { return n.replicas[n.rs.leader()] }

func (n *inode) isSymlink() bool { return n.mode == unix.S_IFLNK }

// inodeTable maps the kernel's node ids to inodes. Node ids are never
// reused for another object during a mount, so a stale id from the kernel
// can never reach a different object.
type inodeTable struct {
	mu     sync.RWMutex
	byID   map[uint64]*inode
	byKey  map[inodeKey]*inode
	nextID uint64

	// ghosts remember forgotten inodes by node id, with a backing file
	// handle. FUSE export support (open_by_handle_at through the mount)
	// hands the kernel handles that outlive its inodes: when one comes
	// back as LOOKUP(id, "."), the ghost revives the object under the
	// same id. A ghost costs a few dozen bytes per forgotten object.
	ghosts     map[uint64]ghost
	ghostByKey map[inodeKey]uint64

	// handleIDs is set when the backing root's filesystem has 8-byte
	// FILEID_INO32_GEN file handles (ext4, XFS with 32-bit inodes): node
	// ids of objects on that filesystem (dev) in the backing directory
	// are then their file handles there, so a kernel file handle names
	// its object without any daemon state, even across a remount. A
	// mirror's copy of an object is the one at the same path. Other
	// objects get counted ids and ghosts.
	handleIDs bool
	dev       uint64
	// searching holds a token while findBacking searches.
	searching chan struct{}
	rs        *replicaSet

	// clock counts lookups, to find the least recently used inodes
	// for pruner, which is nil until the kernel connection is up;
	// pruning is set while a prune runs.
	clock   uint64
	pruner  *pruner
	pruning bool
}

// fileidIno32Gen is FILEID_INO32_GEN from include/linux/exportfs.h: a
// 32-bit inode number followed by a 32-bit generation.
const fileidIno32Gen = 1

// A ghost holds one file handle per replica, nil where it has none.
type ghost struct {
	key     inodeKey
	mode    uint32
	handles []*unix.FileHandle
}

const rootID = 1

// newInodeTable starts the table with the root: the replicas' root
// descriptors, and st, the leader's root stat.
func newInodeTable(rs *replicaSet, st *unix.Stat_t) *inodeTable {
	root := &inode{
		id:       rootID,
		key:      keyOf(st),
		mode:     st.Mode & unix.S_IFMT,
		replicas: rs.rootFDs(),
		rs:       rs,
		lookups:  1, // the kernel never forgets the root
	}
	t := &inodeTable{
		byID:       map[uint64]*inode{rootID: root},
		byKey:      make(map[inodeKey]*inode),
		nextID:     rootID + 1,
		ghosts:     make(map[uint64]ghost),
		ghostByKey: make(map[inodeKey]uint64),
		searching:  make(chan struct{}, 1),
		dev:        st.Dev,
		rs:         rs,
	}
	root.keys, root.ino = t.identify(root.replicas, root.key)
	h, _, err := unix.NameToHandleAt(root.fd(), "", unix.AT_EMPTY_PATH)
	t.handleIDs = err == nil && h.Type() == fileidIno32Gen && h.Size() == 8
	t.index(root)
	return t
}

// stIno returns the st_ino of the object whose inode number on replica i
// is ino. The mount's numbers are the backing directory's; a mirror's are
// moved to a namespace of their own, where the replica's index is XORed
// into the top byte, so that an object first looked up after a mirror
// took over never gets the number of one the kernel or a program knows
// from the backing directory (inode numbers below 2^56 on both).
func stIno(ino uint64, i int) uint64 {
	return ino ^ uint64(i)<<56
}

// identify returns, on a mirrored mount, each replica's identity of the
// object open as fds (-1 where a replica has none), and its st_ino, key
// being its identity on the leader.
func (t *inodeTable) identify(fds []int, key inodeKey) ([]inodeKey, uint64) {
	if len(fds) == 1 {
		return nil, key.ino
	}
	keys := make([]inodeKey, len(fds))
	for i, fd := range fds {
		var st unix.Stat_t
		if fd >= 0 && statFD(fd, &st) == nil {
			keys[i] = keyOf(&st)
		}
	}
	lead := slices.Index(keys, key)
	if lead < 0 {
		lead = t.rs.leader()
	}
	return keys, stIno(key.ino, lead)
}

// index makes n found by each of its identities; t.mu held.
func (t *inodeTable) index(n *inode) {
	t.byKey[n.key] = n
	for _, k := range n.keys {
		if k != (inodeKey{}) {
			t.byKey[k] = n
		}
	}
}

// unindex undoes index; t.mu held.
func (t *inodeTable) unindex(n *inode) {
	t.unindexKey(n, n.key)
	for _, k := range n.keys {
		t.unindexKey(n, k)
	}
}

// unindexKey drops k from the index if it names n; t.mu held.
func (t *inodeTable) unindexKey(n *inode, k inodeKey) {
	if t.byKey[k] == n {
		delete(t.byKey, k)
	}
}

// stableInos gives entries, read from replica i's directory open as dir,
// the inode numbers stat(2) gives their objects. Only once a mirror has
// taken over can they differ from what the leader lists: an object the
// kernel knew before keeps its number, and the others are in the
// listing replica's namespace (see stIno).
func (t *inodeTable) stableInos(dir, i int, entries []fuse.DirEntry) {
	if t.rs.leader() == backingReplica {
		return
	}
	var st unix.Stat_t
	if statFD(dir, &st) != nil {
		return
	}
	t.mu.RLock()
	defer t.mu.RUnlock()
	for j, e := range entries {
		if n := t.byKey[inodeKey{st.Dev, e.Ino}]; n != nil {
			entries[j].Ino = n.ino
		} else {
			entries[j].Ino = stIno(e.Ino, i)
		}
	}
}

func (t *inodeTable) get(id uint64) *inode {
	t.mu.RLock()
	n := t.byID[id]
	t.mu.RUnlock()
	return n
}

// add takes ownership of fds, the O_PATH descriptors of one object on
// each replica (-1 where it has none), st being the leader's stat, and
// returns its inode with one more kernel reference. When the object is
// already known (a hard link, a repeated lookup) fds are closed.
func (t *inodeTable) add(fds []int, st *unix.Stat_t) *inode {
	key := keyOf(st)
	if n := t.ref(key); n != nil {
		closeFDs(fds)
		return n
	}
	// Ids are the backing directory's handles: none once it is out of
	// service and a mirror leads.
	var hid uint64
	if t.rs.leader() == backingReplica {
		hid = t.handleID(fds[backingReplica], st)
	}
	keys, ino := t.identify(fds, key)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.byKey[key]; n != nil {
		n.lookups++
		closeFDs(fds)
		return n
	}
	n := &inode{
		id:         hid,
		key:        key,
		mode:       st.Mode & unix.S_IFMT,
		ino:        ino,
		keys:       keys,
		replicas:   fds,
		rs:         t.rs,
		lookups:    1,
		fromHandle: hid != 0 && !t.taken(hid),
	}
	if !n.fromHandle {
		n.id = t.countedID(n, key)
	}
	t.byID[n.id] = n
	t.index(n)
	t.clock++
	n.used = t.clock
	t.startPrune(len(t.byID) * len(fds))
	return n
}

// startPruning lets the table ask the kernel to drop inodes (see pruner).
func (t *inodeTable) startPruning(p *pruner) {
	t.mu.Lock()
	t.pruner = p
	t.mu.Unlock()
}

// ref takes a kernel reference on the known object key, if any.
func (t *inodeTable) ref(key inodeKey) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.byKey[key]
	if n != nil {
		n.lookups++
		t.clock++
		n.used = t.clock
	}
	return n
}

// handleID returns the node id fd's file handle makes (see handleIDs), or 0.
func (t *inodeTable) handleID(fd int, st *unix.Stat_t) uint64 {
	if !t.handleIDs || st.Dev != t.dev {
		return 0
	}
	h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH)
	if err != nil || h.Type() != fileidIno32Gen || h.Size() != 8 {
		return 0
	}
	return binary.NativeEndian.Uint64(h.Bytes())
}

// taken reports whether id is reserved or names a live inode or a ghost;
// t.mu held. go-fuse keeps the all-ones id for itself.
func (t *inodeTable) taken(id uint64) bool {
	_, ghost := t.ghosts[id]
	return id == 0 || id == rootID || id == ^uint64(0) || t.byID[id] != nil || ghost
}

// countedID gives an object without a handle id the id of its ghost, when
// it is the same object again (the handle tells a reused inode number
// apart), or a fresh one; t.mu held.
func (t *inodeTable) countedID(n *inode, key inodeKey) uint64 {
	if gid, ok := t.ghostByKey[key]; ok {
		g := t.ghosts[gid]
		delete(t.ghosts, gid)
		delete(t.ghostByKey, key)
		if sameHandles(handlesOf(n), g.handles) {
			return gid
		}
	}
	for t.taken(t.nextID) {
		t.nextID++
	}
	t.nextID++
	return t.nextID - 1
}

// maxGhosts bounds the memory ghosts take (about 100 bytes each); past it,
// an arbitrary older ghost goes, and a handle to it gets ESTALE once its
// inode is forgotten, as after a server restart.
const maxGhosts = 1 << 20

// remember leaves a ghost for a node being forgotten. A deleted object
// needs none: its handles are stale anyway. Without mirrors, neither does
// one whose id is its handle; with them the ghost keeps each mirror's
// handle for this mount, as the path that revive finds the mirrors' copies
// by otherwise takes a search for a file the backing filesystem hands back
// without one (see errNoPath).
func (t *inodeTable) remember(node *inode) {
	if node.fromHandle && !t.rs.mirrored() {
		return // the id itself is the handle
	}
	var st unix.Stat_t
	if statFD(node.fd(), &st) != nil || st.Nlink == 0 {
		return
	}
	handles := handlesOf(node)
	if handles[t.rs.leader()] == nil {
		return // the backing filesystem cannot export handles
	}
	if len(t.ghosts) >= maxGhosts {
		for id, g := range t.ghosts {
			delete(t.ghosts, id)
			delete(t.ghostByKey, g.key)
			break
		}
	}
	t.ghosts[node.id] = ghost{key: node.key, mode: node.mode, handles: handles}
	t.ghostByKey[node.key] = node.id
}

// handlesOf returns the file handle of each of n's replicas, nil where
// there is none.
func handlesOf(n *inode) []*unix.FileHandle {
	hs := make([]*unix.FileHandle, len(n.replicas))
	for i, fd := range n.replicas {
		if fd < 0 {
			continue
		}
		if h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err == nil {
			hs[i] = &h
		}
	}
	return hs
}

func sameHandles(a, b []*unix.FileHandle) bool {
	for i := range a {
		if (a[i] == nil) != (b[i] == nil) {
			return false
		}
		if a[i] != nil && (a[i].Type() != b[i].Type() || string(a[i].Bytes()) != string(b[i].Bytes())) {
			return false
		}
	}
	return true
}

// revive returns the inode with node id id, bringing a forgotten one back
// by opening its file handles (the id itself, or its ghost's) on each
// healthy replica, with one more kernel reference. It returns nil when the
// object is gone, or cannot be reached on every healthy replica.
//
// A deleted object is gone even while a descriptor keeps it alive: the
// kernel asks only after forgetting its inode, but the FORGET may not
// have reached us yet (over FUSE-over-io_uring it comes by /dev/fuse and
// the LOOKUP by the ring), and a RELEASE still in flight keeps the backing
// inode open, so its handle would still open.
//
// On a mirrored mount, a handle from before a remount may name a file that
// the backing filesystem hands back without a path (errNoPath). Its path
// is then searched for, without the table lock, until cancel is closed.
func (t *inodeTable) revive(id uint64, cancel <-chan struct{}) (*inode, *unix.Stat_t) {
	n, st, err := t.reviveAt(id, "")
	if err != errNoPath {
		return n, st
	}
	rel, err := t.findBacking(id, cancel)
	if err != nil {
		return nil, nil
	}
	n, st, _ = t.reviveAt(id, rel)
	return n, st
}

// findBacking returns the path of the backing copy of the object whose
// handle is id, one search at a time: searches side by side would read the
// same directories.
func (t *inodeTable) findBacking(id uint64, cancel <-chan struct{}) (string, error) {
	select {
	case t.searching <- struct{}{}:
	case <-cancel:
		return "", unix.EINTR
	}
	defer func() { <-t.searching }()
	backing := t.rs.r[backingReplica]
	fd, err := backing.openHandle(backingHandle(id))
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	return backing.findPath(fd, cancel)
}

// backingHandle returns the backing file handle that a handle id is (see
// handleIDs).
func backingHandle(id uint64) unix.FileHandle {
	return unix.NewFileHandle(fileidIno32Gen, binary.NativeEndian.AppendUint64(nil, id))
}

// reviveAt is revive with the table lock held throughout. It opens the
// backing copy of an object with a handle id by that handle, or at rel
// when set, and fails with errNoPath when it needs the path it lacks.
func (t *inodeTable) reviveAt(id uint64, rel string) (*inode, *unix.Stat_t, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st unix.Stat_t
	if n := t.byID[id]; n != nil {
		if statFD(n.fd(), &st) != nil || st.Nlink == 0 {
			return nil, nil, nil
		}
		n.lookups++
		return n, &st, nil
	}
	g, isGhost := t.ghosts[id]
	// open opens replica i's copy of the object, O_PATH.
	var open func(i int, r *replica) (int, error)
	switch {
	case isGhost:
		delete(t.ghosts, id)
		delete(t.ghostByKey, g.key)
		open = func(i int, r *replica) (int, error) {
			if g.handles[i] == nil {
				return -1, unix.ESTALE
			}
			return r.openHandle(*g.handles[i])
		}
	case t.handleIDs && t.rs.healthy(backingReplica):
		backing := t.rs.r[backingReplica]
		first := -1
		open = func(i int, r *replica) (fd int, err error) {
			if i == backingReplica {
				// Opened at rel, it is checked below to be the
				// object the handle names.
				if rel == "" {
					fd, err = r.openHandle(backingHandle(id))
				} else {
					fd, err = openBeneath(r.rootFD, rel, unix.O_PATH|unix.O_NOFOLLOW, 0)
				}
				first = fd
				return fd, err
			}
			if first < 0 {
				return -1, unix.ESTALE // degraded meanwhile
			}
			// A mirror holds its copy where the backing directory
			// does; a rename moving the object meanwhile makes the
			// handle stale for this once.
			at, err := backing.pathOf(first)
			if err != nil {
				return -1, err
			}
			fd, err = openBeneath(r.rootFD, at, unix.O_PATH|unix.O_NOFOLLOW, 0)
			if err != nil {
				return -1, err
			}
			if again, err := backing.pathOf(first); err != nil || again != at {
				unix.Close(fd)
				return -1, unix.ESTALE
			}
			return fd, nil
		}
	default:
		return nil, nil, nil
	}
	fds := make([]int, len(t.rs.r))
	for i := range fds {
		fds[i] = -1
	}
	for i, r := range t.rs.r { // the backing directory's first
		if !t.rs.healthy(i) {
			continue
		}
		fd, err := open(i, r)
		if err != nil {
			closeFDs(fds)
			return nil, nil, err
		}
		fds[i] = fd
	}
	if !sameType(fds) {
		closeFDs(fds)
		return nil, nil, nil
	}
	fd := fds[t.rs.leader()]
	if statFD(fd, &st) != nil || st.Nlink == 0 {
		closeFDs(fds)
		return nil, nil, nil
	}
	key := keyOf(&st)
	// A handle names one object for good (it carries the generation),
	// but the object may have been looked up again under a new id since.
	valid := t.byKey[key] == nil
	if !isGhost {
		var bst unix.Stat_t
		valid = valid && statFD(fds[backingReplica], &bst) == nil &&
			t.handleID(fds[backingReplica], &bst) == id
	}
	if !valid {
		closeFDs(fds)
		return nil, nil, nil
	}
	n := &inode{id: id, key: key, mode: st.Mode & unix.S_IFMT, replicas: fds, rs: t.rs, lookups: 1, fromHandle: !isGhost}
	n.keys, n.ino = t.identify(fds, key)
	t.byID[id] = n
	t.index(n)
	return n, &st, nil
}

// forget drops n references from the inode and closes its descriptors with
// the last one.
func (t *inodeTable) forget(id, n uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	node := t.byID[id]
	if node == nil || id == rootID {
		return
	}
	if n < node.lookups {
		node.lookups -= n
		return
	}
	delete(t.byID, id)
	t.unindex(node)
	t.remember(node)
	closeFDs(node.replicas)
}

// closeAll releases every descriptor at unmount.
func (t *inodeTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, node := range t.byID {
		closeFDs(node.replicas)
		delete(t.byID, id)
		t.unindex(node)
	}
	clear(t.ghosts)
	clear(t.ghostByKey)
}

// closeFDs closes the open descriptors of fds (-1 marks none).
func closeFDs(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}
