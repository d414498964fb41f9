// Package mirror compares replica directory trees and repairs them from a
// primary.
//
// Both walk the trees by descriptor (openat with O_NOFOLLOW, fstatat with
// AT_SYMLINK_NOFOLLOW): a symlink in a replica is compared or copied as a
// symlink, never followed, so neither can be led outside the roots.
package mirror

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"golang.org/x/sys/unix"
)

// A Difference is one way a replica departs from the first directory.
type Difference struct {
	Path    string // relative to the replica roots, "." for the root
	Replica string // the directory that differs from dirs[0]
	// What is how: "missing", "extra", "type file != dir", "size 10 != 12",
	// "mtime ...", "content differs at byte 4096", "mode 0644 != 0600",
	// "owner 0:0 != 1000:1000", "symlink target ...", "device 1:3 != 1:5",
	// "xattr user.x missing|extra|differs", "flags ia != -", "hard
	// links"; the value of dirs[0] comes first.
	What string
}

// String returns "REPLICA/PATH: WHAT".
func (d Difference) String() string {
	return filepath.Join(d.Replica, d.Path) + ": " + d.What
}

// CompareOptions say how deep a comparison goes.
type CompareOptions struct {
	// Content compares the bytes of regular files, every xattr, hard-link
	// structure and the inode flags every filesystem keeps (immutable,
	// append-only, nodump, noatime) too (a verify). Without it only what
	// can be read without opening a file is compared: the tree, types,
	// modes, owners, sizes and mtimes of regular files, symlink targets,
	// device numbers, the flags statx reports (immutable, append-only,
	// nodump) and the xattrs that grant access (ACLs, file capabilities).
	// That is the check at mount time: a mirror that took over must not
	// hand anyone more access than the backing directory did.
	Content bool
	// Max stops the comparison after this many differences (0: no limit).
	Max int
}

// Stats say what a comparison covered.
type Stats struct {
	Files int   // regular files of dirs[0] compared with the replicas
	Bytes int64 // bytes of those files read and compared (with Content)
}

// Compare compares the trees of dirs[1:] with that of dirs[0] and returns
// their differences in a deterministic order: by path (a directory before
// what it holds, names sorted), then by replica in the order of dirs.
// Directory mtimes and all atimes and ctimes are never compared: they
// legitimately differ between replicas. A failure to read a tree (an
// unreadable directory, say) is an error, not a difference; the
// differences found until then are returned with it.
func Compare(dirs []string, opts CompareOptions) ([]Difference, error) {
	diffs, _, err := CompareStats(dirs, opts)
	return diffs, err
}

// CompareStats is Compare that also says how much it compared, for a
// verdict like "replicas identical (K files, B bytes compared)".
//
// Without Content, subtrees are compared in up to GOMAXPROCS goroutines,
// the differences still returned in the order above; with Max, which of
// them are found first then varies. With Content the comparison is one
// walk: reading the files is the bulk of it, and hard links are matched
// in the order they are met.
func CompareStats(dirs []string, opts CompareOptions) ([]Difference, Stats, error) {
	goroutines := runtime.GOMAXPROCS(0)
	if opts.Content {
		goroutines = 1
	}
	return compare(dirs, opts, goroutines)
}

func compare(dirs []string, opts CompareOptions, goroutines int) ([]Difference, Stats, error) {
	if len(dirs) < 2 {
		return nil, Stats{}, fmt.Errorf("compare: want at least two directories, got %d", len(dirs))
	}
	w := &walk{opts: opts, dirs: dirs, links: make([]linkMap, len(dirs)), slots: make(chan struct{}, goroutines)}
	fds := make([]int, len(dirs))
	for i := range fds {
		fds[i] = -1
	}
	defer closeAll(fds)
	for i, dir := range dirs {
		fd, err := openRoot(dir)
		if err != nil {
			return nil, Stats{}, err
		}
		fds[i] = fd
	}
	c := &comparer{walk: w}
	w.slots <- struct{}{}
	err := c.root(fds)
	<-w.slots
	w.halt(err)
	w.subtrees.Wait()
	var r result
	c.flatten(&r, err)
	return r.diffs, Stats{Files: int(w.files.Load()), Bytes: w.bytes.Load()}, r.err
}

