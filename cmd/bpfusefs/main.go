// Command bpfusefs mounts a backing directory through FUSE with the data
// path moved out of the daemon where the kernel allows it (io_uring, FUSE
// passthrough, FUSE-over-io_uring, io_uring BPF), and inspects such mounts.
//
// Installed as mount.fuse.bpfusefs it is also the helper mount(8) runs for
// `mount -t fuse.bpfusefs` and fstab lines.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/bpfusefs/bpfusefs/bench"
)

// version is set at build time: -ldflags '-X main.version=...'.
var version = "dev"

// helperName is the name mount(8) runs for filesystem type fuse.bpfusefs.
const helperName = "mount.fuse.bpfusefs"

// A command is one subcommand of bpfusefs.
type command struct {
	name    string
	args    string
	summary string
	run     func(args []string) error
}

// commands lists the subcommands in the order help shows them. Subcommands
// of later packages (verify, bench) are added here, one line each.
var commands []command

func init() {
	commands = []command{
		{"mount", "[flags] BACKING MOUNTPOINT", "mount BACKING on MOUNTPOINT (foreground, or -d)", runMount},
		{"umount", "[-l] MOUNTPOINT", "unmount; the daemon then exits", runUmount},
		{"stats", "[--json] MOUNTPOINT", "live counters of a mount's daemon", runStats},
		{"verify", "[--max N] MOUNTPOINT | DIR DIR...", "compare a mount's replicas (or directories) byte for byte", runVerify},
		{"doctor", "[--json]", "what this kernel and user can accelerate, and why not", runDoctor},
		{"bench", "[flags]", "measure every accel mode against native and go-fuse's loopback (make bench)", bench.Command},
		{"install-helper", "[DIR]", "install " + helperName + " in DIR (default /sbin) for mount(8)", runInstallHelper},
		{"help", "", "show this help", func([]string) error { usage(os.Stdout); return nil }},
	}
}

func main() {
	os.Exit(run(os.Args))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// errReported is the failure of a command that has printed its verdict
// itself (verify's differences): exit 1 with nothing more said.
var errReported = errors.New("failure already reported")

func run(argv []string) int {
	err := dispatch(argv)
	var uerr *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errReported):
		return exitFailure
	case errors.As(err, &uerr):
		fmt.Fprintf(os.Stderr, "bpfusefs: %v\n(see bpfusefs help)\n", err)
		return exitUsage
	default:
		fmt.Fprintf(os.Stderr, "bpfusefs: %v\n", err)
		return exitFailure
	}
}

func dispatch(argv []string) error {
	if req, isDaemon, err := daemonRequestFromEnv(); err != nil {
		return err
	} else if isDaemon {
		return runDaemonChild(req)
	}
	if filepath.Base(argv[0]) == helperName {
		return runHelper(argv[1:])
	}
	if len(argv) < 2 {
		usage(os.Stderr)
		return &usageError{"no command given"}
	}
	name, args := argv[1], argv[2:]
	switch name {
	case "-h", "--help":
		usage(os.Stdout)
		return nil
	case "--version", "version":
		fmt.Printf("bpfusefs %s (%s)\n", version, runtime.Version())
		return nil
	}
	for _, c := range commands {
		if c.name == name {
			return c.run(args)
		}
	}
	return usagef("unknown command %q", name)
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: bpfusefs COMMAND [ARGS]")
	fmt.Fprintln(w)
	for _, c := range commands {
		fmt.Fprintf(w, "  %-15s %s\n", c.name, c.summary)
		if c.args != "" {
			fmt.Fprintf(w, "  %-15s   bpfusefs %s %s\n", "", c.name, c.args)
		}
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "  bpfusefs --version")
	fmt.Fprintln(w, "  bpfusefs mount --help   mount flags and -o options")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Installed as "+helperName+", it is the helper of mount -t fuse.bpfusefs.")
	fmt.Fprintln(w, "Exit status: 0 success, 1 failure, 2 bad command line.")
}

// wantJSON splits a --json flag off the arguments of stats and doctor.
func wantJSON(cmd string, args []string) (json bool, rest []string, err error) {
	for _, a := range args {
		switch {
		case a == "--json" || a == "-json":
			json = true
		case strings.HasPrefix(a, "-"):
			return false, nil, usagef("%s: unknown flag %s", cmd, a)
		default:
			rest = append(rest, a)
		}
	}
	return json, rest, nil
}
