package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bpfusefs/bpfusefs/internal/inodeflags"
	"github.com/bpfusefs/bpfusefs/mirror"
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/bpfusefs/bpfusefs/uring"
	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// plainMirror makes an empty mirror directory on the test's filesystem.
func plainMirror(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.Chmod(dir, 0755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tmpfsMirror makes a mirror directory on a tmpfs of size bytes, which a
// test fills to make the replica fail with ENOSPC.
func tmpfsMirror(size int) func(t *testing.T) string {
	return func(t *testing.T) string {
		t.Helper()
		dir := t.TempDir()
		if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0755", size)); err != nil {
			t.Skipf("cannot mount a tmpfs: %v", err)
		}
		t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
		return dir
	}
}

// bindMirror makes a mirror directory that is its own bind mount, which a
// test remounts read-only to make the replica fail with EROFS.
func bindMirror(t *testing.T) string {
	t.Helper()
	dir := plainMirror(t)
	if err := unix.Mount(dir, dir, "", unix.MS_BIND, ""); err != nil {
		t.Skipf("cannot bind mount: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// remountReadOnly makes a bindMirror read-only. The kernel refuses while
// a file is open for writing there, and RELEASE reaches the daemon a
// little after close(2) returned, so EBUSY is retried for a while.
func remountReadOnly(t *testing.T, dir string) {
	t.Helper()
	for try := 0; ; try++ {
		err := unix.Mount("", dir, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, "")
		if err == nil {
			return
		}
		if err != unix.EBUSY || try == 100 {
			t.Fatalf("remount %s read-only: %v", dir, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func replicas(n int, mk func(t *testing.T) string) []func(t *testing.T) string {
	ms := make([]func(t *testing.T) string, n)
	for i := range ms {
		ms[i] = mk
	}
	return ms
}

// eachDaemonMode runs fn in a subtest per daemonModes mode.
func eachDaemonMode(t *testing.T, fn func(t *testing.T, mode string, opts Options)) {
	requireFUSE(t)
	for mode, opts := range daemonModes(t) {
		t.Run(mode, func(t *testing.T) { fn(t, mode, opts) })
	}
}

// daemonModes are the modes in which the daemon does the data I/O, the
// ones that serve mirrored files.
func daemonModes(t *testing.T) map[string]Options {
	ms := modes(t)
	delete(ms, "passthrough")
	return ms
}

// checkReplicasAgree compares every replica with the model and with each
// other: content, file types, extended attributes and the modification
// times of regular files.
func checkReplicasAgree(t *testing.T, tm *testMount, model map[string]*[]byte) {
	t.Helper()
	for _, r := range tm.replicas() {
		for name, content := range model {
			got, err := os.ReadFile(filepath.Join(r, name))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, *content) {
				t.Errorf("%s/%s: %d bytes differ from the model's %d", r, name, len(got), len(*content))
			}
		}
	}
	want := treeDigest(t, tm.backing)
	for _, m := range tm.mirrors {
		if got := treeDigest(t, m); got != want {
			t.Errorf("mirror %s differs from the backing directory", m)
		}
	}
	for name := range model {
		var primary unix.Stat_t
		if err := unix.Lstat(tm.b(name), &primary); err != nil {
			t.Fatal(err)
		}
		for _, m := range tm.mirrors {
			var st unix.Stat_t
			if err := unix.Lstat(filepath.Join(m, name), &st); err != nil {
				t.Fatal(err)
			}
			if st.Mtim != primary.Mtim || st.Mode != primary.Mode || st.Uid != primary.Uid || st.Nlink != primary.Nlink {
				t.Errorf("%s: mirror %s has mtime %v mode %o uid %d nlink %d, backing %v %o %d %d", name, m,
					st.Mtim, st.Mode, st.Uid, st.Nlink, primary.Mtim, primary.Mode, primary.Uid, primary.Nlink)
			}
			for _, attr := range []string{"user.mirror"} {
				a, errA := getxattr(tm.b(name), attr)
				b, errB := getxattr(filepath.Join(m, name), attr)
				if a != b || !errors.Is(errA, errB) {
					t.Errorf("%s: xattr %s is %q (%v) on the mirror, %q (%v) on the backing directory", name, attr, b, errB, a, errA)
				}
			}
		}
	}
}

func getxattr(path, attr string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Lgetxattr(path, attr, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:n]), nil
}

// TestMirrorRandomWorkload runs the random workload (writes at random
// offsets, truncates, renames, hard links, unlinks) plus xattrs, chmod and
// copy_file_range on 2 and 3 replicas and checks that every replica holds
// the model's bytes and agrees with the others.
func TestMirrorRandomWorkload(t *testing.T) {
	requireFUSE(t)
	for mode, opts := range daemonModes(t) {
		for _, n := range []int{2, 3} {
			t.Run(fmt.Sprintf("%s/%d", mode, n), func(t *testing.T) {
				tm := mountReplicas(t, mode, opts, nil, replicas(n-1, plainMirror)...)
				model := randomWorkload(t, tm.mnt, uint64(7*n))
				i := 0
				for name, content := range model {
					switch i % 3 {
					case 0:
						if err := unix.Setxattr(tm.p(name), "user.mirror", []byte(name), 0); err != nil {
							t.Fatal(err)
						}
					case 1:
						if err := os.Chmod(tm.p(name), 0600); err != nil {
							t.Fatal(err)
						}
					case 2:
						copyName := name + ".copy"
						copyFile(t, tm.p(name), tm.p(copyName))
						clone := bytes.Clone(*content)
						model[copyName] = &clone
					}
					i++
				}
				checkReplicasAgree(t, tm, model)
				s := tm.m.Stats()
				defer func() {
					// Byte for byte, with owners, modes, xattrs and
					// hard links, once every file is released.
					if err := tm.m.Unmount(false); err != nil {
						t.Fatal(err)
					}
					diffs, err := mirror.Compare(tm.replicas(), mirror.CompareOptions{Content: true, Max: 10})
					if err != nil || len(diffs) > 0 {
						t.Errorf("replicas differ after unmount: %v %v", diffs, err)
					}
				}()
				if len(s.Replicas) != n {
					t.Fatalf("stats list %d replicas, want %d", len(s.Replicas), n)
				}
				for _, r := range s.Replicas {
					if r.State != "ok" {
						t.Errorf("replica %s is %s (%s) after a clean workload", r.Path, r.State, r.Cause)
					}
				}
			})
		}
	}
}

// copyFile copies src to a new file dst with copy_file_range through the
// mount.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0644)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	fi, err := in.Stat()
	if err != nil {
		t.Fatal(err)
	}
	for left := fi.Size(); left > 0; {
		n, err := unix.CopyFileRange(int(in.Fd()), nil, int(out.Fd()), nil, int(left), 0)
		if err != nil {
			t.Fatalf("copy_file_range %s: %v", src, err)
		}
		if n == 0 {
			t.Fatalf("copy_file_range %s: early end with %d bytes left", src, left)
		}
		left -= int64(n)
	}
}

// acknowledged writes files of size bytes through the mount until count
// files are written or a write fails, and returns what was acknowledged:
// the name and content of every file whose write and close succeeded.
func acknowledged(t *testing.T, tm *testMount, prefix string, count, size int) (map[string]*[]byte, error) {
	t.Helper()
	acked := map[string]*[]byte{}
	for i := range count {
		name := fmt.Sprintf("%s%03d", prefix, i)
		data := bytes.Repeat([]byte{byte(i + 1)}, size)
		if err := os.WriteFile(tm.p(name), data, 0644); err != nil {
			return acked, err
		}
		acked[name] = &data
	}
	return acked, nil
}

// checkSurvivor checks that every acknowledged file is intact on replica
// dir and through the mount.
func checkSurvivor(t *testing.T, tm *testMount, dir string, acked map[string]*[]byte) {
	t.Helper()
	dropCaches(t)
	for name, content := range acked {
		for _, path := range []string{filepath.Join(dir, name), tm.p(name)} {
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("acknowledged file lost: %v", err)
			}
			if !bytes.Equal(got, *content) {
				t.Errorf("%s: acknowledged content differs", path)
			}
		}
	}
}

// checkDegraded checks that stats show exactly replica dir degraded, with
// a cause mentioning cause.
func checkDegraded(t *testing.T, tm *testMount, dir, cause string) {
	t.Helper()
	leader := ""
	for _, r := range tm.m.Stats().Replicas {
		switch {
		case r.Path == dir && (r.State != ReplicaDegraded || !strings.Contains(r.Cause, cause)):
			t.Errorf("replica %s: state %q cause %q, want degraded by %q", r.Path, r.State, r.Cause, cause)
		case r.Path != dir && r.State != ReplicaOK:
			t.Errorf("replica %s: state %q (%s), want ok", r.Path, r.State, r.Cause)
		}
		if leader == "" && r.State == ReplicaOK {
			leader = r.Path // the first in service
		}
		if r.Leader != (r.Path == leader) {
			t.Errorf("replica %s: leader %v, want %v", r.Path, r.Leader, r.Path == leader)
		}
	}
}

// checkStillWorks creates, writes, renames and reads back a file through
// the mount.
func checkStillWorks(t *testing.T, tm *testMount) {
	t.Helper()
	writeFile(t, tm.p("after"), "still serving")
	if err := os.Rename(tm.p("after"), tm.p("after2")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, tm.p("after2")); got != "still serving" {
		t.Fatalf("read back %q", got)
	}
}

// TestMirrorFullReplica fills a small tmpfs mirror in the middle of a
// workload: it is degraded, every write stays acknowledged and intact on
// the backing directory, and the mount keeps serving.
func TestMirrorFullReplica(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, nil, tmpfsMirror(1<<20))
		acked, err := acknowledged(t, tm, "f", 40, 64<<10)
		if err != nil {
			t.Fatalf("a write failed while the backing directory had room: %v", err)
		}
		checkDegraded(t, tm, tm.mirrors[0], "no space left on device")
		checkSurvivor(t, tm, tm.backing, acked)
		checkStillWorks(t, tm)
	})
}

// TestMirrorFullLeader fills the leader itself (the backing directory on
// a small tmpfs): the mirror takes over, and nothing acknowledged is lost.
func TestMirrorFullLeader(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, tmpfsMirror(1<<20), plainMirror)
		acked, err := acknowledged(t, tm, "f", 40, 64<<10)
		if err != nil {
			t.Fatalf("a write failed while the mirror had room: %v", err)
		}
		checkDegraded(t, tm, tm.backing, "no space left on device")
		checkSurvivor(t, tm, tm.mirrors[0], acked)
		checkStillWorks(t, tm)
	})
}

