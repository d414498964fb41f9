package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// fsType is the filesystem type of bpfusefs mounts in mountinfo.
const fsType = "fuse.bpfusefs"

// findOurMount finds the bpfusefs mount at path, for the command op (which
// prefixes the errors); it returns the canonical mount point.
func findOurMount(op, path string) (string, mountEntry, error) {
	mnt, err := canonicalMountpoint(path)
	if err != nil {
		return "", mountEntry{}, fmt.Errorf("%s: %w", op, err)
	}
	e, ok, err := findMount(mnt)
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

// mountEntry is one line of /proc/self/mountinfo.
type mountEntry struct {
	Mountpoint string
	FSType     string
	Source     string
	// Options are the per-mount options (ro/rw, nosuid...).
	Options string
	// SuperOptions are the superblock's options: a superblock remounted
	// read-only shows "ro" here.
	SuperOptions string
}

func (e mountEntry) readOnly() bool {
	return hasOption(e.SuperOptions, "ro") || hasOption(e.Options, "ro")
}

func hasOption(list, opt string) bool {
	for _, o := range strings.Split(list, ",") {
		if o == opt {
			return true
		}
	}
	return false
}

// findMount returns the topmost mount at path (absolute, symlinks resolved).
func findMount(path string) (mountEntry, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return mountEntry{}, false, err
	}
	defer f.Close()
	var found mountEntry
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		e, err := parseMountinfoLine(sc.Text())
		if err != nil {
			return mountEntry{}, false, err
		}
		// Later lines are mounted on top of earlier ones at the same path.
		if e.Mountpoint == path {
			found, ok = e, true
		}
	}
	return found, ok, sc.Err()
}

// parseMountinfoLine parses the format of proc(5):
// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
func parseMountinfoLine(line string) (mountEntry, error) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+4 {
		return mountEntry{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	return mountEntry{
		Mountpoint:   unescapeMountinfo(fields[4]),
		Options:      fields[5],
		FSType:       fields[sep+1],
		Source:       unescapeMountinfo(fields[sep+2]),
		SuperOptions: fields[sep+3],
	}, nil
}

// unescapeMountinfo undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
