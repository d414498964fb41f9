package bpf

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/bpfusefs/bpfusefs/uring"
)

// BenchmarkCopy4K is the headline case of the 2021 io_uring BPF work: copy
// a cached file 4 KiB at a time to /dev/zero (BPFUSEFS_COPY_DST overrides),
// in the same run by the loop program (each READ chained to its WRITE in
// the kernel, one io_uring_enter for the whole file), by Go driving the same
// READ/WRITE pairs on a plain ring, and by a pread/pwrite loop. It reports
// ms per GiB for each, readwrite/bpf and uring/bpf (above 1: the program
// is faster). The source is under TMPDIR: put it on a disk filesystem, as
// tmpfs reads are punted to io-wq (see the package doc).
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
	dst := os.Getenv("BPFUSEFS_COPY_DST") // default /dev/zero, as in 2021
	if dst == "" {
		dst = "/dev/zero"
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		b.Fatal(err)
	}
	defer out.Close()
	inFd, outFd := int(in.Fd()), int(out.Fd())
	buf := make([]byte, chunk)

	before, err := l.Stats()
	if err != nil {
		b.Fatal(err)
	}
	plain, err := uring.New(8, &uring.Options{Flags: uring.SetupSingleIssuer | uring.SetupDeferTaskrun})
	if err != nil {
		b.Fatal(err)
	}
	defer plain.Close()
	var bpfTime, uringTime, rwTime time.Duration
	for b.Loop() {
		start := time.Now()
		n, err := l.Copy(inFd, outFd, size, chunk)
		if err != nil || n != size {
			b.Fatalf("bpf copy: %d bytes, %v", n, err)
		}
		bpfTime += time.Since(start)

		start = time.Now()
		for off := int64(0); off < size; off += chunk {
			uringIO(b, plain, func(sqe *uring.SQE) { sqe.PrepRead(inFd, buf, uint64(off)) })
			uringIO(b, plain, func(sqe *uring.SQE) { sqe.PrepWrite(outFd, buf, uint64(off)) })
		}
		uringTime += time.Since(start)

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
	b.ReportMetric(perGiB(uringTime), "uring-ms/GiB")
	b.ReportMetric(perGiB(rwTime), "readwrite-ms/GiB")
	b.ReportMetric(float64(rwTime)/float64(bpfTime), "readwrite/bpf")
	b.ReportMetric(float64(uringTime)/float64(bpfTime), "uring/bpf")
	// How many chunks each loop_step call carried: near 1 means every
	// READ or WRITE completed asynchronously and woke the loop.
	after, err := l.Stats()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(after.OwnCqes-before.OwnCqes)/float64(after.Steps-before.Steps), "cqes/step")
}

// uringIO does one request on ring the ordinary way, Go waiting for it.
func uringIO(b *testing.B, ring *uring.Ring, prep func(*uring.SQE)) {
	prep(ring.GetSQE())
	if _, err := ring.SubmitAndWait(1); err != nil {
		b.Fatal(err)
	}
	cqe, err := ring.WaitCQE()
	if err != nil {
		b.Fatal(err)
	}
	if err := cqe.Err(); err != nil {
		b.Fatal(err)
	}
	ring.CQESeen()
}

// BenchmarkSparseCopy copies a 32 MiB file whose every other 64 KiB block
// is zeros, keeping holes and checksumming, in the same run by SparseCopy
// (READ_FIXED -> IORING_OP_BPF -> WRITE_FIXED chains; patched kernel) and
// by Go doing the same with pread, SparseChecksum and pwrite. It reports
// ms per GiB for each and go/bpf (above 1: the chains are faster).
func BenchmarkSparseCopy(b *testing.B) {
	requireSparse(b)
	const size = 32 << 20
	data := make([]byte, size)
	for off := 0; off < size; off += 2 * SparseBlock {
		rand.Read(data[off : off+SparseBlock])
	}
	dir := b.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "src"), data, 0o600); err != nil {
		b.Fatal(err)
	}
	src, err := os.Open(filepath.Join(dir, "src"))
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	dst, err := os.Create(filepath.Join(dir, "dst"))
	if err != nil {
		b.Fatal(err)
	}
	defer dst.Close()
	want := SparseChecksum(data)
	buf := make([]byte, SparseBlock)
	zeros := make([]byte, SparseBlock)

	var bpfTime, goTime time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := SparseCopy(dst, src)
		if err != nil || res.Checksum != want || res.ZeroBlocks != size/SparseBlock/2 {
			b.Fatalf("SparseCopy: %+v, %v", res, err)
		}
		bpfTime += time.Since(start)

		start = time.Now()
		if err := dst.Truncate(0); err != nil {
			b.Fatal(err)
		}
		var sum uint64
		for off := int64(0); off < size; off += SparseBlock {
			if _, err := unix.Pread(int(src.Fd()), buf, off); err != nil {
				b.Fatal(err)
			}
			sum += SparseChecksum(buf)
			if string(buf) == string(zeros) {
				continue
			}
			if _, err := unix.Pwrite(int(dst.Fd()), buf, off); err != nil {
				b.Fatal(err)
			}
		}
		if err := dst.Truncate(size); err != nil || sum != want {
			b.Fatalf("Go copy: checksum %#x, want %#x; %v", sum, want, err)
		}
		goTime += time.Since(start)
	}
	perGiB := func(d time.Duration) float64 {
		return float64(d.Milliseconds()) / float64(b.N) * float64(1<<30) / size
	}
	b.ReportMetric(perGiB(bpfTime), "bpf-ms/GiB")
	b.ReportMetric(perGiB(goTime), "go-ms/GiB")
	b.ReportMetric(float64(goTime)/float64(bpfTime), "go/bpf")
}
