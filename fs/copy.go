package fs

import (
	"sync"

	"golang.org/x/sys/unix"
)

// COPY_FILE_RANGE copies between two backing files without the data
// passing through the daemon where the kernel allows it, and keeps holes:
// SEEK_DATA/SEEK_HOLE split the source into data, copied, and holes,
// punched (or left past the end) in the destination. Data moves by the
// first method that works:
//
//   - copy_file_range(2) on the backing files: a reflink or an in-kernel
//     copy where the backing filesystem has one;
//   - a splice through a pipe, file to pipe to file, still in the kernel
//     (two linked SQEs on the engine path);
//   - pread/pwrite in chunks, for files that cannot splice.

// Copy methods, in the order Stats.Copies lists them.
const (
	copyFileRange = iota
	copySplice
	copyReadWrite
	numCopies
)

var copyNames = [numCopies]string{"copy_file_range", "splice", "readwrite"}

// copyRange copies up to length bytes from src at offIn to dst at offOut
// (one replica's files) and returns how many it copied: all of them unless
// the source ends first.
func (fs *fileSystem) copyRange(src int, offIn int64, dst int, offOut int64, length int64, flags int) (int64, error) {
	var srcSt, dstSt unix.Stat_t
	if err := unix.Fstat(src, &srcSt); err != nil {
		return 0, err
	}
	if err := unix.Fstat(dst, &dstSt); err != nil {
		return 0, err
	}
	end := min(offIn+length, srcSt.Size)
	for pos := offIn; pos < end; {
		data, hole := extent(src, pos, end)
		if data > pos {
			// Only the part of a hole inside the destination needs
			// zeroing; past its end, nothing is written at all.
			if err := zeroRange(dst, offOut+(pos-offIn), data-pos, dstSt.Size); err != nil {
				return pos - offIn, err
			}
			pos = data
			continue
		}
		if err := fs.copyData(src, pos, dst, offOut+(pos-offIn), hole-pos, flags); err != nil {
			return pos - offIn, err
		}
		pos = hole
	}
	if end <= offIn {
		return 0, nil
	}
	// A copy ending in a hole past the destination's end leaves it short.
	if newEnd := offOut + (end - offIn); newEnd > dstSt.Size {
		if err := unix.Fstat(dst, &dstSt); err != nil {
			return 0, err
		}
		if dstSt.Size < newEnd {
			if err := unix.Ftruncate(dst, newEnd); err != nil {
				return 0, err
			}
		}
	}
	return end - offIn, nil
}

// extent returns where data next starts at or after pos and, when that is
// pos, where it stops; both are capped at end. A filesystem without
// SEEK_DATA is all data.
func extent(fd int, pos, end int64) (data, hole int64) {
	data, err := unix.Seek(fd, pos, unix.SEEK_DATA)
	switch {
	case err == unix.ENXIO: // only a hole from pos to the end of the file
		return end, end
	case err != nil:
		return pos, end
	case data > pos:
		return min(data, end), end
	}
	hole, err = unix.Seek(fd, pos, unix.SEEK_HOLE)
	if err != nil {
		return pos, end
	}
	return pos, min(hole, end)
}

// zeroRange makes [off, off+n) of fd read as zeros, punching a hole in
// the part below size (the file's size before the copy).
func zeroRange(fd int, off, n, size int64) error {
	n = min(n, size-off)
	if n <= 0 {
		return nil
	}
	err := unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err != unix.EOPNOTSUPP {
		return err
	}
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		chunk := min(n, int64(len(zeros)))
		if err := pwriteAll(fd, zeros[:chunk], off); err != nil {
			return err
		}
		off, n = off+chunk, n-chunk
	}
	return nil
}

// copyData copies exactly n bytes of data (the source has them) by the
// first method that works.
func (fs *fileSystem) copyData(src int, offIn int64, dst int, offOut int64, n int64, flags int) error {
	done, err := copyFileRangeAll(src, offIn, dst, offOut, n, flags)
	if err == nil {
		fs.stats.copies[copyFileRange].Add(1)
		return nil
	}
	if done > 0 || !cannotCopy(err) {
		return err
	}
	p, err := fs.pipes.get()
	if err != nil {
		return err
	}
	done, err = fs.data.splice(src, offIn, dst, offOut, n, p)
	fs.pipes.put(p, err == nil)
	if err == nil {
		fs.stats.copies[copySplice].Add(1)
		return nil
	}
	if done > 0 || !cannotCopy(err) {
		return err
	}
	fs.stats.copies[copyReadWrite].Add(1)
	return fs.readWriteCopy(src, offIn, dst, offOut, n)
}

