// Package bench is `bpfusefs bench`: it measures every accel mode of
// bpfusefs against the backing directory itself (native, the physical limit)
// and against peer FUSE daemons (go-fuse's loopback, libfuse's
// passthrough_hp) in one run, and prints each figure with its ratio to
// native and to the go-fuse loopback, the daemon CPU time each workload
// cost, and where the product stands against the targets it is held to.
//
// Every system serves a fresh backing directory on the same file system, and
// every workload runs there through the same code, so that only the system
// differs. Figures are medians of --runs passes; timings are never asserted,
// only reported.
package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// Config is what one bench run measures, and how.
type Config struct {
	Bpfusefs      string // the bpfusefs binary
	Loopback      string // go-fuse's example/loopback; built into Cache when empty
	PassthroughHP string // libfuse's example/passthrough_hp; skipped when empty
	Runs          int
	FileSize      int64 // the fio file
	CopySize      int64 // the file copy-4k and copy-range-2r copy
	Runtime       int   // seconds per fio pass
	Files         int   // metadata files, and files of the walked tree
	SourceFiles   int   // C files of the application mix
	Dir           string
	Cache         string
	Systems       patterns
	Workloads     patterns
	JSON          bool
	EnableUring   bool

	// command is the command line, for the report.
	command string
	// self is the command line that runs this bench again (program and
	// the arguments before bench's own), for the loopback-nopt daemon;
	// empty when not known.
	self []string
}

// patterns is a --systems or --workloads filter: comma separated shell
// patterns (path.Match); empty selects everything.
type patterns []string

func (p *patterns) String() string { return strings.Join(*p, ",") }

func (p *patterns) Set(s string) error {
	for _, pat := range strings.Split(s, ",") {
		pat = strings.TrimSpace(pat)
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("bad pattern %q: %w", pat, err)
		}
		*p = append(*p, pat)
	}
	return nil
}

// match reports whether any of names matches a pattern.
func (p patterns) match(names ...string) bool {
	if len(p) == 0 {
		return true
	}
	for _, pat := range p {
		for _, n := range names {
			if ok, _ := path.Match(pat, n); ok {
				return true
			}
		}
	}
	return false
}

// sizeFlag is a byte count with an optional K, M, G or T suffix (powers of
// 1024).
type sizeFlag struct{ n *int64 }

func (s sizeFlag) String() string {
	if s.n == nil {
		return ""
	}
	return strconv.FormatInt(*s.n, 10)
}

func (s sizeFlag) Set(v string) error {
	n, err := parseSize(v)
	if err != nil {
		return err
	}
	*s.n = n
	return nil
}

