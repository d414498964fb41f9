package fs

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

func stat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// dropCaches makes the kernel forget every unused inode, so the next
// access is a fresh LOOKUP.
func dropCaches(t *testing.T) {
	t.Helper()
	if err := os.WriteFile("/proc/sys/vm/drop_caches", []byte("2"), 0); err != nil {
		t.Fatalf("drop caches: %v", err)
	}
}

func TestHardLinks(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("a"), "shared")
		if err := os.Mkdir(tm.p("d"), 0755); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(tm.p("a"), tm.p("d/b")); err != nil {
			t.Fatal(err)
		}
		a, b, backing := stat(t, tm.p("a")), stat(t, tm.p("d/b")), stat(t, tm.b("a"))
		if a.Ino != b.Ino || a.Ino != backing.Ino {
			t.Errorf("st_ino: a=%d b=%d backing=%d, want all equal", a.Ino, b.Ino, backing.Ino)
		}
		if a.Nlink != 2 || b.Nlink != 2 {
			t.Errorf("nlink: a=%d b=%d, want 2", a.Nlink, b.Nlink)
		}
		dropCaches(t)
		if again := stat(t, tm.p("d/b")); again.Ino != backing.Ino {
			t.Errorf("st_ino after the kernel forgot the inode: %d, want %d", again.Ino, backing.Ino)
		}
		if err := os.Remove(tm.p("a")); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, tm.p("d/b")); st.Nlink != 1 {
			t.Errorf("nlink after unlink: %d, want 1", st.Nlink)
		}
		if got := readFile(t, tm.p("d/b")); got != "shared" {
			t.Errorf("content through the remaining link: %q", got)
		}
	})
}

func TestUnlinkedOpenFile(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		f, err := os.OpenFile(tm.p("f"), os.O_CREATE|os.O_RDWR, 0644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Remove(tm.p("f")); err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("still here"), 0); err != nil {
			t.Fatalf("write after unlink: %v", err)
		}
		buf := make([]byte, 10)
		if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "still here" {
			t.Fatalf("read after unlink: %q, %v", buf, err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
			t.Errorf("fstat after unlink: nlink=%d err=%v, want 0", st.Nlink, err)
		}
		if _, err := os.Stat(tm.b("f")); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("backing file after unlink: %v", err)
		}
	})
}

func TestRenameOverOpenFile(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("old"), "old content")
		writeFile(t, tm.p("new"), "new content")
		f, err := os.Open(tm.p("old"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := os.Rename(tm.p("new"), tm.p("old")); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 11)
		if _, err := f.ReadAt(buf, 0); err != nil || string(buf) != "old content" {
			t.Errorf("open file after being renamed over: %q, %v", buf, err)
		}
		if got := readFile(t, tm.p("old")); got != "new content" {
			t.Errorf("renamed file: %q", got)
		}
		var st unix.Stat_t
		if err := unix.Fstat(int(f.Fd()), &st); err != nil || st.Nlink != 0 {
			t.Errorf("fstat of the file renamed over: nlink %d, %v; want 0", st.Nlink, err)
		}
	})
}

func TestRenameFlags(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("a"), "A")
		writeFile(t, tm.p("b"), "B")
		err := unix.Renameat2(unix.AT_FDCWD, tm.p("a"), unix.AT_FDCWD, tm.p("b"), unix.RENAME_NOREPLACE)
		if err != unix.EEXIST {
			t.Errorf("RENAME_NOREPLACE over an existing file: %v, want EEXIST", err)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, tm.p("a"), unix.AT_FDCWD, tm.p("b"), unix.RENAME_EXCHANGE); err != nil {
			t.Fatalf("RENAME_EXCHANGE: %v", err)
		}
		if a, b := readFile(t, tm.p("a")), readFile(t, tm.b("b")); a != "B" || b != "A" {
			t.Errorf("after exchange a=%q b(backing)=%q, want B and A", a, b)
		}
		if err := unix.Renameat2(unix.AT_FDCWD, tm.p("a"), unix.AT_FDCWD, tm.p("c"), unix.RENAME_WHITEOUT); err != nil {
			t.Fatalf("RENAME_WHITEOUT: %v", err)
		}
		if st := stat(t, tm.p("a")); st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
			t.Errorf("whiteout left mode %o rdev %d, want a 0/0 character device", st.Mode, st.Rdev)
		}
		if got := readFile(t, tm.p("c")); got != "B" {
			t.Errorf("renamed file: %q", got)
		}
	})
}

