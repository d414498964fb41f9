package main

import (
	"errors"
	"fmt"
	"path/filepath"
	"syscall"

	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
)

// fsType is the filesystem type of bpfusefs mounts in mountinfo.
const fsType = "fuse.bpfusefs"

// findOurMount finds the bpfusefs mount at path, for the command op (which
// prefixes the errors); it returns the canonical mount point.
func findOurMount(op, path string) (string, mountinfo.Entry, error) {
	mnt, err := canonicalMountpoint(path)
	if err != nil {
		return "", mountinfo.Entry{}, fmt.Errorf("%s: %w", op, err)
	}
	e, ok, err := mountinfo.Find(mnt)
	switch {
	case err != nil:
		return "", e, fmt.Errorf("%s: %w", op, err)
	case !ok:
		return "", e, fmt.Errorf("%s: %s is not a mount point", op, mnt)
	case e.FSType != fsType:
		return "", e, fmt.Errorf("%s: %s is a %s mount, not bpfusefs", op, mnt, e.FSType)
	}
	return mnt, e, nil
}

// canonicalMountpoint returns path made absolute with symlinks resolved, the
// form the kernel records in mountinfo. A dead FUSE mount cannot be
// stat'ed (ENOTCONN), so then only its parent is resolved.
func canonicalMountpoint(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		return resolved, nil
	} else if !errors.Is(err, syscall.ENOTCONN) {
		return "", err
	}
	parent, err := filepath.EvalSymlinks(filepath.Dir(abs))
	if err != nil {
		return "", err
	}
	return filepath.Join(parent, filepath.Base(abs)), nil
}
