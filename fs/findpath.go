package fs

import (
	"errors"
	"path"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// errNoPath reports an object the backing filesystem decoded from a file
// handle without finding its directory. ext4 keeps no parent pointer for
// a non-directory: once its dentries are dropped (memory pressure,
// drop_caches), open_by_handle_at hands back an anonymous dentry, which
// /proc/self/fd shows as "/". Without mirrors the descriptor is all the
// daemon needs; with them, a mirror's copy is the one at the backing copy's
// path, which findPath then searches for.
var errNoPath = errors.New("file handle decoded without a path")

// findPath returns a path, relative to r's root, of the non-directory open
// as fd (see errNoPath). It walks the tree breadth first, reading each
// directory once and stating only the entries that carry fd's inode
// number: about one getdents(2) per directory, 15 ms for 100,000 files in
// 200 cached directories on ext4. It stays beneath the root and on fd's
// filesystem, and gives up with EINTR once cancel is closed (the caller
// interrupted its request).
func (r *replica) findPath(fd int, cancel <-chan struct{}) (string, error) {
	var want unix.Stat_t
	if err := statFD(fd, &want); err != nil {
		return "", err
	}
	buf := make([]byte, direntBufSize)
	for queue := []string{"."}; len(queue) > 0; queue = queue[1:] {
		select {
		case <-cancel:
			return "", unix.EINTR
		default:
		}
		dir, err := openBeneath(r.rootFD, queue[0], unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
		if err != nil {
			continue // gone meanwhile, or not a directory after all
		}
		name, subdirs := searchDir(dir, &want, buf)
		unix.Close(dir)
		if name != "" {
			return path.Join(queue[0], name), nil
		}
		for _, sub := range subdirs {
			queue = append(queue, path.Join(queue[0], sub))
		}
	}
	return "", unix.ESTALE
}

// searchDir returns the name in directory dir of the non-directory want
// describes, or else the names of dir's subdirectories. A directory on
// another filesystem (a mount point) has neither.
func searchDir(dir int, want *unix.Stat_t, buf []byte) (name string, subdirs []string) {
	var st unix.Stat_t
	if statFD(dir, &st) != nil || st.Dev != want.Dev {
		return "", nil
	}
	for {
		n, err := unix.Getdents(dir, buf)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n <= 0 {
			return "", subdirs
		}
		for off := 0; off < n; {
			var e fuse.DirEntry
			off += e.Parse(buf[off:n])
			switch {
			case e.Name == "." || e.Name == "..":
			case e.Ino == want.Ino && e.Mode != unix.S_IFDIR:
				if unix.Fstatat(dir, e.Name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil && st.Dev == want.Dev && st.Ino == want.Ino {
					return e.Name, nil
				}
			case e.Mode == unix.S_IFDIR, e.Mode == 0: // DT_DIR, DT_UNKNOWN
				subdirs = append(subdirs, e.Name)
			}
		}
	}
}
