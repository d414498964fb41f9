package fs

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bpfusefs/bpfusefs/bpf"
	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
	"github.com/bpfusefs/bpfusefs/passthrough"
	"github.com/bpfusefs/bpfusefs/uring"
	"golang.org/x/sys/unix"
)

func TestStatsCounters(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		data := strings.Repeat("0123456789", 10000)
		writeFile(t, tm.p("f"), data)
		if got := readFile(t, tm.p("f")); got != data {
			t.Fatal("read back differs")
		}
		s := tm.m.Stats()
		if s.Ops["LOOKUP"] == 0 || s.Ops["CREATE"] == 0 {
			t.Errorf("ops: %v, want LOOKUP and CREATE counted", s.Ops)
		}
		switch tm.mode {
		case "passthrough":
			if s.Paths["passthrough"] == 0 {
				t.Errorf("paths: %v, want passthrough opens", s.Paths)
			}
			if s.Ops["WRITE"] != 0 || s.BytesWritten != 0 {
				t.Errorf("passthrough writes reached the daemon: %d requests, %d bytes", s.Ops["WRITE"], s.BytesWritten)
			}
		case "engine":
			// Reads go through the ring; buffered writes too where
			// the backing filesystem takes them without blocking,
			// through pwrite elsewhere (see writePath).
			wantSyscall := uint64(0)
			if !tm.m.fs.asyncWrites {
				wantSyscall = s.Ops["WRITE"]
			}
			if s.Paths["engine"] == 0 || s.Paths["syscall"] != wantSyscall {
				t.Errorf("paths: %v, want engine with %d syscall writes (async buffered writes: %v)", s.Paths, wantSyscall, tm.m.fs.asyncWrites)
			}
		case "none":
			if s.Paths["syscall"] == 0 || s.BytesWritten != uint64(len(data)) {
				t.Errorf("paths %v, bytes written %d; want syscall and %d", s.Paths, s.BytesWritten, len(data))
			}
		case "fusering", "fusering,engine":
			if s.Paths["fusering"] == 0 || !slices.Contains(s.Accel, "fusering") {
				t.Errorf("paths %v, accel %v; want requests over the ring", s.Paths, s.Accel)
			}
		}
		if len(s.Replicas) != 1 || s.Replicas[0].Path != tm.backing || s.Replicas[0].State != "ok" {
			t.Errorf("replicas: %+v", s.Replicas)
		}
		b, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range []string{`"accel":`, `"ops":`, `"paths":`, `"bytes_read":`, `"bytes_written":`, `"errors":`, `"replicas":`, `"state":"ok"`} {
			if !strings.Contains(string(b), key) {
				t.Errorf("stats JSON lacks %s: %s", key, b)
			}
		}
	})
}

func TestMountErrors(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	writeFile(t, file, "")
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0755); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		mnt  string
		opts Options
		want string
	}{
		"missing backing":      {mnt, Options{Backing: filepath.Join(dir, "nope")}, "no such file"},
		"relative backing":     {mnt, Options{Backing: "rel"}, "absolute"},
		"backing not a dir":    {mnt, Options{Backing: file}, "not a directory"},
		"mountpoint not a dir": {file, Options{Backing: dir}, "not a directory"},
		"missing mountpoint":   {filepath.Join(dir, "nope"), Options{Backing: dir}, "no such file"},
		"mirrors":              {mnt, Options{Backing: dir, Mirrors: []string{dir}}, "mirror"},
		"unsafe allow_other":   {mnt, Options{Backing: dir, AllowOther: true}, "default_permissions"},
	} {
		if m, err := Mount(tc.mnt, tc.opts); err == nil {
			m.Unmount(true)
			t.Errorf("%s: Mount succeeded", name)
		} else if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not mention %q", name, err, tc.want)
		}
	}

	tm := mountFS(t, "none", Options{})
	if m, err := Mount(tm.mnt, Options{Backing: dir}); err == nil {
		m.Unmount(true)
		t.Error("second mount on a busy mountpoint succeeded")
	} else if !strings.Contains(err.Error(), "busy") {
		t.Errorf("busy mountpoint: %v", err)
	}
}

