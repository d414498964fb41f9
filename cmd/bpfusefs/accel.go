package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpfusefs/bpfusefs/features"
	"github.com/bpfusefs/bpfusefs/fs"
)

// implemented asks the fs package whether it can serve an acceleration
// the kernel supports, by mounting a scratch directory with it on: fs
// refuses what it cannot serve. Passthrough needs no scratch mount, the
// kernel probe already mounted one and registered a backing file.
func implemented(n features.Name) error {
	switch n {
	case features.Engine:
		return tryFSMount(fs.Options{Engine: true})
	case features.Fusering:
		return tryFSMount(fs.Options{Fusering: true})
	case features.BPF:
		// fs.Options has no switch for it: the filesystem has no BPF path.
		return errors.New("this bpfusefs build has no BPF offload")
	}
	return nil
}

// tryFSMount mounts an empty scratch directory with opts and unmounts it.
func tryFSMount(opts fs.Options) error {
	dir, err := os.MkdirTemp("", "bpfusefs-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts.Backing = filepath.Join(dir, "backing")
	mnt := filepath.Join(dir, "mnt")
	for _, d := range []string{opts.Backing, mnt} {
		if err := os.Mkdir(d, 0o700); err != nil {
			return err
		}
	}
	m, err := fs.Mount(mnt, opts)
	if err != nil {
		return fmt.Errorf("fs: %w", err)
	}
	err = m.Unmount(false)
	m.Wait()
	return err
}
