package uring

import (
	"errors"
	"testing"
)

func TestProbe(t *testing.T) {
	f, err := Probe()
	if errors.Is(err, ErrUnavailable) {
		t.Skipf("io_uring unavailable: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", f)
	for _, op := range []Op{OpNop, OpRead, OpWrite, OpReadFixed, OpUringCmd} {
		if !f.HasOp(op) {
			t.Errorf("kernel lacks %v, which every kernel since 5.19 has", op)
		}
	}
	if !f.HasSetup(SetupSQE128 | SetupCQE32 | SetupSingleIssuer | SetupDeferTaskrun) {
		t.Errorf("setup flags %#x lack SQE128/CQE32/SINGLE_ISSUER/DEFER_TASKRUN", f.SetupFlags)
	}
	if !f.HasRegister(RegisterRingFds) || f.HasRegister(255) {
		t.Errorf("register ops below %d: RING_FDS known=%v", f.RegisterOps, f.HasRegister(RegisterRingFds))
	}
}
