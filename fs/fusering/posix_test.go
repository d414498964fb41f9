package fusering

import (
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// TestPosix runs go-fuse's POSIX conformance tests against its loopback
// file system served over the ring, in both ring setups.
func TestPosix(t *testing.T) {
	requireRing(t)
	for _, mode := range []struct {
		name string
		opts Options
	}{
		{"plain", Options{}},
		{"defer-taskrun", Options{DeferTaskrun: true, Depth: 2}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			for name, test := range posixtest.All {
				t.Run(name, func(t *testing.T) {
					m := mountLoopback(t, mode.opts)
					test(t, m.mnt)
					if st := m.srv.Stats(); st.Ring.Requests == 0 {
						t.Errorf("no request arrived by ring: %+v", st)
					}
				})
			}
		})
	}
}
