package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// runHelper is the mount(8) helper: `mount -t fuse.bpfusefs BACKING MNT -o
// OPTS` and fstab lines run it. It always daemonizes, since mount(8) waits
// for it to exit.
func runHelper(args []string) error {
	cfg, err := parseHelperArgs(args)
	if err != nil {
		return err
	}
	return mount(cfg)
}

// remount handles `mount -o remount,...`, which mount(8) passes to the
// helper too. Only the superblock's read-only state can change on a live
// FUSE mount; every other option is left as it is, and the remount
// succeeds.
func remount(cfg mountConfig) error {
	mnt, e, err := findOurMount("remount", cfg.Mountpoint)
	if err != nil {
		return err
	}
	if !cfg.readOnlySet || cfg.ReadOnly == e.ReadOnly() {
		return nil
	}
	var flags uintptr = unix.MS_REMOUNT
	mode := "rw"
	if cfg.ReadOnly {
		flags |= unix.MS_RDONLY
		mode = "ro"
	}
	// FUSE ignores the option string of a remount through mount(2).
	if err := unix.Mount("", mnt, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s %s: %w", mnt, mode, err)
	}
	return nil
}

func runInstallHelper(args []string) error {
	dir := "/sbin"
	switch len(args) {
	case 0:
	case 1:
		dir = args[0]
	default:
		return usagef("install-helper: want at most one DIR")
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("install-helper: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return fmt.Errorf("install-helper: %w", err)
	}
	path, err := installHelper(dir, self)
	if err != nil {
		return err
	}
	fmt.Printf("installed %s -> %s\n", path, self)
	return nil
}

// installHelper links DIR/mount.fuse.bpfusefs to the binary, replacing an
// older link atomically (a mount(8) running meanwhile sees one or the other).
func installHelper(dir, target string) (string, error) {
	path := filepath.Join(dir, helperName)
	if fi, err := os.Lstat(path); err == nil && fi.Mode()&os.ModeSymlink == 0 {
		return "", fmt.Errorf("install-helper: %s exists and is not a symlink; remove it first", path)
	}
	tmp := path + ".new"
	_ = os.Remove(tmp)
	if err := os.Symlink(target, tmp); err != nil {
		return "", fmt.Errorf("install-helper: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", errors.Join(fmt.Errorf("install-helper: %w", err), os.Remove(tmp))
	}
	return path, nil
}