func TestUnmountWithOpenFile(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{})
	writeFile(t, tm.p("f"), "x")
	f, err := os.Open(tm.p("f"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.m.Unmount(false); err == nil {
		t.Fatal("Unmount succeeded while a file was open")
	}
	f.Close()
	if err := tm.m.Unmount(false); err != nil {
		t.Fatalf("Unmount after close: %v", err)
	}
	tm.m.Wait()
}

func TestLazyUnmount(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{})
	writeFile(t, tm.p("f"), "x")
	f, err := os.Open(tm.p("f"))
	if err != nil {
		t.Fatal(err)
	}
	if err := tm.m.Unmount(true); err != nil {
		t.Fatalf("lazy Unmount: %v", err)
	}
	buf := make([]byte, 1)
	if _, err := f.Read(buf); err != nil || buf[0] != 'x' {
		t.Errorf("read from a lazily unmounted file: %q %v", buf, err)
	}
	f.Close()
	done := make(chan struct{})
	go func() { tm.m.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return after the last file of a lazy unmount closed")
	}
}

// TestNoLeaks mounts, works and unmounts, then checks that no goroutine
// and no descriptor outlives the mount.
func TestNoLeaks(t *testing.T) {
	requireFUSE(t)
	// The fusering modes are among them: the transport owns descriptors
	// and threads of its own.
	ms := modes(t)
	// go-fuse keeps a process-wide cache of splice pipes (and /dev/null),
	// made on first use: a first mount that reads fills it before counting.
	mountWorkUnmount(t, ms["none"])
	for name, opts := range ms {
		t.Run(name, func(t *testing.T) {
			fdsBefore := openFDs(t)
			goroutinesBefore := runtime.NumGoroutine()
			mountWorkUnmount(t, opts)
			// Goroutines of the server may still be returning.
			for i := 0; i < 100 && runtime.NumGoroutine() > goroutinesBefore; i++ {
				time.Sleep(10 * time.Millisecond)
			}
			if n := runtime.NumGoroutine(); n > goroutinesBefore {
				buf := make([]byte, 1<<20)
				t.Errorf("%d goroutines after unmount, %d before:\n%s", n, goroutinesBefore, buf[:runtime.Stack(buf, true)])
			}
			// A descriptor open now and not before (or then open on
			// something else) outlived the mount. One closed meanwhile
			// is no leak: a garbage collection during the mount runs
			// the finalizers of files earlier tests dropped (a full
			// run of the package once counted 28 before and 24 after).
			after := openFDs(t)
			for fd, what := range after {
				if fdsBefore[fd] != what {
					t.Errorf("descriptor %d (%s) outlived the mount", fd, what)
				}
			}
			for fd, what := range fdsBefore {
				if _, ok := after[fd]; !ok {
					t.Logf("descriptor %d (%s) closed while mounted", fd, what)
				}
			}
		})
	}
}

// mountWorkUnmount mounts a fresh backing directory with opts, writes,
// reads and lists through the mount, and unmounts.
func mountWorkUnmount(t *testing.T, opts Options) {
	t.Helper()
	dir := t.TempDir()
	backing, mnt := filepath.Join(dir, "b"), filepath.Join(dir, "m")
	for _, d := range []string{backing, mnt} {
		if err := os.Mkdir(d, 0755); err != nil {
			t.Fatal(err)
		}
	}
	opts.Backing = backing
	m, err := Mount(mnt, opts)
	if err != nil {
		t.Fatal(err)
	}
	unmountAtCleanup(t, m, mnt)
	writeFile(t, filepath.Join(mnt, "f"), "data")
	f, err := os.Open(filepath.Join(mnt, "f"))
	if err != nil {
		t.Fatal(err)
	}
	readFile(t, filepath.Join(mnt, "f"))
	os.ReadDir(mnt)
	f.Close()
	if err := m.Unmount(false); err != nil {
		t.Fatal(err)
	}
	m.Wait()
}

