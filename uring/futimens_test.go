package uring

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestFutimensMatchesSyscall sets the times of one file with OpFutimens and
// of another with utimensat(2), case by case, and compares what fstat(2)
// then reports, ctime included where the two calls should leave it alone.
func TestFutimensMatchesSyscall(t *testing.T) {
	r := newRing(t, 4, nil)
	if !kernelHas(t, OpFutimens) {
		t.Skip("kernel lacks IORING_OP_FUTIMENS (added by kernel/patches/; make vmtest KERNEL=patched)")
	}
	got, want := tempFile(t, []byte("got")), tempFile(t, []byte("want"))
	gotFd, wantFd := int(got.Fd()), int(want.Fd())
	if err := r.RegisterFiles([]int32{int32(gotFd)}); err != nil {
		t.Fatal(err)
	}
	times := pinned(t, new([2]unix.Timespec))
	omit, now := unix.Timespec{Nsec: unix.UTIME_OMIT}, unix.Timespec{Nsec: unix.UTIME_NOW}
	for _, tc := range []struct {
		name  string
		times *[2]unix.Timespec
		fixed bool
	}{
		{"both set", &[2]unix.Timespec{{Sec: 1_600_000_000, Nsec: 1}, {Sec: 1_700_000_000, Nsec: 999_999_999}}, false},
		{"both set, fixed file", &[2]unix.Timespec{{Sec: 5, Nsec: 6}, {Sec: 7, Nsec: 8}}, true},
		{"atime omitted", &[2]unix.Timespec{omit, {Sec: 1_234_567_890, Nsec: 42}}, false},
		{"mtime omitted", &[2]unix.Timespec{{Sec: 987_654_321}, omit}, false},
		{"both omitted", &[2]unix.Timespec{omit, omit}, false},
		{"atime now", &[2]unix.Timespec{now, {Sec: 3}}, false},
		{"both now", nil, false},
	} {
		var before unix.Stat_t
		if err := unix.Fstat(gotFd, &before); err != nil {
			t.Fatal(err)
		}
		// A step past the coarse clock, so a change of ctime shows.
		time.Sleep(10 * time.Millisecond)
		var ts []unix.Timespec
		if tc.times != nil {
			*times = *tc.times
			ts = times[:]
		}
		c := do(t, r, func(s *SQE) {
			if tc.times == nil {
				s.PrepFutimens(gotFd, nil)
			} else {
				s.PrepFutimens(gotFd, times)
			}
			if tc.fixed {
				s.Fd = 0
				s.SetFlags(SQEFixedFile)
			}
		})
		mustRes(t, tc.name, c, 0)
		if err := unix.UtimesNanoAt(wantFd, "", ts, unix.AT_EMPTY_PATH); err != nil {
			t.Fatalf("%s: utimensat(2): %v", tc.name, err)
		}
		var gst, wst unix.Stat_t
		if err := errors.Join(unix.Fstat(gotFd, &gst), unix.Fstat(wantFd, &wst)); err != nil {
			t.Fatal(err)
		}
		checkTime := func(what string, g, w unix.Timespec, set unix.Timespec) {
			t.Helper()
			switch set.Nsec {
			case unix.UTIME_NOW: // both read the clock: at most a moment apart
				if d := unix.TimespecToNsec(g) - unix.TimespecToNsec(w); d < -1e9 || d > 1e9 {
					t.Errorf("%s: %s %v, utimensat(2) set %v", tc.name, what, g, w)
				}
			default:
				if g != w {
					t.Errorf("%s: %s %v, utimensat(2) set %v", tc.name, what, g, w)
				}
			}
		}
		at, mt := now, now
		if tc.times != nil {
			at, mt = tc.times[0], tc.times[1]
		}
		checkTime("atime", gst.Atim, wst.Atim, at)
		checkTime("mtime", gst.Mtim, wst.Mtim, mt)
		if changed := gst.Ctim != before.Ctim; changed != (tc.name != "both omitted") {
			t.Errorf("%s: ctime %v -> %v", tc.name, before.Ctim, gst.Ctim)
		}
	}

	// Bad input fails as utimensat(2) fails.
	*times = [2]unix.Timespec{{Nsec: 1_000_000_000}, {}}
	if c := do(t, r, func(s *SQE) { s.PrepFutimens(gotFd, times) }); !errors.Is(c.Err(), syscall.EINVAL) {
		t.Errorf("nsec 1e9: %v, want EINVAL like utimensat(2): %v", c.Err(), unix.UtimesNanoAt(wantFd, "", times[:], unix.AT_EMPTY_PATH))
	}
	if c := do(t, r, func(s *SQE) { s.PrepFutimens(gotFd, times); s.Len = 1 }); !errors.Is(c.Err(), syscall.EINVAL) {
		t.Errorf("a field that must be zero: %v, want EINVAL", c.Err())
	}
	if c := do(t, r, func(s *SQE) { s.PrepFutimens(gotFd, nil); s.Addr = 8 }); !errors.Is(c.Err(), syscall.EFAULT) {
		t.Errorf("times at address 8: %v, want EFAULT", c.Err())
	}
	if c := do(t, r, func(s *SQE) { s.PrepFutimens(-1, nil) }); !errors.Is(c.Err(), syscall.EBADF) {
		t.Errorf("fd -1: %v, want EBADF", c.Err())
	}
}
