package features

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// kernelFUSE is what a test mount learned from the kernel's FUSE_INIT.
type kernelFUSE struct {
	major, minor uint32
	// offersPassthrough and offersURing are the kernel's FUSE_INIT flags
	// FUSE_PASSTHROUGH and FUSE_OVER_IO_URING: the kernel offers the latter
	// only when enable_uring is on.
	offersPassthrough, offersURing bool
	// backingErr is the outcome of registering a backing file
	// (FUSE_DEV_IOC_BACKING_OPEN), the step every passthrough open takes.
	// Nil means passthrough works for this user.
	backingErr error
}

// probeTestMount mounts an empty FUSE filesystem on a temporary directory,
// reads what the kernel offered at FUSE_INIT, registers a backing file the
// way a passthrough open does, and unmounts. Only this tells for sure whether
// passthrough works: the kernel may be built without it, and the ioctl needs
// CAP_SYS_ADMIN in the initial user namespace.
func probeTestMount() (kernelFUSE, error) {
	dir, err := os.MkdirTemp("", "bpfusefs-probe-")
	if err != nil {
		return kernelFUSE{}, fmt.Errorf("test mount: %w", err)
	}
	defer os.RemoveAll(dir)
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o700); err != nil {
		return kernelFUSE{}, fmt.Errorf("test mount: %w", err)
	}
	backing, err := os.Create(filepath.Join(dir, "backing"))
	if err != nil {
		return kernelFUSE{}, fmt.Errorf("test mount: %w", err)
	}
	defer backing.Close()

	server, err := gofs.Mount(mnt, &gofs.Inode{}, &gofs.Options{
		MountOptions: fuse.MountOptions{
			FsName:            "bpfusefs-probe",
			Name:              "bpfusefs-probe",
			DirectMountStrict: true,
			// Passthrough needs a stacking depth of at least one.
			MaxStackDepth: 1,
		},
	})
	if err != nil {
		return kernelFUSE{}, fmt.Errorf("test mount: %w", err)
	}
	defer func() { _ = server.Unmount() }()

	init := server.KernelSettings()
	k := kernelFUSE{
		major:             init.Major,
		minor:             init.Minor,
		offersPassthrough: init.Flags64()&fuse.CAP_PASSTHROUGH != 0,
		offersURing:       init.Flags64()&fuse.CAP_OVER_IO_URING != 0,
	}
	if k.offersPassthrough {
		id, errno := server.RegisterBackingFd(&fuse.BackingMap{Fd: int32(backing.Fd())})
		if errno != 0 {
			k.backingErr = fmt.Errorf("FUSE_DEV_IOC_BACKING_OPEN: %w", syscall.Errno(errno))
		} else if errno := server.UnregisterBackingFd(id); errno != 0 {
			k.backingErr = fmt.Errorf("FUSE_DEV_IOC_BACKING_CLOSE: %w", syscall.Errno(errno))
		}
	}
	return k, nil
}
