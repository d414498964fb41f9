package fs

import (
	"log"

	"github.com/bpfusefs/bpfusefs/fs/fusering"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// mountFusering serves the mount over FUSE-over-io_uring: one ring per
// CPU, requests as completions, replies committed with the next fetch.
// The file system is the same; only the transport differs.
func mountFusering(mountpoint string, fs *fileSystem, mo *fuse.MountOptions, logger *log.Logger) (connection, error) {
	return fusering.Mount(mountpoint, fs, mo, fusering.Options{Logger: logger})
}
