package uring

import (
	"bytes"
	"errors"
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func mmapBuf(t *testing.T, size int) []byte {
	b, err := unix.Mmap(-1, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(b) })
	return b
}

func TestRegisteredFiles(t *testing.T) {
	r := newRing(t, 4, nil)
	content := []byte("read through a registered file")
	f := tempFile(t, content)
	if err := r.RegisterFilesSparse(4); err != nil {
		t.Fatal(err)
	}
	if n, err := r.UpdateFiles(2, []int32{int32(f.Fd())}); err != nil || n != 1 {
		t.Fatalf("UpdateFiles = %d, %v", n, err)
	}
	buf := pinnedBytes(t, make([]byte, len(content)))
	c := do(t, r, func(s *SQE) {
		s.PrepRead(2, buf, 0)
		s.SetFlags(SQEFixedFile)
	})
	if c.Res != int32(len(content)) || !bytes.Equal(buf, content) {
		t.Fatalf("fixed-file read: res %d, %q", c.Res, buf)
	}
	c = do(t, r, func(s *SQE) {
		s.PrepRead(1, buf, 0) // an empty slot
		s.SetFlags(SQEFixedFile)
	})
	wantErr(t, "read from empty slot", c, syscall.EBADF)
	if err := r.UnregisterFiles(); err != nil {
		t.Fatal(err)
	}
	if err := r.RegisterFiles([]int32{-1, int32(f.Fd())}); err != nil {
		t.Fatal(err)
	}
	clear(buf)
	c = do(t, r, func(s *SQE) {
		s.PrepRead(1, buf, 0)
		s.SetFlags(SQEFixedFile)
	})
	if c.Res != int32(len(content)) || !bytes.Equal(buf, content) {
		t.Fatalf("fixed-file read after RegisterFiles: res %d, %q", c.Res, buf)
	}
}

func TestRegisteredBuffers(t *testing.T) {
	r := newRing(t, 4, nil)
	f := tempFile(t, nil)
	fd := int(f.Fd())
	bufs := [][]byte{mmapBuf(t, 8192), mmapBuf(t, 4096)}
	for i := range bufs[0] {
		bufs[0][i] = byte(i % 251)
	}
	if err := r.RegisterBuffers(bufs); err != nil {
		t.Fatal(err)
	}
	mustRes(t, "write_fixed", do(t, r, func(s *SQE) { s.PrepWriteFixed(fd, bufs[0][100:4196], 0, 0) }), 4096)
	mustRes(t, "read_fixed", do(t, r, func(s *SQE) { s.PrepReadFixed(fd, bufs[1], 0, 1) }), 4096)
	if !bytes.Equal(bufs[1], bufs[0][100:4196]) {
		t.Fatal("read_fixed data differs from what write_fixed wrote")
	}
	c := do(t, r, func(s *SQE) { s.PrepReadFixed(fd, bufs[0], 0, 1) }) // outside buffer 1
	wantErr(t, "read_fixed outside its buffer", c, syscall.EFAULT)
	if err := r.UnregisterBuffers(); err != nil {
		t.Fatal(err)
	}

	if err := r.RegisterBuffersSparse(4); err != nil {
		t.Fatal(err)
	}
	if n, err := r.UpdateBuffers(3, bufs[:1]); err != nil || n != 1 {
		t.Fatalf("UpdateBuffers = %d, %v", n, err)
	}
	clear(bufs[0])
	mustRes(t, "read_fixed after update", do(t, r, func(s *SQE) { s.PrepReadFixed(fd, bufs[0][:4096], 0, 3) }), 4096)
	if !bytes.Equal(bufs[0][:4096], bufs[1]) {
		t.Fatal("read_fixed into updated slot returned wrong data")
	}
	c = do(t, r, func(s *SQE) { s.PrepReadFixed(fd, bufs[1], 0, 0) })
	if c.Res >= 0 {
		t.Fatalf("read_fixed into an empty sparse slot succeeded: %d", c.Res)
	}
}

