package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/bpfusefs/bpfusefs/control"
	"golang.org/x/sys/unix"
)

// daemonExitTimeout bounds how long umount waits for the daemon to finish
// after the kernel let go of the mount.
const daemonExitTimeout = time.Minute

func runUmount(args []string) error {
	lazy := false
	var operands []string
	for _, a := range args {
		switch a {
		case "-l", "--lazy":
			lazy = true
		case "-h", "--help":
			fmt.Println("usage: bpfusefs umount [-l] MOUNTPOINT")
			return nil
		default:
			if len(a) > 1 && a[0] == '-' {
				return usagef("umount: unknown flag %s", a)
			}
			operands = append(operands, a)
		}
	}
	if len(operands) != 1 {
		return usagef("umount: want one MOUNTPOINT, got %d", len(operands))
	}
	return umount(operands[0], lazy)
}

// umount unmounts and, unless lazy, waits for the daemon to finish so that
// the mount's resources (control socket, backing fds) are gone on return.
func umount(path string, lazy bool) error {
	mnt, _, err := findOurMount("umount", path)
	if err != nil {
		return err
	}
	// Ask the daemon to tell us when it is done before the mount goes: a
	// daemon we cannot reach (another user's, or dead) is simply not
	// waited for.
	sock, sockErr := control.SocketPath(mnt)
	var done *control.Pending
	if sockErr == nil && !lazy {
		done, _ = control.Wait(sock)
	}
	flags := 0
	if lazy {
		flags = unix.MNT_DETACH
	}
	if err := unix.Unmount(mnt, flags); err != nil {
		if done != nil {
			done.Close()
		}
		if errors.Is(err, syscall.EBUSY) {
			return fmt.Errorf("umount %s: busy (a file is open or a process works in it); use -l to detach it now and let the daemon exit when the last file closes", mnt)
		}
		return fmt.Errorf("umount %s: %w", mnt, err)
	}
	if done != nil {
		_ = done.SetDeadline(time.Now().Add(daemonExitTimeout))
		if err := done.Result(nil); err != nil {
			fmt.Fprintf(os.Stderr, "bpfusefs: umount %s: unmounted, but the daemon did not confirm its exit: %v\n", mnt, err)
		}
	} else if sockErr == nil && !lazy {
		// The daemon was dead (killed): clear what it left behind.
		_ = control.RemoveStale(sock)
	}
	return nil
}
