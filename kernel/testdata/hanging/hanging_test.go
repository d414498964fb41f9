// Package hanging holds a test that never finishes when it runs inside the
// VM harness's guest. kernel/harness_test.go boots it with a short --timeout
// to prove that the harness stops a guest that never finishes; go test ./...
// skips testdata directories, so no ordinary suite runs it.
package hanging

import (
	"os"
	"testing"
	"time"
)

func TestNeverFinishes(t *testing.T) {
	if os.Getenv("BPFUSEFS_VM") != "1" {
		t.Skip("only meaningful inside the vmtest guest")
	}
	t.Log("sleeping until the harness gives up")
	for {
		time.Sleep(time.Hour)
	}
}
