package fs

import (
	"encoding/binary"
	"sync"

	"github.com/bpfusefs/bpfusefs/passthrough"
	"golang.org/x/sys/unix"
)

// inodeKey identifies a backing object. Keying inodes by it makes every hard
// link of a file one FUSE inode, and lets st_ino be the backing st_ino.
type inodeKey struct {
	dev, ino uint64
}

// inode is one object the kernel knows by node id. It holds O_PATH
// descriptors rather than paths, so renames in the backing tree never make it
// point at the wrong object and nothing is resolved twice.
type inode struct {
	id   uint64
	key  inodeKey
	mode uint32 // S_IFMT bits; a backing object never changes type

	// replicas holds one O_PATH descriptor per replica of the object; the
	// first is the primary, whose identity is key. Mirrors (more than one
	// replica) are not served yet, so today it always has one element.
	replicas []int

	// lookups counts the kernel's references (LOOKUP, CREATE, ...) minus
	// its FORGETs; guarded by inodeTable.mu.
	lookups uint64

	// backing is the passthrough id shared by all opens of this inode.
	backing passthrough.Slot

	// fromHandle is set when id is the backing file handle itself (see
	// inodeTable.handleIDs).
	fromHandle bool
}

// fd returns the O_PATH descriptor of the primary replica.
func (n *inode) fd() int { return n.replicas[0] }

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
	// ids of objects on that filesystem (dev) are then their file handles,
	// so a kernel file handle names its object without any daemon state,
	// even across a remount. Other objects get counted ids and ghosts.
	handleIDs bool
	dev       uint64
}

// fileidIno32Gen is FILEID_INO32_GEN from include/linux/exportfs.h: a
// 32-bit inode number followed by a 32-bit generation.
const fileidIno32Gen = 1

type ghost struct {
	key    inodeKey
	mode   uint32
	handle unix.FileHandle
}

const rootID = 1

func newInodeTable(rootFD int, st *unix.Stat_t) *inodeTable {
	root := &inode{
		id:       rootID,
		key:      inodeKey{st.Dev, st.Ino},
		mode:     st.Mode & unix.S_IFMT,
		replicas: []int{rootFD},
		lookups:  1, // the kernel never forgets the root
	}
	h, _, err := unix.NameToHandleAt(rootFD, "", unix.AT_EMPTY_PATH)
	return &inodeTable{
		byID:       map[uint64]*inode{rootID: root},
		byKey:      map[inodeKey]*inode{root.key: root},
		nextID:     rootID + 1,
		ghosts:     make(map[uint64]ghost),
		ghostByKey: make(map[inodeKey]uint64),
		handleIDs:  err == nil && h.Type() == fileidIno32Gen && h.Size() == 8,
		dev:        st.Dev,
	}
}

func (t *inodeTable) get(id uint64) *inode {
	t.mu.RLock()
	n := t.byID[id]
	t.mu.RUnlock()
	return n
}

// add takes ownership of fd, an O_PATH descriptor for the object st
// describes, and returns its inode with one more kernel reference. When the
// object is already known (a hard link, a repeated lookup) fd is closed.
func (t *inodeTable) add(fd int, st *unix.Stat_t) *inode {
	key := inodeKey{st.Dev, st.Ino}
	if n := t.ref(key); n != nil {
		unix.Close(fd)
		return n
	}
	hid := t.handleID(fd, st)
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := t.byKey[key]; n != nil {
		n.lookups++
		unix.Close(fd)
		return n
	}
	n := &inode{
		id:         hid,
		key:        key,
		mode:       st.Mode & unix.S_IFMT,
		replicas:   []int{fd},
		lookups:    1,
		fromHandle: hid != 0 && !t.taken(hid),
	}
	if !n.fromHandle {
		n.id = t.countedID(fd, key)
	}
	t.byID[n.id] = n
	t.byKey[key] = n
	return n
}

// ref takes a kernel reference on the known object key, if any.
func (t *inodeTable) ref(key inodeKey) *inode {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.byKey[key]
	if n != nil {
		n.lookups++
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
func (t *inodeTable) countedID(fd int, key inodeKey) uint64 {
	if gid, ok := t.ghostByKey[key]; ok {
		g := t.ghosts[gid]
		delete(t.ghosts, gid)
		delete(t.ghostByKey, key)
		if h, _, err := unix.NameToHandleAt(fd, "", unix.AT_EMPTY_PATH); err == nil && sameHandle(h, g.handle) {
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
// needs none: its handles are stale anyway.
func (t *inodeTable) remember(node *inode) {
	if node.fromHandle {
		return // the id itself is the handle
	}
	var st unix.Stat_t
	if statFD(node.fd(), &st) != nil || st.Nlink == 0 {
		return
	}
	h, _, err := unix.NameToHandleAt(node.fd(), "", unix.AT_EMPTY_PATH)
	if err != nil {
		return // the backing filesystem cannot export handles
	}
	if len(t.ghosts) >= maxGhosts {
		for id, g := range t.ghosts {
			delete(t.ghosts, id)
			delete(t.ghostByKey, g.key)
			break
		}
	}
	t.ghosts[node.id] = ghost{key: node.key, mode: node.mode, handle: h}
	t.ghostByKey[node.key] = node.id
}

func sameHandle(a, b unix.FileHandle) bool {
	return a.Type() == b.Type() && string(a.Bytes()) == string(b.Bytes())
}

// revive returns the inode with node id id, bringing a forgotten one back
// by opening its file handle on mountFD (the id itself, or its ghost's),
// with one more kernel reference. It returns nil when the object is gone.
func (t *inodeTable) revive(id uint64, mountFD int) (*inode, *unix.Stat_t) {
	t.mu.Lock()
	defer t.mu.Unlock()
	var st unix.Stat_t
	if n := t.byID[id]; n != nil {
		if statFD(n.fd(), &st) != nil {
			return nil, nil
		}
		n.lookups++
		return n, &st
	}
	var handle unix.FileHandle
	g, isGhost := t.ghosts[id]
	switch {
	case isGhost:
		handle = g.handle
	case t.handleIDs:
		handle = unix.NewFileHandle(fileidIno32Gen, binary.NativeEndian.AppendUint64(nil, id))
	default:
		return nil, nil
	}
	fd, err := unix.OpenByHandleAt(mountFD, handle, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		return nil, nil
	}
	if statFD(fd, &st) != nil {
		unix.Close(fd)
		return nil, nil
	}
	key := inodeKey{st.Dev, st.Ino}
	valid := t.byKey[key] == nil
	if isGhost {
		valid = valid && key == g.key
		delete(t.ghosts, id)
		delete(t.ghostByKey, g.key)
	} else {
		valid = valid && t.handleID(fd, &st) == id
	}
	if !valid {
		unix.Close(fd)
		return nil, nil
	}
	n := &inode{id: id, key: key, mode: st.Mode & unix.S_IFMT, replicas: []int{fd}, lookups: 1, fromHandle: !isGhost}
	t.byID[id] = n
	t.byKey[key] = n
	return n, &st
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
	delete(t.byKey, node.key)
	t.remember(node)
	for _, fd := range node.replicas {
		unix.Close(fd)
	}
}

// closeAll releases every descriptor at unmount.
func (t *inodeTable) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, node := range t.byID {
		for _, fd := range node.replicas {
			unix.Close(fd)
		}
		delete(t.byID, id)
		delete(t.byKey, node.key)
	}
	clear(t.ghosts)
	clear(t.ghostByKey)
}
