package uring

import (
	"errors"
	"os"
	"runtime"
	"slices"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// requireExtraCQ skips t on kernels without our series' IORING_REGISTER_CQ.
func requireExtraCQ(t *testing.T) {
	t.Helper()
	last, err := probeRegisterLast()
	if err != nil {
		t.Fatal(err)
	}
	if last <= RegisterCQ {
		t.Skip("kernel lacks IORING_REGISTER_CQ (added by kernel/patches/; make vmtest KERNEL=patched)")
	}
}

func registerCQ(t *testing.T, r *Ring, entries uint32, mask, value uint64) *ExtraCQ {
	t.Helper()
	q, err := r.RegisterCQ(entries, mask, value)
	if err != nil {
		t.Fatalf("RegisterCQ(%d, %#x, %#x): %v", entries, mask, value, err)
	}
	return q
}

// queueNops queues one NOP per user_data and submits them; NOPs complete
// inline, so every CQE is posted when Submit returns.
func queueNops(t *testing.T, r *Ring, userData ...uint64) {
	t.Helper()
	for _, ud := range userData {
		s := r.GetSQE()
		if s == nil {
			t.Fatal("SQ full")
		}
		s.PrepNop()
		s.UserData = ud
	}
	if n, err := r.Submit(); err != nil || n != len(userData) {
		t.Fatalf("Submit: %d, %v; want %d", n, err, len(userData))
	}
}

// reap consumes the ready CQEs of one queue and returns their user_data.
func reapAll(peek func([]*CQE) int, advance func(uint32)) []uint64 {
	var got []uint64
	cqes := make([]*CQE, 64)
	for {
		n := peek(cqes)
		if n == 0 {
			return got
		}
		for _, c := range cqes[:n] {
			got = append(got, c.UserData)
		}
		advance(uint32(n))
	}
}

func reapExtra(q *ExtraCQ) []uint64 { return reapAll(q.Peek, q.Advance) }
func reapRing(r *Ring) []uint64     { return reapAll(r.PeekCQEs, r.CQAdvance) }

func TestExtraCQSteersByUserData(t *testing.T) {
	requireExtraCQ(t)
	r := newRing(t, 16, nil)
	q := registerCQ(t, r, 8, 0xff00, 0x0100)
	if q.ID != 1 || q.Entries() != 8 {
		t.Fatalf("first extra CQ: ID %d, %d entries; want 1, 8", q.ID, q.Entries())
	}
	queueNops(t, r, 0x0101, 0x0002, 0x0103, 0x0200, 0x01ff, 0x1100)
	if got, want := reapExtra(q), []uint64{0x0101, 0x0103, 0x01ff}; !slices.Equal(got, want) {
		t.Errorf("extra CQ: %#x, want %#x", got, want)
	}
	if got, want := reapRing(r), []uint64{0x0002, 0x0200, 0x1100}; !slices.Equal(got, want) {
		t.Errorf("ring's CQ: %#x, want %#x", got, want)
	}
	if q.Overflow() != 0 {
		t.Errorf("overflow %d with room to spare", q.Overflow())
	}
}

func TestExtraCQFirstMatchTakesIt(t *testing.T) {
	requireExtraCQ(t)
	r := newRing(t, 16, nil)
	tagged := registerCQ(t, r, 4, 1<<63, 1<<63)
	rest := registerCQ(t, r, 4, 0, 0) // matches everything
	if tagged.ID != 1 || rest.ID != 2 {
		t.Fatalf("IDs %d, %d; want 1, 2", tagged.ID, rest.ID)
	}
	queueNops(t, r, 1<<63|1, 2, 1<<63|3, 4)
	if got, want := reapExtra(tagged), []uint64{1<<63 | 1, 1<<63 | 3}; !slices.Equal(got, want) {
		t.Errorf("CQ 1: %#x, want %#x", got, want)
	}
	if got, want := reapExtra(rest), []uint64{2, 4}; !slices.Equal(got, want) {
		t.Errorf("CQ 2: %#x, want %#x", got, want)
	}
	if got := reapRing(r); len(got) != 0 {
		t.Errorf("ring's CQ got %#x; every CQE matches an extra CQ", got)
	}
}

// A full extra CQ passes CQEs on to the ring's CQ, counted; none is lost,
// and the CQ takes them again once the consumer makes room.
func TestExtraCQFullSpillsToRingCQ(t *testing.T) {
	requireExtraCQ(t)
	r := newRing(t, 16, nil)
	q := registerCQ(t, r, 2, 1<<63, 1<<63)
	queueNops(t, r, 1<<63|1, 1<<63|2, 1<<63|3, 1<<63|4, 1<<63|5)
	if got := q.Overflow(); got != 3 {
		t.Errorf("overflow %d, want 3", got)
	}
	if got, want := reapExtra(q), []uint64{1<<63 | 1, 1<<63 | 2}; !slices.Equal(got, want) {
		t.Errorf("extra CQ: %#x, want %#x", got, want)
	}
	if got, want := reapRing(r), []uint64{1<<63 | 3, 1<<63 | 4, 1<<63 | 5}; !slices.Equal(got, want) {
		t.Errorf("ring's CQ: %#x, want %#x", got, want)
	}
	queueNops(t, r, 1<<63|6)
	if got, want := reapExtra(q), []uint64{1<<63 | 6}; !slices.Equal(got, want) {
		t.Errorf("extra CQ after making room: %#x, want %#x", got, want)
	}
}

// A stopped CQ takes no more CQEs, and what it holds stays readable.
func TestExtraCQStop(t *testing.T) {
	requireExtraCQ(t)
	r := newRing(t, 8, nil)
	q := registerCQ(t, r, 4, 0, 0)
	queueNops(t, r, 1)
	if err := q.Stop(); err != nil {
		t.Fatal(err)
	}
	queueNops(t, r, 2)
	if got := reapExtra(q); !slices.Equal(got, []uint64{1}) {
		t.Errorf("stopped CQ holds %#x, want the 0x1 from before", got)
	}
	if got := reapRing(r); !slices.Equal(got, []uint64{2}) {
		t.Errorf("ring's CQ: %#x, want the 0x2 from after the stop", got)
	}
	bogus := *q
	bogus.ID = 2
	if err := bogus.Stop(); !errors.Is(err, syscall.EINVAL) {
		t.Errorf("stopping a CQ that does not exist: %v, want EINVAL", err)
	}
}

// Waiting on an extra CQ returns for its CQEs, not for the ring's: a NOP
// completing at once on the ring's CQ must not end a wait for a timeout
// that completes on the extra CQ later.
func TestExtraCQWait(t *testing.T) {
	requireExtraCQ(t)
	for _, tc := range []struct {
		name  string
		flags uint32
	}{
		{"task work at once", 0},
		{"deferred task work", SetupSingleIssuer | SetupDeferTaskrun},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// SINGLE_ISSUER binds the ring to the creating thread;
			// unlocked after the ring is closed.
			runtime.LockOSThread()
			t.Cleanup(runtime.UnlockOSThread)
			r := newRing(t, 8, &Options{Flags: tc.flags})
			q := registerCQ(t, r, 4, 1<<63, 1<<63)
			ts := DurationTimespec(20 * time.Millisecond)
			s := r.GetSQE()
			s.PrepTimeout(&ts, 0, 0)
			s.UserData = 1<<63 | 7
			s = r.GetSQE()
			s.PrepNop()
			s.UserData = 8
			if _, err := r.Submit(); err != nil {
				t.Fatal(err)
			}
			if err := q.Wait(1); err != nil {
				t.Fatal(err)
			}
			var c [1]*CQE
			if q.Peek(c[:]) != 1 || c[0].UserData != 1<<63|7 || !errors.Is(c[0].Err(), syscall.ETIME) {
				t.Fatalf("after the wait the extra CQ holds %d CQEs (%+v), want the timeout's with ETIME", q.Ready(), c[0])
			}
			if got := reapRing(r); !slices.Equal(got, []uint64{8}) {
				t.Errorf("ring's CQ: %#x, want the NOP's 0x8", got)
			}
		})
	}
}

