package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/bpfusefs/bpfusefs/features"
	"golang.org/x/sys/unix"
)

// usageError is a mistake on the command line: exit code 2 and a hint.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{fmt.Sprintf(format, a...)} }

// mountConfig is a parsed mount command line, from `bpfusefs mount` or
// from mount(8) calling the helper. It travels as JSON to the daemon.
type mountConfig struct {
	Backing    string   `json:"backing"`
	Mountpoint string   `json:"mountpoint"`
	Accel      string   `json:"accel"`
	Mirrors    []string `json:"mirrors,omitempty"`
	// MirrorRepair is the replica (BACKING or a mirror) copied over the
	// others when they disagree at mount.
	MirrorRepair string `json:"mirror_repair,omitempty"`
	ReadOnly     bool   `json:"read_only,omitempty"`
	AllowOther   bool   `json:"allow_other,omitempty"`
	// DefaultPermissions is nil unless -o default_permissions or
	// nodefault_permissions was given: allow_other turns it on by default.
	DefaultPermissions *bool  `json:"default_permissions,omitempty"`
	Debug              bool   `json:"debug,omitempty"`
	FSName             string `json:"fsname,omitempty"`
	Daemon             bool   `json:"daemon,omitempty"`
	LogFile            string `json:"log,omitempty"`
	// MountFlags are the mount(2) flags of options like nosuid and noexec.
	MountFlags uintptr `json:"mount_flags,omitempty"`
	// Remount asks to change the options of an existing mount.
	Remount bool `json:"remount,omitempty"`
	// Unknown are the -o options bpfusefs does not know; they are
	// ignored, and logged with --debug.
	Unknown []string `json:"unknown,omitempty"`

	// readOnlySet tells an explicit rw from the default, for remount.
	readOnlySet bool
}

// defaultPermissions says whether the kernel checks permissions itself:
// always with allow_other (other users must not borrow the daemon's
// rights) unless nodefault_permissions says otherwise.
func (c *mountConfig) defaultPermissions() bool {
	if c.DefaultPermissions != nil {
		return *c.DefaultPermissions
	}
	return c.AllowOther
}

// ordinaryOptions are mount(8) and fstab options that bpfusefs accepts
// without acting on them: mount(8) passes them to every helper.
var ordinaryOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "user": true, "nouser": true,
	"users": true, "nofail": true, "_netdev": true, "norelatime": true,
	"lazytime": true, "loud": true, "silent": true,
}

// flagOptions are the mount(8) options that set a mount(2) flag, and
// their opposites that clear it, as mount(8) itself applies them.
var flagOptions = map[string]struct {
	flag uintptr
	set  bool
}{
	"nosuid": {unix.MS_NOSUID, true}, "suid": {unix.MS_NOSUID, false},
	"nodev": {unix.MS_NODEV, true}, "dev": {unix.MS_NODEV, false},
	"noexec": {unix.MS_NOEXEC, true}, "exec": {unix.MS_NOEXEC, false},
	"noatime": {unix.MS_NOATIME, true}, "atime": {unix.MS_NOATIME, false},
	"nodiratime": {unix.MS_NODIRATIME, true}, "diratime": {unix.MS_NODIRATIME, false},
	"relatime": {unix.MS_RELATIME, true}, "strictatime": {unix.MS_STRICTATIME, true},
	"sync": {unix.MS_SYNCHRONOUS, true}, "async": {unix.MS_SYNCHRONOUS, false},
}

// parseOptions applies a mount(8)-style -o list. Inside -o a list value
// is separated by ':' (accel=engine:passthrough, mirror=/a:/b) because ','
// separates the options themselves.
func (c *mountConfig) parseOptions(opts string) error {
	for _, opt := range strings.Split(opts, ",") {
		key, value, hasValue := strings.Cut(opt, "=")
		needValue := func() error {
			if !hasValue || value == "" {
				return usagef("-o %s needs a value (%s=...)", key, key)
			}
			return nil
		}
		switch key {
		case "":
		case "ro", "rw":
			c.ReadOnly, c.readOnlySet = key == "ro", true
		case "allow_other":
			c.AllowOther = true
		case "default_permissions", "nodefault_permissions":
			on := key == "default_permissions"
			c.DefaultPermissions = &on
		case "debug":
			c.Debug = true
		case "remount":
			c.Remount = true
		case "fsname":
			if err := needValue(); err != nil {
				return err
			}
			c.FSName = value
		case "accel":
			if err := needValue(); err != nil {
				return err
			}
			c.Accel = strings.ReplaceAll(value, ":", ",")
		case "mirror":
			if err := needValue(); err != nil {
				return err
			}
			c.Mirrors = append(c.Mirrors, strings.Split(value, ":")...)
		case "mirror_repair":
			if err := needValue(); err != nil {
				return err
			}
			c.MirrorRepair = value
		case "log":
			if err := needValue(); err != nil {
				return err
			}
			c.LogFile = value
		default:
			if f, ok := flagOptions[opt]; ok {
				if f.set {
					c.MountFlags |= f.flag
				} else {
					c.MountFlags &^= f.flag
				}
				break
			}
			// Unknown options are ignored rather than refused: mount(8)
			// passes options meant for itself or for other tools
			// (x-systemd.*, comment=, user_id= on remount...).
			if !ordinaryOptions[opt] {
				c.Unknown = append(c.Unknown, opt)
			}
		}
	}
	return nil
}

// argScanner walks a command line in which flags and operands may be
// mixed, as mount(8) mixes them when it calls a helper.
type argScanner struct {
	args     []string
	pos      int
	operands []string
}