func TestXattrs(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("f"), "x")
		if err := unix.Setxattr(tm.p("f"), "user.k", []byte("v1"), 0); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 64)
		n, err := unix.Getxattr(tm.b("f"), "user.k", buf)
		if err != nil || string(buf[:n]) != "v1" {
			t.Errorf("backing xattr: %q, %v", buf[:n], err)
		}
		n, err = unix.Listxattr(tm.p("f"), buf)
		if err != nil || !strings.Contains(string(buf[:n]), "user.k\x00") {
			t.Errorf("listxattr: %q, %v", buf[:n], err)
		}
		if err := unix.Removexattr(tm.p("f"), "user.k"); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.Getxattr(tm.p("f"), "user.k", buf); err != unix.ENODATA {
			t.Errorf("getxattr after remove: %v, want ENODATA", err)
		}

		// Symlinks carry trusted.* attributes of their own.
		if err := os.Symlink("f", tm.p("l")); err != nil {
			t.Fatal(err)
		}
		if err := unix.Lsetxattr(tm.p("l"), "trusted.k", []byte("link"), 0); err != nil {
			t.Fatalf("lsetxattr on a symlink: %v", err)
		}
		n, err = unix.Lgetxattr(tm.b("l"), "trusted.k", buf)
		if err != nil || string(buf[:n]) != "link" {
			t.Errorf("backing symlink xattr: %q, %v", buf[:n], err)
		}
		if _, err := unix.Getxattr(tm.b("f"), "trusted.k", buf); err != unix.ENODATA {
			t.Errorf("symlink xattr leaked to its target: %v", err)
		}

		// A default ACL overrides the creator's umask, as on a local fs.
		if err := os.Mkdir(tm.p("acl"), 0755); err != nil {
			t.Fatal(err)
		}
		run(t, 0, "setfacl -d -m u::rwx,g::rwx,o::rwx "+tm.p("acl"))
		run(t, 0, "umask 077 && touch "+tm.p("acl/f"))
		if st := stat(t, tm.b("acl/f")); st.Mode&0777 != 0666 {
			t.Errorf("file under a default ACL: mode %o, want 666", st.Mode&0777)
		}
	})
}

// run runs a shell command as uid (and gid) and fails the test on error.
func run(t *testing.T, uid uint32, script string) {
	t.Helper()
	if out, err := runAs(uid, script); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

func runAs(uid uint32, script string) ([]byte, error) {
	return spawn("", uid, "/bin/sh", "-c", script)
}

const nobody = 65534

func TestCredentials(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		if err := os.Chmod(tm.mnt, 0777); err != nil {
			t.Fatal(err)
		}
		run(t, nobody, "umask 027 && echo x > "+tm.p("f")+" && mkdir "+tm.p("d")+" && ln -s f "+tm.p("l"))
		for name, mode := range map[string]uint32{"f": 0640, "d": 0750} {
			st := stat(t, tm.b(name))
			if st.Uid != nobody || st.Gid != nobody || st.Mode&07777 != mode {
				t.Errorf("%s: %d:%d mode %o, want %d:%d mode %o", name, st.Uid, st.Gid, st.Mode&07777, nobody, nobody, mode)
			}
		}
		if st := stat(t, tm.b("l")); st.Uid != nobody {
			t.Errorf("symlink owner %d, want %d", st.Uid, nobody)
		}

		// The caller cannot gain the daemon's rights.
		writeFile(t, tm.p("secret"), "root only")
		if err := os.Chmod(tm.p("secret"), 0600); err != nil {
			t.Fatal(err)
		}
		if out, err := runAs(nobody, "cat "+tm.p("secret")); err == nil {
			t.Errorf("nobody read a 0600 root file: %s", out)
		}

		// setgid directory: new entries take its group; a non-member
		// cannot create a setgid file in it.
		if err := os.Mkdir(tm.p("sg"), 0777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tm.p("sg"), 0, 1234); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(tm.p("sg"), 02777); err != nil {
			t.Fatal(err)
		}
		run(t, nobody, "mkdir "+tm.p("sg/sub")+" && touch "+tm.p("sg/f")+" && chmod 2755 "+tm.p("sg/f")+" || true")
		if st := stat(t, tm.b("sg/sub")); st.Gid != 1234 || st.Mode&unix.S_ISGID == 0 {
			t.Errorf("subdirectory of a setgid dir: gid %d mode %o, want gid 1234 and setgid", st.Gid, st.Mode)
		}
		if st := stat(t, tm.b("sg/f")); st.Gid != 1234 || st.Mode&unix.S_ISGID != 0 {
			t.Errorf("file of a non-member in a setgid dir: gid %d mode %o, want gid 1234 without setgid", st.Gid, st.Mode)
		}

		// Root's chown drops set-user-ID but keeps a set-group-ID that
		// marks mandatory locking (no group execute).
		writeFile(t, tm.p("chown"), "")
		if err := unix.Chmod(tm.p("chown"), 06744); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(tm.p("chown"), nobody, nobody); err != nil {
			t.Fatal(err)
		}
		if st := stat(t, tm.p("chown")); st.Mode&07777 != 02744 {
			t.Errorf("after root's chown: mode %o, want 2744", st.Mode&07777)
		}

		// Setting an access ACL as a non-member of the file's group
		// drops set-group-ID (generic/375).
		writeFile(t, tm.p("acl"), "")
		if err := os.Chown(tm.p("acl"), nobody, 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Chmod(tm.p("acl"), 02755); err != nil {
			t.Fatal(err)
		}
		run(t, nobody, "setfacl -m u::rwx,g::rwx,o::rwx "+tm.p("acl"))
		for _, path := range []string{tm.p("acl"), tm.b("acl")} {
			if st := stat(t, path); st.Mode&07777 != 0777 {
				t.Errorf("%s after a non-member's setfacl: mode %o, want 777", path, st.Mode&07777)
			}
		}

		// Modifying a file drops its set-ID bits (killpriv), as locally:
		// set-group-ID too, since nobody is not in the file's group. The
		// mount must show it at once, not after the attribute timeout.
		writeFile(t, tm.p("suid"), "")
		for _, cmd := range []string{"echo data >> %s", "fallocate -l 1M %s", "truncate -s 10 %s"} {
			if err := unix.Chmod(tm.p("suid"), 06666); err != nil {
				t.Fatal(err)
			}
			if st := stat(t, tm.b("suid")); st.Mode&07777 != 06666 {
				t.Fatalf("chmod 6666: backing mode %o", st.Mode&07777)
			}
			run(t, nobody, fmt.Sprintf(cmd, tm.p("suid")))
			for _, path := range []string{tm.p("suid"), tm.b("suid")} {
				if st := stat(t, path); st.Mode&07777 != 0666 {
					t.Errorf("%s after an unprivileged %q: mode %o, want 666", path, cmd, st.Mode&07777)
				}
			}
		}
	})
}

