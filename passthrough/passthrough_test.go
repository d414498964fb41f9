package passthrough

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestEligible(t *testing.T) {
	for _, tc := range []struct {
		f    File
		want bool
	}{
		{File{Mode: syscall.S_IFREG | 0644, Replicas: 1}, true},
		{File{Mode: syscall.S_IFREG | 0644, Replicas: 2}, false},
		{File{Mode: syscall.S_IFDIR | 0755, Replicas: 1}, false},
		{File{Mode: syscall.S_IFIFO | 0644, Replicas: 1}, false},
		{File{Mode: syscall.S_IFREG | syscall.S_ISUID | 0755, Replicas: 1}, false},
		{File{Mode: syscall.S_IFREG | syscall.S_ISGID | 0755, Replicas: 1}, false},
		// set-group-ID without group execute marks mandatory locking, which a write keeps
		{File{Mode: syscall.S_IFREG | syscall.S_ISGID | 0644, Replicas: 1}, true},
		{File{Mode: syscall.S_IFREG | 0755, Replicas: 1, Capabilities: true}, false},
	} {
		if got := Eligible(tc.f); got != tc.want {
			t.Errorf("Eligible(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

// fakeRegistrar records registrations like the FUSE device would.
type fakeRegistrar struct {
	next int32
	live map[int32]int32 // id -> fd
}

func (r *fakeRegistrar) RegisterBackingFd(m *fuse.BackingMap) (int32, syscall.Errno) {
	r.next++
	r.live[r.next] = m.Fd
	return r.next, 0
}

func (r *fakeRegistrar) UnregisterBackingFd(id int32) syscall.Errno {
	if _, ok := r.live[id]; !ok {
		return syscall.ENOENT
	}
	delete(r.live, id)
	return 0
}

func TestSlotSharesOneBackingFile(t *testing.T) {
	r := &fakeRegistrar{live: map[int32]int32{}}
	var s Slot
	id1, ok1, err := s.Open(r, 10, true)
	if err != nil || !ok1 {
		t.Fatalf("first open: %v %v", ok1, err)
	}
	id2, ok2, err := s.Open(r, 11, true)
	if err != nil || !ok2 || id2 != id1 {
		t.Fatalf("second open: id %d ok %v err %v, want id %d", id2, ok2, err, id1)
	}
	if len(r.live) != 1 || r.live[id1] != 10 {
		t.Fatalf("registered: %v, want only fd 10", r.live)
	}
	// An ineligible open of an inode in passthrough mode must join it:
	// the kernel refuses to mix modes on one inode.
	if _, ok, _ := s.Open(r, 12, false); !ok {
		t.Error("ineligible open of a passthrough inode was served by the daemon")
	}
	for range 3 {
		if err := s.Close(r, true); err != nil {
			t.Fatal(err)
		}
	}
	if len(r.live) != 0 {
		t.Errorf("backing ids still registered after the last close: %v", r.live)
	}

	// With a daemon-served open, eligible opens stay with the daemon.
	if _, ok, _ := s.Open(r, 13, false); ok {
		t.Fatal("ineligible open went to passthrough")
	}
	if _, ok, _ := s.Open(r, 14, true); ok {
		t.Error("eligible open of a daemon-served inode went to passthrough")
	}
	s.Close(r, false)
	s.Close(r, false)
	if _, ok, _ := s.Open(r, 15, true); !ok {
		t.Error("eligible open after the daemon-served ones closed stayed with the daemon")
	}
}
