package main

import (
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// maxFiles is the most descriptors the daemon asks for: as many as the
// kernel's default fs.nr_open allows.
const maxFiles = 1 << 20

// raiseFileLimit lifts the daemon's descriptor limit as far as it may and
// returns the limit it ends with. Every inode the kernel holds costs the
// daemon one O_PATH descriptor per replica, and the file system prunes
// inodes at three quarters of the limit (see fs's pruner): under a small
// limit, a stat of every file in a large directory becomes a LOOKUP per
// file, each evicting another inode. Go already raises the soft limit to
// the hard one; with CAP_SYS_RESOURCE the hard limit may go up too, to
// fs.nr_open.
func raiseFileLimit() uint64 {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	want := wantedFileLimit()
	if rl.Cur >= want {
		return rl.Cur
	}
	raised := unix.Rlimit{Cur: want, Max: max(rl.Max, want)}
	if unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
		return want
	}
	// Without the capability: up to the hard limit, which Go has
	// normally done already.
	raised = unix.Rlimit{Cur: min(rl.Max, want), Max: rl.Max}
	if raised.Cur > rl.Cur && unix.Setrlimit(unix.RLIMIT_NOFILE, &raised) == nil {
		return raised.Cur
	}
	return rl.Cur
}

// wantedFileLimit is the descriptor limit raiseFileLimit aims at: maxFiles,
// or fs.nr_open if the kernel allows fewer.
func wantedFileLimit() uint64 {
	b, err := os.ReadFile("/proc/sys/fs/nr_open")
	if err != nil {
		return maxFiles
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return maxFiles
	}
	return min(maxFiles, n)
}
