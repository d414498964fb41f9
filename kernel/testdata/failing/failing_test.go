// Package failing holds a test that always fails when it runs inside the VM
// harness's guest. kernel/harness_test.go boots it to prove that a failing
// guest test fails the whole run; it is never part of an ordinary suite
// (go test ./... skips testdata directories).
package failing

import (
	"os"
	"testing"
)

// FailureMessage is what the harness test looks for in the console log.
const FailureMessage = "deliberate failure inside the guest"

func TestDeliberateFailure(t *testing.T) {
	if os.Getenv("BPFUSEFS_VM") != "1" {
		t.Skip("only meaningful inside the vmtest guest")
	}
	t.Fatal(FailureMessage)
}
