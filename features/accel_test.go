package features

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestParseRequest(t *testing.T) {
	tests := []struct {
		spec    string
		want    Request
		wantErr string
	}{
		{spec: "auto", want: Request{Auto: true}},
		{spec: "", want: Request{Auto: true}},
		{spec: "none", want: Request{}},
		{spec: "engine", want: Request{Names: []Name{Engine}}},
		{spec: "passthrough,engine", want: Request{Names: []Name{Passthrough, Engine}}},
		{spec: "engine, fusering ,engine", want: Request{Names: []Name{Engine, Fusering}}},
		{spec: "bpf", want: Request{Names: []Name{BPF}}},
		{spec: "turbo", wantErr: `unknown accel "turbo"`},
		{spec: "engine,", wantErr: `unknown accel ""`},
		{spec: "multi_cq", wantErr: `unknown accel "multi_cq"`},
		{spec: "auto,engine", wantErr: `"auto" cannot be combined`},
		{spec: "engine,none", wantErr: `"none" cannot be combined`},
	}
	for _, tt := range tests {
		got, err := ParseRequest(tt.spec)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseRequest(%q) error = %v, want %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseRequest(%q): %v", tt.spec, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseRequest(%q) = %+v, want %+v", tt.spec, got, tt.want)
		}
	}
}

func TestResolve(t *testing.T) {
	avail := map[Name]Status{
		Engine:      available(),
		Passthrough: available(),
		Fusering:    unavailable("enable_uring is N"),
		BPF:         unavailable("kernel lacks io_uring bpf-ops"),
	}
	tests := []struct {
		spec    string
		want    Set
		wantErr string
	}{
		{spec: "auto", want: Set{Engine: true, Passthrough: true}},
		{spec: "none", want: Set{}},
		{spec: "engine", want: Set{Engine: true}},
		{spec: "engine,passthrough", want: Set{Engine: true, Passthrough: true}},
		{spec: "fusering", wantErr: "accel fusering is not available: enable_uring is N"},
		{spec: "engine,bpf", wantErr: "accel bpf is not available: kernel lacks io_uring bpf-ops"},
	}
	for _, tt := range tests {
		req, err := ParseRequest(tt.spec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := Resolve(req, avail, acceptAll)
		if tt.wantErr != "" {
			var ue *UnavailableError
			if !errors.As(err, &ue) || err.Error() != tt.wantErr {
				t.Errorf("Resolve(%s) error = %v, want %q", tt.spec, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("Resolve(%s) = %+v, %v; want %+v", tt.spec, got, err, tt.want)
		}
	}
}

func acceptAll(Set) error { return nil }

// TestResolveAutoCombinations: auto keeps to combinations the build
// serves, preferring passthrough, then bpf, fusering, engine.
func TestResolveAutoCombinations(t *testing.T) {
	avail := map[Name]Status{}
	for _, n := range Accels {
		avail[n] = available()
	}
	tests := []struct {
		name  string
		check Checker
		want  Set
	}{
		{"everything together", acceptAll, Set{Engine: true, Passthrough: true, Fusering: true, BPF: true}},
		{
			"fusering not with passthrough",
			func(s Set) error {
				if s.Fusering && s.Passthrough {
					return errors.New("fusering with passthrough")
				}
				return nil
			},
			Set{Passthrough: true, BPF: true, Engine: true},
		},
		{
			"only engine served",
			func(s Set) error {
				if s != (Set{Engine: true}) {
					return errors.New("not served")
				}
				return nil
			},
			Set{Engine: true},
		},
	}
	for _, tt := range tests {
		got, err := Resolve(Request{Auto: true}, avail, tt.check)
		if err != nil || got != tt.want {
			t.Errorf("%s: auto = %+v, %v; want %+v", tt.name, got, err, tt.want)
		}
	}
	// Explicit names are not second-guessed: the mount reports conflicts.
	req, _ := ParseRequest("passthrough,fusering")
	if got, err := Resolve(req, avail, func(Set) error { return errors.New("no") }); err != nil || got != (Set{Passthrough: true, Fusering: true}) {
		t.Errorf("explicit passthrough,fusering = %+v, %v", got, err)
	}
}

func TestResolveAutoNothingAvailable(t *testing.T) {
	avail := map[Name]Status{}
	for _, n := range Accels {
		avail[n] = unavailable("no")
	}
	got, err := Resolve(Request{Auto: true}, avail, acceptAll)
	if err != nil || got != (Set{}) {
		t.Fatalf("auto with nothing available = %+v, %v; want none", got, err)
	}
	if b, _ := json.Marshal(got.Names()); string(b) != "[]" {
		t.Errorf("Names() of the empty set marshals to %s, want []", b)
	}
	if got.String() != "none" {
		t.Errorf("String() = %q, want none", got.String())
	}
}

func TestSetNamesOrder(t *testing.T) {
	s := Set{Engine: true, Passthrough: true, Fusering: true, BPF: true}
	want := []Name{Passthrough, BPF, Fusering, Engine}
	if got := s.Names(); !reflect.DeepEqual(got, want) {
		t.Errorf("Names() = %v, want auto's preference order %v", got, want)
	}
	if s.String() != "passthrough,bpf,fusering,engine" {
		t.Errorf("String() = %q", s.String())
	}
}

func TestApplyEnvDisable(t *testing.T) {
	accel := map[Name]Status{Engine: available(), Passthrough: available(), MultiCQ: unavailable("kernel lacks it")}
	applyEnvDisable(accel, "passthrough, bogus")
	if !accel[Engine].Available {
		t.Error("engine disabled without being named")
	}
	if st := accel[Passthrough]; st.Available || !strings.Contains(st.Reason, EnvDisable) {
		t.Errorf("passthrough = %+v, want unavailable naming %s", st, EnvDisable)
	}
	if _, ok := accel["bogus"]; ok {
		t.Error("an unknown name was added")
	}
}
