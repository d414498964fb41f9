package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func boolPtr(b bool) *bool { return &b }

func TestParseMountArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    mountConfig
		wantErr string
	}{
		{
			name: "defaults",
			args: []string{"/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto"},
		},
		{
			name: "flags before and after operands",
			args: []string{"-d", "/b", "--accel", "engine,passthrough", "/m", "--debug"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "engine,passthrough", Daemon: true, Debug: true},
		},
		{
			name: "inline values",
			args: []string{"--accel=none", "--mirror=/r1,/r2", "--log=/tmp/l", "--daemon", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "none", Mirrors: []string{"/r1", "/r2"}, LogFile: "/tmp/l", Daemon: true},
		},
		{
			name: "repeated --mirror accumulates",
			args: []string{"--mirror", "/r1", "--mirror", "/r2", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Mirrors: []string{"/r1", "/r2"}},
		},
		{
			name: "-o with every known option",
			args: []string{"-o", "ro,allow_other,debug,fsname=data,accel=engine:passthrough,mirror=/r1:/r2,log=/l", "/b", "/m"},
			want: mountConfig{
				Backing: "/b", Mountpoint: "/m", Accel: "engine,passthrough", Mirrors: []string{"/r1", "/r2"},
				ReadOnly: true, readOnlySet: true, AllowOther: true, Debug: true, FSName: "data", LogFile: "/l",
			},
		},
		{
			name: "--mirror-repair",
			args: []string{"--mirror", "/r1,/r2", "--mirror-repair", "/r2", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Mirrors: []string{"/r1", "/r2"}, MirrorRepair: "/r2"},
		},
		{
			name: "--mirror-repair= inline, before --mirror",
			args: []string{"--mirror-repair=/b", "/b", "/m", "--mirror=/r1"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Mirrors: []string{"/r1"}, MirrorRepair: "/b"},
		},
		{
			name: "-o mirror_repair",
			args: []string{"-o", "mirror=/r1:/r2,mirror_repair=/r1", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Mirrors: []string{"/r1", "/r2"}, MirrorRepair: "/r1"},
		},
		{
			name: "-oOPTS glued, rw after ro wins",
			args: []string{"-oro,rw", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", readOnlySet: true},
		},
		{
			name: "flag options set mount flags, ordinary and unknown options are accepted",
			args: []string{"-o", "noatime,nosuid,nodev,noexec,exec,_netdev,nofail,x-systemd.automount,frobnicate=3", "/b", "/m"},
			want: mountConfig{
				Backing: "/b", Mountpoint: "/m", Accel: "auto",
				MountFlags: unix.MS_NOATIME | unix.MS_NOSUID | unix.MS_NODEV,
				Unknown:    []string{"x-systemd.automount", "frobnicate=3"},
			},
		},
		{
			name: "nodefault_permissions",
			args: []string{"-o", "allow_other,nodefault_permissions", "/b", "/m"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", AllowOther: true, DefaultPermissions: boolPtr(false)},
		},
		{
			name: "-- ends flags",
			args: []string{"--", "-b", "/m"},
			want: mountConfig{Backing: "-b", Mountpoint: "/m", Accel: "auto"},
		},
		{name: "missing operand", args: []string{"/b"}, wantErr: "want BACKING MOUNTPOINT, got 1"},
		{name: "extra operand", args: []string{"/b", "/m", "/x"}, wantErr: "got 3"},
		{name: "unknown flag", args: []string{"--turbo", "/b", "/m"}, wantErr: "unknown flag --turbo"},
		{name: "unknown accel", args: []string{"--accel", "warp", "/b", "/m"}, wantErr: `unknown accel "warp"`},
		{name: "unknown accel in -o", args: []string{"-o", "accel=engine:warp", "/b", "/m"}, wantErr: `unknown accel "warp"`},
		{name: "flag without value", args: []string{"/b", "/m", "--accel"}, wantErr: "--accel needs a value"},
		{name: "-o without value", args: []string{"/b", "/m", "-o"}, wantErr: "-o needs a value"},
		{name: "fsname without value", args: []string{"-o", "fsname", "/b", "/m"}, wantErr: "-o fsname needs a value"},
		{name: "empty mirror", args: []string{"--mirror", "/a,,/c", "/b", "/m"}, wantErr: "empty mirror"},
		{name: "mirror-repair without mirrors", args: []string{"--mirror-repair", "/b", "/b", "/m"}, wantErr: "--mirror-repair needs --mirror"},
		{name: "mirror-repair without value", args: []string{"--mirror", "/r", "/b", "/m", "--mirror-repair"}, wantErr: "--mirror-repair needs a value"},
		{name: "-o mirror_repair without value", args: []string{"-o", "mirror=/r,mirror_repair=", "/b", "/m"}, wantErr: "-o mirror_repair needs a value"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, help, err := parseMountArgs(tt.args)
			if help {
				t.Fatal("help requested")
			}
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseMountArgsHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"/b", "-h"}} {
		if _, help, _ := parseMountArgs(args); !help {
			t.Errorf("parseMountArgs(%q) did not ask for help", args)
		}
	}
}

// TestParseHelperArgs covers the command lines mount(8) gives a helper
// (util-linux libmount exec_helper), fstab lines and xfstests remounts.
func TestParseHelperArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    mountConfig
		wantErr string
	}{
		{
			name: "mount -t fuse.bpfusefs B M -o accel=auto",
			args: []string{"/b", "/m", "-o", "rw,accel=auto"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, readOnlySet: true},
		},
		{
			name: "fstab line with the usual flags, -n and -v",
			args: []string{"/b", "/m", "-n", "-v", "-o", "rw,noatime,nosuid,nodev,_netdev,allow_other,default_permissions"},
			want: mountConfig{
				Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, readOnlySet: true,
				AllowOther: true, DefaultPermissions: boolPtr(true),
				MountFlags: unix.MS_NOATIME | unix.MS_NOSUID | unix.MS_NODEV,
			},
		},
		{
			name: "type and namespace arguments",
			args: []string{"/b", "/m", "-sfnv", "-N", "/proc/1/fd/5", "-o", "ro", "-t", "fuse.bpfusefs"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, ReadOnly: true, readOnlySet: true},
		},
		{
			name: "xfstests remount read-only",
			args: []string{"/b", "/m", "-o", "remount,ro,user_id=0,group_id=0"},
			want: mountConfig{
				Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, Remount: true,
				ReadOnly: true, readOnlySet: true, Unknown: []string{"user_id=0", "group_id=0"},
			},
		},
		{
			name: "remount without ro or rw",
			args: []string{"/b", "/m", "-o", "remount"},
			want: mountConfig{Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, Remount: true},
		},
		{name: "wrong type", args: []string{"/b", "/m", "-t", "fuse.sshfs"}, wantErr: "is not fuse.bpfusefs"},
		{name: "bad flag", args: []string{"/b", "/m", "-x"}, wantErr: "unknown flag -x"},
		{name: "one operand", args: []string{"/m", "-o", "ro"}, wantErr: "got 1 operand"},
		{
			name: "fstab line with mirrors and a repair source",
			args: []string{"/b", "/m", "-o", "rw,mirror=/r1:/r2,mirror_repair=/r2"},
			want: mountConfig{
				Backing: "/b", Mountpoint: "/m", Accel: "auto", Daemon: true, readOnlySet: true,
				Mirrors: []string{"/r1", "/r2"}, MirrorRepair: "/r2",
			},
		},
		{name: "mirror_repair without mirror", args: []string{"/b", "/m", "-o", "mirror_repair=/b"}, wantErr: "needs --mirror"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHelperArgs(tt.args)
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func checkParse(t *testing.T, got mountConfig, err error, want mountConfig, wantErr string) {
	t.Helper()
	if wantErr != "" {
		var uerr *usageError
		if err == nil || !strings.Contains(err.Error(), wantErr) || !errors.As(err, &uerr) {
			t.Fatalf("error = %v, want usage error containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
}

// TestCheckMirrorRepair covers the check made once the paths are
// absolute: the repair source must be one of the replicas.
func TestCheckMirrorRepair(t *testing.T) {
	t.Chdir(t.TempDir())
	cwd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	base := filepath.Base(cwd)
	tests := []struct {
		repair, want, wantErr string
	}{
		{repair: "", want: ""},
		{repair: cwd + "/b", want: cwd + "/b"},
		{repair: cwd + "/r2/", want: cwd + "/r2"},
		{repair: "r1", want: cwd + "/r1"},
		{repair: "../" + base + "/./b", want: cwd + "/b"},
		{repair: cwd + "/other", wantErr: fmt.Sprintf("is neither BACKING (%s/b) nor a mirror (%[1]s/r1, %[1]s/r2)", cwd)},
		{repair: cwd + "/b/sub", wantErr: "is neither"},
	}
	for _, tt := range tests {
		c := mountConfig{Backing: cwd + "/b", Mirrors: []string{cwd + "/r1", cwd + "/r2"}, MirrorRepair: tt.repair}
		err := c.checkMirrorRepair()
		var uerr *usageError
		switch {
		case tt.wantErr != "":
			if err == nil || !errors.As(err, &uerr) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q: error %v, want usage error containing %q", tt.repair, err, tt.wantErr)
			}
		case err != nil:
			t.Errorf("%q: %v", tt.repair, err)
		case c.MirrorRepair != tt.want:
			t.Errorf("%q: MirrorRepair = %q, want %q", tt.repair, c.MirrorRepair, tt.want)
		}
	}
}

func TestDefaultPermissions(t *testing.T) {
	tests := []struct {
		opts string
		want bool
	}{
		{"rw", false},
		{"allow_other", true},
		{"allow_other,nodefault_permissions", false},
		{"default_permissions", true},
	}
	for _, tt := range tests {
		var c mountConfig
		if err := c.parseOptions(tt.opts); err != nil {
			t.Fatal(err)
		}
		if got := c.defaultPermissions(); got != tt.want {
			t.Errorf("-o %s: default_permissions = %v, want %v", tt.opts, got, tt.want)
		}
	}
}
