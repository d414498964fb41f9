package features

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

// TestReportJSONShape checks the contract of `bpfusefs doctor --json`:
// "accel" maps every acceleration and patched feature to {available,
// reason}, with a reason whenever unavailable, and "auto" lists exactly
// the available accelerations.
func TestReportJSONShape(t *testing.T) {
	r := Probe(func(s Set) error {
		if s.Fusering {
			return errors.New("not in this build")
		}
		return nil
	})
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Accel map[string]map[string]any `json:"accel"`
		Auto  []string                  `json:"auto"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Auto == nil {
		t.Errorf(`"auto" is missing or null in %s`, b)
	}
	for _, n := range append(slices.Clone(Accels), Patched...) {
		st, ok := doc.Accel[string(n)]
		if !ok {
			t.Errorf(`"accel" has no %q`, n)
			continue
		}
		avail, ok := st["available"].(bool)
		if !ok {
			t.Errorf(`accel %s: "available" is %v, want a bool`, n, st["available"])
		}
		reason, ok := st["reason"].(string)
		if !ok {
			t.Errorf(`accel %s: "reason" is %v, want a string`, n, st["reason"])
		}
		if !avail && reason == "" {
			t.Errorf("accel %s unavailable without a reason", n)
		}
		if slices.Contains(Accels, n) && avail != slices.Contains(doc.Auto, string(n)) {
			t.Errorf("accel %s available=%v but auto=%v", n, avail, doc.Auto)
		}
	}
	if st := r.Accel[Fusering]; st.Available {
		t.Errorf("fusering available although not implemented: %+v", st)
	}
}

func TestProbeHonoursEnvDisable(t *testing.T) {
	t.Setenv(EnvDisable, "engine,passthrough")
	r := Probe(acceptAll)
	for _, n := range []Name{Engine, Passthrough} {
		if r.Accel[n].Available || slices.Contains(r.Auto, n) {
			t.Errorf("%s still available with %s set: %+v, auto %v", n, EnvDisable, r.Accel[n], r.Auto)
		}
	}
}
