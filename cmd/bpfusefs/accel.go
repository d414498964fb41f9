package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/bpfusefs/bpfusefs/features"
	"github.com/bpfusefs/bpfusefs/fs"
)

// fsChecker returns a features.Checker that asks the fs package whether it
// serves a set of accelerations, by mounting a scratch directory with them:
// fs refuses what it cannot serve, before mounting anything. Answers are
// remembered, since auto asks about growing sets.
func fsChecker() features.Checker {
	answers := map[features.Set]error{}
	return func(set features.Set) error {
		if err, ok := answers[set]; ok {
			return err
		}
		err := checkFS(set)
		answers[set] = err
		return err
	}
}

func checkFS(set features.Set) error {
	dir, err := os.MkdirTemp("", "bpfusefs-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	opts := fs.Options{
		Backing:     filepath.Join(dir, "backing"),
		Engine:      set.Engine,
		Passthrough: set.Passthrough,
		Fusering:    set.Fusering,
		BPF:         set.BPF,
	}
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
