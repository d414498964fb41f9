package main

import (
	"fmt"
	"strconv"

	"github.com/bpfusefs/bpfusefs/mirror"
)

// runVerify compares the replicas of a mount, or directories, with
// everything compared (bytes, modes, owners, xattrs, hard links), and
// prints each difference, then a verdict. Replicas written to meanwhile
// may show differences that are only writes in flight.
func runVerify(args []string) error {
	max, dirs, err := parseVerifyArgs(args)
	if err != nil {
		return err
	}
	if len(dirs) == 1 {
		if dirs, err = mountReplicas(dirs[0]); err != nil {
			return fmt.Errorf("verify: %w", err)
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

// mountReplicas returns the replica directories of the bpfusefs mount at
// path, primary first, as its daemon reports them.
func mountReplicas(path string) ([]string, error) {
	st, err := fetchStats(path)
	if err != nil {
		return nil, fmt.Errorf("%w (to compare directories, name two or more)", err)
	}
	if len(st.Replicas) < 2 {
		return nil, fmt.Errorf("%s has no mirrors: nothing to compare", path)
	}
	dirs := make([]string, len(st.Replicas))
	for i, r := range st.Replicas {
		dirs[i] = r.Path
	}
	return dirs, nil
}
