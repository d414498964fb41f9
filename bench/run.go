package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/bpfusefs/bpfusefs/internal/enableuring"
)

// Run measures every selected workload on every selected system and returns
// the report; progress lines go to progress.
//
// All systems are mounted side by side, each on its own backing directory,
// and every pass of a workload visits them in turn (starting from a
// different one each pass), so that a machine whose load drifts during the
// run skews every system alike rather than whichever ran last.
func Run(ctx context.Context, cfg *Config, progress io.Writer) (*Report, error) {
	var selected []workload
	for _, w := range workloads() {
		if cfg.Workloads.match(w.name, w.group) {
			selected = append(selected, w)
		}
	}
	if len(selected) == 0 {
		return nil, fmt.Errorf("no workload matches --workloads %s", cfg.Workloads.String())
	}
	if cfg.EnableUring {
		// Under the machine-wide lock: a test or xfstests run that set
		// the parameter back to N halfway would skip fusering from then on.
		restore, err := enableuring.Hold("Y")
		if err != nil {
			return nil, fmt.Errorf("--enable-uring: %w", err)
		}
		defer func() {
			if err := restore(); err != nil {
				fmt.Fprintf(progress, "bench: %v\n", err)
			}
		}()
	}
	rep := newReport(ctx, cfg, selected)
	work, err := os.MkdirTemp(cfg.Dir, "bpfusefs-bench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	var tarball string
	if slices.ContainsFunc(selected, func(w workload) bool { return w.group == "app" }) {
		if tarball, err = sourceTar(cfg.Cache, cfg.SourceFiles); err != nil {
			return nil, err
		}
	}
	systems := probeSystems(ctx, cfg)
	if slices.ContainsFunc(systems, func(s *system) bool { return strings.HasPrefix(s.name, bpfusefsName) }) {
		rep.Bpfusefs = binaryVersion(ctx, cfg.Bpfusefs)
	}
	for _, sys := range systems {
		rep.Systems = append(rep.Systems, SystemStatus{Name: sys.name, Skipped: sys.skip})
	}
	for _, replicas := range []int{1, 2} {
		var ws []workload
		for _, w := range selected {
			if w.replicas == replicas {
				ws = append(ws, w)
			}
		}
		if len(ws) == 0 {
			continue
		}
		r := &round{cfg: cfg, work: work, tarball: tarball, replicas: replicas, workloads: ws, progress: progress}
		results, err := r.run(ctx, systems)
		rep.Results = append(rep.Results, results...)
		if err != nil {
			return nil, err
		}
	}
	rep.finish()
	return rep, nil
}

// A round runs workloads that keep the same number of replicas on every
// system at once.
type round struct {
	cfg       *Config
	work      string
	tarball   string
	replicas  int
	workloads []workload
	progress  io.Writer
}

// mounted is a system serving its own backing directory in a round, with
// its results so far (one per workload).
type mounted struct {
	sys     *system
	env     *env
	base    string
	results []Result
}

// run measures the round's workloads on every system. The error is for what
// must stop the whole bench (an instance it could not clean up, or an
// interrupt); everything else is recorded in the results.
func (r *round) run(ctx context.Context, systems []*system) (results []Result, err error) {
	var live []*mounted
	defer func() {
		for _, m := range live {
			results = append(results, m.results...)
			// Unmount even when interrupted.
			if stopErr := m.env.inst.stop(context.WithoutCancel(ctx)); stopErr != nil {
				err = errors.Join(err, fmt.Errorf("stop %s: %w", m.sys.name, stopErr))
			} else {
				err = errors.Join(err, os.RemoveAll(m.base))
			}
		}
		err = errors.Join(err, ctx.Err())
	}()
	for _, sys := range systems {
		m := &mounted{sys: sys, results: make([]Result, len(r.workloads))}
		for i, w := range r.workloads {
			m.results[i] = Result{System: sys.name, Workload: w.name}
		}
		inst, skip := r.start(ctx, sys, m)
		if skip != "" {
			fmt.Fprintf(r.progress, "%-20s skipped: %s\n", sys.name, skip)
			for i := range m.results {
				m.results[i].Skipped = skip
			}
			results = append(results, m.results...)
			continue
		}
		m.env = &env{cfg: r.cfg, inst: inst, scratch: r.work, tarball: r.tarball}
		live = append(live, m)
	}
	for i, w := range r.workloads {
		if missing := missingTool(w); missing != "" {
			for _, m := range live {
				m.results[i].Skipped = missing
			}
			fmt.Fprintf(r.progress, "%-20s %-20s skipped: %s\n", "*", w.name, missing)
			continue
		}
		for pass := range r.cfg.Runs {
			for k := range live {
				m := live[(k+pass)%len(live)]
				if m.env.inst.aborted() {
					m.results[i].Skipped = "daemon killed after hanging in an earlier workload"
				} else if m.results[i].Error == "" {
					measureOnce(ctx, m.env, w, &m.results[i])
				}
				if ctx.Err() != nil {
					return results, nil
				}
			}
		}
		for _, m := range live {
			fmt.Fprintf(r.progress, "%-20s %-20s %s\n", m.sys.name, w.name, m.results[i].progressLine(w.unit))
		}
	}
	return results, nil
}

// start mounts sys on a fresh backing directory (and mirror) under the
// round's work directory, or says why it cannot.
func (r *round) start(ctx context.Context, sys *system, m *mounted) (*instance, string) {
	if sys.skip != "" {
		return nil, sys.skip
	}
	m.base = filepath.Join(r.work, fmt.Sprintf("%s-%dr", sys.name, r.replicas))
	backing, mnt := filepath.Join(m.base, "backing"), filepath.Join(m.base, "mnt")
	var mirrors []string
	if r.replicas > 1 {
		mirrors = []string{filepath.Join(m.base, "mirror")}
	}
	for _, dir := range append([]string{backing, mnt}, mirrors...) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, err.Error()
		}
	}
	inst, err := sys.start(ctx, backing, mnt, mirrors)
	if err != nil {
		return nil, err.Error()
	}
	return inst, ""
}

