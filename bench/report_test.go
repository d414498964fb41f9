package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// testReport builds a report over ws from synthetic per-run figures and
// daemon CPU seconds, the way Run fills one in.
func testReport(t *testing.T, ws []workload, results []Result) *Report {
	t.Helper()
	rep := newReport(context.Background(), &Config{Runs: 3}, ws)
	rep.Results = results
	rep.finish()
	return rep
}

func findWorkload(t *testing.T, name string) workload {
	t.Helper()
	for _, w := range workloads() {
		if w.name == name {
			return w
		}
	}
	t.Fatalf("no workload %s", name)
	return workload{}
}

func TestReportRatiosAndTargets(t *testing.T) {
	ws := []workload{findWorkload(t, "seq-read"), findWorkload(t, "tree-find"), findWorkload(t, "rand-read-qd1-2r"), findWorkload(t, "rand-read-qd1")}
	rep := testReport(t, ws, []Result{
		{System: native, Workload: "seq-read", Runs: []float64{1000, 990, 1010}},
		{System: bpfusefsName + "passthrough", Workload: "seq-read", Runs: []float64{950, 100, 951}, DaemonCPURuns: []float64{0.1, 0.3, 0.2}, DaemonSysRuns: []float64{0.05, 0.25, 0.15}},
		{System: loopback, Workload: "seq-read", Runs: []float64{500}},
		// Durations: the engine's 1.5 s is 1.33x faster than the loopback's 2 s.
		{System: loopback, Workload: "tree-find", Runs: []float64{2, 2, 2}},
		{System: bpfusefsName + "engine", Workload: "tree-find", Runs: []float64{1.5, 1.4, 1.6}},
		{System: bpfusefsName + "fusering", Workload: "tree-find", Runs: []float64{1.8, 1.9, 1.7}},
		{System: loopbackNoPT, Workload: "rand-read-qd1", Runs: []float64{5000}},
		{System: bpfusefsName + "engine", Workload: "rand-read-qd1-2r", Skipped: "mirrors not implemented"},
	})

	pt := rep.find(bpfusefsName+"passthrough", "seq-read")
	if *pt.Median != 950 || *pt.DaemonCPU != 0.2 || *pt.DaemonSys != 0.15 {
		t.Errorf("passthrough median %v, cpu %v, sys %v, want 950, 0.2, 0.15", *pt.Median, *pt.DaemonCPU, *pt.DaemonSys)
	}
	if pt.Ratios[native] != 0.95 || pt.Ratios[loopback] != 1.9 {
		t.Errorf("passthrough ratios %v, want native 0.95, loopback 1.9", pt.Ratios)
	}
	if r := rep.find(native, "seq-read").Ratios[native]; r != 1 {
		t.Errorf("native's ratio to itself = %v, want 1", r)
	}
	if r := rep.find(bpfusefsName+"engine", "tree-find").Ratios[loopback]; r < 1.33 || r > 1.34 {
		t.Errorf("engine tree-find ratio to loopback = %v, want 2/1.5", r)
	}

	status := map[string]string{}
	for _, tr := range rep.Targets {
		status[tr.System+" "+tr.Workload] = tr.Status
		if tr.Status == notMeasured && tr.Note == "" {
			t.Errorf("target %s %s not measured without a reason", tr.System, tr.Workload)
		}
	}
	for key, want := range map[string]string{
		"bpfusefs-passthrough seq-read":    met,    // 0.95 ≥ 0.9
		"bpfusefs-engine tree-find":        met,    // 1.33 ≥ 1.2
		"bpfusefs-fusering tree-find":      missed, // 1.11 < 1.2
		"bpfusefs-engine rand-read-qd1-2r": notMeasured,
	} {
		if status[key] != want {
			t.Errorf("target %s: %q, want %q", key, status[key], want)
		}
	}
	if _, ok := status["bpfusefs-passthrough seq-write"]; ok {
		t.Error("a target on a workload that was not run is listed")
	}

	var md bytes.Buffer
	if err := rep.writeMarkdown(&md); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"| seq-read | bpfusefs-passthrough | 950 | MiB/s | 0.95x | 1.90x | – | 0.20 (0.15) |",
		"| tree-find | bpfusefs-fusering | 1.80 | s | – | 1.11x | – | – |",
		"bpfusefs-engine (rand-read-qd1-2r): skipped: mirrors not implemented",
		"| bpfusefs-fusering | tree-find | loopback tree-find | ≥ 1.20x | 1.11x | MISSED |",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}
	var js bytes.Buffer
	if err := rep.writeJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != len(rep.Results) || len(back.Targets) != len(rep.Targets) {
		t.Errorf("JSON round trip lost results or targets")
	}
}

func TestCPUTargetPerUnitOfWork(t *testing.T) {
	ws := []workload{findWorkload(t, "rand-write-qd1-2r")}
	// bpf does twice the I/O of fusering in the same time for 0.3x the
	// CPU: 0.15x the CPU per I/O.
	rep := testReport(t, ws, []Result{
		{System: bpfusefsName + "bpf", Workload: "rand-write-qd1-2r", Runs: []float64{20000}, DaemonCPURuns: []float64{0.3}},
		{System: bpfusefsName + "fusering", Workload: "rand-write-qd1-2r", Runs: []float64{10000}, DaemonCPURuns: []float64{1}},
	})
	for _, tr := range rep.Targets {
		if tr.System != bpfusefsName+"bpf" || !strings.Contains(tr.Goal, "CPU") {
			continue
		}
		if tr.Status != met || *tr.Measured < 0.149 || *tr.Measured > 0.151 {
			t.Errorf("bpf CPU target: %s %v, want MET at 0.15", tr.Status, *tr.Measured)
		}
		return
	}
	t.Fatal("no bpf CPU target evaluated")
}

func TestSourceTarDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.tar"), filepath.Join(dir, "b.tar")
	for _, p := range []string{a, b} {
		if err := writeSourceTar(p, 120); err != nil {
			t.Fatal(err)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if !bytes.Equal(da, db) {
		t.Fatal("two generations of the project differ")
	}
	tr := tar.NewReader(bytes.NewReader(da))
	var cFiles int
	var last string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(h.Name, ".c") && strings.Contains(h.Name, "/mod") {
			cFiles++
		}
		last = h.Name
	}
	if cFiles != 120 || last != "src/Makefile" {
		t.Errorf("tarball has %d module C files and ends with %s, want 120 and src/Makefile", cFiles, last)
	}
}

func TestFioJobReplicas(t *testing.T) {
	if _, err := exec.LookPath("fio"); err != nil {
		t.Skip("fio not installed")
	}
	dirs := []string{t.TempDir(), t.TempDir()}
	job := fioJob{rw: "write", blockSize: "64k", ioEngine: "psync", ioDepth: 1, endFsync: true,
		fileName: fioSeqFile, fileSize: 1 << 20, runtimeSec: 5}
	got, err := job.run(context.Background(), t.TempDir(), dirs)
	if err != nil {
		t.Fatal(err)
	}
	if !(got > 0) {
		t.Errorf("fio write figure = %v, want positive MiB/s", got)
	}
	for _, d := range dirs {
		if st, err := os.Stat(filepath.Join(d, fioSeqFile)); err != nil || st.Size() != 1<<20 {
			t.Errorf("replica in %s: %v, %v; want a 1 MiB file", d, st, err)
		}
	}
}