// TestMirrorReadOnlyReplica makes a mirror read-only mid-workload.
func TestMirrorReadOnlyReplica(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, nil, plainMirror, bindMirror)
		before, err := acknowledged(t, tm, "a", 5, 10000)
		if err != nil {
			t.Fatal(err)
		}
		remountReadOnly(t, tm.mirrors[1])
		after, err := acknowledged(t, tm, "b", 5, 10000)
		if err != nil {
			t.Fatalf("a write failed with two healthy replicas: %v", err)
		}
		checkDegraded(t, tm, tm.mirrors[1], "read-only file system")
		for _, dir := range tm.replicas()[:2] {
			checkSurvivor(t, tm, dir, before)
			checkSurvivor(t, tm, dir, after)
		}
		checkStillWorks(t, tm)
	})
}

// TestMirrorAllFull fills every replica: the caller gets their common
// error, ENOSPC, and no replica is degraded (none holds an acknowledged
// write the others lack).
func TestMirrorAllFull(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, tmpfsMirror(256<<10), tmpfsMirror(256<<10))
		_, err := acknowledged(t, tm, "f", 1, 1<<20)
		if !errors.Is(err, unix.ENOSPC) {
			t.Fatalf("write to two full replicas: %v, want ENOSPC", err)
		}
		for _, r := range tm.m.Stats().Replicas {
			if r.State != "ok" {
				t.Errorf("replica %s degraded (%s) though no replica succeeded", r.Path, r.Cause)
			}
		}
		// Freeing the space lets every replica work again, once
		// the kernel's FORGET (sent after the unlink, in the
		// background) lets the daemon close the file.
		if err := os.Remove(tm.p("f000")); err != nil {
			t.Fatal(err)
		}
		for _, r := range tm.replicas() {
			waitFor(t, "space freed on "+r, func() bool {
				var st unix.Statfs_t
				return unix.Statfs(r, &st) == nil && st.Bfree*uint64(st.Bsize) >= 128<<10
			})
		}
		checkStillWorks(t, tm)
	})
}