func parseSize(v string) (int64, error) {
	digits, shift := strings.TrimSuffix(strings.ToUpper(v), "IB"), 0
	if n := len(digits); n > 0 {
		if i := strings.IndexByte("KMGT", digits[n-1]); i >= 0 {
			digits, shift = digits[:n-1], 10*(i+1)
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n <= 0 || n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("bad size %q: want a positive byte count with an optional K, M, G or T suffix", v)
	}
	return n << shift, nil
}

const usage = `usage: bpfusefs bench [flags]

Measures bpfusefs in every available accel mode against the backing
directory itself (native) and against go-fuse's loopback, and prints the
median of --runs passes of each workload, its ratio to native and to the
loopback peers, and the daemon's CPU time. Needs root and /dev/fuse for the
FUSE systems, fio for the I/O workloads.

Systems: %s
Workloads (or their groups fio, meta, copy, app, replica): %s

Flags:
`

// Command runs `bpfusefs bench` with args (the arguments after "bench"):
// it prints the report on standard output and its progress on standard
// error.
func Command(args []string) error {
	if len(args) > 0 && args[0] == serveLoopbackCmd {
		return serveLoopback(args[1:])
	}
	cfg, err := parseFlags(args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := Run(ctx, cfg, os.Stderr)
	if err != nil {
		return err
	}
	if cfg.JSON {
		return rep.writeJSON(os.Stdout)
	}
	return rep.writeMarkdown(os.Stdout)
}

func parseFlags(args []string, stderr io.Writer) (*Config, error) {
	cfg := &Config{
		Runs: 3, FileSize: 512 << 20, CopySize: 1 << 30, Runtime: 4,
		Files: 20000, SourceFiles: 300,
		Dir: os.TempDir(), Cache: os.Getenv("BPFUSEFS_CACHE"),
		command: "bpfusefs bench " + strings.Join(args, " "),
	}
	// In the VM harness (make vmbench), /tmp is in memory; the scratch
	// disk is the block file system to measure.
	if scratch := os.Getenv("BPFUSEFS_VM_SCRATCH"); scratch != "" {
		cfg.Dir = scratch
	}
	if cfg.Cache == "" {
		home, _ := os.UserHomeDir()
		cfg.Cache = filepath.Join(home, ".cache", "bpfusefs")
	}
	if exe, err := os.Executable(); err == nil {
		cfg.Bpfusefs = exe
		cfg.self = selfCommand(exe, os.Args, args)
	}
	var quick bool
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		var names []string
		for _, w := range workloads() {
			names = append(names, w.name)
		}
		fmt.Fprintf(stderr, usage, strings.Join(systemNames(), ", "), strings.Join(names, ", "))
		fs.PrintDefaults()
	}
	fs.StringVar(&cfg.Bpfusefs, "bpfusefs", cfg.Bpfusefs, "the bpfusefs `binary` to measure")
	fs.StringVar(&cfg.Loopback, "loopback", "", "go-fuse's example/loopback `binary` (default: built into $BPFUSEFS_CACHE)")
	fs.StringVar(&cfg.PassthroughHP, "passthrough-hp", "", "libfuse's example/passthrough_hp `binary`, to measure it too")
	fs.IntVar(&cfg.Runs, "runs", cfg.Runs, "passes per workload; the report shows the median")
	fs.Var(sizeFlag{&cfg.CopySize}, "size", "size of the file copy-4k and copy-range-2r copy")
	fs.Var(sizeFlag{&cfg.FileSize}, "file-size", "size of the fio file")
	fs.IntVar(&cfg.Runtime, "runtime", cfg.Runtime, "`seconds` per fio pass")
	fs.IntVar(&cfg.Files, "files", cfg.Files, "files of the metadata workloads and of the walked tree")
	fs.IntVar(&cfg.SourceFiles, "src-files", cfg.SourceFiles, "C files of the application mix's project")
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "`directory` to create the backing directories in (its file system is what native measures)")
	fs.Var(&cfg.Systems, "systems", "comma separated `patterns` of systems to measure (default all)")
	fs.Var(&cfg.Workloads, "workloads", "comma separated `patterns` of workloads or groups to run (default all)")
	fs.BoolVar(&cfg.JSON, "json", false, "print the report as JSON")
	fs.BoolVar(&cfg.EnableUring, "enable-uring", false, "set /sys/module/fuse/parameters/enable_uring to Y for the run (restored after), so fusering can be measured")
	fs.BoolVar(&quick, "quick", false, "smoke run: 1 pass, small files, short fio passes (a minute or two)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if quick {
		cfg.applyQuick(fs)
	}
	if cfg.Runs < 1 || cfg.Runtime < 1 || cfg.Files < 1 || cfg.SourceFiles < 1 {
		return nil, errors.New("--runs, --runtime, --files and --src-files must be positive")
	}
	return cfg, nil
}

// applyQuick shrinks every size the user did not set explicitly.
func (cfg *Config) applyQuick(fs *flag.FlagSet) {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	quick := map[string]func(){
		"runs":      func() { cfg.Runs = 1 },
		"runtime":   func() { cfg.Runtime = 1 },
		"file-size": func() { cfg.FileSize = 64 << 20 },
		"size":      func() { cfg.CopySize = 64 << 20 },
		"files":     func() { cfg.Files = 2000 },
		"src-files": func() { cfg.SourceFiles = 40 },
	}
	for name, apply := range quick {
		if !set[name] {
			apply()
		}
	}
}

// selfCommand returns the command line that reaches this bench again: the
// executable and whatever arguments came before bench's own (for
// `bpfusefs bench ARGS`, that is "bench"). It is nil when args is not the
// tail of the process's arguments.
func selfCommand(exe string, osArgs, args []string) []string {
	if len(osArgs) < len(args)+1 || !slices.Equal(osArgs[len(osArgs)-len(args):], args) {
		return nil
	}
	return append([]string{exe}, osArgs[1:len(osArgs)-len(args)]...)
}
