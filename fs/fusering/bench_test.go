package fusering

import (
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// BenchmarkRead4KiBQD1 and BenchmarkRead4KiBQD32 read 4 KiB at a time,
// with 1 or 32 reads in flight, with direct I/O so that every read reaches
// the daemon, from the same loopback served by go-fuse over /dev/fuse, by
// this transport, and by this transport with zero-copy queues where the
// kernel has them, all in the same run, and report the time per read and
// the ratios to /dev/fuse.
func BenchmarkRead4KiBQD1(b *testing.B)  { benchmarkRead4KiB(b, 1) }
func BenchmarkRead4KiBQD32(b *testing.B) { benchmarkRead4KiB(b, 32) }

func benchmarkRead4KiB(b *testing.B, depth int) {
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
		b.Cleanup(serve(m.mnt, newBackedFS(b, m.backing, true)))
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
	ringMount := func(opts Options) (string, *Server) {
		var srv *Server
		mnt := mount(func(mnt string, fs fuse.RawFileSystem) func() {
			var err error
			if srv, err = Mount(mnt, fs, mo(), opts); err != nil {
				b.Fatal(err)
			}
			return func() { srv.Unmount() }
		})
		return mnt, srv
	}
	ringMnt, _ := ringMount(Options{})
	zcMnt, zcSrv := ringMount(Options{ZeroCopy: true})

	// readAll does b.N reads, depth of them at a time.
	readAll := func(mnt string) time.Duration {
		f, err := os.Open(filepath.Join(mnt, "f"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		start := time.Now()
		var wg sync.WaitGroup
		for r := range depth {
			wg.Go(func() {
				buf := make([]byte, 4096)
				for i := r; i < b.N; i += depth {
					off := int64(i*4096) % fileSize
					if _, err := f.ReadAt(buf, off); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return time.Since(start)
	}
	b.ResetTimer()
	dev := readAll(devMnt)
	ring := readAll(ringMnt)
	zc := readAll(zcMnt)
	b.StopTimer()
	perRead := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / float64(b.N) }
	b.ReportMetric(perRead(dev), "dev-ns/read")
	b.ReportMetric(perRead(ring), "ring-ns/read")
	b.ReportMetric(float64(dev)/float64(ring), "ring-speedup")
	if zcSrv.Stats().ZeroCopyReads > 0 {
		b.ReportMetric(perRead(zc), "zc-ns/read")
		b.ReportMetric(float64(dev)/float64(zc), "zc-speedup")
	}
}