// openFDs returns the process's open descriptors and what each is open on.
func openFDs(t *testing.T) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	fds := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			t.Fatal(err)
		}
		// The directory's own descriptor is gone by now.
		if what, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil {
			fds[fd] = what
		}
	}
	return fds
}

func TestReadOnly(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{ReadOnly: true})
	writeFile(t, tm.b("f"), "backing")
	if got := readFile(t, tm.p("f")); got != "backing" {
		t.Errorf("read through a read-only mount: %q", got)
	}
	if err := os.WriteFile(tm.p("g"), nil, 0644); !os.IsPermission(err) && !isErrno(err, unix.EROFS) {
		t.Errorf("create on a read-only mount: %v, want EROFS", err)
	}
}

func isErrno(err error, errno unix.Errno) bool {
	pe, ok := err.(*os.PathError)
	return ok && pe.Err == errno
}

// TestFusering serves a mount over FUSE-over-io_uring, which needs the
// fuse module's enable_uring parameter: the test turns it on and restores
// it.
func TestFusering(t *testing.T) {
	requireFusering(t)
	opts := map[string]Options{"fusering": {Fusering: true}, "fusering+engine": {Fusering: true, Engine: true}}
	if passthrough.Probe() == nil {
		opts["fusering+passthrough"] = Options{Fusering: true, Passthrough: true}
	}
	for name, o := range opts {
		t.Run(name, func(t *testing.T) {
			tm := mountFS(t, name, o)
			model := randomWorkload(t, tm.mnt, 7)
			dropCaches(t) // read back through the daemon
			for name, content := range model {
				for _, path := range []string{tm.b(name), tm.p(name)} {
					if got, err := os.ReadFile(path); err != nil || string(got) != string(*content) {
						t.Errorf("%s: content differs from the model (%v)", path, err)
					}
				}
			}
			s := tm.m.Stats()
			if s.Paths["fusering"] == 0 || !slices.Contains(s.Accel, "fusering") {
				t.Errorf("stats: paths %v accel %v, want requests over the ring", s.Paths, s.Accel)
			}
			// INIT always comes by /dev/fuse; most requests by ring.
			if s.Transport["dev"] == 0 || s.Transport["ring"] != s.Paths["fusering"] || s.Transport["ring"] < s.Transport["dev"] {
				t.Errorf("stats: transport %v, want INIT by dev and the bulk by ring", s.Transport)
			}
			if o.Passthrough && s.Paths["passthrough"] == 0 {
				t.Errorf("stats: paths %v, want passthrough opens", s.Paths)
			}
			// Zero-copy queues (Linux 7.3+) may serve all of it.
			if o.Engine && s.Paths["engine"]+s.Paths["zero_copy"] == 0 {
				t.Errorf("stats: paths %v, want engine or zero-copy I/O", s.Paths)
			}
		})
	}
}

