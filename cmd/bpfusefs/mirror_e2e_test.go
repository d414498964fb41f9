package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMirrorLifecycle walks a mirrored mount through the life a user sees:
// a mirror on a small tmpfs fills up mid-workload and is degraded while
// every write succeeds; stats say so; the next mount refuses the replicas
// that now disagree; --mirror-repair brings the mirror back; verify finds
// them identical.
func TestMirrorLifecycle(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	small := smallTmpfs(t)

	mount := func(extra ...string) (string, int) {
		args := append([]string{"mount", "-d", "--accel", "auto", "--mirror", small}, extra...)
		return bpfusefs(t, nil, append(args, backing, mnt)...)
	}
	if out, code := mount(); code != 0 {
		t.Fatalf("mount --mirror: exit %d\n%s", code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	data := fillSmallReplica(t, mnt)
	out, code := bpfusefs(t, nil, "stats", mnt)
	if code != 0 || !strings.Contains(out, "degraded") || !strings.Contains(out, "no space left on device") ||
		!strings.Contains(out, "ok, leads") {
		t.Errorf("stats after the mirror filled up: exit %d\n%s", code, out)
	}
	out, code = bpfusefs(t, nil, "verify", mnt)
	if code != exitFailure || !strings.Contains(out, small+": out of service (degraded: ") ||
		!strings.HasSuffix(out, "fewer than two replicas in service: nothing compared\n") {
		t.Errorf("verify with the mirror out of service: exit %d\n%s", code, out)
	}
	if out, code := bpfusefs(t, nil, "umount", mnt); code != 0 {
		t.Fatalf("umount: exit %d\n%s", code, out)
	}

	// The mirror missed writes: the replicas no longer agree.
	out, code = mount()
	if code == 0 || !strings.Contains(out, "replicas disagree") || !strings.Contains(out, "--mirror-repair") {
		t.Fatalf("mount of disagreeing replicas: exit %d\n%s", code, out)
	}
	// Make room on the mirror, then repair it from the backing directory.
	if err := syscall.Unmount(small, 0); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", small, "tmpfs", 0, "size=16m,mode=0755"); err != nil {
		t.Fatal(err)
	}
	if out, code := mount("--mirror-repair", backing); code != 0 {
		t.Fatalf("mount --mirror-repair: exit %d\n%s", code, out)
	}
	verify(t, exitOK, []string{"replicas identical (40 files, 2621440 bytes compared)"}, mnt)
	got, err := os.ReadFile(filepath.Join(mnt, "f39"))
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("f39 after repair: %d bytes, %v", len(got), err)
	}
}

// smallTmpfs mounts a 1 MiB tmpfs on a fresh directory: a replica that
// fillSmallReplica fills.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m,mode=0755"); err != nil {
		t.Skipf("cannot mount a tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fillSmallReplica writes 40 files of 64 KiB (f00...) through mnt, more
// than a smallTmpfs replica holds, and returns their content. Every write
// must succeed: another replica has room.
func fillSmallReplica(t *testing.T, mnt string) []byte {
	t.Helper()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	for i := range 40 {
		if err := os.WriteFile(filepath.Join(mnt, fmt.Sprintf("f%02d", i)), data, 0o644); err != nil {
			t.Fatalf("write %d with a replica healthy: %v", i, err)
		}
	}
	return data
}

// TestVerifyDegradedMount: verify of a mount compares the replicas in
// service and names the one out of service rather than listing the writes
// it missed.
func TestVerifyDegradedMount(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	mirror, small := t.TempDir(), smallTmpfs(t)
	out, code := bpfusefs(t, nil, "mount", "-d", "--accel", "none", "--mirror", small+","+mirror, backing, mnt)
	if code != 0 {
		t.Fatalf("mount --mirror: exit %d\n%s", code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	fillSmallReplica(t, mnt)
	out, code = bpfusefs(t, nil, "verify", mnt)
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if code != exitFailure || len(lines) != 2 || !strings.HasPrefix(lines[0], small+": out of service (degraded: ") ||
		!strings.HasSuffix(lines[0], "no space left on device), not compared") ||
		lines[1] != "replicas in service identical (40 files, 2621440 bytes compared)" {
		t.Errorf("verify with one of three replicas out of service: exit %d\n%s", code, out)
	}
}
