package uring

import (
	"errors"
	"runtime"
	"sync"
	"syscall"
	"testing"
)

var (
	featuresOnce sync.Once
	features     *Features
	featuresErr  error
)

// requireSetup skips t unless the kernel accepts every flag in flags.
func requireSetup(t *testing.T, flags uint32) {
	t.Helper()
	featuresOnce.Do(func() { features, featuresErr = Probe() })
	if errors.Is(featuresErr, ErrUnavailable) {
		t.Skipf("io_uring unavailable: %v", featuresErr)
	}
	if featuresErr != nil {
		t.Fatal(featuresErr)
	}
	if missing := flags &^ features.SetupFlags; missing != 0 {
		t.Skipf("kernel lacks setup flags %v", flagNames(missing, setupNames))
	}
}

// TestSetupFlags pushes NOPs through rings of every supported layout,
// more than the SQ and CQ hold, so that the SQE/CQE stride, the index
// array (or its absence) and wrap-around are all exercised.
func TestSetupFlags(t *testing.T) {
	for _, tc := range []struct {
		name  string
		flags uint32
	}{
		{"default", 0},
		{"SQE128", SetupSQE128},
		{"CQE32", SetupCQE32},
		{"SQE128|CQE32", SetupSQE128 | SetupCQE32},
		{"NO_SQARRAY", SetupNoSQArray},
		{"COOP_TASKRUN|TASKRUN_FLAG", SetupCoopTaskrun | SetupTaskrunFlag},
		{"SINGLE_ISSUER", SetupSingleIssuer},
		{"SINGLE_ISSUER|DEFER_TASKRUN", SetupSingleIssuer | SetupDeferTaskrun},
		{"SUBMIT_ALL", SetupSubmitAll},
		{"CLAMP", SetupClamp},
		{"SQPOLL", SetupSQPoll},
		{"SQ_REWIND", SetupNoSQArray | SetupSQRewind},
		{"SQ_REWIND|SQE128", SetupNoSQArray | SetupSQRewind | SetupSQE128},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireSetup(t, tc.flags)
			// SINGLE_ISSUER binds the ring to the creating thread.
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			r := newRing(t, 4, &Options{Flags: tc.flags})
			if r.Flags()&tc.flags != tc.flags {
				t.Fatalf("ring flags %#x lack %#x", r.Flags(), tc.flags)
			}
			next := uint64(1)
			for round := range 5 {
				batch := uint32(1 + round%int(r.SQEntries()))
				for range batch {
					// With SQPOLL the kernel thread may not have
					// moved the SQ head past the last round yet.
					if err := r.WaitSQSpace(); err != nil {
						t.Fatal(err)
					}
					sqe := r.GetSQE()
					if sqe == nil {
						t.Fatalf("round %d: no free SQE after WaitSQSpace", round)
					}
					sqe.PrepNop()
					sqe.SetUserData(next)
					next++
				}
				first := next - uint64(batch)
				got := submitAll(t, r, batch)
				for ud := first; ud < next; ud++ {
					if c, ok := got[ud]; !ok || c.Res != 0 {
						t.Fatalf("round %d: CQE for %d: %+v present=%v (all: %v)", round, ud, c, ok, got)
					}
				}
			}
			if tc.flags&SetupSQE128 != 0 {
				// The second half of a 128-byte SQE comes back zeroed.
				sqe := r.GetSQE()
				for i := range sqe.Cmd() {
					if sqe.Cmd()[i] != 0 {
						t.Fatalf("GetSQE left command byte %d set", i)
					}
					sqe.Cmd()[i] = 0xff
				}
				sqe.PrepNop()
				submitAll(t, r, 1)
			}
		})
	}
}

