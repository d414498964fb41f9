package uring

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func pipe(t *testing.T) (r, w int) {
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(p[0]); unix.Close(p[1]) })
	return p[0], p[1]
}

func wantErr(t *testing.T, what string, c CQE, want syscall.Errno) {
	t.Helper()
	if !errors.Is(c.Err(), want) {
		t.Errorf("%s: res %d (%v), want %v", what, c.Res, c.Err(), want)
	}
}

func TestLinkChainFailingHead(t *testing.T) {
	r := newRing(t, 8, nil)
	f := tempFile(t, []byte("untouched"))
	for _, tc := range []struct {
		link     uint8
		wantRest syscall.Errno // 0: the rest runs
	}{{SQEIOLink, syscall.ECANCELED}, {SQEIOHardlink, 0}} {
		sqe := r.GetSQE()
		sqe.PrepRead(-1, pinnedBytes(t, make([]byte, 4)), 0) // fails with EBADF
		sqe.SetFlags(tc.link)
		sqe.SetUserData(1)
		sqe = r.GetSQE()
		sqe.PrepWrite(int(f.Fd()), pinnedBytes(t, []byte("CHAINED")), 0)
		sqe.SetFlags(tc.link)
		sqe.SetUserData(2)
		sqe = r.GetSQE()
		sqe.PrepNop()
		sqe.SetUserData(3)
		got := submitAll(t, r, 3)
		wantErr(t, "head", got[1], syscall.EBADF)
		if tc.wantRest != 0 {
			wantErr(t, "linked write", got[2], tc.wantRest)
			wantErr(t, "linked nop", got[3], tc.wantRest)
			buf := make([]byte, 9)
			unix.Pread(int(f.Fd()), buf, 0)
			if string(buf) != "untouched" {
				t.Fatalf("cancelled write changed the file: %q", buf)
			}
		} else if got[2].Res != 7 || got[3].Res != 0 {
			t.Errorf("hardlinked chain: write %d nop %d, want 7 and 0", got[2].Res, got[3].Res)
		}
	}
}

func TestTimeout(t *testing.T) {
	r := newRing(t, 8, nil)
	ts := pinned(t, new(DurationTimespec(5*time.Millisecond)))
	wantErr(t, "pure timeout", do(t, r, func(s *SQE) { s.PrepTimeout(ts, 0, 0) }), syscall.ETIME)

	// A count timeout completes with 0 once that many other CQEs posted.
	long := pinned(t, new(DurationTimespec(time.Minute)))
	sqe := r.GetSQE()
	sqe.PrepTimeout(long, 1, 0)
	sqe.SetUserData(1)
	sqe = r.GetSQE()
	sqe.PrepNop()
	sqe.SetUserData(2)
	got := submitAll(t, r, 2)
	if got[1].Res != 0 || got[2].Res != 0 {
		t.Fatalf("count timeout %d, nop %d; want 0, 0", got[1].Res, got[2].Res)
	}
}

func TestLinkTimeoutCancelsStuckRead(t *testing.T) {
	r := newRing(t, 8, nil)
	rfd, _ := pipe(t)
	buf := pinnedBytes(t, make([]byte, 8))
	ts := pinned(t, new(DurationTimespec(10*time.Millisecond)))
	sqe := r.GetSQE()
	sqe.PrepRead(rfd, buf, 0) // an empty pipe never completes
	sqe.SetFlags(SQEIOLink)
	sqe.SetUserData(1)
	sqe = r.GetSQE()
	sqe.PrepLinkTimeout(ts, 0)
	sqe.SetUserData(2)
	got := submitAll(t, r, 2)
	wantErr(t, "read", got[1], syscall.ECANCELED)
	wantErr(t, "link timeout", got[2], syscall.ETIME)
}

func TestCancel(t *testing.T) {
	r := newRing(t, 8, nil)
	rfd, _ := pipe(t)
	buf := pinnedBytes(t, make([]byte, 8))
	sqe := r.GetSQE()
	sqe.PrepRead(rfd, buf, 0)
	sqe.SetUserData(7)
	if _, err := r.Submit(); err != nil {
		t.Fatal(err)
	}
	sqe = r.GetSQE()
	sqe.PrepCancel(7, 0)
	sqe.SetUserData(8)
	sqe = r.GetSQE()
	sqe.PrepCancel(12345, 0)
	sqe.SetUserData(9)
	got := submitAll(t, r, 3)
	wantErr(t, "cancelled read", got[7], syscall.ECANCELED)
	if got[8].Res != 0 {
		t.Errorf("cancel: res %d, want 0", got[8].Res)
	}
	wantErr(t, "cancel of unknown request", got[9], syscall.ENOENT)

	sqe = r.GetSQE()
	sqe.PrepRead(rfd, buf, 0)
	sqe.SetUserData(10)
	r.Submit()
	sqe = r.GetSQE()
	sqe.PrepCancelFd(rfd, 0)
	sqe.SetUserData(11)
	got = submitAll(t, r, 2)
	wantErr(t, "read cancelled by fd", got[10], syscall.ECANCELED)
	if got[11].Res != 0 {
		t.Errorf("cancel by fd: res %d", got[11].Res)
	}
}

func TestWaitTimeout(t *testing.T) {
	r := newRing(t, 4, nil)
	if _, err := r.WaitCQETimeout(5 * time.Millisecond); !errors.Is(err, syscall.ETIME) {
		t.Fatalf("WaitCQETimeout on an idle ring: %v, want ETIME", err)
	}
	r.GetSQE().PrepNop()
	if n, err := r.SubmitAndWaitTimeout(1, time.Second); err != nil || n != 1 {
		t.Fatalf("SubmitAndWaitTimeout = %d, %v", n, err)
	}
	c, err := r.WaitCQETimeout(time.Second)
	if err != nil || c.Res != 0 {
		t.Fatalf("WaitCQETimeout after a NOP: %v, %v", c, err)
	}
	r.CQESeen()
	if r.CQReady() != 0 {
		t.Fatalf("CQReady %d after consuming the only CQE", r.CQReady())
	}
}