// TestSettle checks the agreement rules on the outcomes of one mutation.
func TestSettle(t *testing.T) {
	for _, tc := range []struct {
		name     string
		errs     []error
		want     error
		degraded []bool
	}{
		{"all ok", []error{nil, nil, nil}, nil, []bool{false, false, false}},
		{"one fails", []error{nil, unix.ENOSPC, nil}, nil, []bool{false, true, false}},
		{"leader fails", []error{unix.EIO, nil, errSkipped}, nil, []bool{true, false, false}},
		{"all fail alike", []error{unix.ENOSPC, unix.ENOSPC, errSkipped}, unix.ENOSPC, []bool{false, false, false}},
		{"all fail differently", []error{unix.EROFS, unix.ENOSPC, unix.ENOSPC}, unix.EIO, []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := &replicaSet{log: log.New(io.Discard, "", 0)}
			for range tc.errs {
				s.r = append(s.r, &replica{path: "r"})
			}
			if err := s.settle("write", tc.errs); err != tc.want {
				t.Errorf("settle = %v, want %v", err, tc.want)
			}
			for i, want := range tc.degraded {
				if got := !s.healthy(i); got != want {
					t.Errorf("replica %d degraded = %v, want %v", i, got, want)
				}
			}
			if !s.healthy(s.leader()) {
				t.Errorf("leader %d is degraded", s.leader())
			}
		})
	}
}

