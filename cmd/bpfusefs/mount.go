package main

import (
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/bpfusefs/bpfusefs/control"
	"github.com/bpfusefs/bpfusefs/features"
	"github.com/bpfusefs/bpfusefs/fs"
	"github.com/bpfusefs/bpfusefs/internal/mountinfo"
)

const mountUsage = `usage: bpfusefs mount [flags] BACKING MOUNTPOINT

Mounts BACKING on MOUNTPOINT and serves it until unmounted or sent SIGINT or
SIGTERM, then unmounts (lazily if files are still open) and exits.

flags:
  -d, --daemon       run in the background; return once the mount is live
  --accel LIST       auto (default), none, or a comma list of
                     engine, passthrough, fusering, bpf (see bpfusefs doctor)
  --mirror DIR,...   keep replicas of BACKING in these directories; the
                     mount is refused while the replicas disagree
                     (bpfusefs verify BACKING DIR... lists how)
  --mirror-repair DIR
                     when the replicas disagree, copy DIR (BACKING or
                     one of the mirrors) over the others, then mount
  -o OPTS            mount(8)-style options, comma separated:
                       ro, rw, allow_other, default_permissions,
                       nodefault_permissions, debug, fsname=NAME,
                       accel=A:B, mirror=DIR:DIR, mirror_repair=DIR,
                       log=FILE
                     mount flags (nosuid, nodev, noexec, noatime, sync...)
                     apply as in mount(8); others (_netdev, nofail...) are
                     accepted and ignored; allow_other implies
                     default_permissions unless nodefault_permissions
  --log FILE         log file (default: stderr; with -d, a file next to
                     the control socket, removed after a clean run)
  --debug            log every FUSE request
  -h, --help         show this help
`

func runMount(args []string) error {
	cfg, help, err := parseMountArgs(args)
	if help {
		fmt.Print(mountUsage)
		return nil
	}
	if err != nil {
		return err
	}
	return mount(cfg)
}

// mount checks the configuration, resolves the accelerations and serves
// the mount in the foreground or starts a daemon for it.
func mount(cfg mountConfig) error {
	if cfg.Remount {
		return remount(cfg)
	}
	if err := cfg.checkPaths(); err != nil {
		return err
	}
	req, err := features.ParseRequest(cfg.Accel)
	if err != nil {
		return &usageError{err.Error()}
	}
	var set features.Set // --accel none needs no probing
	if req.Auto || len(req.Names) > 0 {
		if set, err = features.Resolve(req, features.ProbeKernel().Accel, fsChecker()); err != nil {
			return err
		}
	}
	if cfg.Daemon {
		return startDaemon(cfg, set)
	}
	if cfg.LogFile == "" {
		return serve(cfg, set, os.Stderr, nil, nil)
	}
	logFile, err := os.OpenFile(cfg.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log: %w", err)
	}
	defer logFile.Close()
	return serve(cfg, set, logFile, nil, nil)
}

// checkPaths makes the paths absolute and checks them, so that the usual
// mistakes get a clear message before anything is mounted.
func (c *mountConfig) checkPaths() error {
	var err error
	if c.Backing, err = checkBackingDir("backing directory", c.Backing); err != nil {
		return err
	}
	for i, m := range c.Mirrors {
		if c.Mirrors[i], err = checkBackingDir("mirror directory", m); err != nil {
			return err
		}
	}
	if err := c.checkMirrorRepair(); err != nil {
		return err
	}
	mnt, err := filepath.Abs(c.Mountpoint)
	if err != nil {
		return err
	}
	fi, err := os.Stat(mnt)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mountpoint %s: a dead FUSE mount is still there (run: bpfusefs umount %s)", mnt, mnt)
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist", mnt)
	case err != nil:
		return fmt.Errorf("mountpoint: %w", err)
	case !fi.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	if c.Mountpoint, err = filepath.EvalSymlinks(mnt); err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	switch e, busy, err := mountinfo.Find(c.Mountpoint); {
	case err != nil:
		return fmt.Errorf("mountpoint %s: %w", c.Mountpoint, err)
	case busy:
		return fmt.Errorf("mountpoint %s is busy: %s (%s) is already mounted there", c.Mountpoint, e.Source, e.FSType)
	}
	if c.FSName == "" {
		c.FSName = c.Backing
	}
	return nil
}

