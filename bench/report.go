package bench

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
)

// Report is the outcome of one bench run.
type Report struct {
	Machine Machine `json:"machine"`
	Command string  `json:"command"`
	// Bpfusefs is what the measured binary says of its version.
	Bpfusefs  string         `json:"bpfusefs,omitempty"`
	Settings  Settings       `json:"settings"`
	Workloads []WorkloadInfo `json:"workloads"`
	Systems   []SystemStatus `json:"systems"`
	Results   []Result       `json:"results"`
	Targets   []TargetResult `json:"targets"`
	info      map[string]WorkloadInfo
}

// Settings are the sizes a report was measured with.
type Settings struct {
	Runs        int   `json:"runs"`
	FileSize    int64 `json:"file_size"`
	CopySize    int64 `json:"copy_size"`
	RuntimeSec  int   `json:"runtime_s"`
	Files       int   `json:"files"`
	SourceFiles int   `json:"src_files"`
}

// WorkloadInfo describes a workload in the report.
type WorkloadInfo struct {
	Name           string `json:"name"`
	Group          string `json:"group"`
	About          string `json:"about"`
	Unit           string `json:"unit"`
	HigherIsBetter bool   `json:"higher_is_better"`
	// Timed workloads run for --runtime seconds, so the work they do (and
	// the CPU it costs) grows with speed; the others do a fixed amount.
	Timed bool `json:"timed"`
}

// SystemStatus says whether a system ran, and why not.
type SystemStatus struct {
	Name    string `json:"name"`
	Skipped string `json:"skipped,omitempty"`
}

// Result is one workload on one system.
type Result struct {
	System   string    `json:"system"`
	Workload string    `json:"workload"`
	Unit     string    `json:"unit"`
	Runs     []float64 `json:"runs,omitempty"`
	// DaemonCPURuns is the daemon's user+system CPU seconds during each
	// timed part, DaemonSysRuns the system part of it; empty natively.
	DaemonCPURuns []float64 `json:"daemon_cpu_s_runs,omitempty"`
	DaemonSysRuns []float64 `json:"daemon_sys_s_runs,omitempty"`
	Median        *float64  `json:"median,omitempty"`
	DaemonCPU     *float64  `json:"daemon_cpu_s,omitempty"`
	DaemonSys     *float64  `json:"daemon_sys_s,omitempty"`
	// Ratios is the median's speedup over each peer's median of the same
	// workload (above 1 is faster, for durations too).
	Ratios  map[string]float64 `json:"ratios,omitempty"`
	Skipped string             `json:"skipped,omitempty"`
	Error   string             `json:"error,omitempty"`
}

// peers are the systems every result is compared with.
var peers = []string{native, loopback, loopbackNoPT}

func newReport(ctx context.Context, cfg *Config, ws []workload) *Report {
	rep := &Report{
		Machine: probeMachine(ctx),
		Command: cfg.command,
		Settings: Settings{Runs: cfg.Runs, FileSize: cfg.FileSize, CopySize: cfg.CopySize,
			RuntimeSec: cfg.Runtime, Files: cfg.Files, SourceFiles: cfg.SourceFiles},
		info: map[string]WorkloadInfo{},
	}
	for _, w := range ws {
		wi := WorkloadInfo{Name: w.name, Group: w.group, About: w.about, Unit: w.unit,
			HigherIsBetter: w.higherIsBetter, Timed: w.timed}
		rep.Workloads = append(rep.Workloads, wi)
		rep.info[w.name] = wi
	}
	return rep
}

func (r *Result) progressLine(unit string) string {
	switch {
	case r.Skipped != "":
		return "skipped: " + r.Skipped
	case r.Error != "":
		return "error: " + r.Error
	}
	parts := make([]string, len(r.Runs))
	for i, v := range r.Runs {
		parts[i] = formatFigure(v)
	}
	return strings.Join(parts, " ") + " " + unit
}

// finish computes medians, ratios and targets once every result is in.
func (rep *Report) finish() {
	rep.Machine.LoadEnd = loadAverage()
	for i := range rep.Results {
		res := &rep.Results[i]
		res.Unit = rep.info[res.Workload].Unit
		if res.Error == "" {
			res.Median = medianOf(res.Runs)
			res.DaemonCPU = medianOf(res.DaemonCPURuns)
			res.DaemonSys = medianOf(res.DaemonSysRuns)
		}
	}
	for i := range rep.Results {
		res := &rep.Results[i]
		if res.Median == nil {
			continue
		}
		for _, p := range peers {
			if ref := rep.find(p, res.Workload); ref != nil && ref.Median != nil {
				if s := speedup(*res.Median, *ref.Median, rep.info[res.Workload].HigherIsBetter); !math.IsNaN(s) {
					if res.Ratios == nil {
						res.Ratios = map[string]float64{}
					}
					res.Ratios[p] = s
				}
			}
		}
	}
	order := func(names []string, n string) int { return slices.Index(names, n) }
	var wnames []string
	for _, w := range rep.Workloads {
		wnames = append(wnames, w.Name)
	}
	slices.SortStableFunc(rep.Results, func(a, b Result) int {
		return cmp.Or(cmp.Compare(order(wnames, a.Workload), order(wnames, b.Workload)),
			cmp.Compare(order(systemNames(), a.System), order(systemNames(), b.System)))
	})
	rep.Targets = evaluateTargets(rep, targets())
}