// TestFuseringZeroCopy checks that, where the kernel has zero-copy queues
// (Linux 7.3+), the ring transport reads and writes a plain file itself,
// byte-identical to the backing file, and leaves to the daemon a file
// whose writes must drop set-ID bits.
func TestFuseringZeroCopy(t *testing.T) {
	requireFusering(t)
	tm := mountFS(t, "fusering", Options{Fusering: true})
	requireZeroCopy(t, tm)
	ring := tm.m.conn.(*fusering.Server)
	zeroCopied := func() uint64 { return tm.m.Stats().Paths["zero_copy"] }
	data := bytes.Repeat([]byte("zero-copy "), 100000)
	roundTrip := func(name string) {
		t.Helper()
		if err := os.WriteFile(tm.p(name), data, 0644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("3"), 0); err != nil {
			t.Fatal(err)
		}
		for _, path := range []string{tm.p(name), tm.b(name)} {
			if got, err := os.ReadFile(path); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("%s: %d bytes read back (%v), want %d", path, len(got), err, len(data))
			}
		}
	}
	roundTrip("plain")
	if zeroCopied() == 0 {
		t.Fatalf("no READ or WRITE went zero-copy: stats %v", tm.m.Stats().Paths)
	}
	// Writes to a set-user-ID file need the daemon's WRITE, which drops
	// the bit for unprivileged writers.
	writeFile(t, tm.p("setuid"), "")
	if err := unix.Chmod(tm.p("setuid"), 04755); err != nil { // os.Chmod would drop S_ISUID
		t.Fatal(err)
	}
	before := ring.Stats().ZeroCopyWrites
	f, err := os.OpenFile(tm.p("setuid"), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ring.Stats().ZeroCopyWrites; got != before {
		t.Errorf("%d writes to a set-user-ID file went zero-copy", got-before)
	}
	// An open made zero-copy stays so when its file turns set-user-ID:
	// the kernel keeps sending its writes that way, and they must land.
	f, err = os.OpenFile(tm.p("plain"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Chmod(tm.p("plain"), 04755); err != nil {
		t.Fatal(err)
	}
	before = ring.Stats().ZeroCopyWrites
	if _, err := unix.Pwrite(int(f.Fd()), []byte("set-uid now"), 3); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, tm.b("plain")); got[3:14] != "set-uid now" {
		t.Errorf("backing file has %q at 3, want the write", got[3:14])
	}
	if ring.Stats().ZeroCopyWrites == before {
		t.Errorf("the write of a zero-copy open went another way after chmod u+s")
	}
}

// requireZeroCopy skips the test unless tm's queues are zero-copy.
func requireZeroCopy(t *testing.T, tm *testMount) {
	t.Helper()
	if tm.m.conn.(*fusering.Server).Stats().ZeroCopyQueues == 0 {
		t.Skip("kernel has no FUSE-over-io_uring zero-copy queues (Linux 7.3+, root)")
	}
}

// checkReplicasHold checks that every replica's copy of name holds data.
func checkReplicasHold(t *testing.T, tm *testMount, name string, data []byte) {
	t.Helper()
	for _, r := range tm.replicas() {
		if got, err := os.ReadFile(filepath.Join(r, name)); err != nil || !bytes.Equal(got, data) {
			t.Errorf("replica %s: %d bytes (%v), want the %d written", r, len(got), err, len(data))
		}
	}
}

// checkReplicaTimes checks that every mirror of name has the backing
// file's access and modification times.
func checkReplicaTimes(t *testing.T, tm *testMount, name string) {
	t.Helper()
	var want unix.Stat_t
	if err := unix.Stat(tm.b(name), &want); err != nil {
		t.Fatal(err)
	}
	for _, r := range tm.mirrors {
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(r, name), &st); err != nil {
			t.Fatal(err)
		}
		if st.Atim != want.Atim || st.Mtim != want.Mtim {
			t.Errorf("mirror %s: atime %v mtime %v, the backing file's %v and %v", r, st.Atim, st.Mtim, want.Atim, want.Mtim)
		}
	}
}

// TestFuseringZeroCopyMirrored checks that mirrored files go zero-copy too:
// the transport writes every replica from the caller's pages, under the
// daemon's replica rules, and they end up byte-identical.
func TestFuseringZeroCopyMirrored(t *testing.T) {
	requireFusering(t)
	tm := mountReplicas(t, "fusering", Options{Fusering: true}, nil, plainMirror, plainMirror)
	requireZeroCopy(t, tm)
	data := make([]byte, 2<<20+777)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tm.p("f"), data, 0644); err != nil {
		t.Fatal(err)
	}
	if got := readUncached(t, tm.p("f")); !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes, want the %d written", len(got), len(data))
	}
	checkReplicasHold(t, tm, "f", data)
	rs := tm.m.conn.(*fusering.Server).Stats()
	if rs.ZeroCopyReads == 0 || rs.ZeroCopyWrites == 0 {
		t.Errorf("%d READs and %d WRITEs went zero-copy, want both", rs.ZeroCopyReads, rs.ZeroCopyWrites)
	}
}