// TestMirrorNoPassthrough checks that a mirrored mount asked for
// passthrough serves files through the daemon (the kernel has one backing
// file per inode) and still reaches every replica.
func TestMirrorNoPassthrough(t *testing.T) {
	requireFUSE(t)
	if err := passthrough.Probe(); err != nil {
		t.Skip(err)
	}
	tm := mountReplicas(t, "passthrough", Options{Passthrough: true}, nil, plainMirror)
	writeFile(t, tm.p("f"), "both")
	for _, r := range tm.replicas() {
		if got := readFile(t, filepath.Join(r, "f")); got != "both" {
			t.Errorf("%s: %q", r, got)
		}
	}
	if s := tm.m.Stats(); s.Paths["passthrough"] != 0 {
		t.Errorf("%d mirrored opens went to passthrough", s.Paths["passthrough"])
	}
}

// TestMirrorAgreement refuses to mount replicas that disagree, listing the
// differences, and repairs them from the replica --mirror-repair names.
func TestMirrorAgreement(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	backing, mirrorDir, mnt := filepath.Join(dir, "b"), filepath.Join(dir, "m"), filepath.Join(dir, "mnt")
	for _, d := range []string{backing, mirrorDir, mnt} {
		if err := os.Mkdir(d, 0755); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(backing, "same"), "x")
	writeFile(t, filepath.Join(backing, "only-backing"), "y")
	writeFile(t, filepath.Join(mirrorDir, "only-mirror"), "z")
	now := time.Now()
	// secret is readable by anyone on the mirror only, which would
	// expose it once the mirror took over.
	for d, secretMode := range map[string]os.FileMode{backing: 0600, mirrorDir: 0644} {
		if d == mirrorDir {
			writeFile(t, filepath.Join(d, "same"), "x")
		}
		writeFile(t, filepath.Join(d, "secret"), "s")
		if err := os.Chmod(filepath.Join(d, "secret"), secretMode); err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"same", "secret"} {
			if err := os.Chtimes(filepath.Join(d, name), now, now); err != nil {
				t.Fatal(err)
			}
		}
	}
	// sealed is immutable in the backing directory only: the mirror
	// would let it be changed.
	sealed := filepath.Join(backing, "sealed")
	writeFile(t, sealed, "")
	setFlagsOf(t, sealed, inodeflags.Immutable, 0)
	t.Cleanup(func() {
		setFlagsOf(t, sealed, 0, inodeflags.Immutable)
		setFlagsOf(t, filepath.Join(mirrorDir, "sealed"), 0, inodeflags.Immutable)
	})
	writeFile(t, filepath.Join(mirrorDir, "sealed"), "")
	opts := Options{Backing: backing, Mirrors: []string{mirrorDir}}
	_, err := Mount(mnt, opts)
	if err == nil {
		t.Fatal("mounted disagreeing replicas")
	}
	for _, want := range []string{"only-backing: missing", "only-mirror: extra", "secret: mode 0600 != 0644", "sealed: flags i != -", "--mirror-repair"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("refusal %q does not mention %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "same") {
		t.Errorf("refusal lists the agreeing file: %v", err)
	}

	opts.MirrorRepair = backing
	m, err := Mount(mnt, opts)
	if err != nil {
		t.Fatalf("mount with --mirror-repair: %v", err)
	}
	unmountAtCleanup(t, m, mnt)
	if got := readFile(t, filepath.Join(mnt, "only-backing")); got != "y" {
		t.Errorf("only-backing reads %q", got)
	}
	if _, err := os.Stat(filepath.Join(mnt, "only-mirror")); !os.IsNotExist(err) {
		t.Errorf("only-mirror survived the repair: %v", err)
	}
	if err := m.Unmount(false); err != nil {
		t.Fatal(err)
	}
	if diffs, err := mirror.Compare([]string{backing, mirrorDir}, mirror.CompareOptions{Content: true}); err != nil || len(diffs) > 0 {
		t.Errorf("after repair: %v %v", diffs, err)
	}
}

// faultyNode is a loopback node whose files fail reads or fsyncs with EIO
// as its replica says: a replica with a bad disk.
type faultyNode struct {
	*gofs.LoopbackNode
	fr *faultyReplica
}

func (n *faultyNode) WrapChild(ctx context.Context, ops gofs.InodeEmbedder) gofs.InodeEmbedder {
	return &faultyNode{LoopbackNode: ops.(*gofs.LoopbackNode), fr: n.fr}
}

