package bench

import (
	"math"
	"os"
	"slices"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{[]float64{3}, 3},
		{[]float64{5, 1, 3}, 3},
		{[]float64{4, 1, 3, 2}, 2.5},
		{[]float64{7, 7, 1}, 7},
	} {
		in := slices.Clone(tc.in)
		if got := median(in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("median reordered its input: %v", in)
		}
	}
	if got := median(nil); !math.IsNaN(got) {
		t.Errorf("median(nil) = %v, want NaN", got)
	}
}

func TestSpeedup(t *testing.T) {
	if got := speedup(900, 1000, true); got != 0.9 {
		t.Errorf("throughput 900 over 1000 = %v, want 0.9", got)
	}
	// A duration half as long is twice as fast.
	if got := speedup(1, 2, false); got != 2 {
		t.Errorf("duration 1 s over 2 s = %v, want 2", got)
	}
	for _, tc := range [][2]float64{{0, 1}, {1, 0}, {math.NaN(), 1}, {1, math.Inf(1)}} {
		if got := speedup(tc[0], tc[1], true); !math.IsNaN(got) {
			t.Errorf("speedup(%v, %v) = %v, want NaN", tc[0], tc[1], got)
		}
	}
}

func TestParseFio(t *testing.T) {
	data, err := os.ReadFile("testdata/fio-randread-2jobs.json")
	if err != nil {
		t.Fatal(err)
	}
	res, err := parseFio(data)
	if err != nil {
		t.Fatal(err)
	}
	// Figures from the file: two group-reported random read jobs.
	if res.JobName != "job0" || res.Read.BWBytes != 17962758 || res.Read.IOPS != 4385.438972 || res.Write.IOPS != 0 {
		t.Errorf("parseFio = %+v, want job0 with read bw_bytes 17962758, iops 4385.438972, no writes", res)
	}

	if _, err := parseFio([]byte(`{"jobs": [{"jobname": "j", "error": 5}]}`)); err == nil {
		t.Error("parseFio accepted a job that failed with errno 5")
	}
	if _, err := parseFio([]byte(`{"jobs": []}`)); err == nil {
		t.Error("parseFio accepted a report without jobs")
	}
	if _, err := parseFio([]byte(`fio: some warning`)); err == nil {
		t.Error("parseFio accepted text that is not JSON")
	}
}

func TestParseStatCPU(t *testing.T) {
	// The command name may hold spaces and parentheses; utime 250 and
	// stime 150 ticks are fields 14 and 15.
	line := "4242 (my (odd) daemon) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 12345 0 0\n"
	got, err := parseStatCPU([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if got.user != 2.5 || got.system != 1.5 || got.total() != 4 {
		t.Errorf("parseStatCPU = %+v, want user 2.5 s, system 1.5 s", got)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1 2")); err == nil {
		t.Error("parseStatCPU accepted a truncated line")
	}
	self, err := processCPU(os.Getpid())
	if err != nil || self.user < 0 || self.system < 0 {
		t.Errorf("processCPU(self) = %+v, %v", self, err)
	}
}

func TestParseDoctor(t *testing.T) {
	accel, err := parseDoctor([]byte(`{"kernel": "6.18", "accel": {
		"engine": {"available": true, "reason": ""},
		"bpf": {"available": false, "reason": "needs Linux 7.1+"}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !accel["engine"].Available || accel["bpf"].Available || accel["bpf"].Reason != "needs Linux 7.1+" {
		t.Errorf("parseDoctor = %+v", accel)
	}
	s := bpfusefsSystem("bpfusefs", "bpf", accel, nil)
	if s.skip != "needs Linux 7.1+" {
		t.Errorf("bpf system skip = %q, want the doctor's reason", s.skip)
	}
	if s := bpfusefsSystem("bpfusefs", "fusering", accel, nil); s.skip == "" {
		t.Error("fusering, which doctor does not report, was not skipped")
	}
	if s := bpfusefsSystem("bpfusefs", "none", accel, nil); s.skip != "" {
		t.Errorf("accel none skipped: %s", s.skip)
	}
	if _, err := parseDoctor([]byte(`{"kernel": "6.18"}`)); err == nil {
		t.Error("parseDoctor accepted a report without an accel map")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"4096": 4096, "64K": 64 << 10, "512M": 512 << 20, "1G": 1 << 30, "2GiB": 2 << 30, "1t": 1 << 40} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v, want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "0", "-1M", "1X", "99999999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

func TestPatterns(t *testing.T) {
	var p patterns
	if !p.match("anything") {
		t.Error("an empty filter must select everything")
	}
	if err := p.Set("native,bpfusefs-*"); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]bool{"native": true, "bpfusefs-engine": true, "loopback": false} {
		if got := p.match(name); got != want {
			t.Errorf("match(%q) = %v, want %v", name, got, want)
		}
	}
	var w patterns
	if err := w.Set("meta"); err != nil {
		t.Fatal(err)
	}
	if !w.match("meta-stat", "meta") || w.match("seq-read", "fio") {
		t.Error("a group name must select the group's workloads and only those")
	}
	if err := w.Set("[bad"); err == nil {
		t.Error("Set accepted a malformed pattern")
	}
}

func TestSelfCommand(t *testing.T) {
	got := selfCommand("/usr/bin/bpfusefs", []string{"bpfusefs", "bench", "--quick"}, []string{"--quick"})
	if !slices.Equal(got, []string{"/usr/bin/bpfusefs", "bench"}) {
		t.Errorf("selfCommand = %q, want the executable and \"bench\"", got)
	}
	if got := selfCommand("/x", []string{"x", "other"}, []string{"--quick"}); got != nil {
		t.Errorf("selfCommand = %q for arguments that are not the process's", got)
	}
}
