package fs

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// dataPath does a mount's backing file I/O in the daemon. Every
// implementation gives byte-identical results; they differ in how the
// syscalls reach the kernel. Each call works on all of a handle's replicas:
// reads are served by one, writes reach all of them.
type dataPath interface {
	read(h *handle, p []byte, off int64) (int, error)
	write(h *handle, p []byte, off int64) (int, error)
	fsync(h *handle, datasync bool) error
	// path is the Stats.Paths index this implementation counts under.
	path() int
	close() error
}

// syscallPath is the reference: pread(2) and pwrite(2).
type syscallPath struct{}

func (syscallPath) read(h *handle, p []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(h.fd(), p, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

func (syscallPath) write(h *handle, p []byte, off int64) (int, error) {
	return fullWrite(p, off, func(p []byte, off int64) (int, error) {
		return unix.Pwrite(h.fd(), p, off)
	})
}

func (syscallPath) fsync(h *handle, datasync bool) error {
	if datasync {
		return unix.Fdatasync(h.fd())
	}
	return unix.Fsync(h.fd())
}

func (syscallPath) path() int    { return pathSyscall }
func (syscallPath) close() error { return nil }

// fullWrite repeats a positional write until p is written or it fails: a
// short write is finished, never reported as success.
func fullWrite(p []byte, off int64, pwrite func([]byte, int64) (int, error)) (int, error) {
	done := 0
	for done < len(p) {
		n, err := pwrite(p[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, unix.EIO
		}
		done += n
	}
	return done, nil
}

// directAlign is the alignment O_DIRECT backing I/O gets; 4096 satisfies
// every common logical block size.
const directAlign = 4096

// alignedBuffer returns p when it is suitably aligned for O_DIRECT, else a
// fresh aligned buffer of the same length.
func alignedBuffer(p []byte) ([]byte, bool) {
	if len(p) == 0 || uintptr(unsafe.Pointer(&p[0]))%directAlign == 0 {
		return p, false
	}
	buf := make([]byte, len(p)+directAlign)
	skip := (directAlign - int(uintptr(unsafe.Pointer(&buf[0]))%directAlign)) % directAlign
	return buf[skip : skip+len(p)], true
}
