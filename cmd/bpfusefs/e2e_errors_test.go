package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bpfusefs/bpfusefs/control"
	"github.com/bpfusefs/bpfusefs/features"
	"github.com/bpfusefs/bpfusefs/fs"
	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
)

// waitFor polls cond until it holds; the bound only keeps a broken build
// from hanging the suite, it asserts nothing about speed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("gave up waiting for %s", what)
}

// foreground is a `bpfusefs mount` running in the foreground.
type foreground struct {
	cmd  *exec.Cmd
	logs bytes.Buffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

// wait waits for the daemon to exit.
func (d *foreground) wait() error {
	<-d.done
	return d.err
}

// startForeground starts `bpfusefs mount ARGS` in the foreground and waits
// until the mount is live: its control socket answers only after fs.Mount
// returned. (Killing a daemon earlier, while go-fuse's own first request
// to the mount is in flight, would leave a process stuck in the kernel
// waiting for a reply it would give itself.) The daemon is killed at the
// end of the test if still running.
func startForeground(t *testing.T, mnt string, args ...string) *foreground {
	t.Helper()
	d := &foreground{cmd: exec.Command(binary, append([]string{"mount"}, args...)...), done: make(chan struct{})}
	d.cmd.Stdout, d.cmd.Stderr = &d.logs, &d.logs
	must(t, d.cmd.Start())
	go func() {
		d.err = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
			_ = syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
	})
	waitFor(t, "the foreground mount", func() bool {
		select {
		case <-d.done:
			t.Fatalf("bpfusefs mount %v exited (%v) before the mount was live:\n%s", args, d.err, d.logs.String())
		default:
		}
		_, err := fetchStats(mnt)
		return err == nil
	})
	return d
}

func mounted(mnt string) bool {
	e, ok, err := mountinfo.Find(mnt)
	return err == nil && ok && e.FSType == fsType
}

// daemonGone reports whether the daemon of mnt has removed its control
// socket, the last thing it does before exiting.
func daemonGone(t *testing.T, mnt string) func() bool {
	sock, err := control.SocketPath(mnt)
	if err != nil {
		t.Fatal(err)
	}
	return func() bool {
		_, err := os.Stat(sock)
		return errors.Is(err, os.ErrNotExist)
	}
}

func TestCommandLine(t *testing.T) {
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--version"}, 0, "bpfusefs "},
		{[]string{"help"}, 0, "bpfusefs doctor [--json]"},
		{[]string{"mount", "--help"}, 0, "--accel LIST"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"umount"}, exitUsage, "want one MOUNTPOINT"},
		{[]string{"stats", "--yaml", "/x"}, exitUsage, "unknown flag --yaml"},
	}
	for _, tt := range tests {
		out, code := bpfusefs(t, nil, tt.args...)
		if code != tt.code || !strings.Contains(out, tt.want) {
			t.Errorf("bpfusefs %v: exit %d, output:\n%s\nwant exit %d and %q", tt.args, code, out, tt.code, tt.want)
		}
	}
}

