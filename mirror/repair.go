package mirror

import (
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"golang.org/x/sys/unix"
)

// Repair makes every replica identical to primary: extra entries removed,
// missing or differing ones copied (data, mode, owner, times, xattrs incl.
// ACLs, symlinks, device nodes/fifos/sockets via mknod, hard-link
// structure preserved, the inode flags every filesystem keeps: immutable,
// append-only, nodump, noatime), directory times set last. The replica's
// immutable and append-only flags are lifted for the changes they would
// refuse. It never touches primary.
//
// Afterwards Compare with Content finds no difference, unless the trees
// changed meanwhile: the replicas must not be in use. A file is replaced
// by writing a temporary file next to it and renaming it over, so that a
// repair cut short leaves each entry either old or new. Files are copied
// sparse, with copy_file_range where the kernel can. Without root, owners
// and xattrs that only root may set are left as they are.
func Repair(primary string, replicas []string) error {
	if err := checkDisjoint(append([]string{primary}, replicas...)); err != nil {
		return err
	}
	pfd, err := openRoot(primary)
	if err != nil {
		return err
	}
	defer unix.Close(pfd)
	for _, replica := range replicas {
		if err := repairReplica(pfd, replica); err != nil {
			return fmt.Errorf("repair %s from %s: %w", replica, primary, err)
		}
	}
	return nil
}

// checkDisjoint refuses directories that are the same or nested: a repair
// would copy a tree into itself or delete the primary's files.
func checkDisjoint(dirs []string) error {
	resolved := make([]string, len(dirs))
	for i, dir := range dirs {
		abs, err := filepath.Abs(dir)
		if err == nil {
			abs, err = filepath.EvalSymlinks(abs)
		}
		if err != nil {
			return fmt.Errorf("repair: %w", err)
		}
		resolved[i] = abs
	}
	within := func(dir, root string) bool {
		return dir == root || strings.HasPrefix(dir, strings.TrimSuffix(root, "/")+"/")
	}
	for i := range resolved {
		for j := i + 1; j < len(resolved); j++ {
			if within(resolved[i], resolved[j]) || within(resolved[j], resolved[i]) {
				return fmt.Errorf("repair: %s and %s overlap", dirs[i], dirs[j])
			}
		}
	}
	return nil
}

type repairer struct {
	rroot int  // the replica's root
	root  bool // running as root: a refused chown or xattr is an error
	buf   []byte
	// links maps a hard-linked inode of the primary to where its first
	// link was put on the replica; claims maps a hard-linked inode of the
	// replica to the primary inode it was kept for, so that an inode
	// linked on the replica but not on the primary is not kept twice.
	links  map[fileID]placed
	claims map[fileID]fileID
	// flags lists the entries whose inode flags setFlags sets last.
	flags []flagged
}

// flagged is an entry of the replica, by its path from the root, and the
// inode flags it must end with.
type flagged struct {
	rel   string
	flags uint32
}

// placed is the first link of a primary inode on the replica.
type placed struct {
	rel string
	id  fileID
}

func repairReplica(pfd int, replica string) error {
	rfd, err := openRoot(replica)
	if err != nil {
		return err
	}
	defer unix.Close(rfd)
	r := &repairer{
		rroot:  rfd,
		root:   os.Geteuid() == 0,
		links:  make(map[fileID]placed),
		claims: make(map[fileID]fileID),
	}
	if err := r.dir(pfd, rfd, ".", pfd, rfd, "."); err != nil {
		return err
	}
	return r.setFlags()
}