func checkBackingDir(what, dir string) (string, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	fi, err := os.Stat(abs)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%s %s does not exist", what, abs)
	case err != nil:
		return "", fmt.Errorf("%s: %w", what, err)
	case !fi.IsDir():
		return "", fmt.Errorf("%s %s is not a directory", what, abs)
	}
	return abs, nil
}

// serve mounts and serves until the mount goes away. ready, when not nil,
// is told once the mount is live (or why it failed): a daemon's parent is
// waiting on it. cleanExit, when not nil, runs once the mount ended
// cleanly, before the control socket goes: umount returns when it goes,
// and whatever cleanExit does must be done by then.
func serve(cfg mountConfig, set features.Set, logw io.Writer, ready *readiness, cleanExit func()) error {
	logger := log.New(logw, "bpfusefs: ", log.LstdFlags)
	if cfg.Debug && len(cfg.Unknown) > 0 {
		logger.Printf("ignoring unknown mount options %v", cfg.Unknown)
	}
	// Signals are caught before the mount exists so that a SIGTERM right
	// after readiness still unmounts cleanly.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	if limit := raiseFileLimit(); limit < 1<<16 {
		logger.Printf("descriptor limit %d: directory trees of more than about %d inodes will be pruned from the kernel's cache and looked up again", limit, limit*3/4)
	}
	m, err := fs.Mount(cfg.Mountpoint, fs.Options{
		Backing:            cfg.Backing,
		Mirrors:            cfg.Mirrors,
		MirrorRepair:       cfg.MirrorRepair,
		Engine:             set.Engine,
		Passthrough:        set.Passthrough,
		Fusering:           set.Fusering,
		BPF:                set.BPF,
		ReadOnly:           cfg.ReadOnly,
		AllowOther:         cfg.AllowOther,
		DefaultPermissions: cfg.defaultPermissions(),
		Debug:              cfg.Debug,
		MountFlags:         cfg.MountFlags,
		FSName:             cfg.FSName,
		Logger:             logger,
	})
	if err != nil {
		return fmt.Errorf("mount %s on %s: %w", cfg.Backing, cfg.Mountpoint, err)
	}
	served := make(chan struct{})
	go func() {
		m.Wait()
		close(served)
	}()

	srv, err := listenControl(cfg.Mountpoint, m)
	if err != nil {
		unmount(m, logger)
		<-served
		return err
	}
	defer srv.Close()
	logger.Printf("mounted %s on %s (accel %s)", cfg.Backing, cfg.Mountpoint, set)
	ready.succeed()

	for {
		select {
		case <-served:
			logger.Printf("unmounted %s", cfg.Mountpoint)
			if cleanExit != nil {
				cleanExit()
			}
			return nil
		case sig := <-sigs:
			logger.Printf("%v: unmounting %s", sig, cfg.Mountpoint)
			unmount(m, logger)
		}
	}
}

// unmount unmounts, or detaches the mount when files are still open: the
// daemon then serves them until they are closed, so that no write in
// flight is lost.
func unmount(m *fs.Mounted, logger *log.Logger) {
	err := m.Unmount(false)
	if errors.Is(err, syscall.EBUSY) {
		logger.Printf("mount busy: detaching it; exiting once the last open file is closed")
		err = m.Unmount(true)
	}
	if err != nil {
		logger.Printf("unmount: %v", err)
	}
}

func listenControl(mountpoint string, m *fs.Mounted) (*control.Server, error) {
	path, err := control.SocketPath(mountpoint)
	if err != nil {
		return nil, err
	}
	return control.Listen(path, os.Getuid(), func(method string) (any, error) {
		if method == "stats" {
			return m.Stats(), nil
		}
		return nil, fmt.Errorf("unknown method %q", method)
	})
}
