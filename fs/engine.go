package fs

import (
	"fmt"

	"github.com/bpfusefs/bpfusefs/uring"
)

// enginePath does backing I/O through an io_uring Engine shared by all of a
// mount's requests: concurrent FUSE requests become SQEs on one ring, and a
// lone request costs one io_uring_enter, like the syscall it replaces.
type enginePath struct {
	e *uring.Engine
}

func newEnginePath() (dataPath, error) {
	e, err := uring.NewEngine(uring.EngineOptions{Entries: 256, MaxInflight: 1024})
	if err != nil {
		return nil, fmt.Errorf("engine: %w", err)
	}
	return enginePath{e}, nil
}

func (p enginePath) read(h *handle, buf []byte, off int64) (int, error) {
	return p.e.Pread(h.fd(), buf, off)
}

func (p enginePath) write(h *handle, buf []byte, off int64) (int, error) {
	return fullWrite(buf, off, func(b []byte, off int64) (int, error) {
		return p.e.Pwrite(h.fd(), b, off)
	})
}

func (p enginePath) fsync(h *handle, datasync bool) error { return p.e.Fsync(h.fd(), datasync) }
func (p enginePath) path() int                            { return pathEngine }
func (p enginePath) close() error                         { return p.e.Close() }