func (rep *Report) find(system, workload string) *Result {
	for i := range rep.Results {
		if rep.Results[i].System == system && rep.Results[i].Workload == workload {
			return &rep.Results[i]
		}
	}
	return nil
}

func (rep *Report) writeJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// formatFigure prints three significant digits or the whole number.
func formatFigure(v float64) string {
	switch a := math.Abs(v); {
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 0.01 || a == 0:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.2g", v)
}

func formatRatio(v float64) string { return formatFigure(v) + "x" }

func (rep *Report) writeMarkdown(w io.Writer) error {
	var b strings.Builder
	m, s := rep.Machine, rep.Settings
	fmt.Fprintf(&b, "## bpfusefs bench\n\n")
	fmt.Fprintf(&b, "- Command: `%s`\n", rep.Command)
	if rep.Bpfusefs != "" {
		fmt.Fprintf(&b, "- Measured: %s\n", rep.Bpfusefs)
	}
	fmt.Fprintf(&b, "- Machine: kernel %s, %s (%d CPUs), commit %s\n", m.Kernel, m.CPU, m.CPUs, m.Commit)
	fmt.Fprintf(&b, "- Load average (1/5/15 min): %s at the start, %s at the end\n", m.LoadStart, m.LoadEnd)
	fmt.Fprintf(&b, "- Median of %d runs; fio file %d MiB, %d s per timed pass; %d metadata files; copy file %d MiB (copy-4k, copy-range-2r); %d C files in the project\n",
		s.Runs, s.FileSize>>20, s.RuntimeSec, s.Files, s.CopySize>>20, s.SourceFiles)
	fmt.Fprintf(&b, "- Ratios are speedups over the peer (above 1 is faster, for durations too); daemon CPU is user+system seconds of the FUSE daemon during the timed part of one run, its system part in parentheses (the kernel's work for the daemon: syscalls, and the BPF loop, which runs in the queue threads' io_uring_enter); both are medians\n\n")

	var shown []string
	for _, p := range peers {
		if slices.ContainsFunc(rep.Results, func(r Result) bool { return r.System == p && r.Median != nil }) {
			shown = append(shown, p)
		}
	}
	b.WriteString("| workload | system | median | unit |")
	for _, p := range shown {
		fmt.Fprintf(&b, " ×%s |", p)
	}
	b.WriteString(" daemon CPU s (sys) |\n|---|---|---:|---|")
	b.WriteString(strings.Repeat("---:|", len(shown)+1) + "\n")
	var notRun []Result
	for _, r := range rep.Results {
		if r.Median == nil {
			notRun = append(notRun, r)
			continue
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |", r.Workload, r.System, formatFigure(*r.Median), r.Unit)
		for _, p := range shown {
			if v, ok := r.Ratios[p]; ok {
				fmt.Fprintf(&b, " %s |", formatRatio(v))
			} else {
				b.WriteString(" – |")
			}
		}
		switch {
		case r.DaemonCPU != nil && r.DaemonSys != nil:
			fmt.Fprintf(&b, " %s (%s) |\n", formatFigure(*r.DaemonCPU), formatFigure(*r.DaemonSys))
		case r.DaemonCPU != nil:
			fmt.Fprintf(&b, " %s |\n", formatFigure(*r.DaemonCPU))
		default:
			b.WriteString(" – |\n")
		}
	}
	writeNotRun(&b, rep.Systems, notRun)

	b.WriteString("\n### Workloads\n\n| workload | what | unit |\n|---|---|---|\n")
	for _, wi := range rep.Workloads {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", wi.Name, wi.About, wi.Unit)
	}
	writeTargets(&b, rep.Targets)
	_, err := io.WriteString(w, b.String())
	return err
}

// writeNotRun lists what was skipped or failed, once per system and reason.
func writeNotRun(b *strings.Builder, systems []SystemStatus, notRun []Result) {
	if len(notRun) == 0 {
		return
	}
	b.WriteString("\n### Not measured\n\n")
	for _, st := range systems {
		if st.Skipped != "" {
			fmt.Fprintf(b, "- %s: skipped: %s\n", st.Name, st.Skipped)
		}
	}
	type key struct{ system, why string }
	var keys []key
	byKey := map[key][]string{}
	for _, r := range notRun {
		why := "skipped: " + r.Skipped
		if r.Error != "" {
			why = "error: " + r.Error
		}
		if slices.ContainsFunc(systems, func(s SystemStatus) bool { return s.Name == r.System && s.Skipped != "" }) {
			continue
		}
		k := key{r.System, why}
		if _, ok := byKey[k]; !ok {
			keys = append(keys, k)
		}
		byKey[k] = append(byKey[k], r.Workload)
	}
	for _, k := range keys {
		fmt.Fprintf(b, "- %s (%s): %s\n", k.system, strings.Join(byKey[k], ", "), k.why)
	}
}
