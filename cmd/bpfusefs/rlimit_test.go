package main

import (
	"testing"

	"golang.org/x/sys/unix"

	"github.com/bpfusefs/bpfusefs/features"
)

// TestRaiseFileLimit checks that the daemon's descriptor limit ends at
// fs.nr_open (at most maxFiles) when it may raise the hard limit, and
// never drops.
func TestRaiseFileLimit(t *testing.T) {
	var before, after unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &before); err != nil {
		t.Fatal(err)
	}
	got := raiseFileLimit()
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &after); err != nil {
		t.Fatal(err)
	}
	if got != after.Cur || after.Cur < before.Cur || after.Max < before.Max {
		t.Fatalf("limit %d/%d -> %d/%d, reported %d", before.Cur, before.Max, after.Cur, after.Max, got)
	}
	if !features.HasCapability(unix.CAP_SYS_RESOURCE) {
		t.Skipf("no CAP_SYS_RESOURCE: the hard limit %d stays", before.Max)
	}
	if want := wantedFileLimit(); after.Cur < want {
		t.Errorf("with CAP_SYS_RESOURCE: limit %d, want %d", after.Cur, want)
	}
}
