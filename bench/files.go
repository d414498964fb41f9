package bench

import (
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// ensureFile makes path a file of exactly size bytes of incompressible data,
// synced, rewriting it only when its size differs.
func ensureFile(path string, size int64) error {
	if st, err := os.Stat(path); err == nil && st.Size() == size {
		return nil
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	rng := rand.NewChaCha8([32]byte{'b', 'e', 'n', 'c', 'h'})
	for left := size; left > 0; left -= int64(len(buf)) {
		chunk := buf[:min(left, int64(len(buf)))]
		rng.Read(chunk)
		if _, err := f.Write(chunk); err != nil {
			f.Close()
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	return f.Close()
}

// readAll reads path once, to leave it in whatever cache the system keeps.
func readAll(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.Copy(io.Discard, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

// dropCache evicts name from the page cache everywhere it is cached: the
// file seen through the instance (a FUSE inode has its own cache) and its
// copy in each backing directory. Dirty pages cannot be dropped, so each is
// synced first.
func dropCache(inst *instance, name string) error {
	paths := []string{filepath.Join(inst.dir, name)}
	for _, b := range inst.backings {
		if b != inst.dir {
			paths = append(paths, filepath.Join(b, name))
		}
	}
	for _, p := range paths {
		if err := fadviseDontNeed(p); err != nil {
			return err
		}
	}
	return nil
}

// syncFS writes back everything dirty on the file system holding dir
// (syncfs(2)): every system's backing directory is on that one.
func syncFS(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("syncfs %s: %w", dir, err)
	}
	return nil
}

// dropMountCache drops the pages of name that a mount caches, keeping the
// backing copies' pages. Natively there is no mount, and nothing is dropped.
func dropMountCache(inst *instance, name string) error {
	if inst.pid == 0 {
		return nil
	}
	return fadviseDontNeed(filepath.Join(inst.dir, name))
}

func fadviseDontNeed(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", path, err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise DONTNEED %s: %w", path, err)
	}
	return nil
}

// copyRange copies size bytes of src into a new file dst with
// copy_file_range(2), chunk bytes per call, and fails unless all arrive.
func copyRange(src, dst string, size int64, chunk int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	defer out.Close()
	var offIn, offOut int64
	for offIn < size {
		n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, int(min(int64(chunk), size-offIn)), 0)
		if err != nil {
			return fmt.Errorf("copy_file_range %s -> %s at %d: %w", src, dst, offIn, err)
		}
		if n == 0 {
			return fmt.Errorf("copy_file_range %s -> %s: the source ends at %d, want %d bytes", src, dst, offIn, size)
		}
	}
	return out.Close()
}

// copy4K reads path 4 KiB at a time into /dev/zero, the way `dd bs=4k`
// does, and returns the bytes copied.
func copy4K(path string) (int64, error) {
	src, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := os.OpenFile("/dev/zero", os.O_WRONLY, 0)
	if err != nil {
		return 0, err
	}
	defer dst.Close()
	buf := make([]byte, 4096)
	var total int64
	for {
		n, err := unix.Read(int(src.Fd()), buf)
		if err != nil {
			return total, fmt.Errorf("read %s: %w", path, err)
		}
		if n == 0 {
			return total, nil
		}
		if _, err := unix.Write(int(dst.Fd()), buf[:n]); err != nil {
			return total, fmt.Errorf("write /dev/zero: %w", err)
		}
		total += int64(n)
	}
}