func (n *faultyNode) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	inode, fh, fuseFlags, errno := n.LoopbackNode.Create(ctx, name, flags, mode, out)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	return inode, &faultyFile{LoopbackFile: fh.(*gofs.LoopbackFile), fr: n.fr}, fuseFlags, 0
}

func (n *faultyNode) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	fh, fuseFlags, errno := n.LoopbackNode.Open(ctx, flags)
	if errno != 0 {
		return nil, 0, errno
	}
	return &faultyFile{LoopbackFile: fh.(*gofs.LoopbackFile), fr: n.fr}, fuseFlags, 0
}

type faultyFile struct {
	*gofs.LoopbackFile
	fr *faultyReplica
}

// PassthroughFd keeps the kernel from reading the file itself (go-fuse
// passes loopback files through where it can), so reads reach Read.
func (f *faultyFile) PassthroughFd() (int, bool) { return 0, false }

func (f *faultyFile) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if f.fr.fail.Load() {
		return nil, syscall.EIO
	}
	return f.LoopbackFile.Read(ctx, dest, off)
}

// Fsync fails as fsync(2) does when writeback lost pages.
func (f *faultyFile) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if f.fr.failSync.Load() {
		return syscall.EIO
	}
	return f.LoopbackFile.Fsync(ctx, flags)
}

// faultyReplica serves an empty directory through a go-fuse loopback
// mount whose reads fail while fail is set, and fsyncs while failSync is;
// abort cuts its connection, as when the disk behind a replica disappears.
type faultyReplica struct {
	dir      string
	fail     atomic.Bool
	failSync atomic.Bool
	abort    func()
}

func newFaultyReplica(t *testing.T) *faultyReplica {
	t.Helper()
	fr := &faultyReplica{dir: plainMirror(t)}
	loopback, err := gofs.NewLoopbackRoot(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	root := &faultyNode{LoopbackNode: loopback.(*gofs.LoopbackNode), fr: fr}
	server, err := gofs.Mount(fr.dir, root, &gofs.Options{MountOptions: fuse.MountOptions{DirectMountStrict: true}})
	if err != nil {
		t.Fatalf("mount the faulty replica: %v", err)
	}
	var mst unix.Stat_t
	if err := unix.Stat(fr.dir, &mst); err != nil {
		t.Fatal(err)
	}
	abortPath := filepath.Join(fuseConnections(t), fmt.Sprint(unix.Minor(mst.Dev)), "abort")
	fr.abort = func() {
		if err := os.WriteFile(abortPath, []byte("1"), 0); err != nil {
			t.Fatalf("abort the faulty replica: %v", err)
		}
	}
	t.Cleanup(func() {
		if server.Unmount() != nil {
			unix.Unmount(fr.dir, unix.MNT_DETACH)
		}
	})
	return fr
}

// TestMirrorReadFailover makes a mirror fail reads: every read through the
// mount still returns the right bytes, and the mirror is degraded.
func TestMirrorReadFailover(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		fr := newFaultyReplica(t)
		tm := mountReplicas(t, mode, opts, nil, func(*testing.T) string { return fr.dir })
		want := strings.Repeat("replicated ", 1000)
		writeFile(t, tm.p("f"), want)
		fr.fail.Store(true)
		// Opens take turns over the replicas, so some of these
		// reads go to the failing one first.
		for range 4 {
			if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
				t.Fatal(err)
			}
			if got := readFile(t, tm.p("f")); got != want {
				t.Fatalf("read %d bytes, want %d", len(got), len(want))
			}
		}
		checkDegraded(t, tm, fr.dir, "read: input/output error")
		checkStillWorks(t, tm)
	})
}

// TestMirrorFsyncFailover makes a mirror's fsync(2) fail, as when its disk
// lost written pages: the FSYNC succeeds on the leader, the mirror is
// degraded, and the leader holds the data. Where the BPF loop serves a
// mirrored FSYNC (kernel/patches: IORING_OP_FUTIMENS), its fsyncs are
// final, and the daemon settles their outcomes instead of syncing again
// (which would find no error: the kernel reports it to one fsync only).
func TestMirrorFsyncFailover(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		fr := newFaultyReplica(t)
		tm := mountReplicas(t, mode, opts, nil, func(*testing.T) string { return fr.dir })
		f, err := os.OpenFile(tm.p("f"), os.O_CREATE|os.O_RDWR, 0644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		want := strings.Repeat("synced ", 1000)
		if _, err := f.WriteString(want); err != nil {
			t.Fatal(err)
		}
		fr.failSync.Store(true)
		before := tm.m.Stats()
		if err := f.Sync(); err != nil {
			t.Fatalf("fsync with the leader healthy: %v", err)
		}
		checkDegraded(t, tm, fr.dir, "fsync: input/output error")
		if mode == "bpf" && uring.VerifyFutimens() == nil {
			checkHandedOver(t, tm, before, "FSYNC")
		}
		if got := readFile(t, tm.b("f")); got != want {
			t.Errorf("the leader holds %d bytes, want the %d synced", len(got), len(want))
		}
		checkStillWorks(t, tm)
	})
}