// cannotCopy reports whether a copy method failed because it does not
// apply to these files, so the next one should be tried.
func cannotCopy(err error) bool {
	return err == unix.EXDEV || err == unix.EOPNOTSUPP || err == unix.EINVAL || err == unix.ENOSYS
}

// copyFileRangeAll calls copy_file_range(2) until n bytes are copied.
func copyFileRangeAll(src int, offIn int64, dst int, offOut int64, n int64, flags int) (int64, error) {
	var done int64
	for done < n {
		c, err := unix.CopyFileRange(src, &offIn, dst, &offOut, int(min(n-done, maxCopyChunk)), flags)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if c == 0 {
			return done, unix.EIO // the source shrank under the copy
		}
		done += int64(c)
	}
	return done, nil
}

// readWriteCopy copies through a buffer, the way of last resort.
func (fs *fileSystem) readWriteCopy(src int, offIn int64, dst int, offOut int64, n int64) error {
	buf := make([]byte, min(n, 1<<20))
	fds, errs := []int{dst}, make([]error, 1)
	for n > 0 {
		r, err := fs.data.read(src, buf[:min(n, int64(len(buf)))], offIn)
		if err != nil {
			return err
		}
		if r == 0 {
			return unix.EIO
		}
		fs.data.write(fds, buf[:r], offOut, errs)
		if errs[0] != nil {
			return errs[0]
		}
		offIn, offOut, n = offIn+int64(r), offOut+int64(r), n-int64(r)
	}
	return nil
}

// A pipe carries spliced data between two files.
type pipe struct {
	r, w int
	size int64 // its capacity: the most one splice moves
}

// pipeSize is the capacity asked of a pipe: 1 MiB, the default limit for
// unprivileged users (/proc/sys/fs/pipe-max-size), so one splice moves as
// much as one FUSE WRITE.
const pipeSize = 1 << 20

// pipePool keeps empty pipes for reuse.
type pipePool struct {
	mu   sync.Mutex
	free []pipe
}

func (pp *pipePool) get() (pipe, error) {
	pp.mu.Lock()
	if n := len(pp.free); n > 0 {
		p := pp.free[n-1]
		pp.free = pp.free[:n-1]
		pp.mu.Unlock()
		return p, nil
	}
	pp.mu.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC); err != nil {
		return pipe{}, err
	}
	p := pipe{r: fds[0], w: fds[1], size: 64 << 10}
	if size, err := unix.FcntlInt(uintptr(p.w), unix.F_SETPIPE_SZ, pipeSize); err == nil {
		p.size = int64(size)
	}
	return p, nil
}

// put returns a pipe after use; a pipe that may still hold data (the
// splice failed) is closed instead.
func (pp *pipePool) put(p pipe, empty bool) {
	if !empty {
		p.close()
		return
	}
	pp.mu.Lock()
	pp.free = append(pp.free, p)
	pp.mu.Unlock()
}

func (pp *pipePool) close() {
	pp.mu.Lock()
	defer pp.mu.Unlock()
	for _, p := range pp.free {
		p.close()
	}
	pp.free = nil
}

func (p pipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// drainPipe splices n bytes from p into dst at off.
func drainPipe(p pipe, dst int, off int64, n int64) error {
	for n > 0 {
		c, err := unix.Splice(p.r, nil, dst, &off, int(n), unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if c == 0 {
			return unix.EIO
		}
		n -= c
	}
	return nil
}

// spliceCopy is the system call form of the splice copy: file to pipe,
// pipe to file, a pipe's worth at a time.
func spliceCopy(src int, offIn int64, dst int, offOut int64, n int64, p pipe) (int64, error) {
	var done int64
	for done < n {
		c, err := unix.Splice(src, &offIn, p.w, nil, int(min(n-done, p.size)), unix.SPLICE_F_MOVE)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return done, err
		}
		if c == 0 {
			return done, unix.EIO
		}
		if err := drainPipe(p, dst, offOut, c); err != nil {
			return done, err
		}
		offOut += c
		done += c
	}
	return done, nil
}