var (
	// errMax stops a walk once Max differences are found.
	errMax = errors.New("enough differences")
	// errHalted stops a goroutine of a walk that another one's error
	// stopped.
	errHalted = errors.New("walk halted")
)

// A walk is one comparison, shared by the comparers of its subtrees.
type walk struct {
	opts  CompareOptions
	dirs  []string
	links []linkMap // per replica, links[0] unused; only with Content
	// slots holds a token for each goroutine comparing a subtree.
	slots    chan struct{}
	subtrees sync.WaitGroup
	found    atomic.Int64 // differences, against Max
	failed   atomic.Bool
	files    atomic.Int64
	bytes    atomic.Int64
}

// halt stops every goroutine of the walk after an error.
func (w *walk) halt(err error) {
	if err != nil && err != errMax && err != errHalted {
		w.failed.Store(true)
	}
}

// halted says why a goroutine of the walk must stop, if it must.
func (w *walk) halted() error {
	switch {
	case w.failed.Load():
		return errHalted
	case w.opts.Max > 0 && w.found.Load() >= int64(w.opts.Max):
		return errMax
	}
	return nil
}

// A comparer compares one subtree in one goroutine. Its output is in the
// order Compare returns differences, with a piece in place of each
// subtree it left to another goroutine.
type comparer struct {
	*walk
	out  []piece
	bufs [2][]byte // dirs[0]'s chunk and a replica's, allocated on first use
}

// A piece is a difference or a subtree compared by another goroutine.
type piece struct {
	diff Difference
	sub  *subtree
}

type subtree struct {
	c   *comparer
	err error
}

func (c *comparer) add(rel string, replica int, format string, a ...any) error {
	c.out = append(c.out, piece{diff: Difference{Path: rel, Replica: c.dirs[replica], What: fmt.Sprintf(format, a...)}})
	if c.opts.Max > 0 && c.found.Add(1) >= int64(c.opts.Max) {
		return errMax
	}
	return nil
}

// A result gathers the output of a walk's comparers in order, up to Max
// differences or the first error.
type result struct {
	diffs []Difference
	err   error
}

func (r *result) full(max int) bool {
	return r.err != nil || max > 0 && len(r.diffs) >= max
}

// flatten adds c's output to r, after the walk ended with err (c's).
func (c *comparer) flatten(r *result, err error) {
	for _, p := range c.out {
		if r.full(c.opts.Max) {
			return
		}
		if p.sub != nil {
			p.sub.c.flatten(r, p.sub.err)
		} else {
			r.diffs = append(r.diffs, p.diff)
		}
	}
	if !r.full(c.opts.Max) && err != errMax && err != errHalted {
		r.err = err
	}
}

// fail wraps an error of replica i's entry rel with its path.
func (c *comparer) fail(i int, rel string, err error) error {
	return fmt.Errorf("%s: %w", filepath.Join(c.dirs[i], rel), err)
}

func closeAll(fds []int) {
	for _, fd := range fds {
		if fd >= 0 {
			unix.Close(fd)
		}
	}
}

// root compares the roots themselves, then their trees.
func (c *comparer) root(fds []int) error {
	sts := make([]entryStat, len(fds))
	for i, fd := range fds {
		var err error
		if sts[i], err = statAt(fd, ""); err != nil {
			return c.fail(i, ".", err)
		}
	}
	e0, err := c.read(0, ".", fds[0], ".", sts[0])
	if err != nil {
		return err
	}
	for i := 1; i < len(fds); i++ {
		ei, err := c.read(i, ".", fds[i], ".", sts[i])
		if err != nil {
			return err
		}
		if err := c.meta(".", i, e0, ei); err != nil {
			return err
		}
	}
	return c.dir(".", fds)
}