// checkHandedOver checks that the BPF loop handed one request (op) to the
// daemon since the mount's stats were before.
func checkHandedOver(t *testing.T, tm *testMount, before Stats, op string) {
	t.Helper()
	if after := tm.m.Stats(); after.BPFFallbacks != before.BPFFallbacks+1 {
		t.Errorf("stats: BPF handed %d requests (%s) to the daemon, want 1", after.BPFFallbacks-before.BPFFallbacks, op)
	}
}

// TestMirrorCopyFailover cuts a mirror's connection while a copy's files
// are open: the copy succeeds from the backing directory and the mirror
// degrades. Where the BPF loop copies (kernel/patches:
// IORING_COPY_KEEP_HOLES), it hands the failed copy to the daemon, which
// serves it again.
func TestMirrorCopyFailover(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		fr := newFaultyReplica(t)
		tm := mountReplicas(t, mode, opts, nil, func(*testing.T) string { return fr.dir })
		want := strings.Repeat("copied ", 1000)
		writeFile(t, tm.p("src"), want)
		in, out := openCopyPair(t, tm)
		fr.abort()
		before := tm.m.Stats()
		var offIn, offOut int64
		if n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, len(want), 0); err != nil || n != len(want) {
			t.Fatalf("copy_file_range with the backing replica healthy: %d, %v; want %d", n, err, len(want))
		}
		checkDegraded(t, tm, fr.dir, "connect")
		if mode == "bpf" && uring.VerifyCopyKeepHoles() == nil {
			checkHandedOver(t, tm, before, "COPY_FILE_RANGE")
		}
		if got := readFile(t, tm.b("dst")); got != want {
			t.Errorf("the backing directory's copy holds %d bytes, want %d", len(got), len(want))
		}
		checkStillWorks(t, tm)
	})
}

// TestMirrorReplicaGone cuts a mirror's connection mid-workload (its disk
// is gone): writes keep succeeding, and stay intact on the backing
// directory.
func TestMirrorReplicaGone(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		fr := newFaultyReplica(t)
		tm := mountReplicas(t, mode, opts, nil, func(*testing.T) string { return fr.dir })
		before, err := acknowledged(t, tm, "a", 5, 10000)
		if err != nil {
			t.Fatal(err)
		}
		fr.abort()
		after, err := acknowledged(t, tm, "b", 5, 10000)
		if err != nil {
			t.Fatalf("a write failed with the backing replica healthy: %v", err)
		}
		// ENOTCONN, or ECONNABORTED for a request the abort cut.
		checkDegraded(t, tm, fr.dir, "connect")
		checkSurvivor(t, tm, tm.backing, before)
		checkSurvivor(t, tm, tm.backing, after)
		checkStillWorks(t, tm)
	})
}

// TestMirrorAllFail fails the same write on every replica, differently (a
// full leader, a vanished mirror): the caller gets EIO, no replica is
// degraded, and the data written before is intact.
func TestMirrorAllFail(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		fr := newFaultyReplica(t)
		tm := mountReplicas(t, mode, opts, tmpfsMirror(256<<10), func(*testing.T) string { return fr.dir })
		// A whole page, so that the next write needs a new one;
		// written and synced through the one handle, so that no
		// RELEASE is still on its way to the mirror at the abort.
		before := strings.Repeat("b", 4096)
		f, err := os.OpenFile(tm.p("f"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteString(before); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
		fr.abort()
		// Fill the leader behind the mount's back.
		filler, err := os.Create(tm.b("filler"))
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = filler.Write(make([]byte, 4096))
		}
		filler.Close()
		if _, err := f.Write(make([]byte, 4096)); !errors.Is(err, unix.EIO) {
			t.Fatalf("write failing on every replica: %v, want EIO (%+v)", err, tm.m.Stats().Replicas)
		}
		for _, r := range tm.m.Stats().Replicas {
			if r.State != "ok" {
				t.Errorf("replica %s degraded (%s) though no replica succeeded", r.Path, r.Cause)
			}
		}
		if got := readFile(t, tm.b("f")); got != before {
			t.Errorf("the leader holds %d bytes, want the %d acknowledged", len(got), len(before))
		}
	})
}

