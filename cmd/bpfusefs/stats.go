package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/bpfusefs/bpfusefs/control"
	"github.com/bpfusefs/bpfusefs/fs"
)

func runStats(args []string) error {
	asJSON, operands, err := wantJSON("stats", args)
	if err != nil {
		return err
	}
	if len(operands) != 1 {
		return usagef("stats: want one MOUNTPOINT, got %d", len(operands))
	}
	st, err := fetchStats(operands[0])
	if err != nil {
		return fmt.Errorf("stats: %w", err)
	}
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(st)
	}
	printStats(os.Stdout, st)
	return nil
}

// fetchStats asks the daemon serving the mount at path for its Stats
// over the mount's control socket.
func fetchStats(path string) (fs.Stats, error) {
	var st fs.Stats
	mnt, err := canonicalMountpoint(path)
	if err != nil {
		return st, err
	}
	sock, err := control.SocketPath(mnt)
	if err != nil {
		return st, err
	}
	if _, err := os.Stat(sock); errors.Is(err, os.ErrNotExist) {
		return st, fmt.Errorf("no bpfusefs daemon of this user serves %s", mnt)
	}
	if err := control.Call(sock, "stats", &st); err != nil {
		return st, fmt.Errorf("%s: %w", mnt, err)
	}
	return st, nil
}

func printStats(w io.Writer, st fs.Stats) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	accel := strings.Join(st.Accel, ",")
	if accel == "" {
		accel = "none"
	}
	fmt.Fprintf(tw, "accel\t%s\n", accel)
	fmt.Fprintf(tw, "bytes read\t%d\n", st.BytesRead)
	fmt.Fprintf(tw, "bytes written\t%d\n", st.BytesWritten)
	fmt.Fprintf(tw, "errors\t%d\n", st.Errors)
	if slices.Contains(st.Accel, "bpf") {
		fmt.Fprintf(tw, "bpf fallbacks\t%d\n", st.BPFFallbacks)
		fmt.Fprintf(tw, "bpf own-CQ completions\t%d\n", st.BPFOwnCQ)
		fmt.Fprintf(tw, "bpf zero-copy requests\t%d\n", st.BPFZeroCopy)
		fmt.Fprintf(tw, "bpf bytes copied\t%d\n", st.BPFCopyBytes)
	}
	fmt.Fprintf(tw, "\nserved by\trequests\n")
	printCounts(tw, st.Paths)
	if len(st.Transport) > 0 {
		fmt.Fprintf(tw, "\narrived by\trequests\n")
		printCounts(tw, st.Transport)
	}
	fmt.Fprintf(tw, "\nopcode\trequests\n")
	printCounts(tw, st.Ops)
	if len(st.Replicas) > 0 {
		fmt.Fprintf(tw, "\nreplica\tstate\terrors\tcause\n")
		for _, r := range st.Replicas {
			state := r.State
			if r.Leader {
				state += ", leads"
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Path, state, r.Errors, r.Cause)
		}
	}
	tw.Flush()
}

// printCounts prints counters, largest first.
func printCounts(w io.Writer, counts map[string]uint64) {
	names := make([]string, 0, len(counts))
	for n := range counts {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		if counts[names[i]] != counts[names[j]] {
			return counts[names[i]] > counts[names[j]]
		}
		return names[i] < names[j]
	})
	for _, n := range names {
		fmt.Fprintf(w, "%s\t%d\n", n, counts[n])
	}
}