// dir compares the directory rel, open in fds; fds[i] is -1 for a replica
// that has no such directory (its difference is already reported).
func (c *comparer) dir(rel string, fds []int) error {
	names := make([][]string, len(fds))
	var all []string
	for i, fd := range fds {
		if fd < 0 {
			continue
		}
		var err error
		if names[i], err = readNames(fd); err != nil {
			return c.fail(i, rel, err)
		}
		all = append(all, names[i]...)
	}
	slices.Sort(all)
	for _, name := range slices.Compact(all) {
		if err := c.halted(); err != nil {
			return err
		}
		if err := c.entry(join(rel, name), name, fds, names); err != nil {
			return err
		}
	}
	return nil
}

// entry compares one name of the directory open in fds, whose sorted
// listings are names.
func (c *comparer) entry(rel, name string, fds []int, names [][]string) error {
	if !has(names[0], name) {
		for i := 1; i < len(fds); i++ {
			if fds[i] >= 0 && has(names[i], name) {
				if err := c.add(rel, i, "extra"); err != nil {
					return err
				}
			}
		}
		return nil
	}
	st, err := statAt(fds[0], name)
	if err != nil {
		return c.fail(0, rel, err)
	}
	e0, err := c.read(0, rel, fds[0], name, st)
	if err != nil {
		return err
	}
	st0 := &e0.Stat_t
	// same lists the replicas whose entry has dirs[0]'s type (and, for
	// regular files, size): those compared further.
	same := make([]bool, len(fds))
	for i := 1; i < len(fds); i++ {
		if fds[i] < 0 {
			continue
		}
		if !has(names[i], name) {
			if err := c.add(rel, i, "missing"); err != nil {
				return err
			}
			continue
		}
		st, err := statAt(fds[i], name)
		if err != nil {
			return c.fail(i, rel, err)
		}
		if typeName(st0) != typeName(&st.Stat_t) {
			if err := c.add(rel, i, "type %s != %s", typeName(st0), typeName(&st.Stat_t)); err != nil {
				return err
			}
			continue
		}
		same[i] = !isReg(st0) || st0.Size == st.Size
		ei, err := c.read(i, rel, fds[i], name, st)
		if err != nil {
			return err
		}
		if err := c.meta(rel, i, e0, ei); err != nil {
			return err
		}
	}
	switch {
	case isReg(st0):
		c.files.Add(1)
		if c.opts.Content {
			return c.content(rel, name, fds, same, st0.Size)
		}
	case isDir(st0):
		return c.subdir(rel, name, fds, same)
	}
	return nil
}

// subdir descends into the directory name in the replicas where it is one,
// in another goroutine if the walk has a slot free.
func (c *comparer) subdir(rel, name string, fds []int, same []bool) error {
	sub := make([]int, len(fds))
	for i := range sub {
		sub[i] = -1
	}
	for i, fd := range fds {
		if i > 0 && !same[i] {
			continue
		}
		var err error
		if sub[i], err = openDir(fd, name); err != nil {
			closeAll(sub)
			return c.fail(i, rel, err)
		}
	}
	select {
	case c.slots <- struct{}{}:
	default:
		defer closeAll(sub)
		return c.dir(rel, sub)
	}
	s := &subtree{c: &comparer{walk: c.walk}}
	c.out = append(c.out, piece{sub: s})
	c.subtrees.Go(func() {
		s.err = s.c.dir(rel, sub)
		closeAll(sub)
		<-c.slots
		c.halt(s.err)
	})
	return nil
}

// copyMeta is what meta compares of one replica's copy of an entry.
type copyMeta struct {
	entryStat
	target string            // a symlink's
	xattrs map[string][]byte // those CompareOptions say to compare
}

