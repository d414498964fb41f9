package fusering

import (
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// devRequestOverhead bounds what a request read from /dev/fuse carries
// beside its payload: headers, names, extensions.
const devRequestOverhead = 4096

// serveDev reads /dev/fuse until the connection ends, serving each request
// on its own goroutine: FORGETs, INTERRUPTs and notify replies, which the
// kernel never sends over the ring, and requests queued before the ring
// was ready.
func (s *Server) serveDev() {
	defer s.loops.Done()
	size := devRequestOverhead + s.payloadSize
	s.devBufs.New = func() any {
		// Words, so that the headers in it are aligned.
		words := make([]uint64, size/8)
		buf := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), size)
		return &buf
	}
	for {
		bufp := s.devBufs.Get().(*[]byte)
		buf := *bufp
		n, err := unix.Read(s.devFd, buf)
		switch err {
		case nil:
		case unix.EINTR, unix.ENOENT, unix.EAGAIN:
			// ENOENT: the request was interrupted before we read it.
			s.devBufs.Put(bufp)
			continue
		case unix.ENODEV, unix.ECONNABORTED:
			// Unmounted or aborted.
			return
		default:
			s.logf("reading /dev/fuse: %v", err)
			return
		}
		if n < inHeaderSize {
			s.logf("short read from /dev/fuse: %d bytes", n)
			s.devBufs.Put(bufp)
			continue
		}
		s.dev.count((*fuse.InHeader)(unsafe.Pointer(&buf[0])).Opcode)
		go func() {
			s.handleDev(buf[:n])
			s.devBufs.Put(bufp)
		}()
	}
}

// handleDev serves one request read from /dev/fuse and writes its reply.
func (s *Server) handleDev(req []byte) {
	in := *(*fuse.InHeader)(unsafe.Pointer(&req[0]))
	outp := s.devBufs.Get().(*[]byte)
	defer s.devBufs.Put(outp)
	out := *outp
	if in.Opcode == opRelease {
		s.beforeRelease(req[inHeaderSize:])
	}
	n, st := s.ps.HandleRequest([][]byte{req}, [][]byte{out})
	switch {
	case !st.Ok():
		*(*fuse.OutHeader)(unsafe.Pointer(&out[0])) = fuse.OutHeader{Length: uint32(outHeaderSize), Status: -int32(st), Unique: in.Unique}
		n = outHeaderSize
	case n == 0:
		return // FORGET, INTERRUPT: no reply
	case in.Opcode == opOpen || in.Opcode == opCreate:
		oh := (*fuse.OutHeader)(unsafe.Pointer(&out[0]))
		s.afterOpen(in.Opcode, oh, out[outHeaderSize:n])
		s.markZeroCopy(in.Opcode, oh, out[outHeaderSize:n])
	}
	if _, err := unix.Write(s.devFd, out[:n]); err != nil && err != unix.ENOENT {
		// ENOENT: the kernel gave up on the request (interrupted,
		// or a RELEASE racing with unmount).
		s.logf("writing reply to /dev/fuse (opcode %d): %v", in.Opcode, err)
	}
}