// registerCQRaw passes reg to the kernel as is, past RegisterCQ's checks.
func registerCQRaw(r *Ring, reg cqReg, size uint64) error {
	desc := regionDesc{size: size}
	reg.regionUptr = uint64(uintptr(unsafe.Pointer(&desc)))
	_, err := register(r.fd, RegisterCQ, unsafe.Pointer(&reg), 1)
	return err
}

func TestRegisterCQRejects(t *testing.T) {
	requireExtraCQ(t)
	page := uint64(os.Getpagesize())
	for _, tc := range []struct {
		name  string
		flags uint32
		reg   cqReg
		size  uint64
		want  error
	}{
		{"entries not a power of two", 0, cqReg{entries: 3}, page, syscall.EINVAL},
		{"no entries", 0, cqReg{}, page, syscall.EINVAL},
		{"value outside mask", 0, cqReg{entries: 4, mask: 1, value: 2}, page, syscall.EINVAL},
		{"unknown flags", 0, cqReg{entries: 4, flags: 1}, page, syscall.EINVAL},
		{"region smaller than the CQ", 0, cqReg{entries: 1024}, page, syscall.EINVAL},
		{"32-byte CQEs", SetupCQE32, cqReg{entries: 4}, page, syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRing(t, 4, &Options{Flags: tc.flags})
			if err := registerCQRaw(r, tc.reg, tc.size); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}

	t.Run("more than eight", func(t *testing.T) {
		r := newRing(t, 4, nil)
		for i := range 8 {
			registerCQ(t, r, 2, 0xff, uint64(i))
		}
		if _, err := r.RegisterCQ(2, 0xff, 8); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("ninth CQ: %v, want ENOSPC", err)
		}
	})
	t.Run("wait on a CQ that does not exist", func(t *testing.T) {
		r := newRing(t, 4, nil)
		q := registerCQ(t, r, 2, 1, 1)
		q.ID = 2
		if err := q.Wait(1); !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("got %v, want EINVAL", err)
		}
	})
}

func TestVerifyRegisterCQ(t *testing.T) {
	last, err := probeRegisterLast()
	if err != nil {
		t.Fatal(err)
	}
	err = VerifyRegisterCQ()
	if (last > RegisterCQ) != (err == nil) {
		t.Errorf("kernel knows IORING_%v: %v; its check: %v", RegisterCQ, last > RegisterCQ, err)
	}
	t.Logf("IORING_%v known %v, check: %v", RegisterCQ, last > RegisterCQ, err)
}