func TestDoctor(t *testing.T) {
	out, code := bpfusefs(t, nil, "doctor", "--json")
	if code != 0 {
		t.Fatalf("doctor --json: exit %d\n%s", code, out)
	}
	var doc struct {
		Accel map[string]*struct {
			Available *bool   `json:"available"`
			Reason    *string `json:"reason"`
		} `json:"accel"`
		Auto []string `json:"auto"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("doctor --json is not JSON: %v\n%s", err, out)
	}
	names := append(append([]features.Name{}, features.Accels...), features.Patched...)
	for _, n := range names {
		st := doc.Accel[string(n)]
		if st == nil || st.Available == nil || st.Reason == nil {
			t.Errorf("doctor --json: accel %s missing or incomplete:\n%s", n, out)
			continue
		}
		if !*st.Available && *st.Reason == "" {
			t.Errorf("accel %s unavailable without a reason", n)
		}
	}
	if doc.Auto == nil {
		t.Errorf(`doctor --json: no "auto" list:\n%s`, out)
	}
	text, code := bpfusefs(t, nil, "doctor")
	if code != 0 {
		t.Fatalf("doctor: exit %d\n%s", code, text)
	}
	for _, n := range names {
		if !strings.Contains(text, string(n)) {
			t.Errorf("doctor does not mention %s:\n%s", n, text)
		}
	}
}

func TestMountErrors(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	file := filepath.Join(backing, "file")
	must(t, os.WriteFile(file, nil, 0o644))
	_, busy := mountDaemon(t, "--accel", "none")

	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing backing", []string{filepath.Join(backing, "nope"), mnt}, exitFailure, "backing directory " + filepath.Join(backing, "nope") + " does not exist"},
		{"backing not a directory", []string{file, mnt}, exitFailure, "is not a directory"},
		{"missing mountpoint", []string{backing, filepath.Join(mnt, "nope")}, exitFailure, "mountpoint " + filepath.Join(mnt, "nope") + " does not exist"},
		{"mountpoint not a directory", []string{backing, file}, exitFailure, "mountpoint " + file + " is not a directory"},
		{"mountpoint busy", []string{backing, busy}, exitFailure, "mountpoint " + busy + " is busy"},
		{"unknown accel", []string{"--accel", "warp", backing, mnt}, exitUsage, `unknown accel "warp"`},
		{"bad -o", []string{"-o", "fsname=", backing, mnt}, exitUsage, "-o fsname needs a value"},
	}
	for _, tt := range tests {
		for _, daemon := range []bool{false, true} {
			args := append([]string{"mount"}, tt.args...)
			if daemon {
				args = append([]string{"mount", "-d"}, tt.args...)
			}
			out, code := bpfusefs(t, nil, args...)
			if code != tt.code || !strings.Contains(out, tt.want) {
				t.Errorf("%s (%v): exit %d, output:\n%s\nwant exit %d and %q", tt.name, args, code, out, tt.code, tt.want)
			}
		}
	}
	if mounted(mnt) {
		t.Errorf("%s got mounted by a failing command", mnt)
	}
}

// TestDaemonReportsChildError checks that an error met by the daemon
// itself (after the parent's checks passed) reaches the caller of -d.
func TestDaemonReportsChildError(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	// fs refuses allow_other without default_permissions for a root daemon.
	out, code := bpfusefs(t, nil, "mount", "-d", "-o", "allow_other,nodefault_permissions", backing, mnt)
	if code == 0 {
		t.Cleanup(func() { cleanupMount(t, mnt) })
		t.Fatalf("mount -d with allow_other,nodefault_permissions succeeded:\n%s", out)
	}
	if !strings.Contains(out, "default_permissions") {
		t.Errorf("the daemon's error did not reach the caller:\n%s", out)
	}
	if mounted(mnt) {
		t.Errorf("%s is mounted after a failed mount -d", mnt)
	}
}

// TestDaemonDropsInheritedFiles starts mount -d with a descriptor its
// caller forgot to close (xfstests' lock on enable_uring, in the case that
// found it): the daemon must not hold it for the life of the mount.
func TestDaemonDropsInheritedFiles(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	lock, err := os.Create(filepath.Join(t.TempDir(), "lock"))
	must(t, err)
	defer lock.Close()
	cmd := exec.Command(binary, "mount", "-d", backing, mnt)
	// Inherited as fd 5, without close-on-exec, past the fd 3 the
	// daemon's readiness pipe takes.
	devNull, err := os.Open(os.DevNull)
	must(t, err)
	defer devNull.Close()
	cmd.ExtraFiles = []*os.File{devNull, devNull, lock}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("mount -d: %v\n%s", err, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	pids, err := filepath.Glob("/proc/[0-9]*/fd/*")
	must(t, err)
	for _, fd := range pids {
		if target, err := os.Readlink(fd); err == nil && target == lock.Name() && !strings.HasPrefix(fd, fmt.Sprintf("/proc/%d/", os.Getpid())) {
			t.Errorf("%s still holds the caller's %s", fd, lock.Name())
		}
	}
}

func TestDaemonReturnsWhenLive(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	must(t, os.WriteFile(filepath.Join(backing, "hello"), []byte("world"), 0o644))
	out, code := bpfusefs(t, nil, "mount", "-d", backing, mnt)
	if code != 0 {
		t.Fatalf("mount -d: exit %d\n%s", code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	// No waiting: the mount and its control socket must be there already.
	if !mounted(mnt) {
		t.Fatalf("%s is not a bpfusefs mount when mount -d returns", mnt)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "hello")); err != nil || string(b) != "world" {
		t.Errorf("reading through the mount: %q, %v", b, err)
	}
	if out, code := bpfusefs(t, nil, "stats", mnt); code != 0 {
		t.Errorf("stats right after mount -d: exit %d\n%s", code, out)
	}
}

func TestAccelUnavailableByName(t *testing.T) {
	requireMount(t)
	// Hold enable_uring at N for the whole test: fusering is then one of
	// the unavailable accels, and tests in other packages cannot flip it
	// between the probe here and the daemon's own.
	if err := holdEnableURing(t, "N"); err != nil {
		t.Logf("enable_uring not held: %v", err)
	}
	r := features.Probe(fsChecker())
	tested := false
	for _, n := range features.Accels {
		if st := r.Accel[n]; !st.Available {
			tested = true
			backing, mnt := newDirs(t)
			out, code := bpfusefs(t, nil, "mount", "-d", "--accel", "engine,"+string(n), backing, mnt)
			if want := "accel " + string(n) + " is not available: " + st.Reason; code != exitFailure || !strings.Contains(out, want) {
				t.Errorf("--accel %s on a kernel without it: exit %d\n%s\nwant %q", n, code, out, want)
			}
		}
	}
	if !tested {
		t.Log("every acceleration is available here; only the simulated case runs")
	}

	// Passthrough on a "kernel without it", simulated by the test hook.
	env := []string{features.EnvDisable + "=passthrough"}
	backing, mnt := newDirs(t)
	out, code := bpfusefs(t, env, "mount", "-d", "--accel", "passthrough", backing, mnt)
	if want := "accel passthrough is not available: disabled by " + features.EnvDisable; code != exitFailure || !strings.Contains(out, want) {
		t.Errorf("--accel passthrough without it: exit %d\n%s\nwant %q", code, out, want)
	}
	// Under auto the missing acceleration is skipped silently.
	out, code = bpfusefs(t, env, "mount", "-d", "--accel", "auto", backing, mnt)
	if code != 0 {
		t.Fatalf("--accel auto without passthrough: exit %d\n%s", code, out)
	}
	t.Cleanup(func() { cleanupMount(t, mnt) })
	st, err := fetchStats(mnt)
	must(t, err)
	if slices.Contains(st.Accel, "passthrough") {
		t.Errorf("auto turned on passthrough although it was unavailable: accel %v", st.Accel)
	}
}

func TestUmountWhileFileOpen(t *testing.T) {
	requireMount(t)
	backing, mnt := mountDaemon(t)
	f, err := os.Create(filepath.Join(mnt, "open"))
	must(t, err)
	_, err = f.WriteString("before ")
	must(t, err)

	out, code := bpfusefs(t, nil, "umount", mnt)
	if code != exitFailure || !strings.Contains(out, "busy") {
		t.Errorf("umount with a file open: exit %d\n%s\nwant a busy error", code, out)
	}
	if !mounted(mnt) {
		t.Fatal("a refused umount unmounted")
	}
	_, err = f.WriteString("after")
	must(t, err)
	must(t, f.Close())
	if out, code := bpfusefs(t, nil, "umount", mnt); code != 0 {
		t.Fatalf("umount after close: exit %d\n%s", code, out)
	}
	// A plain umount returns once the daemon is done, and a clean run
	// leaves no log behind.
	if !daemonGone(t, mnt)() {
		t.Error("umount returned before the daemon removed its control socket")
	}
	if log, err := daemonLogPath(mountConfig{Mountpoint: mnt}); err != nil {
		t.Error(err)
	} else if _, err := os.Stat(log); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("daemon log %s left after a clean run (%v)", log, err)
	}
	if b, err := os.ReadFile(filepath.Join(backing, "open")); err != nil || string(b) != "before after" {
		t.Errorf("backing file = %q, %v", b, err)
	}
}

func TestLazyUmountWhileFileOpen(t *testing.T) {
	requireMount(t)
	backing, mnt := mountDaemon(t)
	f, err := os.Create(filepath.Join(mnt, "open"))
	must(t, err)
	if out, code := bpfusefs(t, nil, "umount", "-l", mnt); code != 0 {
		t.Fatalf("umount -l: exit %d\n%s", code, out)
	}
	if mounted(mnt) {
		t.Error("still mounted after umount -l")
	}
	// The detached mount still serves the open file.
	_, err = f.WriteString("written after detach")
	must(t, err)
	must(t, f.Sync())
	if daemonGone(t, mnt)() {
		t.Error("the daemon exited while a file was still open")
	}
	must(t, f.Close())
	waitFor(t, "the daemon to exit after the last close", daemonGone(t, mnt))
	if b, err := os.ReadFile(filepath.Join(backing, "open")); err != nil || string(b) != "written after detach" {
		t.Errorf("backing file = %q, %v", b, err)
	}
}

// TestSIGTERMDuringWrites stops a foreground daemon while a file is being
// written and fsync'd: every fsync'd chunk must be intact in the backing
// file, and the daemon must exit cleanly once the writer is done.
func TestSIGTERMDuringWrites(t *testing.T) {
	requireMount(t)
	for _, mode := range accelModes(t) {
		t.Run(mode, func(t *testing.T) {
			backing, mnt := newDirs(t)
			daemon := startForeground(t, mnt, "--accel", mode, backing, mnt)

			f, err := os.Create(filepath.Join(mnt, "data"))
			must(t, err)
			chunk := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26)}, 256<<10) }
			synced := 0
			writeChunk := func() {
				t.Helper()
				if _, err := f.Write(chunk(synced)); err != nil {
					t.Fatalf("write %d: %v", synced, err)
				}
				if err := f.Sync(); err != nil {
					t.Fatalf("fsync %d: %v", synced, err)
				}
				synced++
			}
			for synced < 4 {
				writeChunk()
			}
			must(t, daemon.cmd.Process.Signal(syscall.SIGTERM))
			// Keep writing while the daemon tries to unmount: the open
			// file keeps the mount busy until the daemon detaches it.
			waitFor(t, "the daemon to detach the busy mount", func() bool {
				writeChunk()
				return !mounted(mnt)
			})
			for end := synced + 4; synced < end; {
				writeChunk()
			}
			must(t, f.Close())
			if err := daemon.wait(); err != nil {
				t.Fatalf("daemon after SIGTERM: %v\n%s", err, daemon.logs.String())
			}
			if mounted(mnt) {
				t.Error("still mounted after the daemon exited")
			}
			got, err := os.ReadFile(filepath.Join(backing, "data"))
			must(t, err)
			for i := 0; i < synced; i++ {
				off := i * (256 << 10)
				if len(got) < off+256<<10 || !bytes.Equal(got[off:off+256<<10], chunk(i)) {
					t.Fatalf("fsync'd chunk %d missing or damaged in the backing file (%d bytes)", i, len(got))
				}
			}
			// The file was open at SIGTERM: the daemon had to detach the
			// mount and serve the writer to the end.
			if !strings.Contains(daemon.logs.String(), "detaching") {
				t.Errorf("daemon log does not show a lazy detach:\n%s", daemon.logs.String())
			}
		})
	}
}

// helperScript runs in a private mount namespace whose /usr/sbin (where
// mount(8) looks for helpers, through /sbin) is an empty directory, so the
// test never touches the helper the host may have installed. It mounts
// through mount(8), remounts read-only and back as xfstests does, unmounts
// with umount(8), and mounts again from an fstab line.
const helperScript = `
set -eu
mount --make-rprivate /
mount --bind "$SBIN" /usr/sbin
"$BIN" install-helper /sbin
mount -t fuse.bpfusefs "$BACKING" "$MNT" -o accel=auto,noatime
grep -q " - fuse.bpfusefs $BACKING " /proc/self/mountinfo
echo rw > "$MNT/f"
mount -o remount,ro "$MNT"
if echo ro 2>/dev/null > "$MNT/f"; then echo "write after remount,ro succeeded"; exit 1; fi
mount -o remount,rw "$MNT"
mount -o remount,noatime "$MNT"
echo "rw again" > "$MNT/f"
umount "$MNT"
printf '%s %s fuse.bpfusefs accel=none,allow_other,nofail,_netdev 0 0\n' "$BACKING" "$MNT" > "$FSTAB"
mount -T "$FSTAB" "$MNT"
cat "$MNT/f"
"$BIN" stats --json "$MNT" > "$STATS"
umount "$MNT"
`

// TestMountHelper mounts through mount(8) with the helper installed by
// install-helper: mount -t fuse.bpfusefs, remount ro and rw, umount(8),
// and an fstab line.
func TestMountHelper(t *testing.T) {
	requireMount(t)
	requireTools(t, "mount", "umount", "unshare", "bash")
	backing, mnt := newDirs(t)
	dir := t.TempDir()
	sbin := filepath.Join(dir, "sbin")
	must(t, os.Mkdir(sbin, 0o755))
	cmd := exec.Command("unshare", "--mount", "bash", "-c", helperScript)
	cmd.Env = append(os.Environ(), "BIN="+binary, "SBIN="+sbin, "BACKING="+backing, "MNT="+mnt, "FSTAB="+filepath.Join(dir, "fstab"), "STATS="+filepath.Join(dir, "stats.json"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("mount(8) helper script: %v\n%s", err, out)
	}
	if target, err := os.Readlink(filepath.Join(sbin, helperName)); err != nil || target != binary {
		t.Errorf("installed helper -> %q (%v), want %s", target, err, binary)
	}
	if !strings.Contains(string(out), "rw again") {
		t.Errorf("the fstab mount did not show the file written before:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "stats.json"))
	must(t, err)
	var st fs.Stats
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatalf("stats --json: %v\n%s", err, b)
	}
	if slices.Contains(st.Accel, "engine") || slices.Contains(st.Accel, "passthrough") {
		t.Errorf("accel=none from the fstab line gave accel %v", st.Accel)
	}
	if b, err := os.ReadFile(filepath.Join(backing, "f")); err != nil || string(b) != "rw again\n" {
		t.Errorf("backing file = %q, %v", b, err)
	}
	waitFor(t, "the daemons to exit", daemonGone(t, mnt))
}

// TestKilledDaemon: after SIGKILL the mount is dead (ENOTCONN). Mounting
// on it says so, umount clears it, and a new mount replaces the stale
// control socket.
func TestKilledDaemon(t *testing.T) {
	requireMount(t)
	backing, mnt := newDirs(t)
	daemon := startForeground(t, mnt, backing, mnt)
	must(t, daemon.cmd.Process.Kill())
	_ = daemon.wait()
	t.Cleanup(func() { cleanupMount(t, mnt) })

	// (A stat could still be answered from the kernel's attribute cache.)
	// Over FUSE-over-io_uring the kernel first cancels the dead daemon's
	// ring commands, and a request racing that gets ECANCELED; then the
	// connection is torn down and every request gets ENOTCONN, or
	// ECONNABORTED where the ring's teardown aborted it.
	waitFor(t, "the dead mount to report its connection gone", func() bool {
		_, err := os.ReadDir(mnt)
		gone := errors.Is(err, syscall.ENOTCONN) || errors.Is(err, syscall.ECONNABORTED)
		if !gone && !errors.Is(err, syscall.ECANCELED) {
			t.Fatalf("readdir of a dead mount: %v, want ENOTCONN", err)
		}
		return gone
	})
	out, code := bpfusefs(t, nil, "mount", "-d", backing, mnt)
	if code != exitFailure || !strings.Contains(out, "dead FUSE mount") && !strings.Contains(out, "is busy") {
		t.Errorf("mount on a dead mount: exit %d\n%s", code, out)
	}
	if out, code := bpfusefs(t, nil, "stats", mnt); code != exitFailure {
		t.Errorf("stats of a dead daemon: exit %d\n%s", code, out)
	}
	if out, code := bpfusefs(t, nil, "umount", mnt); code != 0 {
		t.Fatalf("umount of a dead mount: exit %d\n%s", code, out)
	}
	if mounted(mnt) {
		t.Fatal("dead mount still there after umount")
	}
	if !daemonGone(t, mnt)() {
		t.Error("umount of a dead mount left the killed daemon's control socket")
	}
	if out, code := bpfusefs(t, nil, "mount", "-d", backing, mnt); code != 0 {
		t.Fatalf("mount after cleaning up a killed daemon: exit %d\n%s", code, out)
	}
	if _, err := fetchStats(mnt); err != nil {
		t.Errorf("stats from the new daemon: %v", err)
	}
}