// waitFor polls cond for up to ten seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// fuseConnections returns the fusectl directory, mounting fusectl when
// nobody has (Debian does not by default).
func fuseConnections(t *testing.T) string {
	t.Helper()
	const dir = "/sys/fs/fuse/connections"
	var st, parent unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Skipf("no fusectl: %v", err)
	}
	if unix.Statfs("/sys/fs/fuse", &parent) == nil && st.Type == parent.Type {
		if err := unix.Mount("fusectl", dir, "fusectl", 0, ""); err != nil {
			t.Skipf("cannot mount fusectl: %v", err)
		}
	}
	return dir
}

// setFlagsOf changes the inode flags of path (through the mount or on a
// replica): it clears clear, then sets set. It skips the test where the
// backing filesystem keeps no such flags.
func setFlagsOf(t *testing.T, path string, set, clear uint32) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	flags, err := inodeflags.Get(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	if err := inodeflags.Set(int(f.Fd()), flags&^clear|set); err != nil {
		if inodeflags.Unsupported(err) {
			t.Skipf("chattr %s: %v", path, err)
		}
		t.Fatalf("chattr %s: %v", path, err)
	}
}

// checkFlags checks that every replica's rel has the flags want among the
// protected ones.
func checkFlags(t *testing.T, tm *testMount, rel string, want uint32) {
	t.Helper()
	for _, r := range tm.replicas() {
		f, err := os.Open(filepath.Join(r, rel))
		if err != nil {
			t.Fatal(err)
		}
		flags, err := inodeflags.Get(int(f.Fd()))
		f.Close()
		if err != nil || flags&inodeflags.Protected != want {
			t.Errorf("%s in %s: flags %#x (%v), want %#x", rel, r, flags&inodeflags.Protected, err, want)
		}
	}
}

// TestMirrorProtectedFiles makes files immutable and append-only through a
// mirrored mount while they are open and written (as xfstests' generic/079
// does): every replica gets the flags, directories' included, and closing
// the written files must not degrade the mirror, whose times the daemon
// then sets on a file that refuses them.
func TestMirrorProtectedFiles(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, nil, plainMirror)
		if err := os.Mkdir(tm.p("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		sealed, err := os.Create(tm.p("d/sealed"))
		if err != nil {
			t.Fatal(err)
		}
		log, err := os.OpenFile(tm.p("d/log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, rel := range []string{"d", "d/sealed", "d/log"} {
				setFlagsOf(t, tm.p(rel), 0, inodeflags.Protected)
			}
		})
		if _, err := sealed.WriteString("written, then sealed\n"); err != nil {
			t.Fatal(err)
		}
		if _, err := log.WriteString("first\n"); err != nil {
			t.Fatal(err)
		}
		setFlagsOf(t, tm.p("d/sealed"), inodeflags.Immutable, 0)
		setFlagsOf(t, tm.p("d/log"), inodeflags.Append, 0)
		time.Sleep(10 * time.Millisecond) // the next write's mtime differs
		if _, err := log.WriteString("appended\n"); err != nil {
			t.Fatal(err)
		}
		for _, f := range []*os.File{sealed, log} {
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		setFlagsOf(t, tm.p("d"), inodeflags.Append, 0)
		checkFlags(t, tm, "d/sealed", inodeflags.Immutable)
		checkFlags(t, tm, "d/log", inodeflags.Append)
		checkFlags(t, tm, "d", inodeflags.Append)
		checkDegraded(t, tm, "", "")
		sealedData, logData := []byte("written, then sealed\n"), []byte("first\nappended\n")
		checkReplicasAgree(t, tm, map[string]*[]byte{"d/sealed": &sealedData, "d/log": &logData})
		if err := os.Remove(tm.p("d/log")); !errors.Is(err, unix.EPERM) {
			t.Errorf("removing an entry of an append-only directory: %v, want EPERM", err)
		}
	})
}

// TestMirrorFailoverKeepsInodes fills the leader so that the mirror takes
// over: what the kernel knows keeps the st_ino it had (the old leader's)
// in stat, statx and readdir, and a name looked up afresh through
// the new leader reaches the inode the kernel already has for its object
// (one kernel inode, one page cache).
func TestMirrorFailoverKeepsInodes(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		tm := mountReplicas(t, mode, opts, tmpfsMirror(1<<20), plainMirror)
		if err := os.Mkdir(tm.p("d"), 0755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, tm.p("d/f"), "kept")
		if err := os.Link(tm.p("d/f"), tm.p("d/g")); err != nil {
			t.Fatal(err)
		}
		// Open, d and d/f stay known to the kernel; d/g's dentry goes
		// with dropCaches below.
		for _, name := range []string{"d", "d/f"} {
			f, err := os.Open(tm.p(name))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
		}
		want := map[string]uint64{".": statxIno(t, tm.p("")), "d": statxIno(t, tm.p("d")), "f": statxIno(t, tm.p("d/f"))}
		if _, err := acknowledged(t, tm, "fill", 40, 64<<10); err != nil {
			t.Fatalf("a write failed while the mirror had room: %v", err)
		}
		checkDegraded(t, tm, tm.backing, "no space left on device")
		dropCaches(t)
		for path, w := range map[string]uint64{"": want["."], "d": want["d"], "d/f": want["f"], "d/g": want["f"]} {
			if got := statxIno(t, tm.p(path)); got != w {
				t.Errorf("%q: st_ino %d after the failover, want %d", path, got, w)
			}
		}
		listed := direntInos(t, tm.p("d"))
		for name, w := range map[string]uint64{".": want["d"], "..": want["."], "f": want["f"], "g": want["f"]} {
			if listed[name] != w {
				t.Errorf("readdir d: %s has d_ino %d after the failover, want %d", name, listed[name], w)
			}
		}
	})
}