// read reads what meta compares of the entry name below dirfd, which is
// replica i's rel and stats as st: dirs[0]'s once for all replicas.
func (c *comparer) read(i int, rel string, dirfd int, name string, st entryStat) (*copyMeta, error) {
	e := &copyMeta{entryStat: st}
	var err error
	if isLink(&st.Stat_t) {
		if e.target, err = readlinkAt(dirfd, name); err != nil {
			return nil, c.fail(i, rel, err)
		}
	}
	keep := grantsAccess
	if c.opts.Content {
		keep = nil
	}
	if e.xattrs, err = xattrs(dirfd, name, keep); err != nil {
		return nil, c.fail(i, rel, err)
	}
	if c.opts.Content && (isReg(&st.Stat_t) || isDir(&st.Stat_t)) {
		if e.flags, err = flagsAt(dirfd, name, &st.Stat_t); err != nil {
			return nil, c.fail(i, rel, err)
		}
		e.flags &= inodeflags.Portable
	}
	return e, nil
}

// meta compares the metadata of an entry and its replica i, as
// CompareOptions describe. The types are equal.
func (c *comparer) meta(rel string, i int, e0, ei *copyMeta) error {
	st0, sti := &e0.Stat_t, &ei.Stat_t
	var whats []string
	switch {
	case isReg(st0):
		if st0.Size != sti.Size {
			whats = append(whats, fmt.Sprintf("size %d != %d", st0.Size, sti.Size))
		}
		if st0.Mtim != sti.Mtim {
			whats = append(whats, fmt.Sprintf("mtime %s != %s", timeString(st0.Mtim), timeString(sti.Mtim)))
		}
	case isLink(st0):
		if e0.target != ei.target {
			whats = append(whats, fmt.Sprintf("symlink target %q != %q", e0.target, ei.target))
		}
	case isDev(st0):
		if st0.Rdev != sti.Rdev {
			whats = append(whats, fmt.Sprintf("device %s != %s", devName(st0.Rdev), devName(sti.Rdev)))
		}
	}
	if !isLink(st0) && st0.Mode&07777 != sti.Mode&07777 {
		whats = append(whats, fmt.Sprintf("mode %04o != %04o", st0.Mode&07777, sti.Mode&07777))
	}
	if st0.Uid != sti.Uid || st0.Gid != sti.Gid {
		whats = append(whats, fmt.Sprintf("owner %d:%d != %d:%d", st0.Uid, st0.Gid, sti.Uid, sti.Gid))
	}
	whats = append(whats, xattrDiffs(e0.xattrs, ei.xattrs)...)
	if e0.flags != ei.flags {
		whats = append(whats, fmt.Sprintf("flags %s != %s", inodeflags.Letters(e0.flags), inodeflags.Letters(ei.flags)))
	}
	if c.opts.Content && !isDir(st0) && !c.links[i].match(st0, sti) {
		whats = append(whats, "hard links")
	}
	for _, w := range whats {
		if err := c.add(rel, i, "%s", w); err != nil {
			return err
		}
	}
	return nil
}

// flagsAt returns the inode flags of the file or directory name below
// dirfd, st being what it is expected to be.
func flagsAt(dirfd int, name string, st *unix.Stat_t) (uint32, error) {
	fd, err := openFlagged(dirfd, name, st)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return inodeflags.Get(fd)
}

func timeString(ts unix.Timespec) string {
	return time.Unix(ts.Unix()).UTC().Format(time.RFC3339Nano)
}

// grantsAccess says whether an xattr changes who may do what with a
// file: its ACLs and its file capabilities.
func grantsAccess(attr string) bool {
	switch attr {
	case "system.posix_acl_access", "system.posix_acl_default", "security.capability":
		return true
	}
	return false
}

