package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/bpfusefs/bpfusefs/features"
)

func runDoctor(args []string) error {
	asJSON, operands, err := wantJSON("doctor", args)
	if err != nil {
		return err
	}
	if len(operands) != 0 {
		return usagef("doctor takes no operands")
	}
	report := features.Probe(fsChecker())
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(report)
	}
	printDoctor(os.Stdout, report)
	return nil
}

func printDoctor(w io.Writer, r *features.Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	user := fmt.Sprintf("uid %d", r.UID)
	if r.CapSysAdmin {
		user += ", CAP_SYS_ADMIN"
	}
	fmt.Fprintf(tw, "kernel\t%s (%s)\n", r.Kernel, user)
	fuse := "protocol " + r.FUSE.Protocol
	if !r.FUSE.Available {
		fuse = "unusable: " + r.FUSE.Reason
	}
	if r.FUSE.EnableURing != "" {
		fuse += ", enable_uring=" + r.FUSE.EnableURing
	}
	fmt.Fprintf(tw, "FUSE\t%s\n", fuse)
	uring := fmt.Sprintf("%d opcodes: %s", len(r.IOURing.Opcodes), strings.Join(r.IOURing.Opcodes, " "))
	if !r.IOURing.Available {
		uring = "unusable: " + r.IOURing.Reason
	}
	fmt.Fprintf(tw, "io_uring\t%s\n", uring)
	fmt.Fprintf(tw, "io_uring bpf-ops\t%s\n", yesNo(r.BPFOps))

	fmt.Fprintf(tw, "\naccel\n")
	for _, n := range features.Accels {
		fmt.Fprintf(tw, "  %s\t%s\n", n, yesNo(r.Accel[n]))
	}
	fmt.Fprintf(tw, "\npatched kernel\n")
	for _, n := range features.Patched {
		fmt.Fprintf(tw, "  %s\t%s\n", n, yesNo(r.Accel[n]))
	}
	auto := "none"
	if len(r.Auto) > 0 {
		auto = features.Join(r.Auto, ",")
	}
	fmt.Fprintf(tw, "\nauto\t%s\n", auto)
	tw.Flush()
}

func yesNo(s features.Status) string {
	if s.Available {
		return "yes"
	}
	return "no: " + s.Reason
}