// nextFlag returns the next flag, collecting the operands before it; "--"
// makes the rest operands.
func (s *argScanner) nextFlag() (string, bool) {
	for s.pos < len(s.args) {
		arg := s.args[s.pos]
		s.pos++
		switch {
		case arg == "--":
			s.operands = append(s.operands, s.args[s.pos:]...)
			s.pos = len(s.args)
		case !strings.HasPrefix(arg, "-") || arg == "-":
			s.operands = append(s.operands, arg)
		default:
			return arg, true
		}
	}
	return "", false
}

// nextNamedFlag is nextFlag with the flag split at its first "=" into a
// name and an inline value (--accel=none).
func (s *argScanner) nextNamedFlag() (arg, name, inline string, hasInline, ok bool) {
	arg, ok = s.nextFlag()
	name, inline, hasInline = strings.Cut(arg, "=")
	return arg, name, inline, hasInline, ok
}

func (s *argScanner) next() (string, bool) {
	if s.pos >= len(s.args) {
		return "", false
	}
	s.pos++
	return s.args[s.pos-1], true
}

// value returns the value of flag, given inline (--flag=v, -ov) or as the
// next argument.
func (s *argScanner) value(flag, inline string, hasInline bool) (string, error) {
	if hasInline {
		return inline, nil
	}
	v, ok := s.next()
	if !ok {
		return "", usagef("%s needs a value", flag)
	}
	return v, nil
}

// parseMountArgs parses `bpfusefs mount [flags] BACKING MOUNTPOINT`.
// help is set when --help was asked for.
func parseMountArgs(args []string) (cfg mountConfig, help bool, err error) {
	cfg.Accel = "auto"
	s := argScanner{args: args}
	for {
		arg, name, inline, hasInline, ok := s.nextNamedFlag()
		if !ok {
			break
		}
		if strings.HasPrefix(arg, "-o") && !strings.HasPrefix(arg, "--") {
			name, inline, hasInline = "-o", arg[2:], len(arg) > 2
		}
		switch name {
		case "-h", "--help":
			return cfg, true, nil
		case "-d", "--daemon":
			cfg.Daemon = true
		case "--debug":
			cfg.Debug = true
		case "--accel", "--mirror", "--mirror-repair", "--log", "-o":
			v, err := s.value(name, inline, hasInline)
			if err != nil {
				return cfg, false, err
			}
			switch name {
			case "--accel":
				cfg.Accel = v
			case "--mirror":
				cfg.Mirrors = append(cfg.Mirrors, strings.Split(v, ",")...)
			case "--mirror-repair":
				cfg.MirrorRepair = v
			case "--log":
				cfg.LogFile = v
			case "-o":
				if err := cfg.parseOptions(v); err != nil {
					return cfg, false, err
				}
			}
		default:
			return cfg, false, usagef("mount: unknown flag %s", arg)
		}
	}
	return cfg, false, cfg.finish(s.operands)
}

// parseHelperArgs parses mount(8)'s helper command line:
// `mount.fuse.bpfusefs BACKING MOUNTPOINT [-sfnv] [-N NS] [-o OPTS] [-t TYPE]`.
// A helper always runs the daemon in the background: mount(8) waits for it.
func parseHelperArgs(args []string) (mountConfig, error) {
	cfg := mountConfig{Accel: "auto", Daemon: true}
	s := argScanner{args: args}
	for {
		arg, ok := s.nextFlag()
		if !ok {
			break
		}
		switch {
		case arg == "-o" || arg == "-t" || arg == "-N":
			v, err := s.value(arg, "", false)
			if err != nil {
				return cfg, err
			}
			if arg == "-o" {
				if err := cfg.parseOptions(v); err != nil {
					return cfg, err
				}
			} else if arg == "-t" && v != fsType && v != "bpfusefs" {
				return cfg, usagef("mount helper: type %s is not fuse.bpfusefs", v)
			}
			// -N: mount(8) already entered the target namespace for us.
		case strings.HasPrefix(arg, "-o"):
			if err := cfg.parseOptions(arg[2:]); err != nil {
				return cfg, err
			}
		case strings.Trim(arg[1:], "sfnv") == "":
			// -s sloppy, -f fake, -n no mtab, -v verbose: nothing for a
			// FUSE daemon to do (mount(8) handles fake mounts itself).
		default:
			return cfg, usagef("mount helper: unknown flag %s", arg)
		}
	}
	return cfg, cfg.finish(s.operands)
}

// finish checks the operands and the values that need more than parsing.
func (c *mountConfig) finish(operands []string) error {
	if len(operands) != 2 {
		return usagef("mount: want BACKING MOUNTPOINT, got %d operand(s)", len(operands))
	}
	c.Backing, c.Mountpoint = operands[0], operands[1]
	if _, err := features.ParseRequest(c.Accel); err != nil {
		return &usageError{err.Error()}
	}
	for _, m := range c.Mirrors {
		if m == "" {
			return usagef("mount: empty mirror directory in --mirror")
		}
	}
	if c.MirrorRepair != "" && len(c.Mirrors) == 0 {
		return usagef("mount: --mirror-repair needs --mirror")
	}
	return nil
}

// checkMirrorRepair checks that --mirror-repair names one of the replicas,
// once Backing and Mirrors are absolute, and makes it absolute too.
func (c *mountConfig) checkMirrorRepair() error {
	if c.MirrorRepair == "" {
		return nil
	}
	abs, err := filepath.Abs(c.MirrorRepair)
	if err != nil {
		return err
	}
	if abs != c.Backing && !slices.Contains(c.Mirrors, abs) {
		return usagef("mount: --mirror-repair %s is neither BACKING (%s) nor a mirror (%s)",
			abs, c.Backing, strings.Join(c.Mirrors, ", "))
	}
	c.MirrorRepair = abs
	return nil
}