// missingTool says which program w needs is not installed, or "".
func missingTool(w workload) string {
	for _, tool := range w.tools {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("%s not found in PATH (make deps installs it)", tool)
		}
	}
	return ""
}

// passTimeout bounds one timed pass: generous, since a loaded machine is
// slow, but finite.
func passTimeout(cfg *Config) time.Duration {
	return max(2*time.Minute, 30*time.Duration(cfg.Runtime)*time.Second)
}

// measureOnce runs one pass of w into res; a failure ends the workload on
// that system.
func measureOnce(ctx context.Context, e *env, w workload, res *Result) {
	// A daemon that stops answering would block the pass forever, in fio
	// or in a syscall of this process alike; killing it aborts its FUSE
	// connection, which fails the blocked calls.
	limit := passTimeout(e.cfg)
	hung := time.AfterFunc(limit, e.inst.abort)
	v, cpu, err := prepareAndMeasure(ctx, e, w)
	if !hung.Stop() {
		res.Error = fmt.Sprintf("hung: no progress in %v, daemon killed", limit)
		return
	}
	if err != nil {
		res.Error = err.Error()
		return
	}
	res.Runs = append(res.Runs, v)
	if e.inst.pid != 0 {
		res.DaemonCPURuns = append(res.DaemonCPURuns, cpu.total())
		res.DaemonSysRuns = append(res.DaemonSysRuns, cpu.system)
	}
}

// prepareAndMeasure runs one pass of w, returning its figure and the
// daemon's CPU time during the timed part.
func prepareAndMeasure(ctx context.Context, e *env, w workload) (v float64, cpu cpuTime, err error) {
	if err := w.prepare(ctx, e); err != nil {
		return 0, cpu, fmt.Errorf("prepare: %w", err)
	}
	before, err := e.inst.daemonCPU()
	if err != nil {
		return 0, cpu, err
	}
	if v, err = w.measure(ctx, e); err != nil {
		return 0, cpu, err
	}
	after, err := e.inst.daemonCPU()
	return v, after.sub(before), err
}