func TestPunchHoleAndSeek(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		const size = 1 << 20
		data := bytes.Repeat([]byte{0xab}, size)
		f, err := os.OpenFile(tm.p("sparse"), os.O_CREATE|os.O_RDWR, 0644)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		if err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 256<<10, 256<<10); err != nil {
			t.Fatalf("punch hole: %v", err)
		}
		clear(data[256<<10 : 512<<10])
		if off, err := unix.Seek(fd, 0, unix.SEEK_HOLE); err != nil || off != 256<<10 {
			t.Errorf("SEEK_HOLE from 0: %d, %v; want %d", off, err, 256<<10)
		}
		if off, err := unix.Seek(fd, 256<<10, unix.SEEK_DATA); err != nil || off != 512<<10 {
			t.Errorf("SEEK_DATA from the hole: %d, %v; want %d", off, err, 512<<10)
		}
		if _, err := unix.Seek(fd, size, unix.SEEK_DATA); err != unix.ENXIO {
			t.Errorf("SEEK_DATA at EOF: %v, want ENXIO", err)
		}
		for _, path := range []string{tm.p("sparse"), tm.b("sparse")} {
			if got, _ := os.ReadFile(path); !bytes.Equal(got, data) {
				t.Errorf("%s: content differs after punching a hole", path)
			}
		}
	})
}

func TestCopyFileRange(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		src := make([]byte, 3<<20+123)
		rng := rand.New(rand.NewPCG(1, 2))
		for i := range src {
			src[i] = byte(rng.Uint32())
		}
		if err := os.WriteFile(tm.p("src"), src, 0644); err != nil {
			t.Fatal(err)
		}
		in, out := openCopyPair(t, tm)
		offIn, offOut := int64(100), int64(4096)
		remaining := len(src) - 100
		for remaining > 0 {
			n, err := unix.CopyFileRange(int(in.Fd()), &offIn, int(out.Fd()), &offOut, remaining, 0)
			if err != nil || n == 0 {
				t.Fatalf("copy_file_range: %d, %v", n, err)
			}
			remaining -= n
		}
		want := append(make([]byte, 4096), src[100:]...)
		for _, path := range []string{tm.p("dst"), tm.b("dst")} {
			if got, _ := os.ReadFile(path); !bytes.Equal(got, want) {
				t.Errorf("%s: copied content differs (len %d, want %d)", path, len(got), len(want))
			}
		}
	})
}