func TestUringCmdSQE128(t *testing.T) {
	r := newRing(t, 4, &Options{Flags: SetupSQE128})
	f := tempFile(t, []byte("regular files have no uring_cmd"))
	c := do(t, r, func(s *SQE) {
		s.PrepUringCmd(0x1234, int(f.Fd()))
		for i := range s.Cmd() {
			s.Cmd()[i] = byte(i)
		}
	})
	wantErr(t, "uring_cmd on a regular file", c, syscall.EOPNOTSUPP)
	zero, err := os.OpenFile("/dev/zero", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer zero.Close()
	c = do(t, r, func(s *SQE) { s.PrepUringCmd(0x1234, int(zero.Fd())) })
	wantErr(t, "uring_cmd on /dev/zero", c, syscall.EOPNOTSUPP)

	// The success path: SOCKET_URING_OP_SIOCINQ on a UDP socket holding
	// one datagram reports its size, like ioctl(SIOCINQ).
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(fd)
	if err := unix.Sendto(fd, []byte("hello"), 0, sa); err != nil {
		t.Fatal(err)
	}
	const socketURingOpSIOCINQ = 0
	c = do(t, r, func(s *SQE) { s.PrepUringCmd(socketURingOpSIOCINQ, fd) })
	want, _ := unix.IoctlGetInt(fd, unix.SIOCINQ)
	if c.Res != int32(want) || want != 5 {
		t.Fatalf("SIOCINQ uring_cmd: res %d (%v), ioctl %d", c.Res, c.Err(), want)
	}
}

func TestRestrictedDisabledRing(t *testing.T) {
	r := newRing(t, 4, &Options{Flags: SetupRDisabled})
	r.GetSQE().PrepNop()
	if _, err := r.Submit(); !errors.Is(err, unix.EBADFD) {
		t.Fatalf("Submit on a disabled ring: %v, want EBADFD", err)
	}
	err := r.RegisterRestrictions([]Restriction{AllowSQEOp(OpNop), AllowRegisterOp(RegisterProbe)})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Enable(); err != nil {
		t.Fatal(err)
	}
	// The NOP queued while disabled is still in the SQ.
	got := submitAll(t, r, 1)
	if c, ok := got[0]; !ok || c.Res != 0 {
		t.Fatalf("NOP after Enable: %v", got)
	}
	wantErr(t, "read on a NOP-only ring", do(t, r, func(s *SQE) { s.PrepRead(0, nil, 0) }), syscall.EACCES)
	if _, err := r.ProbeOps(); err != nil {
		t.Errorf("allowed REGISTER_PROBE: %v", err)
	}
	if err := r.RegisterFilesSparse(1); !errors.Is(err, syscall.EACCES) {
		t.Errorf("forbidden REGISTER_FILES2: %v, want EACCES", err)
	}
}

func TestRegisteredRingFd(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, 4, nil)
	if err := r.RegisterRingFd(); err != nil {
		t.Fatal(err)
	}
	if r.enterReg == 0 || r.enterFd == r.fd {
		t.Fatalf("enter still uses the fd: %d", r.enterFd)
	}
	mustRes(t, "nop via registered ring", do(t, r, (*SQE).PrepNop), 0)
	if err := r.UnregisterRingFd(); err != nil {
		t.Fatal(err)
	}
	mustRes(t, "nop after unregister", do(t, r, (*SQE).PrepNop), 0)
}

func TestMemRegion(t *testing.T) {
	r := newRing(t, 4, &Options{Flags: SetupRDisabled})
	f, err := Probe()
	if err != nil {
		t.Fatal(err)
	}
	if !f.HasRegister(RegisterMemRegion) {
		t.Skip("kernel lacks IORING_REGISTER_MEM_REGION (6.13+)")
	}
	mem, err := r.RegisterMemRegion(unix.Getpagesize(), MemRegionWaitArg)
	if err != nil {
		t.Fatal(err)
	}
	if len(mem) != unix.Getpagesize() {
		t.Fatalf("region of %d bytes", len(mem))
	}
	if _, err := r.RegisterMemRegion(unix.Getpagesize(), 0); !errors.Is(err, syscall.EBUSY) {
		t.Fatalf("second region: %v, want EBUSY", err)
	}
	if err := r.Enable(); err != nil {
		t.Fatal(err)
	}
	// The kernel reads wait arguments from the region: a 1 ms timeout
	// written through our mapping ends a wait with ETIME, and slots
	// outside the region are refused.
	waits := RegWaits(mem)
	waits[1] = RegWait{Timeout: DurationTimespec(time.Millisecond), Flags: RegWaitTimeout}
	if _, err := r.SubmitAndWaitReg(1, 1); !errors.Is(err, syscall.ETIME) {
		t.Fatalf("wait with region timeout: %v, want ETIME", err)
	}
	if _, err := r.SubmitAndWaitReg(1, len(waits)); !errors.Is(err, syscall.EFAULT) {
		t.Fatalf("wait with a slot past the region: %v, want EFAULT", err)
	}
	r.GetSQE().PrepNop()
	if n, err := r.SubmitAndWaitReg(1, 1); err != nil || n != 1 || r.CQReady() != 1 {
		t.Fatalf("SubmitAndWaitReg(NOP) = %d, %v; %d ready", n, err, r.CQReady())
	}
}