// TestMirrorFailoverNewInodes checks that objects first looked up after a
// mirror took over never get the st_ino of one seen before: both replicas
// are tmpfs, whose inode numbers count up per filesystem, the backing one
// 100 ahead, so the mirror's numbers for the new files sweep over the
// backing directory's for the old ones.
func TestMirrorFailoverNewInodes(t *testing.T) {
	eachDaemonMode(t, func(t *testing.T, mode string, opts Options) {
		backing := func(t *testing.T) string {
			dir := tmpfsMirror(1 << 20)(t)
			for i := range 100 {
				name := filepath.Join(dir, fmt.Sprint(i))
				if err := os.WriteFile(name, nil, 0644); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(name); err != nil {
					t.Fatal(err)
				}
			}
			return dir
		}
		tm := mountReplicas(t, mode, opts, backing, tmpfsMirror(64<<20))
		seen := map[uint64]string{statxIno(t, tm.p("")): "/"}
		for i := range 30 {
			name := fmt.Sprintf("old%03d", i)
			writeFile(t, tm.p(name), name)
			seen[statxIno(t, tm.p(name))] = name
		}
		if _, err := acknowledged(t, tm, "fill", 40, 64<<10); err != nil {
			t.Fatalf("a write failed while the mirror had room: %v", err)
		}
		checkDegraded(t, tm, tm.backing, "no space left on device")
		collisions := 0
		for i := range 200 {
			name := fmt.Sprintf("new%03d", i)
			writeFile(t, tm.p(name), name)
			if _, ok := seen[stat(t, filepath.Join(tm.mirrors[0], name)).Ino]; ok {
				collisions++
			}
			if old, ok := seen[statxIno(t, tm.p(name))]; ok {
				t.Errorf("%s, created after the failover, has the st_ino of %s", name, old)
			}
		}
		if collisions == 0 {
			t.Fatal("setup: no new file's number on the mirror is one the backing directory gave, so nothing was checked")
		}
		// Listed while the daemon knows nothing of them, the entries
		// are given the numbers a lookup gives them next.
		names := []string{"old000", "fill000", "new000", "new199"}
		dropCaches(t)
		for _, name := range names {
			waitForgotten(t, tm, filepath.Join(tm.mirrors[0], name))
		}
		listed := direntInos(t, tm.p(""))
		for _, name := range names {
			if ino := statxIno(t, tm.p(name)); listed[name] != ino {
				t.Errorf("readdir: %s has d_ino %d, stat says %d", name, listed[name], ino)
			}
		}
	})
}

// waitForgotten waits until the daemon has no inode for the object at path
// in a replica (FORGETs come asynchronously).
func waitForgotten(t *testing.T, tm *testMount, path string) {
	t.Helper()
	st := stat(t, path)
	known := func() bool {
		tm.m.fs.inodes.mu.RLock()
		defer tm.m.fs.inodes.mu.RUnlock()
		return tm.m.fs.inodes.byKey[keyOf(&st)] != nil
	}
	for deadline := time.Now().Add(10 * time.Second); known(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: still known to the daemon 10 s after the kernel dropped its caches", path)
		}
	}
}

// statxIno returns path's st_ino from the daemon, not the kernel's cache.
func statxIno(t *testing.T, path string) uint64 {
	t.Helper()
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW|unix.AT_STATX_FORCE_SYNC, unix.STATX_INO, &stx); err != nil {
		t.Fatal(err)
	}
	return stx.Ino
}

// direntInos lists dir with getdents(2), returning each entry's d_ino.
func direntInos(t *testing.T, dir string) map[string]uint64 {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	inos := map[string]uint64{}
	buf := make([]byte, 8192)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return inos
		}
		for off := 0; off < n; {
			var e fuse.DirEntry
			off += e.Parse(buf[off:n])
			inos[e.Name] = e.Ino
		}
	}
}