func TestLocks(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("lock"), "")
		f1, err := os.OpenFile(tm.p("lock"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f1.Close()
		f2, err := os.OpenFile(tm.p("lock"), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f2.Close()

		if err := unix.Flock(int(f1.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		if err := unix.Flock(int(f2.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != unix.EWOULDBLOCK {
			t.Errorf("second flock: %v, want EWOULDBLOCK", err)
		}
		if err := unix.Flock(int(f1.Fd()), unix.LOCK_UN); err != nil {
			t.Fatal(err)
		}

		// Open file description locks conflict between descriptions.
		lk := unix.Flock_t{Type: unix.F_WRLCK, Start: 0, Len: 10}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_OFD_SETLK, &lk); err != nil {
			t.Fatal(err)
		}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_SETLK, &lk); err != unix.EAGAIN {
			t.Errorf("conflicting OFD lock: %v, want EAGAIN", err)
		}
		probe := unix.Flock_t{Type: unix.F_RDLCK, Start: 5, Len: 1}
		if err := unix.FcntlFlock(f2.Fd(), unix.F_OFD_GETLK, &probe); err != nil || probe.Type != unix.F_WRLCK {
			t.Errorf("F_OFD_GETLK: type %d, %v; want the write lock", probe.Type, err)
		}

		// POSIX record locks conflict between processes.
		if _, err := exec.LookPath("python3"); err != nil {
			t.Skip("no python3 to take a lock from another process")
		}
		plk := unix.Flock_t{Type: unix.F_WRLCK, Start: 100, Len: 1}
		if err := unix.FcntlFlock(f1.Fd(), unix.F_SETLK, &plk); err != nil {
			t.Fatal(err)
		}
		script := "import fcntl,sys\nf=open(sys.argv[1],'r+')\ntry:\n fcntl.lockf(f,fcntl.LOCK_EX|fcntl.LOCK_NB,1,100)\nexcept OSError:\n sys.exit(7)\n"
		_, err = spawn("", 0, "python3", "-c", script, tm.p("lock"))
		if exit, ok := err.(*exitError); !ok || exit.code != 7 {
			t.Errorf("another process locking a POSIX-locked range: %v, want a conflict", err)
		}
	})
}

// TestNoEscape drives the daemon directly with names the kernel would never
// send and with symlinks in the backing tree pointing out of it.
func TestNoEscape(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{})
	if err := os.Symlink("/etc", tm.b("etc")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../../../..", tm.b("up")); err != nil {
		t.Fatal(err)
	}
	fs := tm.m.fs
	root := fs.inodes.get(rootID)
	for _, name := range []string{"..", ".", "etc/passwd", "up/etc", "../backing"} {
		var out fuse.EntryOut
		if st := fs.lookup(root, name, &out); st.Ok() {
			t.Errorf("lookup(%q) succeeded", name)
		}
	}
	var out fuse.EntryOut
	if st := fs.lookup(root, "etc", &out); !st.Ok() || out.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Fatalf("lookup(etc): %v mode %o, want the symlink itself", st, out.Mode)
	}
	link := fs.inodes.get(out.NodeId)
	if st := fs.lookup(link, "passwd", &out); st.Ok() {
		t.Errorf("lookup below a symlink to /etc succeeded")
	}
	if target, err := os.Readlink(tm.p("etc")); err != nil || target != "/etc" {
		t.Errorf("readlink through the mount: %q, %v", target, err)
	}
}

const fsIocShutdown = 0x8004587d // FS_IOC_SHUTDOWN = XFS_IOC_GOINGDOWN = EXT4_IOC_SHUTDOWN

func TestIoctlAllowList(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("f"), "data")
		f, err := os.Open(tm.p("f"))
		if err != nil {
			t.Fatal(err)
		}
		flags := uint32(0) // FSOP_GOING_FLAGS_DEFAULT
		_, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), fsIocShutdown, uintptr(unsafe.Pointer(&flags)))
		if errno != unix.ENOTTY {
			t.Errorf("FS_IOC_SHUTDOWN through the mount: %v, want ENOTTY", errno)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		writeFile(t, tm.b("after"), "backing still writable")
		if got := readFile(t, tm.p("after")); got != "backing still writable" {
			t.Errorf("backing after the refused shutdown: %q", got)
		}

		// chattr/lsattr go through the allow-list, and the ctime the
		// change set is visible at once (generic/277).
		var before unix.Stat_t
		if err := unix.Stat(tm.p("f"), &before); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // let the clock move past before's ctime
		run(t, 0, "chattr +A "+tm.p("f"))
		var after unix.Stat_t
		if err := unix.Stat(tm.p("f"), &after); err != nil {
			t.Fatal(err)
		}
		if after.Ctim == before.Ctim {
			t.Errorf("ctime through the mount unchanged after chattr: %v", after.Ctim)
		}
		out, err := spawn("", 0, "lsattr", tm.b("f"))
		if err != nil || !strings.Contains(strings.Fields(string(out))[0], "A") {
			t.Errorf("lsattr of the backing file after chattr +A: %s %v", out, err)
		}
		out, err = spawn("", 0, "lsattr", tm.p("f"))
		if err != nil || !strings.Contains(strings.Fields(string(out))[0], "A") {
			t.Errorf("lsattr through the mount: %s %v", out, err)
		}
	})
}

