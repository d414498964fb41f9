// Package mountinfo reads /proc/self/mountinfo (proc(5)): which
// filesystem is mounted where, with what options.
package mountinfo

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// Entry is one line of /proc/self/mountinfo.
type Entry struct {
	Mountpoint string
	FSType     string
	Source     string
	// Options are the per-mount options (ro/rw, nosuid...).
	Options string
	// SuperOptions are the superblock's options: a superblock remounted
	// read-only shows "ro" here.
	SuperOptions string
}

// ReadOnly reports whether the mount or its superblock is read-only.
func (e Entry) ReadOnly() bool {
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

// Find returns the topmost mount at path (absolute, symlinks resolved).
func Find(path string) (Entry, bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return Entry{}, false, err
	}
	defer f.Close()
	var found Entry
	ok := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		e, err := Parse(sc.Text())
		if err != nil {
			return Entry{}, false, err
		}
		// Later lines are mounted on top of earlier ones at the same path.
		if e.Mountpoint == path {
			found, ok = e, true
		}
	}
	return found, ok, sc.Err()
}

// Parse parses one line in the format of proc(5):
// ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
func Parse(line string) (Entry, error) {
	fields := strings.Fields(line)
	sep := -1
	for i := 6; i < len(fields); i++ {
		if fields[i] == "-" {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+4 {
		return Entry{}, fmt.Errorf("mountinfo: malformed line %q", line)
	}
	return Entry{
		Mountpoint:   unescape(fields[4]),
		Options:      fields[5],
		FSType:       fields[sep+1],
		Source:       unescape(fields[sep+2]),
		SuperOptions: fields[sep+3],
	}, nil
}

// unescape undoes the kernel's octal escapes (\040 for a space,
// \011, \012, \134) in mountinfo paths.
func unescape(s string) string {
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