// dir repairs the directory rel, open as p on the primary and r on the
// replica, then its metadata, which are applied to name below the
// directories pparent and rparent ("." for the roots themselves).
func (r *repairer) dir(p, rd int, rel string, pparent, rparent int, name string) error {
	var st unix.Stat_t
	if err := unix.Fstat(rd, &st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	// The final mode and flags may deny writing (0555, immutable): they
	// are set once the directory is complete.
	if _, err := inodeflags.Lift(rd); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	if st.Mode&0o700 != 0o700 {
		if err := unix.Fchmod(rd, st.Mode&0o7777|0o700); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
	}
	pnames, err := readNames(p)
	if err != nil {
		return fmt.Errorf("%s (primary): %w", rel, err)
	}
	rnames, err := readNames(rd)
	if err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	for _, n := range rnames {
		if !has(pnames, n) {
			if err := removeAll(rd, n); err != nil {
				return fmt.Errorf("%s: %w", join(rel, n), err)
			}
		}
	}
	for _, n := range pnames {
		if err := r.entry(p, rd, join(rel, n), n); err != nil {
			return err
		}
	}
	var pst unix.Stat_t
	if err := unix.Fstat(p, &pst); err != nil {
		return fmt.Errorf("%s (primary): %w", rel, err)
	}
	if err := unix.Fstat(rd, &st); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	// Last, as what was done inside changed the directory's times.
	if err := r.meta(pparent, rparent, name, name, &pst, &st); err != nil {
		return err
	}
	return r.noteFlags(pparent, rparent, rel, name, &pst)
}

// entry repairs the entry name of the directory open as p and rd.
func (r *repairer) entry(p, rd int, rel, name string) error {
	pst, err := lstatAt(p, name)
	if err != nil {
		return fmt.Errorf("%s (primary): %w", rel, err)
	}
	rst, err := lstatAt(rd, name)
	exists := err == nil
	if err != nil && err != unix.ENOENT {
		return fmt.Errorf("%s: %w", rel, err)
	}
	// A directory in the way goes first: nothing renames over it.
	if exists && isDir(&rst) != isDir(&pst) {
		if err := removeAll(rd, name); err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		exists = false
	}
	if isDir(&pst) {
		if !exists {
			if err := unix.Mkdirat(rd, name, 0o700); err != nil {
				return fmt.Errorf("%s: %w", rel, err)
			}
		}
		psub, err := openDir(p, name)
		if err != nil {
			return fmt.Errorf("%s (primary): %w", rel, err)
		}
		defer unix.Close(psub)
		rsub, err := openDir(rd, name)
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		defer unix.Close(rsub)
		return r.dir(psub, rsub, rel, p, rd, name)
	}
	if err := r.nondir(p, rd, rel, name, &pst, &rst, exists); err != nil {
		return fmt.Errorf("%s: %w", rel, err)
	}
	return nil
}

// nondir repairs a file, symlink or special file; rst is the replica's
// entry when exists, never a directory.
func (r *repairer) nondir(p, rd int, rel, name string, pst, rst *unix.Stat_t, exists bool) error {
	if first, ok := r.links[idOf(pst)]; ok {
		if exists && idOf(rst) == first.id {
			return nil
		}
		return r.link(rd, name, first.rel)
	}
	same := false
	if exists {
		var err error
		if same, err = r.sameData(p, rd, name, pst, rst); err != nil {
			return err
		}
		if claimed, ok := r.claims[idOf(rst)]; ok && claimed != idOf(pst) {
			same = false // that inode already stands for another primary file
		}
	}
	if same {
		if err := r.meta(p, rd, name, name, pst, rst); err != nil {
			return err
		}
	} else if err := r.replace(p, rd, name, pst); err != nil {
		return err
	}
	st, err := lstatAt(rd, name)
	if err != nil {
		return err
	}
	if pst.Nlink > 1 {
		r.links[idOf(pst)] = placed{rel, idOf(&st)}
	}
	if pst.Nlink > 1 || st.Nlink > 1 {
		r.claims[idOf(&st)] = idOf(pst)
	}
	if isReg(pst) {
		return r.noteFlags(p, rd, rel, name, pst)
	}
	return nil
}

// sameData says whether the replica's entry holds what the primary's does
// (type, bytes, symlink target, device number): then only its metadata
// may need repair.
func (r *repairer) sameData(p, rd int, name string, pst, rst *unix.Stat_t) (bool, error) {
	switch {
	case typeName(pst) != typeName(rst):
		return false, nil
	case isReg(pst):
		if pst.Size != rst.Size {
			return false, nil
		}
		return r.sameContent(p, rd, name, pst.Size)
	case isLink(pst):
		pt, err := readlinkAt(p, name)
		if err != nil {
			return false, err
		}
		rt, err := readlinkAt(rd, name)
		return pt == rt, err
	case isDev(pst):
		return pst.Rdev == rst.Rdev, nil
	}
	return true, nil
}

func (r *repairer) sameContent(p, rd int, name string, size int64) (bool, error) {
	pf, err := openFile(p, name)
	if err != nil {
		return false, err
	}
	defer unix.Close(pf)
	rf, err := openFile(rd, name)
	if err != nil {
		return false, err
	}
	defer unix.Close(rf)
	if r.buf == nil {
		r.buf = make([]byte, 2*chunkSize)
	}
	at, _, err := compareFiles([]int{pf, rf}, size, [2][]byte{r.buf[:chunkSize], r.buf[chunkSize:]})
	return at[1] < 0, err
}

// replace puts a copy of the primary's entry in place of the replica's,
// through a temporary name.
func (r *repairer) replace(p, rd int, name string, pst *unix.Stat_t) error {
	var tmp string
	var err error
	switch {
	case isReg(pst):
		tmp, err = r.copyFile(p, rd, name, pst.Size)
	case isLink(pst):
		var target string
		if target, err = readlinkAt(p, name); err == nil {
			tmp, err = withTempName(func(tmp string) error { return unix.Symlinkat(target, rd, tmp) })
		}
	default: // fifo, socket, device: mknod makes each
		tmp, err = withTempName(func(tmp string) error {
			return unix.Mknodat(rd, tmp, pst.Mode&unix.S_IFMT|0o600, int(pst.Rdev))
		})
	}
	if err != nil {
		return err
	}
	if err := r.meta(p, rd, name, tmp, pst, nil); err != nil {
		unix.Unlinkat(rd, tmp, 0)
		return err
	}
	if err := unprotected(rd, name, func() error { return unix.Renameat(rd, tmp, rd, name) }); err != nil {
		unix.Unlinkat(rd, tmp, 0)
		return err
	}
	return nil
}

// link makes name a hard link to the replica's file at first (relative to
// the root), which is a link of the same primary inode.
func (r *repairer) link(rd int, name, first string) error {
	how := unix.OpenHow{
		Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	dir, err := unix.Openat2(r.rroot, path.Dir(first), &how)
	if err != nil {
		return fmt.Errorf("hard link to %s: %w", first, err)
	}
	defer unix.Close(dir)
	tmp, err := withTempName(func(tmp string) error { return unix.Linkat(dir, path.Base(first), rd, tmp, 0) })
	if err != nil {
		return fmt.Errorf("hard link to %s: %w", first, err)
	}
	if err := unix.Renameat(rd, tmp, rd, name); err != nil {
		unix.Unlinkat(rd, tmp, 0)
		return err
	}
	return nil
}

// copyFile copies the primary's regular file name into a new temporary
// file of the replica's directory rd and returns its name.
func (r *repairer) copyFile(p, rd int, name string, size int64) (string, error) {
	src, err := openFile(p, name)
	if err != nil {
		return "", err
	}
	defer unix.Close(src)
	var dst int
	tmp, err := withTempName(func(tmp string) (err error) {
		dst, err = unix.Openat(rd, tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
		return err
	})
	if err != nil {
		return "", err
	}
	err = r.copyData(src, dst, size)
	if cerr := unix.Close(dst); err == nil {
		err = cerr
	}
	if err != nil {
		unix.Unlinkat(rd, tmp, 0)
		return "", err
	}
	return tmp, nil
}

// copyData copies size bytes of src to the empty dst, leaving holes where
// src has them.
func (r *repairer) copyData(src, dst int, size int64) error {
	for off := int64(0); off < size; {
		data := nextData(src, off, size)
		if data >= size {
			break
		}
		end := nextHole(src, data, size)
		if err := r.copyRange(src, dst, data, end); err != nil {
			return err
		}
		off = end
	}
	// The tail hole, if any, and the size when the file ends in one.
	return unix.Ftruncate(dst, size)
}

// copyRange copies the bytes [off, end) of src to the same place in dst:
// in the kernel with copy_file_range, else through a buffer.
func (r *repairer) copyRange(src, dst int, off, end int64) error {
	for off < end {
		roff, woff := off, off
		n, err := unix.CopyFileRange(src, &roff, dst, &woff, int(min(end-off, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			// EXDEV, EINVAL, EOPNOTSUPP, ENOSYS, or a filesystem whose
			// files copy_file_range does not see whole: copy by hand.
			return r.copyBuffered(src, dst, off, end)
		}
		off += int64(n)
	}
	return nil
}

func (r *repairer) copyBuffered(src, dst int, off, end int64) error {
	if r.buf == nil {
		r.buf = make([]byte, 2*chunkSize)
	}
	for off < end {
		n, err := preadFull(src, r.buf[:min(chunkSize, end-off)], off)
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF // the primary shrank under us
		}
		for done := 0; done < n; {
			w, err := unix.Pwrite(dst, r.buf[done:n], off+int64(done))
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				return err
			}
			done += w
		}
		off += int64(n)
	}
	return nil
}

// meta gives the replica's entry rname (below rd) the owner, xattrs, mode
// and times of the primary's pname (below p), in that order: chown clears
// set-id bits and file capabilities, and only the times must come after
// everything that changes them. rst is the replica's entry as it is, to
// leave alone what already agrees; nil for a fresh entry. The replica's
// immutable and append-only flags are lifted first; flags are set by
// noteFlags, at the very end.
func (r *repairer) meta(p, rd int, pname, rname string, pst, rst *unix.Stat_t) error {
	if rst != nil && (isReg(pst) || isDir(pst)) {
		fd, err := openFlagged(rd, rname, pst)
		if err != nil {
			return err
		}
		_, err = inodeflags.Lift(fd)
		unix.Close(fd)
		if err != nil {
			return fmt.Errorf("flags: %w", err)
		}
	}
	return r.attrs(p, rd, pname, rname, pst, rst)
}

// attrs gives the replica's entry the primary's owner, xattrs, mode and
// times, as meta says; meta lifted the flags that would refuse them.
func (r *repairer) attrs(p, rd int, pname, rname string, pst, rst *unix.Stat_t) error {
	chowned := false
	if rst == nil || rst.Uid != pst.Uid || rst.Gid != pst.Gid {
		err := unix.Fchownat(rd, rname, int(pst.Uid), int(pst.Gid), unix.AT_SYMLINK_NOFOLLOW)
		if err != nil && !r.mayIgnore(err) {
			return fmt.Errorf("chown: %w", err)
		}
		chowned = err == nil
	}
	changed, err := r.copyXattrs(p, rd, pname, rname)
	if err != nil {
		return err
	}
	// Symlinks have no mode of their own on Linux.
	if !isLink(pst) && (rst == nil || chowned || changed || rst.Mode&0o7777 != pst.Mode&0o7777) {
		if err := unix.Fchmodat(rd, rname, pst.Mode&0o7777, 0); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	if rst == nil || isDir(pst) || rst.Mtim != pst.Mtim {
		ts := []unix.Timespec{pst.Atim, pst.Mtim}
		if err := unix.UtimesNanoAt(rd, rname, ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("set times: %w", err)
		}
	}
	return nil
}

// mayIgnore says whether a refused change of owner or xattr may be
// skipped: only without root, where such changes are not ours to make.
func (r *repairer) mayIgnore(err error) bool {
	return err == unix.EPERM && !r.root
}

// copyXattrs sets the replica's xattrs to the primary's and says whether
// it changed any (an ACL changes the mode too).
func (r *repairer) copyXattrs(p, rd int, pname, rname string) (bool, error) {
	px, err := xattrs(p, pname, nil)
	if err != nil {
		return false, fmt.Errorf("primary: %w", err)
	}
	rx, err := xattrs(rd, rname, nil)
	if err != nil {
		return false, err
	}
	path := procPath(rd, rname)
	changed := false
	for _, attr := range sortedKeys(px, rx) {
		pv, inp := px[attr]
		rv, inr := rx[attr]
		switch {
		case inp && (!inr || string(pv) != string(rv)):
			err = unix.Lsetxattr(path, attr, pv, 0)
		case !inp:
			err = unix.Lremovexattr(path, attr)
		default:
			continue
		}
		if err != nil && !r.mayIgnore(err) {
			return changed, fmt.Errorf("xattr %s: %w", attr, err)
		}
		changed = changed || err == nil
	}
	return changed, nil
}

// withTempName runs create with fresh temporary names in the replica's
// directory until one does not exist yet, and returns the name used.
func withTempName(create func(name string) error) (string, error) {
	for range 100 {
		name := fmt.Sprintf(".bpfusefs-repair.%016x", rand.Uint64())
		err := create(name)
		if err == nil {
			return name, nil
		}
		if !errors.Is(err, unix.EEXIST) {
			return "", err
		}
	}
	return "", fmt.Errorf("no free temporary name: %w", unix.EEXIST)
}

// noteFlags records the inode flags the replica's entry name (rel from the
// root) must end with, if it has others: the primary's portable ones, its
// own of the rest. They are set once the whole tree is done, since an
// immutable file can be neither renamed nor linked, nor an immutable
// directory filled.
func (r *repairer) noteFlags(p, rd int, rel, name string, pst *unix.Stat_t) error {
	pflags, err := flagsAt(p, name, pst)
	if err != nil {
		return fmt.Errorf("%s (primary): flags: %w", rel, err)
	}
	rflags, err := flagsAt(rd, name, pst)
	if err != nil {
		return fmt.Errorf("%s: flags: %w", rel, err)
	}
	if want := rflags&^inodeflags.Portable | pflags&inodeflags.Portable; want != rflags {
		r.flags = append(r.flags, flagged{rel, want})
	}
	return nil
}

// setFlags sets the flags noteFlags recorded, children before their
// directories. A replica on a filesystem without some flag goes without
// it; without root, so does one with the flags only root may set.
func (r *repairer) setFlags() error {
	how := unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_NONBLOCK | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	for _, f := range r.flags {
		fd, err := unix.Openat2(r.rroot, f.rel, &how)
		if err != nil {
			return fmt.Errorf("%s: flags: %w", f.rel, err)
		}
		err = inodeflags.Set(fd, f.flags)
		unix.Close(fd)
		if err != nil && !inodeflags.Unsupported(err) && !r.mayIgnore(err) {
			return fmt.Errorf("%s: flags: %w", f.rel, err)
		}
	}
	return nil
}

// unprotected runs change, which removes or replaces the entry name below
// dirfd, lifting the entry's immutable and append-only flags if they
// refuse it.
func unprotected(dirfd int, name string, change func() error) error {
	return inodeflags.Unprotected(func() (int, error) {
		st, err := lstatAt(dirfd, name)
		if err != nil {
			return -1, err
		}
		return openFlagged(dirfd, name, &st)
	}, change)
}

// openFlagged opens the regular file or directory name below dirfd, st
// being what it is expected to be, for its inode flags.
func openFlagged(dirfd int, name string, st *unix.Stat_t) (int, error) {
	switch {
	case isDir(st):
		return openDir(dirfd, name)
	case isReg(st):
		return openFile(dirfd, name)
	}
	return -1, unix.ENOTSUP
}

// removeAll removes the entry name below dirfd and, for a directory,
// everything in it, without following symlinks.
func removeAll(dirfd int, name string) error {
	st, err := lstatAt(dirfd, name)
	if err != nil {
		return err
	}
	if !isDir(&st) {
		return unprotected(dirfd, name, func() error { return unix.Unlinkat(dirfd, name, 0) })
	}
	fd, err := openDir(dirfd, name)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if _, err := inodeflags.Lift(fd); err != nil {
		return err
	}
	if st.Mode&0o700 != 0o700 {
		if err := unix.Fchmod(fd, 0o700); err != nil {
			return err
		}
	}
	names, err := readNames(fd)
	if err != nil {
		return err
	}
	for _, n := range names {
		if err := removeAll(fd, n); err != nil {
			return fmt.Errorf("%s: %w", n, err)
		}
	}
	return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR)
}
