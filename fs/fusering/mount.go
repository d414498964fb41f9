package fusering

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

const (
	defaultDepth = 8
	// maxDepth keeps a queue's zero-copy slots within io_uring's limit of
	// registered buffers (IORING_MAX_REG_BUFFERS, 16384).
	maxDepth        = 1 << 12
	defaultMaxWrite = 128 << 10 // go-fuse's default MountOptions.MaxWrite
	minReadBuffer   = 8192      // FUSE_MIN_READ_BUFFER
)

// Mount mounts fs on mountpoint (mount(2) directly, so it needs the
// privilege to mount) and serves it over FUSE-over-io_uring. mo is used
// as with fuse.NewServer; CAP_OVER_IO_URING is added to its
// ExtraCapabilities. It fails with an error wrapping ErrUnavailable when
// the kernel cannot do it, before anything is mounted.
func Mount(mountpoint string, fs fuse.RawFileSystem, mo *fuse.MountOptions, opts Options) (*Server, error) {
	if err := Available(); err != nil {
		return nil, err
	}
	cpus, err := possibleCPUs()
	if err != nil {
		return nil, err
	}
	if opts.Depth == 0 {
		opts.Depth = defaultDepth
	}
	if opts.Depth < 1 || opts.Depth > maxDepth {
		return nil, fmt.Errorf("fusering: queue depth %d not in 1..%d", opts.Depth, maxDepth)
	}
	mountpoint, err = filepath.Abs(mountpoint)
	if err != nil {
		return nil, err
	}
	o := mountOptions(fs, mo)
	logger := opts.Logger
	if logger == nil {
		logger = o.Logger
	}
	if logger == nil {
		logger = log.Default()
	}

	devFd, err := mountFuse(mountpoint, &o)
	if err != nil {
		return nil, err
	}
	s := &Server{mountpoint: mountpoint, devFd: devFd, fs: fs, logger: logger, depth: opts.Depth}
	err = s.start(&o, &opts, cpus)
	if err == nil {
		err = disablePoll(mountpoint)
	}
	if err != nil {
		// Detach the mount: the connection ends when the superblock
		// goes, which ends the device reader and every registered entry.
		unix.Unmount(mountpoint, unix.MNT_DETACH)
		s.Wait()
		return nil, err
	}
	return s, nil
}

// start negotiates INIT, starts the device reader and sets up the queues.
func (s *Server) start(o *fuse.MountOptions, opts *Options, cpus int) error {
	// go-fuse's Server answers INIT on its own descriptor of the
	// connection (the magic /dev/fd/N mount point: it mounts nothing) and
	// calls fs.Init with itself, for notifications.
	initFd, err := unix.FcntlInt(uintptr(s.devFd), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return os.NewSyscallError("dup /dev/fuse", err)
	}
	// It owns initFd from here, on failure too; Wait makes it close it.
	srv, err := fuse.NewServer(s.fs, "/dev/fd/"+strconv.Itoa(initFd), o)
	if err != nil {
		return fmt.Errorf("fusering: FUSE_INIT: %w", err)
	}
	s.initSrv = srv
	s.kernelSettings = *srv.KernelSettings()
	s.ps = fuse.NewProtocolServer(s.fs, o)
	init, err := s.replayInit(&s.kernelSettings)
	if err != nil {
		return err
	}
	s.payloadSize = maxPayload(init)
	if opts.BPF {
		if err := s.startBPF(); err != nil {
			return err
		}
	}
	if opts.ZeroCopy {
		s.zcFiles, _ = s.fs.(ZeroCopyFiles)
	}
	s.loops.Add(1)
	go s.serveDev()
	return s.startQueues(cpus, opts)
}

// replayInit makes the ProtocolServer that serves ring requests negotiate
// exactly what go-fuse's Server told the kernel: it replays the kernel's
// INIT, since request parsing depends on the protocol minor and the
// negotiated flags. It returns the reply.
func (s *Server) replayInit(in *fuse.InitIn) (*fuse.InitOut, error) {
	req := unsafe.Slice((*byte)(unsafe.Pointer(in)), unsafe.Sizeof(*in))
	// Words, so that the headers read from it are aligned.
	var words [(outHeaderSize + int(unsafe.Sizeof(fuse.InitOut{})) + 7) / 8]uint64
	reply := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 8*len(words))
	n, st := s.ps.HandleRequest([][]byte{req}, [][]byte{reply})
	out := (*fuse.OutHeader)(unsafe.Pointer(&reply[0]))
	if !st.Ok() || n < outHeaderSize+24 || out.Status != 0 {
		return nil, fmt.Errorf("fusering: replaying FUSE_INIT: %v (status %d)", st, out.Status)
	}
	init := (*fuse.InitOut)(unsafe.Pointer(&reply[outHeaderSize]))
	if in.Flags64()&fuse.CAP_OVER_IO_URING == 0 || init.Flags64()&fuse.CAP_OVER_IO_URING == 0 {
		return nil, fmt.Errorf("%w: the kernel did not offer FUSE_OVER_IO_URING at FUSE_INIT", ErrUnavailable)
	}
	c := *init
	return &c, nil
}

