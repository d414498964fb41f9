package bpf

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// BenchmarkCopy4K is the headline case of the 2021 io_uring BPF work: copy
// a cached file 4 KiB at a time to /dev/zero, once by the loop program
// (each READ chained to its WRITE in the kernel, one io_uring_enter for the
// whole file) and once by a pread/pwrite loop, in the same run. It reports
// ms per GiB for each and their ratio (readwrite/bpf; above 1 means the
// program is faster).
func BenchmarkCopy4K(b *testing.B) {
	requireLoop(b)
	ring, region := newLoopRing(b)
	l := attach(b, ring, region)

	const size, chunk = 32 << 20, 4096
	path := filepath.Join(b.TempDir(), "src")
	data := make([]byte, size)
	rand.Read(data)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	in, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile("/dev/zero", os.O_WRONLY, 0)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	inFd, outFd := int(in.Fd()), int(out.Fd())
	buf := make([]byte, chunk)

	var bpfTime, rwTime time.Duration
	for b.Loop() {
		start := time.Now()
		n, err := l.Copy(inFd, outFd, size, chunk)
		if err != nil || n != size {
			b.Fatalf("bpf copy: %d bytes, %v", n, err)
		}
		bpfTime += time.Since(start)

		start = time.Now()
		for off := int64(0); off < size; off += chunk {
			if _, err := unix.Pread(inFd, buf, off); err != nil {
				b.Fatal(err)
			}
			if _, err := unix.Pwrite(outFd, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		rwTime += time.Since(start)
	}
	perGiB := func(d time.Duration) float64 {
		return float64(d.Milliseconds()) / float64(b.N) * float64(1<<30) / size
	}
	b.ReportMetric(perGiB(bpfTime), "bpf-ms/GiB")
	b.ReportMetric(perGiB(rwTime), "readwrite-ms/GiB")
	b.ReportMetric(float64(rwTime)/float64(bpfTime), "readwrite/bpf")
}