// TestFileHandles opens files by handle after the kernel forgot their
// inodes (xfstests' open_by_handle tests do the same).
func TestFileHandles(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		if err := os.MkdirAll(tm.p("d/e"), 0755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, tm.p("d/e/f"), "by handle")
		writeFile(t, tm.p("gone"), "")
		handle := func(path string) unix.FileHandle {
			h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
			if err != nil {
				t.Fatalf("name_to_handle_at(%s): %v", path, err)
			}
			return h
		}
		fh, dh, gh := handle(tm.p("d/e/f")), handle(tm.p("d/e")), handle(tm.p("gone"))
		if err := os.Remove(tm.p("gone")); err != nil {
			t.Fatal(err)
		}
		mnt, err := os.Open(tm.mnt)
		if err != nil {
			t.Fatal(err)
		}
		defer mnt.Close()
		dropCaches(t)

		f := openByHandle(t, mnt, fh, unix.O_RDONLY, "after the inode was forgotten")
		defer f.Close()
		buf := make([]byte, 32)
		if n, err := f.Read(buf); err != nil || string(buf[:n]) != "by handle" {
			t.Errorf("read by handle: %q, %v", buf[:n], err)
		}
		dfd, err := unix.OpenByHandleAt(int(mnt.Fd()), dh, unix.O_RDONLY|unix.O_DIRECTORY)
		if err != nil {
			t.Fatalf("open_by_handle_at(directory): %v", err)
		}
		defer unix.Close(dfd)
		if target, err := os.Readlink("/proc/self/fd/" + itoa(dfd)); err != nil || target != tm.p("d/e") {
			t.Errorf("directory opened by handle is %q (%v), want %q", target, err, tm.p("d/e"))
		}
		if gfd, err := unix.OpenByHandleAt(int(mnt.Fd()), gh, unix.O_RDONLY); err != unix.ESTALE {
			t.Errorf("open_by_handle_at of a deleted file: %v, want ESTALE", err)
			if err == nil {
				// Left open, it would keep the mount busy and its
				// unmount waiting forever.
				unix.Close(gfd)
			}
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// openByHandle opens the file h names on the mount open as mnt, failing the
// test with when (what happened before) if it cannot. The caller closes it
// before the mount is unmounted.
func openByHandle(t *testing.T, mnt *os.File, h unix.FileHandle, flags int, when string) *os.File {
	t.Helper()
	fd, err := unix.OpenByHandleAt(int(mnt.Fd()), h, flags)
	if err != nil {
		t.Fatalf("open_by_handle_at %s: %v", when, err)
	}
	return os.NewFile(uintptr(fd), "by handle")
}

// TestReviveDeleted sends LOOKUP(id, ".") for deleted objects the daemon
// can still reach, as happens when the kernel resolves a file handle after
// forgetting the inode but before its FORGET is served (FUSE-over-io_uring
// brings the two by different channels): the handle is stale all the same.
// Opening it anyway made TestFileHandles fail under load and leave an open
// file that hung its unmount.
func TestReviveDeleted(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{})
	lookupDot := func(id uint64) fuse.Status {
		var out fuse.EntryOut
		return tm.m.fs.Lookup(nil, &fuse.InHeader{NodeId: id}, ".", &out)
	}

	// A node the daemon knows: the open file keeps the kernel's inode,
	// so no FORGET comes to drop the daemon's.
	writeFile(t, tm.p("known"), "x")
	f, err := os.Open(tm.p("known"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, tm.p("known"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// The FUSE file handle is the node id in two 32-bit words, high
	// first, then the generation.
	words := h.Bytes()
	id := uint64(binary.NativeEndian.Uint32(words))<<32 | uint64(binary.NativeEndian.Uint32(words[4:]))
	if err := os.Remove(tm.p("known")); err != nil {
		t.Fatal(err)
	}
	if st := lookupDot(id); st != fuse.Status(unix.ESTALE) {
		t.Errorf("LOOKUP(.) of a deleted node the daemon still holds: %v, want ESTALE", st)
	}

	// A node the daemon has forgotten, whose backing file is deleted but
	// still open (as by a RELEASE in flight).
	if !tm.m.fs.inodes.handleIDs {
		t.Skip("backing filesystem without FILEID_INO32_GEN handles")
	}
	writeFile(t, tm.b("forgotten"), "y")
	g, err := os.Open(tm.b("forgotten"))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	bh, _, err := unix.NameToHandleAt(unix.AT_FDCWD, tm.b("forgotten"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(tm.b("forgotten")); err != nil {
		t.Fatal(err)
	}
	if st := lookupDot(binary.NativeEndian.Uint64(bh.Bytes())); st != fuse.Status(unix.ESTALE) {
		t.Errorf("LOOKUP(.) of a forgotten node whose backing file is deleted but open: %v, want ESTALE", st)
	}
}

// TestTmpfileLink makes an unnamed file and gives it a name later
// (xfstests generic/004).
func TestTmpfileLink(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		fd, err := unix.Open(tm.mnt, unix.O_TMPFILE|unix.O_RDWR, 0640)
		if err != nil {
			t.Fatalf("O_TMPFILE: %v", err)
		}
		defer unix.Close(fd)
		if _, err := unix.Pwrite(fd, []byte("anonymous"), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Linkat(fd, "", unix.AT_FDCWD, tm.p("named"), unix.AT_EMPTY_PATH); err != nil {
			t.Fatalf("linkat(AT_EMPTY_PATH): %v", err)
		}
		if got := readFile(t, tm.b("named")); got != "anonymous" {
			t.Errorf("linked tmpfile on the backing dir: %q", got)
		}
		if st := stat(t, tm.b("named")); st.Mode&07777 != 0640 || st.Nlink != 1 {
			t.Errorf("linked tmpfile: mode %o nlink %d, want 640 and 1", st.Mode&07777, st.Nlink)
		}

		excl, err := unix.Open(tm.mnt, unix.O_TMPFILE|unix.O_EXCL|unix.O_RDWR, 0600)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(excl)
		if err := unix.Linkat(excl, "", unix.AT_FDCWD, tm.p("never"), unix.AT_EMPTY_PATH); err == nil {
			t.Error("linked an O_EXCL tmpfile")
		}
	})
}

// TestAppendOnly checks chattr +a semantics through the mount (xfstests
// generic/079): only O_APPEND opens may write.
func TestAppendOnly(t *testing.T) {
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("log"), "1\n")
		run(t, 0, "chmod 666 "+tm.p("log")+" && chattr +a "+tm.p("log"))
		t.Cleanup(func() { runAs(0, "chattr -a "+tm.b("log")) })
		if f, err := os.OpenFile(tm.p("log"), os.O_WRONLY, 0); err == nil {
			f.Close()
			t.Error("opened an append-only file for writing without O_APPEND")
		}
		f, err := os.OpenFile(tm.p("log"), os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatalf("O_APPEND open of an append-only file: %v", err)
		}
		if _, err := f.WriteString("2\n"); err != nil {
			t.Errorf("append: %v", err)
		}
		f.Close()
		run(t, nobody, "echo 3 >> "+tm.p("log"))
		if err := os.Truncate(tm.p("log"), 0); err == nil {
			t.Error("truncated an append-only file")
		}
		if got := readFile(t, tm.b("log")); got != "1\n2\n3\n" {
			t.Errorf("append-only file holds %q", got)
		}
	})
}

// TestFileHandlesAcrossRemount opens by a handle taken before the mount
// was cycled and the file's directory renamed (xfstests generic/477): the
// handle must not depend on daemon state. With the caches dropped too, the
// backing filesystem hands the file back without a path, and a mirrored
// mount has to search for it to find the mirror's copy.
func TestFileHandlesAcrossRemount(t *testing.T) {
	requireFUSE(t)
	for _, tc := range []struct{ mirrored, dropped bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
		t.Run(fmt.Sprintf("mirrored=%v,dropped=%v", tc.mirrored, tc.dropped), func(t *testing.T) {
			var mirrors []func(t *testing.T) string
			if tc.mirrored {
				mirrors = append(mirrors, plainMirror)
			}
			tm := mountReplicas(t, "none", Options{}, nil, mirrors...)
			requireHandleIDs(t, tm)
			if err := os.MkdirAll(tm.p("d/e"), 0o755); err != nil {
				t.Fatal(err)
			}
			writeFile(t, tm.p("d/e/f"), "survives")
			h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, tm.p("d/e/f"), 0)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tm.p("d/e"), tm.p("d/moved")); err != nil {
				t.Fatal(err)
			}
			dropped := ""
			if tc.dropped {
				dropped = "d/moved/f"
			}
			f := openAfterRemount(t, tm, h, unix.O_RDWR|unix.O_APPEND, dropped)
			buf := make([]byte, 16)
			if n, err := f.Read(buf); err != nil || string(buf[:n]) != "survives" {
				t.Errorf("read by handle after a remount: %q, %v", buf[:n], err)
			}
			// A write through it reaches every replica: the mirror's
			// copy was found where the backing directory's is.
			if _, err := f.WriteString(" and writes"); err != nil {
				t.Fatal(err)
			}
			for _, r := range tm.replicas() {
				if got := readFile(t, filepath.Join(r, "d/moved/f")); got != "survives and writes" {
					t.Errorf("%s/d/moved/f after a write by handle: %q", r, got)
				}
			}
		})
	}
}