// disablePoll makes the kernel stop sending FUSE_POLL, as go-fuse's
// WaitMount does: the Go runtime registers files it opens with epoll, and
// an epoll_ctl waiting for this daemon's answer would hold up a
// stop-the-world of the very process that must answer. go-fuse answers
// POLL on its magic file with ENOSYS, after which the kernel no longer
// asks.
func disablePoll(mountpoint string) error {
	fd, err := unix.Open(filepath.Join(mountpoint, ".go-fuse-epoll-hack"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("fusering: disabling FUSE_POLL: %w", err)
	}
	defer unix.Close(fd)
	unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN | unix.POLLPRI | unix.POLLOUT}}, 0)
	return nil
}

// maxPayload is the kernel's fuse_ring max_payload_sz for the INIT reply:
// every entry's payload buffer must hold that much, and with buffer pools
// the kernel cuts the pool at exactly that stride.
func maxPayload(init *fuse.InitOut) int {
	maxWrite := max(int(init.MaxWrite), 4096)
	maxPages := 32 // FUSE_DEFAULT_MAX_PAGES_PER_REQ
	if init.Flags64()&fuse.CAP_MAX_PAGES != 0 {
		maxPages = max(int(init.MaxPages), 1)
		if lim := maxPagesLimit(); maxPages > lim {
			maxPages = lim
		}
	}
	return max(minReadBuffer, maxWrite, maxPages*os.Getpagesize())
}

// maxPagesLimit is the kernel's cap on max_pages (fs.fuse.max_pages_limit,
// 256 before it was tunable).
func maxPagesLimit() int {
	if v, err := os.ReadFile("/proc/sys/fs/fuse/max_pages_limit"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(v))); err == nil {
			return n
		}
	}
	return 256
}

// mountOptions returns the options go-fuse's Server is built with: mo's,
// with the defaults Mount relies on made explicit (the mount(2) call and
// the INIT reply must agree on max_read and the name) and the ring
// capability advertised.
func mountOptions(fs fuse.RawFileSystem, mo *fuse.MountOptions) fuse.MountOptions {
	var o fuse.MountOptions
	if mo != nil {
		o = *mo
	}
	if o.MaxWrite <= 0 {
		o.MaxWrite = defaultMaxWrite
	}
	o.MaxWrite = min(o.MaxWrite, maxPagesLimit()*os.Getpagesize())
	if o.Name == "" {
		o.Name = strings.ReplaceAll(fs.String(), ",", ";")
		o.Name = o.Name[:min(len(o.Name), 20)]
	}
	o.ExtraCapabilities |= fuse.CAP_OVER_IO_URING
	// We mount; go-fuse only gets the descriptor.
	o.DirectMount, o.DirectMountStrict = false, false
	return o
}

// mountFuse opens /dev/fuse and mounts it on mountpoint the way go-fuse's
// DirectMount does, returning the device descriptor.
func mountFuse(mountpoint string, o *fuse.MountOptions) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return -1, &os.PathError{Op: "stat", Path: mountpoint, Err: err}
	}
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: "/dev/fuse", Err: err}
	}
	data := []string{
		"fd=" + strconv.Itoa(fd),
		fmt.Sprintf("rootmode=%o", st.Mode&unix.S_IFMT),
		"user_id=" + strconv.Itoa(os.Geteuid()),
		"group_id=" + strconv.Itoa(os.Getegid()),
		"max_read=" + strconv.Itoa(o.MaxWrite),
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if o.DirectMountFlags != 0 {
		flags = o.DirectMountFlags
	}
	// [no]dev, [no]suid and [no]exec are mount flags, not fuse options.
	for _, opt := range o.Options {
		switch opt {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		default:
			data = append(data, opt)
		}
	}
	if o.AllowOther {
		data = append(data, "allow_other")
	}
	source := o.FsName
	if source == "" {
		source = o.Name
	}
	if err := unix.Mount(source, mountpoint, "fuse."+o.Name, flags, strings.Join(data, ",")); err != nil {
		closeFd(fd)
		return -1, fmt.Errorf("fusering: mount %s: %w", mountpoint, err)
	}
	return fd, nil
}

// unmount unmounts mountpoint, retrying briefly while it is busy.
func unmount(mountpoint string) error {
	var err error
	delay := time.Duration(0)
	for range 5 {
		if err = unix.Unmount(mountpoint, 0); !errors.Is(err, unix.EBUSY) {
			break
		}
		delay = 2*delay + 5*time.Millisecond
		time.Sleep(delay)
	}
	if err != nil {
		return fmt.Errorf("fusering: umount %s: %w", mountpoint, err)
	}
	return nil
}

// possibleCPUs counts the CPUs in /sys/devices/system/cpu/possible, the
// kernel's num_possible_cpus(): the number of queues it waits for.
func possibleCPUs() (int, error) {
	const path = "/sys/devices/system/cpu/possible"
	v, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	n, err := countCPUList(strings.TrimSpace(string(v)))
	if err != nil {
		return 0, fmt.Errorf("fusering: %s: %w", path, err)
	}
	return n, nil
}

// countCPUList counts the CPUs of a kernel cpu list such as "0-3,8".
func countCPUList(list string) (int, error) {
	n := 0
	for part := range strings.SplitSeq(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			return 0, fmt.Errorf("bad cpu list %q", list)
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil || last < first {
				return 0, fmt.Errorf("bad cpu list %q", list)
			}
		}
		n += last - first + 1
	}
	return n, nil
}

func closeFd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
