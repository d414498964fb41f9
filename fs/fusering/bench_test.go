package fusering

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// directIO makes every open direct I/O, so that each read is a round
// trip to the daemon instead of a page-cache hit.
type directIO struct{ fuse.RawFileSystem }

func (d directIO) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := d.RawFileSystem.Open(cancel, in, out)
	out.OpenFlags |= fuse.FOPEN_DIRECT_IO
	return st
}

// BenchmarkRead4KiBQD1 reads 4 KiB at a time, one read in flight, from the
// same loopback served by go-fuse over /dev/fuse and by this transport, in
// the same run, and reports both latencies and their ratio.
func BenchmarkRead4KiBQD1(b *testing.B) {
	requireRing(b)
	const fileSize = 4 << 20
	data := make([]byte, fileSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	mount := func(serve func(mnt string, fs fuse.RawFileSystem) func()) string {
		m := newTestMount(b)
		if err := os.WriteFile(filepath.Join(m.backing, "f"), data, 0o644); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(serve(m.mnt, directIO{mustLoopbackFS(b, m.backing)}))
		return m.mnt
	}
	mo := func() *fuse.MountOptions {
		return &fuse.MountOptions{DirectMountStrict: true, DisabledCapabilities: fuse.CAP_PASSTHROUGH}
	}
	devMnt := mount(func(mnt string, fs fuse.RawFileSystem) func() {
		srv, err := fuse.NewServer(fs, mnt, mo())
		if err != nil {
			b.Fatal(err)
		}
		go srv.Serve()
		if err := srv.WaitMount(); err != nil {
			b.Fatal(err)
		}
		return func() { srv.Unmount() }
	})
	ringMnt := mount(func(mnt string, fs fuse.RawFileSystem) func() {
		srv, err := Mount(mnt, fs, mo(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		return func() { srv.Unmount() }
	})

	readAll := func(mnt string) time.Duration {
		f, err := os.Open(filepath.Join(mnt, "f"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 4096)
		start := time.Now()
		for i := range b.N {
			off := int64(i*4096) % fileSize
			if _, err := f.ReadAt(buf, off); err != nil {
				b.Fatal(err)
			}
		}
		return time.Since(start)
	}
	b.ResetTimer()
	dev := readAll(devMnt)
	ring := readAll(ringMnt)
	b.StopTimer()
	b.ReportMetric(float64(dev.Nanoseconds())/float64(b.N), "dev-ns/read")
	b.ReportMetric(float64(ring.Nanoseconds())/float64(b.N), "ring-ns/read")
	b.ReportMetric(float64(dev)/float64(ring), "ring-speedup")
}
