package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// copyTree makes dst a copy of src by cp -a: verify must find a copy made
// by another tool identical.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	requireTools(t, "cp")
	runTool(t, src, "cp", "-a", src+"/.", dst)
}

// verify runs bpfusefs verify and checks its exit code and output lines.
func verify(t *testing.T, wantCode int, wantLines []string, args ...string) string {
	t.Helper()
	out, code := bpfusefs(t, nil, append([]string{"verify"}, args...)...)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != wantCode || strings.Join(lines, "\n") != strings.Join(wantLines, "\n") {
		t.Errorf("verify %v: exit %d, output:\n%s\nwant exit %d, output:\n%s", args, code, out, wantCode, strings.Join(wantLines, "\n"))
	}
	return out
}

func TestVerifyDirectories(t *testing.T) {
	a, b, c := t.TempDir(), t.TempDir(), t.TempDir()
	writeTree(t, a)
	copyTree(t, a, b)
	copyTree(t, a, c)
	// writeTree: 24 files of 0, 1, 4095, 4096, 70001 and 1 MiB + 1 bytes,
	// four of each, and a hard link to d1/e1/f1 (1 byte).
	verify(t, exitOK, []string{"replicas identical (25 files, 4507081 bytes compared)"}, a, b, c)

	// A planted difference, one byte in the middle of a file.
	f := filepath.Join(c, "d1", "e2", "f5")
	data, err := os.ReadFile(f)
	must(t, err)
	fi, err := os.Stat(f)
	must(t, err)
	data[70000] ^= 0xff
	must(t, os.WriteFile(f, data, 0o600))
	must(t, os.Chtimes(f, fi.ModTime(), fi.ModTime()))
	verify(t, exitFailure, []string{
		c + "/d1/e2/f5: content differs at byte 70000",
		"1 difference",
	}, a, b, c)

	// Two more; --max stops at the first two.
	must(t, os.Remove(filepath.Join(b, "link")))
	must(t, os.WriteFile(filepath.Join(b, "new"), nil, 0o644))
	verify(t, exitFailure, []string{
		c + "/d1/e2/f5: content differs at byte 70000",
		b + "/link: missing",
		b + "/new: extra",
		"3 differences",
	}, a, b, c)
	verify(t, exitFailure, []string{
		c + "/d1/e2/f5: content differs at byte 70000",
		b + "/link: missing",
		"2 differences (stopped at --max 2)",
	}, "--max=2", a, b, c)
}

func TestVerifyErrors(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	for _, args := range [][]string{nil, {"--max"}, {"--max", "0", a, b}, {"--max=x", a, b}, {"--fast", a, b}} {
		if out, code := bpfusefs(t, nil, append([]string{"verify"}, args...)...); code != exitUsage {
			t.Errorf("verify %q: exit %d, want %d\n%s", args, code, exitUsage, out)
		}
	}
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{a, filepath.Join(b, "nonexistent")}, "nonexistent: no such file or directory"},
		{[]string{a}, "no bpfusefs daemon of this user serves " + a + " (to compare directories, name two or more)"},
	} {
		out, code := bpfusefs(t, nil, append([]string{"verify"}, tt.args...)...)
		if code != exitFailure || !strings.Contains(out, tt.want) {
			t.Errorf("verify %q: exit %d, output:\n%s\nwant exit %d and %q", tt.args, code, out, exitFailure, tt.want)
		}
	}
}

func TestVerifyMount(t *testing.T) {
	_, mnt := mountDaemon(t, "--accel", "none")
	out, code := bpfusefs(t, nil, "verify", mnt)
	if code != exitFailure || !strings.Contains(out, "has no mirrors") {
		t.Errorf("verify of a mount without mirrors: exit %d, output:\n%s", code, out)
	}

	backing, mnt := newDirs(t)
	mirror := t.TempDir()
	out, code = bpfusefs(t, nil, "mount", "-d", "--accel", "none", "--mirror", mirror, backing, mnt)
	if code != 0 {
		t.Fatalf("mount --mirror: exit %d\n%s", code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	must(t, os.WriteFile(filepath.Join(mnt, "f"), []byte("hello\n"), 0o644))
	verify(t, exitOK, []string{"replicas identical (1 file, 6 bytes compared)"}, mnt)
	must(t, os.WriteFile(filepath.Join(mirror, "stray"), nil, 0o644))
	verify(t, exitFailure, []string{mirror + "/stray: extra", "1 difference"}, mnt)
}