func TestSubmitAllKeepsGoing(t *testing.T) {
	for _, all := range []bool{false, true} {
		var flags uint32
		if all {
			flags = SetupSubmitAll
		}
		r := newRing(t, 4, &Options{Flags: flags})
		bad := r.GetSQE()
		bad.PrepNop()
		bad.Opcode = 250 // no such opcode: fails while submitting
		bad.SetUserData(1)
		r.GetSQE().PrepNop()
		r.GetSQE().PrepNop()
		n, err := r.Submit()
		if err != nil {
			t.Fatalf("SUBMIT_ALL=%v: Submit: %v", all, err)
		}
		if want := map[bool]int{false: 1, true: 3}[all]; n != want {
			t.Fatalf("SUBMIT_ALL=%v: Submit consumed %d SQEs, want %d", all, n, want)
		}
		c, err := r.WaitCQE()
		if err != nil || c.UserData != 1 || !errors.Is(c.Err(), syscall.EINVAL) {
			t.Fatalf("CQE of the bad SQE: %+v, %v", c, err)
		}
		r.CQESeen()
	}
}

func TestCQOverflow(t *testing.T) {
	r := newRing(t, 4, &Options{CQEntries: 4})
	if r.Features()&FeatNoDrop == 0 {
		t.Skip("kernel without IORING_FEAT_NODROP drops overflowing CQEs")
	}
	const total = 14
	for ud := uint64(0); ud < total; {
		for range 2 {
			sqe := r.GetSQE()
			sqe.PrepNop()
			sqe.SetUserData(ud)
			ud++
		}
		if _, err := r.Submit(); err != nil {
			t.Fatalf("Submit with %d CQEs unreaped: %v", ud, err)
		}
	}
	if r.CQReady() != r.CQEntries() || r.SQFlags()&SQCQOverflow == 0 {
		t.Fatalf("after %d NOPs: %d ready of %d, SQ flags %#x: want a full CQ flagged as overflowed",
			total, r.CQReady(), r.CQEntries(), r.SQFlags())
	}
	// Reaping in order flushes the overflow list back into the CQ.
	cqes := make([]*CQE, 3)
	for want := uint64(0); want < total; {
		n := r.PeekCQEs(cqes)
		if n == 0 {
			t.Fatalf("no CQE after %d of %d (SQ flags %#x)", want, total, r.SQFlags())
		}
		for _, c := range cqes[:n] {
			if c.UserData != want {
				t.Fatalf("CQE %d has user data %d: order lost in overflow", want, c.UserData)
			}
			want++
		}
		r.CQAdvance(uint32(n))
	}
	if r.SQFlags()&SQCQOverflow != 0 || r.CQOverflow() != 0 || r.CQReady() != 0 {
		t.Fatalf("after reaping: SQ flags %#x, dropped %d, ready %d", r.SQFlags(), r.CQOverflow(), r.CQReady())
	}
}

func TestUnavailableIsClear(t *testing.T) {
	err := setupError(syscall.ENOSYS)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, syscall.ENOSYS) {
		t.Fatalf("ENOSYS from io_uring_setup: %v", err)
	}
	t.Log(err)
}

func TestBigCQE(t *testing.T) {
	r := newRing(t, 4, &Options{Flags: SetupCQE32})
	for i := range uint64(6) { // more than the SQ: the 32-byte stride wraps
		sqe := r.GetSQE()
		sqe.PrepNop()
		sqe.OpFlags = NopCQE32
		sqe.Off, sqe.Addr = 0x1000+i, 0x2000+i
		sqe.SetUserData(i)
		if _, err := r.SubmitAndWait(1); err != nil {
			t.Fatal(err)
		}
		c, err := r.WaitCQE()
		if err != nil {
			t.Fatal(err)
		}
		if errors.Is(c.Err(), syscall.EINVAL) {
			t.Skip("kernel lacks IORING_NOP_CQE32")
		}
		if c.UserData != i || c.Res != 0 || c.Big()[0] != 0x1000+i || c.Big()[1] != 0x2000+i {
			t.Fatalf("CQE %d: %+v big %#x", i, *c, *c.Big())
		}
		r.CQESeen()
	}
}
