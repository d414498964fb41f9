package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// A workload is one measurement, repeated --runs times on every system.
type workload struct {
	name  string
	group string // fio, meta, copy, app or replica: --workloads accepts it too
	about string // what is measured, for the report
	unit  string
	// higherIsBetter is true for rates, false for durations.
	higherIsBetter bool
	// replicas is how many copies of the data the system keeps: 2 mounts
	// bpfusefs with a mirror and makes native access write both copies.
	replicas int
	// timed workloads run for --runtime seconds instead of doing a fixed
	// amount of work.
	timed bool
	// tools are the programs it runs, looked up in PATH before it is.
	tools []string
	// prepare sets up what measure needs; it is not timed.
	prepare func(ctx context.Context, e *env) error
	// measure runs the timed part and returns the figure in unit.
	measure func(ctx context.Context, e *env) (float64, error)
}

// env is what a workload runs against.
type env struct {
	cfg     *Config
	inst    *instance
	scratch string // the bench's own directory, outside every mount
	tarball string // the generated project, for the application mix
}

func (e *env) path(name string) string { return filepath.Join(e.inst.dir, name) }

// Units.
const (
	mibPerSec = "MiB/s"
	iops      = "IOPS"
	opsPerSec = "ops/s"
	seconds   = "s"
)

// File names the workloads use inside each system's directory.
const (
	fioReadFile = "fio.dat"     // read passes and random writes
	fioSeqFile  = "fio-seq.dat" // sequential writes, fresh each pass
	metaDir     = "meta"
	treeDir     = "tree"
	copyFile    = "copy.dat"
	copyDst     = "copy-dst.dat"
	appDir      = "app"
)

// replicaGroup is the --workloads group of the 2-replica variants.
const replicaGroup = "replica"

// workloads lists every workload in report order.
func workloads() []workload {
	var ws []workload
	reads := []struct {
		name, about string
		job         fioJob
	}{
		{"seq-read", "1 MiB sequential read (psync)", fioJob{rw: "read", blockSize: "1M", ioEngine: "psync", ioDepth: 1}},
		{"rand-read-qd1", "4 KiB random read, QD1 (psync)", fioJob{rw: "randread", blockSize: "4k", ioEngine: "psync", ioDepth: 1}},
		{"rand-read-qd32", "4 KiB random read, QD32 (io_uring)", fioJob{rw: "randread", blockSize: "4k", ioEngine: "io_uring", ioDepth: 32}},
	}
	for _, r := range reads {
		ws = append(ws, fioRead(r.name, r.about+", file written and read beforehand, reopened, warm cache", r.job, warm, 1))
	}
	for _, r := range reads {
		ws = append(ws, fioRead(r.name+"-cold", r.about+", every cache of the file dropped first, one pass", r.job, cold, 1))
	}
	seqWrite := fioJob{rw: "write", blockSize: "1M", ioEngine: "psync", ioDepth: 1, endFsync: true}
	randWrite := fioJob{rw: "randwrite", blockSize: "4k", ioEngine: "psync", ioDepth: 1, endFsync: true, timeBased: true}
	randWrite32 := randWrite
	randWrite32.ioEngine, randWrite32.ioDepth = "io_uring", 32
	randWriteSync := randWrite
	randWriteSync.fsync = 1
	ws = append(ws,
		fioWrite("seq-write", "1 MiB sequential write of a new file, end_fsync", seqWrite, 1),
		fioWrite("rand-write-qd1", "4 KiB random overwrite, QD1 (psync), end_fsync", randWrite, 1),
		fioWrite("rand-write-qd32", "4 KiB random overwrite, QD32 (io_uring), end_fsync", randWrite32, 1),
	)
	ws = append(ws, metaWorkloads()...)
	ws = append(ws, copyWorkload(), copyRangeWorkload())
	ws = append(ws, appWorkloads()...)
	return append(ws,
		fioWrite("seq-write-2r", "seq-write with 2 replicas (natively: both copies written concurrently)", seqWrite, 2),
		fioWrite("rand-write-qd1-2r", "rand-write-qd1 with 2 replicas", randWrite, 2),
		fioWrite("rand-write-qd32-2r", "rand-write-qd32 with 2 replicas", randWrite32, 2),
		fioWrite("rand-write-fsync-2r", "rand-write-qd1 with an fsync after every write (a database's commits), 2 replicas", randWriteSync, 2),
		// After the 2-replica writes the mount's cache of the file is
		// partly gone (their new mtime drops it) and partly fresh, and a
		// faster server would warm it faster within a pass: dropping it and
		// reading each block once leaves every read to the server (the
		// daemon or the BPF program), which is what mirrored reads are about.
		fioRead("rand-read-qd1-2r", "4 KiB random read, QD1 (psync), of a mirrored file: the mount's cache of it dropped, the replicas' kept, one pass (natively: one copy, warm)", reads[1].job, mountDropped, 2),
	)
}