// TestSymlinkXattrsByHandle reaches a symlink by a handle after a remount,
// with the caches dropped, so that the backing filesystem hands it back
// without its directory, and then its trusted.* attributes, which the
// daemon reaches through the symlink's directory.
func TestSymlinkXattrsByHandle(t *testing.T) {
	requireFUSE(t)
	tm := mountFS(t, "none", Options{})
	requireHandleIDs(t, tm)
	if err := os.Mkdir(tm.p("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("target", tm.p("d/l")); err != nil {
		t.Fatal(err)
	}
	if err := unix.Lsetxattr(tm.p("d/l"), "trusted.k", []byte("link"), 0); err != nil {
		t.Fatal(err)
	}
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, tm.p("d/l"), 0)
	if err != nil {
		t.Fatal(err)
	}
	// The open descriptor keeps the kernel's inode, and with it the
	// daemon's, revived from the handle.
	openAfterRemount(t, tm, h, unix.O_PATH|unix.O_NOFOLLOW, "d/l")
	buf := make([]byte, 16)
	n, err := unix.Lgetxattr(tm.p("d/l"), "trusted.k", buf)
	if err != nil || string(buf[:n]) != "link" {
		t.Errorf("trusted.k of a symlink revived by handle: %q, %v", buf[:max(n, 0)], err)
	}
	if err := unix.Lsetxattr(tm.p("d/l"), "trusted.k", []byte("again"), 0); err != nil {
		t.Errorf("set trusted.k of a symlink revived by handle: %v", err)
	}
}

