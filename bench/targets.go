package bench

import (
	"fmt"
	"math"
	"strings"
)

// A target is one figure the product is held to (issue 10): a system's
// speedup over a reference on a workload, or its daemon CPU per unit of work
// relative to the reference's.
type target struct {
	goal             string
	system, workload string
	ref, refWorkload string
	// minSpeedup, when set, is the speedup over the reference to reach.
	minSpeedup float64
	// maxCPU, when set, is the most daemon CPU per unit of work allowed,
	// as a fraction of the reference's.
	maxCPU float64
}

// TargetResult is where a target stands in a report.
type TargetResult struct {
	Goal      string   `json:"goal"`
	System    string   `json:"system"`
	Workload  string   `json:"workload"`
	Reference string   `json:"reference"`
	Want      string   `json:"want"`
	Measured  *float64 `json:"measured,omitempty"`
	Status    string   `json:"status"` // MET, MISSED or NOT MEASURED
	Note      string   `json:"note,omitempty"`
}

// Target statuses.
const (
	met         = "MET"
	missed      = "MISSED"
	notMeasured = "NOT MEASURED"
)

// targets are the targets, one per system and workload they cover.
func targets() []target {
	var ts []target
	for _, w := range []string{"seq-read", "seq-write", "rand-read-qd1", "rand-write-qd1", "rand-read-qd32",
		"rand-write-qd32", "seq-read-cold", "rand-read-qd1-cold", "rand-read-qd32-cold"} {
		ts = append(ts, target{goal: "passthrough: sequential and 4 KiB random read/write ≥ 0.9x native",
			system: bpfusefsName + "passthrough", workload: w, ref: native, refWorkload: w, minSpeedup: 0.9})
	}
	for _, mode := range []string{"engine", "fusering"} {
		// go-fuse cannot pass a mirrored file through either, so the
		// peer for mirrored reads is its loopback served by the daemon.
		ts = append(ts, target{goal: "engine/fusering: mirrored 4 KiB QD1 read ≥ 1.3x go-fuse loopback (no passthrough)",
			system: bpfusefsName + mode, workload: "rand-read-qd1-2r", ref: loopbackNoPT, refWorkload: "rand-read-qd1", minSpeedup: 1.3})
		for _, w := range []string{"meta-create", "meta-stat", "meta-unlink", "tree-find", "tree-ls"} {
			ts = append(ts, target{goal: "engine/fusering: metadata ≥ 1.2x go-fuse loopback",
				system: bpfusefsName + mode, workload: w, ref: loopback, refWorkload: w, minSpeedup: 1.2})
		}
	}
	for _, mode := range []string{"engine", "fusering", "bpf"} {
		for _, w := range []string{"seq-write-2r", "rand-write-qd1-2r", "rand-write-qd32-2r"} {
			ts = append(ts, target{goal: "2-replica writes ≥ 0.8x writing both copies natively",
				system: bpfusefsName + mode, workload: w, ref: native, refWorkload: w, minSpeedup: 0.8})
		}
	}
	for _, w := range []string{"rand-read-qd1-2r", "rand-write-qd1-2r"} {
		ts = append(ts,
			target{goal: "bpf: mirrored 4 KiB QD1 read/write ≥ 1.5x fusering",
				system: bpfusefsName + "bpf", workload: w, ref: bpfusefsName + "fusering", refWorkload: w, minSpeedup: 1.5},
			target{goal: "bpf: daemon CPU per I/O ≤ 1/5 of fusering's",
				system: bpfusefsName + "bpf", workload: w, ref: bpfusefsName + "fusering", refWorkload: w, maxCPU: 0.2})
	}
	return ts
}

func evaluateTargets(rep *Report, ts []target) []TargetResult {
	var out []TargetResult
	for _, t := range ts {
		tr := TargetResult{Goal: t.goal, System: t.system, Workload: t.workload,
			Reference: t.ref + " " + t.refWorkload}
		if t.maxCPU > 0 {
			tr.Want = fmt.Sprintf("≤ %sx", formatFigure(t.maxCPU))
		} else {
			tr.Want = fmt.Sprintf("≥ %sx", formatFigure(t.minSpeedup))
		}
		got, ref := rep.find(t.system, t.workload), rep.find(t.ref, t.refWorkload)
		if got == nil || ref == nil {
			continue // filtered out by --systems or --workloads
		}
		if why := unmeasured(got, t.system, t.workload) + unmeasured(ref, t.ref, t.refWorkload); why != "" {
			tr.Status, tr.Note = notMeasured, strings.TrimSuffix(why, "; ")
			out = append(out, tr)
			continue
		}
		info := rep.info[t.workload]
		var v float64
		if t.maxCPU > 0 {
			v = cpuRatio(got, ref, info.Timed)
		} else {
			v = speedup(*got.Median, *ref.Median, info.HigherIsBetter)
		}
		switch {
		case math.IsNaN(v):
			tr.Status, tr.Note = notMeasured, "no daemon CPU time to compare"
		case t.maxCPU > 0 && v <= t.maxCPU, t.maxCPU == 0 && v >= t.minSpeedup:
			tr.Status, tr.Measured = met, &v
		default:
			tr.Status, tr.Measured = missed, &v
		}
		out = append(out, tr)
	}
	return out
}

// unmeasured says why a target's side has no figure, or "" when it has one.
func unmeasured(r *Result, system, workload string) string {
	switch {
	case r.Skipped != "":
		return fmt.Sprintf("%s %s skipped: %s; ", system, workload, r.Skipped)
	case r.Error != "":
		return fmt.Sprintf("%s %s failed: %s; ", system, workload, r.Error)
	case r.Median == nil:
		return fmt.Sprintf("%s %s has no figure; ", system, workload)
	}
	return ""
}

// cpuRatio is got's daemon CPU per unit of work over ref's. A timed workload
// does work in proportion to its figure; the others do the same work on
// every system.
func cpuRatio(got, ref *Result, timed bool) float64 {
	if got.DaemonCPU == nil || ref.DaemonCPU == nil || !(*ref.DaemonCPU > 0) {
		return math.NaN()
	}
	r := *got.DaemonCPU / *ref.DaemonCPU
	if timed {
		r *= *ref.Median / *got.Median
	}
	return r
}

func writeTargets(b *strings.Builder, trs []TargetResult) {
	if len(trs) == 0 {
		return
	}
	b.WriteString("\n### Targets\n\n| target | system | workload | reference | want | measured | status |\n|---|---|---|---|---|---:|---|\n")
	for _, tr := range trs {
		measured := "–"
		if tr.Measured != nil {
			measured = formatRatio(*tr.Measured)
		}
		status := tr.Status
		if tr.Note != "" {
			status += " (" + tr.Note + ")"
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s | %s |\n", tr.Goal, tr.System, tr.Workload, tr.Reference, tr.Want, measured, status)
	}
}
