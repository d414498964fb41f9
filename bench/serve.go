package bench

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// serveLoopbackCmd is the hidden subcommand that serves the loopback-nopt
// peer: `bench serve-loopback MNT BACKING`.
const serveLoopbackCmd = "serve-loopback"

// serveLoopback mounts go-fuse's loopback file system with the same options
// as go-fuse's example/loopback, except that FUSE passthrough is never
// negotiated, so every read and write is a round trip through this process,
// and serves it until SIGTERM or SIGINT.
func serveLoopback(args []string) error {
	if len(args) != 2 {
		return fmt.Errorf("usage: bench %s MOUNTPOINT BACKING", serveLoopbackCmd)
	}
	mnt, backing := args[0], args[1]
	root, err := fs.NewLoopbackRoot(backing)
	if err != nil {
		return fmt.Errorf("loopback root %s: %w", backing, err)
	}
	timeout := time.Second
	server, err := fs.Mount(mnt, root, &fs.Options{
		AttrTimeout:     &timeout,
		EntryTimeout:    &timeout,
		NullPermissions: true,
		MountOptions: fuse.MountOptions{
			DirectMountStrict:    true,
			FsName:               backing,
			Name:                 "loopback-nopt",
			DisabledCapabilities: fuse.CAP_PASSTHROUGH,
		},
	})
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, err)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	served := make(chan struct{})
	go func() {
		server.Wait()
		close(served)
	}()
	select {
	case <-signals:
		if err := server.Unmount(); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
		<-served
	case <-served: // unmounted from outside
	}
	return nil
}