// requireHandleIDs skips a test of file handles that outlive the daemon
// where the backing filesystem has no FILEID_INO32_GEN handles to make
// node ids of.
func requireHandleIDs(t *testing.T, tm *testMount) {
	t.Helper()
	if h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, tm.backing, 0); err != nil || h.Type() != fileidIno32Gen || h.Size() != 8 {
		t.Skip("backing filesystem without FILEID_INO32_GEN handles")
	}
}

// openAfterRemount cycles tm's mount and opens h through the new one with
// flags; the file is closed when the test ends, before the unmount. With
// dropped set, the caches are dropped first so that the backing
// filesystem decodes that file's handle without a path (see dropPath):
// after the mount, whose check looks up every entry of every replica.
func openAfterRemount(t *testing.T, tm *testMount, h unix.FileHandle, flags int, dropped string) *os.File {
	t.Helper()
	if err := tm.m.Unmount(false); err != nil {
		t.Fatal(err)
	}
	m, err := Mount(tm.mnt, Options{Backing: tm.backing, Mirrors: tm.mirrors})
	if err != nil {
		t.Fatal(err)
	}
	unmountAtCleanup(t, m, tm.mnt)
	if dropped != "" {
		dropPath(t, tm.backing, dropped)
	}
	mnt, err := os.Open(tm.mnt)
	if err != nil {
		t.Fatal(err)
	}
	defer mnt.Close()
	f := openByHandle(t, mnt, h, flags, "after a remount")
	t.Cleanup(func() { f.Close() })
	return f
}

