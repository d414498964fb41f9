package bench

import (
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// metaName is the i'th file of the metadata workloads.
func metaName(dir string, i int) string { return filepath.Join(dir, fmt.Sprintf("f%06d", i)) }

// createFiles creates n empty files in dir, one open(O_CREAT|O_EXCL) and
// close each, as `touch` would.
func createFiles(dir string, n int) error {
	for i := range n {
		fd, err := unix.Open(metaName(dir, i), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return fmt.Errorf("create %s: %w", metaName(dir, i), err)
		}
		if err := unix.Close(fd); err != nil {
			return fmt.Errorf("close %s: %w", metaName(dir, i), err)
		}
	}
	return nil
}

func statFiles(dir string, n int) error {
	var st unix.Stat_t
	for i := range n {
		if err := unix.Lstat(metaName(dir, i), &st); err != nil {
			return fmt.Errorf("lstat %s: %w", metaName(dir, i), err)
		}
	}
	return nil
}

func unlinkFiles(dir string, n int) error {
	for i := range n {
		if err := unix.Unlink(metaName(dir, i)); err != nil {
			return fmt.Errorf("unlink %s: %w", metaName(dir, i), err)
		}
	}
	return nil
}

// ensureMetaFiles leaves dir holding exactly the n files createFiles makes.
func ensureMetaFiles(dir string, n int) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) == n {
		return nil
	}
	if err := freshDir(dir); err != nil {
		return err
	}
	return createFiles(dir, n)
}

// freshDir makes dir an empty directory.
func freshDir(dir string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// treeFanout is how many files each directory of the walked tree holds.
const treeFanout = 100

// ensureTree builds, once, the tree the find and ls -lR workloads walk: n
// small files, treeFanout to a directory. The marker beside the tree says it
// was completed.
func ensureTree(dir string, n int) error {
	marker := dir + ".complete"
	if _, err := os.Stat(marker); err == nil {
		return nil
	}
	if err := freshDir(dir); err != nil {
		return err
	}
	content := []byte("bpfusefs bench tree file\n")
	for i := range n {
		sub := filepath.Join(dir, fmt.Sprintf("d%04d", i/treeFanout))
		if i%treeFanout == 0 {
			if err := os.Mkdir(sub, 0o755); err != nil {
				return err
			}
		}
		if err := os.WriteFile(filepath.Join(sub, fmt.Sprintf("f%06d.txt", i)), content, 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(marker, nil, 0o644)
}