func fioGroup(replicas int) string {
	if replicas > 1 {
		return replicaGroup
	}
	return "fio"
}

func fioUnit(job fioJob) string {
	if job.rw == "read" || job.rw == "write" {
		return mibPerSec
	}
	return iops
}

// cacheState is what a read pass finds cached of its file.
type cacheState int

const (
	warm         cacheState = iota // whatever the system kept
	cold                           // nothing: every copy's pages dropped
	mountDropped                   // the backing copies, not the mount's pages
)

// fioRead reads the file written beforehand; each pass reopens it (fio opens
// it anew). Warm passes read it through the system once before, then loop
// over it for the whole runtime. The others read it once (capped at the
// runtime): fio's random map visits every block once a loop, so each read
// finds only what the pass started with cached.
func fioRead(name, about string, job fioJob, cache cacheState, replicas int) workload {
	job.fileName, job.timeBased = fioReadFile, cache == warm
	return workload{
		name: name, group: fioGroup(replicas), about: about, unit: fioUnit(job), higherIsBetter: true,
		replicas: replicas, timed: job.timeBased, tools: []string{"fio"},
		prepare: func(ctx context.Context, e *env) error {
			if err := ensureFile(e.path(fioReadFile), e.cfg.FileSize); err != nil {
				return err
			}
			switch cache {
			case warm:
				// Read it through the system first: the file's
				// write leaves the mount's cache empty (FUSE writes
				// through), and a pass that warmed it as it went
				// would reward a fast server with cache hits.
				return readAll(e.path(fioReadFile))
			case cold:
				return dropCache(e.inst, fioReadFile)
			case mountDropped:
				return dropMountCache(e.inst, fioReadFile)
			}
			return nil
		},
		measure: func(ctx context.Context, e *env) (float64, error) {
			return job.sized(e.cfg).run(ctx, e.scratch, []string{e.inst.dir})
		},
	}
}

// fioWrite writes through every directory that must receive the data: the
// mount once, or natively each replica.
func fioWrite(name, about string, job fioJob, replicas int) workload {
	job.fileName = fioReadFile
	if !job.timeBased {
		job.fileName = fioSeqFile
	}
	return workload{
		name: name, group: fioGroup(replicas), about: about, unit: fioUnit(job), higherIsBetter: true,
		replicas: replicas, timed: job.timeBased, tools: []string{"fio"},
		prepare: func(ctx context.Context, e *env) error {
			for _, dir := range e.inst.writeDirs {
				path := filepath.Join(dir, job.fileName)
				if job.fileName == fioSeqFile {
					if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
						return err
					}
				} else if err := ensureFile(path, e.cfg.FileSize); err != nil {
					return err
				}
			}
			// Start with nothing dirty: the previous system's pass
			// leaves hundreds of MiB in writeback on the same disk,
			// which this pass would otherwise wait behind.
			return syncFS(e.inst.backings[0])
		},
		measure: func(ctx context.Context, e *env) (float64, error) {
			return job.sized(e.cfg).run(ctx, e.scratch, e.inst.writeDirs)
		},
	}
}

// rate times fn and returns n per second.
func rate(n int, fn func() error) (float64, error) {
	start := time.Now()
	if err := fn(); err != nil {
		return 0, err
	}
	return float64(n) / time.Since(start).Seconds(), nil
}

// duration times fn in seconds.
func duration(fn func() error) (float64, error) {
	start := time.Now()
	if err := fn(); err != nil {
		return 0, err
	}
	return time.Since(start).Seconds(), nil
}

func metaWorkloads() []workload {
	files := func(e *env) (string, int) { return e.path(metaDir), e.cfg.Files }
	ensure := func(ctx context.Context, e *env) error { return ensureMetaFiles(files(e)) }
	meta := func(name, about string, prepare func(context.Context, *env) error, op func(string, int) error) workload {
		return workload{
			name: name, group: "meta", about: about, unit: opsPerSec, higherIsBetter: true, replicas: 1,
			prepare: prepare,
			measure: func(ctx context.Context, e *env) (float64, error) {
				dir, n := files(e)
				return rate(n, func() error { return op(dir, n) })
			},
		}
	}
	walk := func(name, about string, tool string, args ...string) workload {
		return workload{
			name: name, group: "meta", about: about, unit: seconds, replicas: 1, tools: []string{tool},
			prepare: func(ctx context.Context, e *env) error { return ensureTree(e.path(treeDir), e.cfg.Files) },
			measure: func(ctx context.Context, e *env) (float64, error) {
				return duration(func() error {
					return runCommand(ctx, "", tool, append(args, e.path(treeDir))...)
				})
			},
		}
	}
	return []workload{
		meta("meta-create", "create (open O_CREAT+O_EXCL, close) --files empty files in one directory",
			func(ctx context.Context, e *env) error { return freshDir(e.path(metaDir)) }, createFiles),
		meta("meta-stat", "lstat each of those files", ensure, statFiles),
		meta("meta-unlink", "unlink each of those files", ensure, unlinkFiles),
		walk("tree-find", "`find` over a tree of --files files, 100 per directory", "find"),
		walk("tree-ls", "`ls -lR` over the same tree", "ls", "-lR"),
	}
}