// xattrDiffs describes how the extended attributes xi of a replica's entry
// depart from x0, dirs[0]'s.
func xattrDiffs(x0, xi map[string][]byte) []string {
	var whats []string
	for _, attr := range sortedKeys(x0, xi) {
		v0, in0 := x0[attr]
		vi, ini := xi[attr]
		switch {
		case !ini:
			whats = append(whats, "xattr "+attr+" missing")
		case !in0:
			whats = append(whats, "xattr "+attr+" extra")
		case !bytes.Equal(v0, vi):
			whats = append(whats, "xattr "+attr+" differs")
		}
	}
	return whats
}

// content compares the regular file name of dirs[0] with the replicas
// marked in same, all of size bytes.
func (c *comparer) content(rel, name string, dirfds []int, same []bool, size int64) error {
	fds := []int{}
	replicas := []int{}
	defer func() { closeAll(fds) }()
	for i, dirfd := range dirfds {
		if i > 0 && !same[i] {
			continue
		}
		fd, err := openFile(dirfd, name)
		if err != nil {
			return c.fail(i, rel, err)
		}
		fds = append(fds, fd)
		replicas = append(replicas, i)
	}
	if len(fds) < 2 {
		return nil
	}
	if c.bufs[0] == nil {
		c.bufs = [2][]byte{make([]byte, chunkSize), make([]byte, chunkSize)}
	}
	at, read, err := compareFiles(fds, size, c.bufs)
	c.bytes.Add(read)
	if err != nil {
		return c.fail(0, rel, err)
	}
	for k, off := range at {
		if off >= 0 {
			if err := c.add(rel, replicas[k], "content differs at byte %d", off); err != nil {
				return err
			}
		}
	}
	return nil
}

// compareFiles compares the regular files fds[1:], all of size bytes,
// with fds[0] chunk by chunk. at[k] is the first offset at which fds[k]
// differs, -1 where it does not (at[0] is always -1). read counts the
// bytes read from fds[0]. Holes read as zeros; ranges that are holes in
// every file are skipped unread.
func compareFiles(fds []int, size int64, bufs [2][]byte) (at []int64, read int64, err error) {
	at = make([]int64, len(fds))
	for k := range at {
		at[k] = -1
	}
	live := len(fds) - 1
	for off := int64(0); off < size && live > 0; {
		next := size
		for k, fd := range fds {
			if at[k] < 0 {
				next = min(next, nextData(fd, off, size))
			}
		}
		if next > off {
			off = next
			continue
		}
		n := int(min(chunkSize, size-off))
		got, err := preadFull(fds[0], bufs[0][:n], off)
		read += int64(got)
		if err != nil {
			return at, read, err
		}
		for k := 1; k < len(fds); k++ {
			if at[k] >= 0 {
				continue
			}
			m, err := preadFull(fds[k], bufs[1][:n], off)
			if err != nil {
				return at, read, err
			}
			if d := firstDiff(bufs[0][:got], bufs[1][:m]); d >= 0 {
				at[k] = off + int64(d)
				live--
			}
		}
		if got < n { // the files shrank under us: what is compared is all
			break
		}
		off += int64(n)
	}
	return at, read, nil
}

// firstDiff returns the first index at which a and b differ, -1 if they
// are equal.
func firstDiff(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}

// A linkMap pairs the inodes of dirs[0] with those of one replica, for
// the files hard-linked on either side: the pairing must be one to one.
type linkMap struct {
	fwd, back map[fileID]fileID
}

// match records that st0 and sti are the same file and says whether that
// agrees with what was recorded before.
func (m *linkMap) match(st0, sti *unix.Stat_t) bool {
	if st0.Nlink < 2 && sti.Nlink < 2 {
		return true
	}
	if m.fwd == nil {
		m.fwd, m.back = make(map[fileID]fileID), make(map[fileID]fileID)
	}
	id0, idi := idOf(st0), idOf(sti)
	f, seen0 := m.fwd[id0]
	b, seeni := m.back[idi]
	if seen0 || seeni {
		return seen0 && seeni && f == idi && b == id0
	}
	m.fwd[id0], m.back[idi] = idi, id0
	return true
}