// TestTransportFileEligibility checks which open files the daemon lets the
// ring transport serve itself. ZeroCopyFile: plain files, mirrored or
// not; not set-user-ID ones, O_DIRECT, O_APPEND opens or directories. OffloadFile (the BPF loop): reads of every regular file but
// O_DIRECT ones, writes to every replica unless read-only or O_APPEND.
func TestTransportFileEligibility(t *testing.T) {
	requireFUSE(t)
	single := mountFS(t, "none", Options{})
	mirrored := mountReplicas(t, "none", Options{}, nil, plainMirror)
	for _, tm := range []*testMount{single, mirrored} {
		writeFile(t, tm.p("plain"), "x")
		writeFile(t, tm.p("setuid"), "x")
		if err := unix.Chmod(tm.p("setuid"), 04755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		tm       *testMount
		name     string
		flags    int
		zeroCopy bool
		offload  bool
		writeFds int // OffloadFile's write replicas
	}{
		{single, "plain", os.O_RDWR, true, true, 1},
		{single, "plain", os.O_RDONLY, true, true, 0},
		{single, "setuid", os.O_RDWR, false, true, 1},
		{single, "plain", os.O_RDWR | unix.O_DIRECT, false, false, 0},
		{single, "plain", os.O_RDWR | os.O_APPEND, false, true, 0},
		{single, ".", os.O_RDONLY, false, false, 0},
		{mirrored, "plain", os.O_RDWR, true, true, 2},
		{mirrored, "setuid", os.O_RDWR, false, true, 2},
		{mirrored, "plain", os.O_WRONLY | os.O_APPEND, false, true, 0},
	} {
		f, err := os.OpenFile(tc.tm.p(tc.name), tc.flags, 0)
		if err != nil {
			t.Fatal(err)
		}
		fs := tc.tm.m.fs
		fs.handles.mu.RLock()
		var fhs []uint64
		for fh := range fs.handles.byID {
			fhs = append(fhs, fh)
		}
		fs.handles.mu.RUnlock()
		if len(fhs) != 1 {
			t.Fatalf("%d handles open, want 1", len(fhs))
		}
		_, zeroCopy := fs.ZeroCopyFile(fhs[0])
		file, offload := fs.OffloadFile(fhs[0])
		f.Close()
		if zeroCopy != tc.zeroCopy || offload != tc.offload || len(file.WriteFds) != tc.writeFds {
			t.Errorf("%s (flags %#x, %d replicas): ZeroCopyFile %v, OffloadFile %v with %d write replicas; want %v, %v, %d",
				tc.name, tc.flags, len(tc.tm.replicas()), zeroCopy, offload, len(file.WriteFds), tc.zeroCopy, tc.offload, tc.writeFds)
		}
		waitFor(t, "release of "+tc.name, func() bool {
			fs.handles.mu.RLock()
			defer fs.handles.mu.RUnlock()
			return len(fs.handles.byID) == 0
		})
	}
}

// readUncached reads the file at path after dropping the kernel's cache of
// it (of this file only: a backing file keeps its own).
func readUncached(t *testing.T, path string) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// TestBPFOffload checks that, where the kernel runs io_uring BPF loops
// (Linux 7.1+), READ, WRITE and FLUSH of daemon-served files are answered in
// the kernel, byte-identical to the backing files, on one replica and on
// mirrors, and FSYNC on one replica, while O_DIRECT reads stay with the
// daemon.
func TestBPFOffload(t *testing.T) {
	requireFusering(t)
	if err := bpf.Available(); err != nil {
		t.Skip(err)
	}
	data := make([]byte, 3<<20+4321)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	for _, replicas := range []int{1, 2, 3} {
		t.Run(fmt.Sprintf("%d-replicas", replicas), func(t *testing.T) {
			mirrors := make([]func(*testing.T) string, replicas-1)
			for i := range mirrors {
				mirrors[i] = func(t *testing.T) string { return t.TempDir() }
			}
			tm := mountReplicas(t, "bpf", Options{BPF: true}, nil, mirrors...)
			if !slices.Contains(tm.m.Stats().Accel, "bpf") {
				t.Fatalf("accel %v: the BPF loop did not attach", tm.m.Stats().Accel)
			}
			ring := tm.m.conn.(*fusering.Server)
			if err := os.WriteFile(tm.p("f"), data, 0644); err != nil {
				t.Fatal(err)
			}
			// Overwrites in place through a read-write open.
			f, err := os.OpenFile(tm.p("f"), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			for i, off := range []int{0, 5000, 1 << 20, len(data) - 3} {
				p := bytes.Repeat([]byte{byte('a' + i)}, min(3000, len(data)-off))
				if _, err := f.WriteAt(p, int64(off)); err != nil {
					t.Fatal(err)
				}
				copy(data[off:], p)
			}
			// FSYNC of one replica is fsync(2) of its file, the
			// program's; a mirrored one first gives the mirrors the
			// leader's times, the program's too where the kernel has
			// IORING_OP_FUTIMENS (kernel/patches), else the daemon's.
			// FLUSH (at close) is always the program's. The mirrors'
			// times are set apart first, so only the copy makes them
			// equal.
			for _, r := range tm.mirrors {
				ts := []unix.Timespec{{Sec: 1, Nsec: 2}, {Sec: 3, Nsec: 4}}
				if err := unix.UtimesNanoAt(unix.AT_FDCWD, filepath.Join(r, "f"), ts, 0); err != nil {
					t.Fatal(err)
				}
			}
			fsyncs := tm.m.Stats().Ops["FSYNC"]
			if err := f.Sync(); err != nil {
				t.Fatal(err)
			}
			checkReplicaTimes(t, tm, "f")
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			rs := ring.Stats()
			if rs.BPFWrites == 0 || rs.BPFWriteBytes < uint64(len(data)) {
				t.Errorf("BPF answered %d WRITEs of %d bytes, want the file's %d bytes", rs.BPFWrites, rs.BPFWriteBytes, len(data))
			}
			if got := tm.m.Stats().Ops["FSYNC"]; got != fsyncs+1 {
				t.Errorf("FSYNC requests: %d -> %d, want one more", fsyncs, got)
			}
			wantBPF := uint64(0)
			if replicas == 1 || uring.VerifyFutimens() == nil {
				wantBPF = 1
			}
			if rs.BPFFsyncs != wantBPF {
				t.Errorf("BPF answered %d FSYNCs of %d replicas, want %d", rs.BPFFsyncs, replicas, wantBPF)
			}
			if rs.BPFFlushes == 0 {
				t.Errorf("BPF answered no FLUSH")
			}
			dropCaches(t)
			before := tm.m.Stats()
			if got, err := os.ReadFile(tm.p("f")); err != nil || !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes (%v), want the %d written", len(got), err, len(data))
			}
			after := tm.m.Stats()
			if after.Paths["bpf"] == before.Paths["bpf"] || after.BytesRead-before.BytesRead < uint64(len(data)) {
				t.Errorf("stats: bpf reads %d -> %d, bytes read %d -> %d: want the file's READs answered by BPF",
					before.Paths["bpf"], after.Paths["bpf"], before.BytesRead, after.BytesRead)
			}
			if after.BPFFallbacks != 0 {
				t.Errorf("stats: %d BPF reads fell back to the daemon", after.BPFFallbacks)
			}
			// With the kernel series' extra CQs the backing
			// completions come by the program's own CQ.
			if multiCQ := uring.VerifyRegisterCQ() == nil; multiCQ != (after.BPFOwnCQ > 0) {
				t.Errorf("stats: %d backing completions by the program's own CQ; kernel has extra CQs: %v", after.BPFOwnCQ, multiCQ)
			}
			// On zero-copy queues (Linux 7.3, root) the file's data
			// moves between the backing files and the caller's
			// pages, and the program does the moving.
			zeroCopy := ring.Stats().ZeroCopyQueues > 0
			t.Logf("%d zero-copy queues; BPF served %d requests on the caller's pages", ring.Stats().ZeroCopyQueues, after.BPFZeroCopy)
			if zeroCopy != (after.BPFZeroCopy > 0) {
				t.Errorf("stats: BPF served %d requests on the caller's pages; zero-copy queues: %v", after.BPFZeroCopy, zeroCopy)
			}
			checkReplicasHold(t, tm, "f", data)

			// A COPY_FILE_RANGE between two such files is the
			// program's where the kernel's copy keeps holes
			// (kernel/patches): one copy per replica, and the copy
			// of a sparse file stays sparse on each.
			sparse := sparseFile(t, tm.p("sparse"))
			copies, copied := bpfCopies(tm), tm.m.Stats().BPFCopyBytes
			copyAll(t, tm.p("sparse"), tm.p("copy"), 0, 0)
			keepHoles := uring.VerifyCopyKeepHoles() == nil
			if got := bpfCopies(tm) - copies; (got > 0) != keepHoles {
				t.Errorf("BPF answered %d COPY_FILE_RANGEs; the kernel's copy keeps holes: %v", got, keepHoles)
			}
			if got := tm.m.Stats().BPFCopyBytes - copied; keepHoles && got != uint64(len(sparse)) {
				t.Errorf("stats: BPF copied %d bytes, want the file's %d", got, len(sparse))
			}
			checkReplicasHold(t, tm, "copy", sparse)
			checkSparseCopy(t, tm, "sparse", "copy")
			if s := tm.m.Stats(); s.BPFFallbacks != 0 {
				t.Errorf("stats: %d requests fell back to the daemon", s.BPFFallbacks)
			}

			// With the backing file cached and the mount's copy
			// dropped, the program's backing READs complete inline,
			// while it is still reaping FUSE requests.
			before = tm.m.Stats()
			if got := readUncached(t, tm.p("f")); !bytes.Equal(got, data) {
				t.Fatalf("read back %d bytes from the cached backing file, want the %d written", len(got), len(data))
			}
			if after := tm.m.Stats(); after.Paths["bpf"] == before.Paths["bpf"] {
				t.Errorf("stats: no READ answered by BPF from the cached backing file")
			}

			// O_DIRECT reads are the daemon's.
			f, err = os.OpenFile(tm.p("f"), os.O_RDONLY|unix.O_DIRECT, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			buf := make([]byte, 1<<16)
			daemonReads := tm.m.Stats().Paths["bpf"]
			if n, err := f.ReadAt(buf, 4096); err != nil || !bytes.Equal(buf[:n], data[4096:4096+n]) {
				t.Errorf("O_DIRECT read: %d bytes (%v), not the file's", n, err)
			}
			if got := tm.m.Stats().Paths["bpf"]; got != daemonReads {
				t.Errorf("an O_DIRECT read was answered by BPF (%d -> %d)", daemonReads, got)
			}
		})
	}
}

// TestMountFlags mounts with each kind of mount(2) flag, those in the high
// 16 bits (the old MS_MGC_VAL magic's) included, and reads the mount's
// options back from mountinfo.
func TestMountFlags(t *testing.T) {
	requireFUSE(t)
	for _, c := range []struct {
		flags     uintptr
		want, not []string
	}{
		{0, nil, []string{"nosuid", "nodev", "noexec", "noatime"}},
		{unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, []string{"nosuid", "nodev", "noexec"}, nil},
		{unix.MS_NOATIME, []string{"noatime"}, []string{"relatime"}},
		{unix.MS_NODIRATIME | unix.MS_RELATIME, []string{"nodiratime", "relatime"}, nil},
		{unix.MS_STRICTATIME, nil, []string{"relatime", "noatime"}},
	} {
		t.Run(fmt.Sprintf("%#x", c.flags), func(t *testing.T) {
			tm := mountFS(t, "none", Options{MountFlags: c.flags})
			e, ok, err := mountinfo.Find(tm.mnt)
			if err != nil || !ok {
				t.Fatalf("%s not in mountinfo: %v", tm.mnt, err)
			}
			opts := strings.Split(e.Options, ",")
			for _, o := range c.want {
				if !slices.Contains(opts, o) {
					t.Errorf("options %s lack %s", e.Options, o)
				}
			}
			for _, o := range c.not {
				if slices.Contains(opts, o) {
					t.Errorf("options %s have %s", e.Options, o)
				}
			}
		})
	}
}
