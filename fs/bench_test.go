package fs

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// The benchmarks run each workload on the backing directory itself and on
// the mount in every accel mode, in the same run, and report the mount's
// speed as a fraction of native ("x-native"; 1.0 is native speed).

func benchModes(b *testing.B, workload func(b *testing.B, dir string) func()) {
	if os.Geteuid() != 0 {
		b.Skip("mounting FUSE needs root")
	}
	for name, opts := range benchModeSet(b) {
		b.Run(name, func(b *testing.B) {
			tm := mountBench(b, opts)
			native, mounted := workload(b, tm.backing), workload(b, tm.mnt)
			var nativeTime, mountTime time.Duration
			for b.Loop() {
				start := time.Now()
				native()
				nativeTime += time.Since(start)
				start = time.Now()
				mounted()
				mountTime += time.Since(start)
			}
			b.ReportMetric(float64(nativeTime)/float64(mountTime), "x-native")
		})
	}
}

// benchModeSet is modes plus "fusering-nozc": where the kernel has
// zero-copy queues (7.3+) "fusering" uses them, and this is the same
// transport without.
func benchModeSet(b *testing.B) map[string]Options {
	ms := modes(b)
	if _, ok := ms["fusering"]; ok {
		ms["fusering-nozc"] = Options{Fusering: true, NoZeroCopy: true}
	}
	return ms
}

func mountBench(b *testing.B, opts Options) *testMount {
	dir := b.TempDir()
	tm := &testMount{backing: filepath.Join(dir, "backing"), mnt: filepath.Join(dir, "mnt")}
	for _, d := range []string{tm.backing, tm.mnt} {
		if err := os.Mkdir(d, 0755); err != nil {
			b.Fatal(err)
		}
	}
	opts.Backing = tm.backing
	m, err := Mount(tm.mnt, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := m.Unmount(false); err != nil {
			m.Unmount(true)
		}
		m.Wait()
	})
	return tm
}

// makeFile creates dir/name with size bytes of data.
func makeFile(b *testing.B, path string, size int) {
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, data, 0644); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSequentialRead reads a 16 MiB file in 1 MiB reads, reopening it
// for every pass.
func BenchmarkSequentialRead(b *testing.B) {
	benchModes(b, func(b *testing.B, dir string) func() {
		path := filepath.Join(dir, "seq")
		makeFile(b, path, 16<<20)
		buf := make([]byte, 1<<20)
		return func() {
			f, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			for {
				if n, _ := f.Read(buf); n == 0 {
					break
				}
			}
			f.Close()
		}
	})
}

// BenchmarkRandomRead4K does 256 random 4 KiB reads at queue depth 1 per
// iteration on a file opened once.
func BenchmarkRandomRead4K(b *testing.B) {
	benchModes(b, func(b *testing.B, dir string) func() {
		path := filepath.Join(dir, "rand")
		makeFile(b, path, 64<<20)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		rng := rand.New(rand.NewPCG(1, 1))
		buf := make([]byte, 4096)
		return func() {
			for range 256 {
				if _, err := f.ReadAt(buf, int64(rng.IntN(64<<8))*4096); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkRandomRead4KQD32 does 256 random 4 KiB reads per iteration
// from 32 goroutines at once, on a file opened once.
func BenchmarkRandomRead4KQD32(b *testing.B) {
	benchModes(b, func(b *testing.B, dir string) func() {
		path := filepath.Join(dir, "rand32")
		makeFile(b, path, 64<<20)
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		return func() {
			var wg sync.WaitGroup
			for g := range 32 {
				wg.Go(func() {
					rng := rand.New(rand.NewPCG(uint64(g), 3))
					buf := make([]byte, 4096)
					for range 8 {
						if _, err := f.ReadAt(buf, int64(rng.IntN(64<<8))*4096); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		}
	})
}

// BenchmarkRandomWrite4K does 256 random 4 KiB writes per iteration.
func BenchmarkRandomWrite4K(b *testing.B) {
	benchModes(b, func(b *testing.B, dir string) func() {
		path := filepath.Join(dir, "wr")
		makeFile(b, path, 64<<20)
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		rng := rand.New(rand.NewPCG(2, 2))
		buf := make([]byte, 4096)
		return func() {
			for range 256 {
				if _, err := f.WriteAt(buf, int64(rng.IntN(64<<8))*4096); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}

// BenchmarkCreateStatUnlink measures metadata round trips.
func BenchmarkCreateStatUnlink(b *testing.B) {
	benchModes(b, func(b *testing.B, dir string) func() {
		i := 0
		return func() {
			i++
			path := filepath.Join(dir, fmt.Sprintf("f%d", i))
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			f.Close()
			if _, err := os.Stat(path); err != nil {
				b.Fatal(err)
			}
			if err := os.Remove(path); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMirrorWrite writes to a 2-replica mount and, as the reference in
// the same run, the same data to two files directly on the backing
// filesystem (each write to both, as an application keeping its own copy
// would); "x-direct" is the mount's speed as a fraction of the reference.
func BenchmarkMirrorWrite(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("mounting FUSE needs root")
	}
	workloads := []struct {
		name   string
		size   int
		offset func(rng *rand.Rand) int64
	}{
		{"seq1M", 1 << 20, nil},
		{"rand4K", 4096, func(rng *rand.Rand) int64 { return int64(rng.IntN(64<<8)) * 4096 }},
	}
	for mode, opts := range benchModeSet(b) {
		if opts.Passthrough {
			continue // mirrored files are served by the daemon
		}
		for _, w := range workloads {
			b.Run(mode+"/"+w.name, func(b *testing.B) {
				dir := b.TempDir()
				opts.Mirrors = []string{filepath.Join(dir, "mirror")}
				if err := os.Mkdir(opts.Mirrors[0], 0755); err != nil {
					b.Fatal(err)
				}
				tm := mountBench(b, opts)
				direct := []*os.File{openBench(b, filepath.Join(dir, "a")), openBench(b, filepath.Join(dir, "b"))}
				mounted := []*os.File{openBench(b, tm.p("m"))}
				buf := make([]byte, w.size)
				pass := func(files []*os.File, seed uint64) {
					rng := rand.New(rand.NewPCG(seed, seed))
					for i := range 64 {
						off := int64(i * w.size)
						if w.offset != nil {
							off = w.offset(rng)
						}
						for _, f := range files {
							if _, err := f.WriteAt(buf, off); err != nil {
								b.Fatal(err)
							}
						}
					}
				}
				var directTime, mountTime time.Duration
				seed := uint64(0)
				for b.Loop() {
					seed++
					start := time.Now()
					pass(direct, seed)
					directTime += time.Since(start)
					start = time.Now()
					pass(mounted, seed)
					mountTime += time.Since(start)
				}
				b.ReportMetric(float64(directTime)/float64(mountTime), "x-direct")
			})
		}
	}
}

func openBench(b *testing.B, path string) *os.File {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY, 0644)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}