// dropPath drops the caches, so that dir's filesystem decodes the handle
// of dir/name without finding its directory, and checks that it does. The
// anonymous dentry it makes then stays cached for the next decode.
func dropPath(t *testing.T, dir, name string) {
	t.Helper()
	h, _, err := unix.NameToHandleAt(unix.AT_FDCWD, filepath.Join(dir, name), 0)
	if err != nil {
		t.Fatal(err)
	}
	dropCaches(t)
	root, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(root)
	fd, err := unix.OpenByHandleAt(root, h, unix.O_PATH|unix.O_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if path, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil || path != "/" {
		t.Fatalf("%s/%s decoded from its handle as %q (%v), not without a path", dir, name, path, err)
	}
}

// TestMmapWriteTimes checks that a write through a shared mapping shows in
// the file's times once the mapping and the file are closed (xfstests
// generic/080, 215), whoever does the I/O.
func TestMmapWriteTimes(t *testing.T) {
	if _, err := exec.LookPath("xfs_io"); err != nil {
		t.Skip("no xfs_io")
	}
	eachMode(t, func(t *testing.T, tm *testMount) {
		writeFile(t, tm.p("m"), strings.Repeat("x", 4096))
		before := stat(t, tm.p("m"))
		// Let the clock move on by whole seconds and the attributes
		// cached above expire, so that xfs_io's open caches fresh ones
		// that the mapped write then outdates.
		time.Sleep(2 * time.Second)
		run(t, 0, "xfs_io -c 'mmap 0 4096' -c 'mwrite 0 4096' "+tm.p("m"))
		if after := stat(t, tm.p("m")); after.Mtim == before.Mtim || after.Ctim == before.Ctim {
			t.Errorf("mtime/ctime %v/%v unchanged after a mapped write", after.Mtim, after.Ctim)
		}
	})
}

// TestMappedWriteback writes through a shared mapping of files opened
// O_DIRECT and O_APPEND: the kernel writes those dirty pages back through
// the same open, trimmed at EOF (a length O_DIRECT refuses) and at the
// page's offset (which O_APPEND would move to the end). fsx -Z
// (generic/263) found the first. The mapping lives in xfs_io, not in this
// process: a page fault on the mount holds this process's mmap lock while
// it waits for the daemon, which may need that lock to allocate.
func TestMappedWriteback(t *testing.T) {
	if _, err := exec.LookPath("xfs_io"); err != nil {
		t.Skip("no xfs_io")
	}
	const size = 3*4096 + 1000 // the last page is partial
	for _, tc := range []struct{ name, flag string }{{"direct", "-d"}, {"append", "-a"}} {
		t.Run(tc.name, func(t *testing.T) {
			eachMode(t, func(t *testing.T, tm *testMount) {
				want := bytes.Repeat([]byte{'a'}, size)
				if err := os.WriteFile(tm.p("f"), want, 0644); err != nil {
					t.Fatal(err)
				}
				cmd := fmt.Sprintf("xfs_io %s -c 'mmap -rw 0 %d'", tc.flag, size)
				for _, off := range []int{100, 4096 + 7, size - 10} {
					cmd += fmt.Sprintf(" -c 'mwrite -S 0x62 %d 7'", off)
					copy(want[off:], "bbbbbbb")
				}
				run(t, 0, fmt.Sprintf("%s -c 'msync -s 0 %d' %s", cmd, size, tm.p("f")))
				if got, err := os.ReadFile(tm.b("f")); err != nil {
					t.Fatal(err)
				} else if !bytes.Equal(got, want) {
					t.Errorf("backing file after msync: %d bytes, want %d (same bytes: %v)", len(got), len(want), bytes.Equal(got[:min(len(got), size)], want))
				}
			})
		})
	}
}

// TestPruneInodes looks up more files than the daemon's descriptor budget
// allows (lowered here from three quarters of RLIMIT_NOFILE) and checks
// that the kernel, asked to prune, forgets enough of them that the daemon
// never holds many more descriptors than the budget: a find over a large
// tree must not run it out of descriptors (EMFILE).
func TestPruneInodes(t *testing.T) {
	files, highWater := 3000, 400
	if testing.Short() {
		files, highWater = 1000, 150
	}
	eachMode(t, func(t *testing.T, tm *testMount) {
		// The table reads the marks under its lock, from any lookup.
		p := tm.m.fs.inodes.pruner
		tm.m.fs.inodes.mu.Lock()
		p.highWater, p.lowWater = highWater, highWater/2
		tm.m.fs.inodes.mu.Unlock()
		for i := range files {
			writeFile(t, tm.b(fmt.Sprintf("f%d", i)), "")
		}
		for i := range files {
			if _, err := os.Lstat(tm.p(fmt.Sprintf("f%d", i))); err != nil {
				t.Fatal(err)
			}
		}
		if p.unsupported.Load() {
			t.Skip("kernel has no FUSE_NOTIFY_PRUNE (Linux 6.17+)")
		}
		live := func() int {
			tm.m.fs.inodes.mu.RLock()
			defer tm.m.fs.inodes.mu.RUnlock()
			return len(tm.m.fs.inodes.byID)
		}
		// FORGETs arrive after the prune, and lookups made while the
		// kernel prunes are pruned in turn, so once they stop the table
		// settles at the high-water mark at most (with the root).
		deadline := time.Now().Add(10 * time.Second)
		for live() > highWater+1 && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if n := live(); n > highWater+1 {
			t.Errorf("%d inodes live after looking up %d files with a budget of %d descriptors", n, files, highWater)
		}
		if _, err := os.Stat(tm.p("f0")); err != nil {
			t.Errorf("a pruned file is gone from the mount: %v", err)
		}
	})
}