func copyWorkload() workload {
	return workload{
		name: "copy-4k", group: "copy", unit: mibPerSec, higherIsBetter: true, replicas: 1,
		about: "copy a cached file of --size bytes to /dev/zero 4 KiB at a time (dd bs=4k)",
		prepare: func(ctx context.Context, e *env) error {
			if err := ensureFile(e.path(copyFile), e.cfg.CopySize); err != nil {
				return err
			}
			return readAll(e.path(copyFile))
		},
		measure: func(ctx context.Context, e *env) (float64, error) {
			var n int64
			secs, err := duration(func() (err error) {
				n, err = copy4K(e.path(copyFile))
				return err
			})
			if err != nil {
				return 0, err
			}
			if n != e.cfg.CopySize {
				return 0, fmt.Errorf("copy-4k copied %d bytes of %d", n, e.cfg.CopySize)
			}
			return float64(n) / (1 << 20) / secs, nil
		},
	}
}

// copyRangeChunk is what one copy_file_range(2) of copy-range-2r asks for:
// one FUSE COPY_FILE_RANGE each, so that the figure reflects the serving of
// requests rather than one request's copy.
const copyRangeChunk = 128 << 10

func copyRangeWorkload() workload {
	return workload{
		name: "copy-range-2r", group: "copy", unit: mibPerSec, higherIsBetter: true, replicas: 2,
		about: fmt.Sprintf("copy_file_range(2) of a cached file of --size bytes into a new one, %d KiB per call, 2 replicas (natively: both copies made concurrently)", copyRangeChunk>>10),
		prepare: func(ctx context.Context, e *env) error {
			for _, dir := range e.inst.writeDirs {
				if err := ensureFile(filepath.Join(dir, copyFile), e.cfg.CopySize); err != nil {
					return err
				}
				if err := readAll(filepath.Join(dir, copyFile)); err != nil {
					return err
				}
				if err := os.Remove(filepath.Join(dir, copyDst)); err != nil && !os.IsNotExist(err) {
					return err
				}
			}
			return syncFS(e.inst.backings[0])
		},
		measure: func(ctx context.Context, e *env) (float64, error) {
			secs, err := duration(func() error {
				errs := make(chan error, len(e.inst.writeDirs))
				for _, dir := range e.inst.writeDirs {
					go func() {
						errs <- copyRange(filepath.Join(dir, copyFile), filepath.Join(dir, copyDst), e.cfg.CopySize, copyRangeChunk)
					}()
				}
				var err error
				for range e.inst.writeDirs {
					err = errors.Join(err, <-errs)
				}
				return err
			})
			if err != nil {
				return 0, err
			}
			return float64(e.cfg.CopySize) / (1 << 20) / secs, nil
		},
	}
}

func appWorkloads() []workload {
	app := func(name, about string, tools []string, prepare func(ctx context.Context, dir, tarball string) error,
		run func(ctx context.Context, dir, tarball string) error) workload {
		return workload{
			name: name, group: "app", about: about, unit: seconds, replicas: 1, tools: tools,
			prepare: func(ctx context.Context, e *env) error { return prepare(ctx, e.path(appDir), e.tarball) },
			measure: func(ctx context.Context, e *env) (float64, error) {
				return duration(func() error { return run(ctx, e.path(appDir), e.tarball) })
			},
		}
	}
	return []workload{
		app("app-untar", "untar the generated C project (--src-files files)", []string{"tar"},
			func(ctx context.Context, dir, _ string) error { return freshDir(dir) },
			func(ctx context.Context, dir, tarball string) error {
				return runCommand(ctx, "", "tar", "-xf", tarball, "-C", dir)
			}),
		app("app-git-status", "`git status` in the committed project", []string{"git"},
			ensureAppRepo,
			func(ctx context.Context, dir, _ string) error { return gitStatus(ctx, dir) }),
		app("app-make", "`make -jNCPU` of the project (gcc -O2, then link)", []string{"make", "cc"},
			cleanBuild,
			func(ctx context.Context, dir, _ string) error { return buildApp(ctx, dir) }),
	}
}
