package uring

import (
	"math/rand/v2"
	"runtime"
	"strconv"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkRead4K compares 4 KiB reads of a file in the page cache through
// the Engine with plain pread, at queue depth 1 (one goroutine) and 32 (32
// goroutines, or one goroutine with a 32-read Batch), and reports the
// Engine's throughput relative to pread as x-pread.
func BenchmarkRead4K(b *testing.B) {
	const blocks, size = 1024, 4096
	content := make([]byte, blocks*size)
	for i := range content {
		content[i] = byte(i)
	}
	fd := int(tempFile(b, content).Fd())
	e := newEngine(b, EngineOptions{Entries: 64})

	readers := map[string]func(p []byte, off int64) (int, error){
		"pread":  func(p []byte, off int64) (int, error) { return unix.Pread(fd, p, off) },
		"engine": func(p []byte, off int64) (int, error) { return e.Pread(fd, p, off) },
	}
	var preadQD32 time.Duration
	for _, qd := range []int{1, 32} {
		perOp := map[string]time.Duration{}
		for _, name := range []string{"pread", "engine"} {
			read := readers[name]
			b.Run(name+"/QD"+strconv.Itoa(qd), func(b *testing.B) {
				before := e.Stats()
				b.SetBytes(size)
				if qd == 1 {
					buf := make([]byte, size)
					for i := 0; b.Loop(); i++ {
						if n, err := read(buf, int64(i*7919%blocks)*size); n != size || err != nil {
							b.Fatalf("read = %d, %v", n, err)
						}
					}
				} else {
					b.SetParallelism((qd + runtime.GOMAXPROCS(0) - 1) / runtime.GOMAXPROCS(0))
					b.RunParallel(func(pb *testing.PB) {
						buf := make([]byte, size)
						rnd := rand.New(rand.NewPCG(rand.Uint64(), 0))
						for pb.Next() {
							if n, err := read(buf, int64(rnd.IntN(blocks))*size); n != size || err != nil {
								b.Errorf("read = %d, %v", n, err)
								return
							}
						}
					})
				}
				perOp[name] = b.Elapsed() / time.Duration(b.N)
				if name == "engine" {
					st := e.Stats()
					b.ReportMetric(float64(st.Enters-before.Enters)/float64(st.Requests-before.Requests), "enters/op")
				}
				if name == "engine" && perOp["pread"] > 0 {
					b.ReportMetric(float64(perOp["pread"])/float64(perOp[name]), "x-pread")
				}
			})
		}
		if qd == 32 {
			preadQD32 = perOp["pread"]
		}
	}
	// Depth 32 from one goroutine: 32 reads in one Batch per iteration
	// (a read-ahead), against the 32-goroutine pread above.
	b.Run("batch/QD32", func(b *testing.B) {
		const depth = 32
		b.SetBytes(depth * size)
		bufs := make([][]byte, depth)
		for i := range bufs {
			bufs[i] = make([]byte, size)
		}
		batch := e.NewBatch()
		rnd := rand.New(rand.NewPCG(1, 2))
		for b.Loop() {
			batch.Reset()
			for _, buf := range bufs {
				batch.Pread(fd, buf, int64(rnd.IntN(blocks))*size)
			}
			if err := e.Run(batch); err != nil {
				b.Fatal(err)
			}
			for _, res := range batch.Results() {
				if res != size {
					b.Fatalf("batched read res %d", res)
				}
			}
		}
		if preadQD32 > 0 {
			perRead := b.Elapsed() / time.Duration(b.N*depth)
			b.ReportMetric(float64(preadQD32)/float64(perRead), "x-pread")
		}
	})
}

// BenchmarkMirrorWrite4K writes one 4 KiB block to three mirror files:
// three pwrites in a row against one Engine Batch, reported as x-pwrite.
func BenchmarkMirrorWrite4K(b *testing.B) {
	const mirrors, size = 3, 4096
	fds := make([]int, mirrors)
	for i := range fds {
		fds[i] = int(tempFile(b, make([]byte, 256*size)).Fd())
	}
	e := newEngine(b, EngineOptions{Entries: 16})
	data := make([]byte, size)
	var pwritePerOp time.Duration
	b.Run("pwrite", func(b *testing.B) {
		b.SetBytes(size)
		for i := 0; b.Loop(); i++ {
			for _, fd := range fds {
				if n, err := unix.Pwrite(fd, data, int64(i%256)*size); n != size || err != nil {
					b.Fatalf("pwrite = %d, %v", n, err)
				}
			}
		}
		pwritePerOp = b.Elapsed() / time.Duration(b.N)
	})
	b.Run("batch", func(b *testing.B) {
		b.SetBytes(size)
		batch := e.NewBatch()
		for i := 0; b.Loop(); i++ {
			batch.Reset()
			for _, fd := range fds {
				batch.Pwrite(fd, data, int64(i%256)*size)
			}
			if err := e.Run(batch); err != nil {
				b.Fatal(err)
			}
			for _, res := range batch.Results() {
				if res != size {
					b.Fatalf("mirror write res %d", res)
				}
			}
		}
		if pwritePerOp > 0 {
			b.ReportMetric(float64(pwritePerOp)/float64(b.Elapsed()/time.Duration(b.N)), "x-pwrite")
		}
	})
}
