package main

import (
	"fmt"
	"strconv"

	"github.com/bpfusefs/bpfusefs/fs"
	"github.com/bpfusefs/bpfusefs/mirror"
)

// runVerify compares the replicas of a mount, or directories, with
// everything compared (bytes, modes, owners, xattrs, hard links), and
// prints each difference, then a verdict. Replicas written to meanwhile
// may show differences that are only writes in flight. Of a mount, only
// the replicas in service are compared, the leader first: one taken out
// of service has missed writes by design, and is reported as such.
func runVerify(args []string) error {
	max, dirs, err := parseVerifyArgs(args)
	if err != nil {
		return err
	}
	outOfService := 0
	if len(dirs) == 1 {
		var out []fs.ReplicaStats
		if dirs, out, err = mountReplicas(dirs[0]); err != nil {
			return fmt.Errorf("verify: %w", err)
		}
		for _, r := range out {
			fmt.Printf("%s: out of service (%s: %s), not compared\n", r.Path, r.State, r.Cause)
		}
		outOfService = len(out)
		if len(dirs) < 2 {
			fmt.Println("fewer than two replicas in service: nothing compared")
			return errReported
		}
	}
	diffs, st, err := mirror.CompareStats(dirs, mirror.CompareOptions{Content: true, Max: max})
	for _, d := range diffs {
		fmt.Println(d)
	}
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	switch {
	case len(diffs) == 0 && outOfService > 0:
		fmt.Printf("replicas in service identical (%s, %d bytes compared)\n", plural(st.Files, "file"), st.Bytes)
	case len(diffs) == 0:
		fmt.Printf("replicas identical (%s, %d bytes compared)\n", plural(st.Files, "file"), st.Bytes)
		return nil
	case len(diffs) == max:
		fmt.Printf("%s (stopped at --max %d)\n", plural(len(diffs), "difference"), max)
	default:
		fmt.Println(plural(len(diffs), "difference"))
	}
	return errReported
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// parseVerifyArgs parses `verify [--max N] MOUNTPOINT | DIR DIR...`.
func parseVerifyArgs(args []string) (max int, operands []string, err error) {
	s := argScanner{args: args}
	for {
		arg, name, inline, hasInline, ok := s.nextNamedFlag()
		if !ok {
			break
		}
		if name != "--max" && name != "-max" {
			return 0, nil, usagef("verify: unknown flag %s", arg)
		}
		v, err := s.value(name, inline, hasInline)
		if err != nil {
			return 0, nil, err
		}
		if max, err = strconv.Atoi(v); err != nil || max < 1 {
			return 0, nil, usagef("verify: --max wants a count of at least 1, got %q", v)
		}
	}
	if len(s.operands) == 0 {
		return 0, nil, usagef("verify: want MOUNTPOINT, or two or more directories")
	}
	return max, s.operands, nil
}

// mountReplicas returns the directories of the replicas in service of the
// bpfusefs mount at path, the leader first, and those out of service, as
// its daemon reports them.
func mountReplicas(path string) (dirs []string, out []fs.ReplicaStats, err error) {
	st, err := fetchStats(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w (to compare directories, name two or more)", err)
	}
	if len(st.Replicas) < 2 {
		return nil, nil, fmt.Errorf("%s has no mirrors: nothing to compare", path)
	}
	for _, r := range st.Replicas {
		if r.State == fs.ReplicaOK {
			dirs = append(dirs, r.Path)
		} else {
			out = append(out, r)
		}
	}
	return dirs, out, nil
}
