package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// fioJob describes one fio workload. Every directory in dirs gets the same
// job (one fio job section each, all in one reporting group), so that a
// replicated write run natively writes each copy concurrently, as a mirror
// would.
type fioJob struct {
	rw         string // read, write, randread, randwrite
	blockSize  string
	ioEngine   string // psync or io_uring
	ioDepth    int
	timeBased  bool // loop over the file for the whole runtime
	endFsync   bool
	fsync      int // fsync(2) after every fsync writes; 0: never
	fileName   string
	fileSize   int64
	runtimeSec int
}

// sized returns the job with the file size and runtime of cfg.
func (j fioJob) sized(cfg *Config) fioJob {
	j.fileSize, j.runtimeSec = cfg.FileSize, cfg.Runtime
	return j
}

// args returns fio's command line for the job run in dirs, writing its JSON
// report to out. Options before the first --name are global.
func (j fioJob) args(dirs []string, out string) []string {
	args := []string{
		"--output-format=json", "--output=" + out,
		"--rw=" + j.rw, "--bs=" + j.blockSize,
		"--ioengine=" + j.ioEngine, "--iodepth=" + strconv.Itoa(j.ioDepth),
		"--size=" + strconv.FormatInt(j.fileSize, 10),
		"--runtime=" + strconv.Itoa(j.runtimeSec),
		// The bench decides what is cached before each pass (see
		// dropCache); fio must not drop caches behind its back.
		"--invalidate=0",
		"--group_reporting=1",
		"--randrepeat=1",
	}
	if j.timeBased {
		args = append(args, "--time_based=1")
	}
	if j.endFsync {
		args = append(args, "--end_fsync=1")
	}
	if j.fsync > 0 {
		args = append(args, "--fsync="+strconv.Itoa(j.fsync))
	}
	for i, dir := range dirs {
		args = append(args, "--name=job"+strconv.Itoa(i), "--directory="+dir, "--filename="+j.fileName)
	}
	return args
}

// run runs the job in dirs and returns the figure per copy: MiB/s for
// sequential jobs, IOPS for random ones, divided by len(dirs) because the
// copies carry the same logical data.
func (j fioJob) run(ctx context.Context, scratch string, dirs []string) (float64, error) {
	out := filepath.Join(scratch, "fio.json")
	if err := runCommand(ctx, "", "fio", j.args(dirs, out)...); err != nil {
		return 0, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return 0, fmt.Errorf("fio report: %w", err)
	}
	res, err := parseFio(data)
	if err != nil {
		return 0, err
	}
	side := res.Read
	if j.rw == "write" || j.rw == "randwrite" {
		side = res.Write
	}
	figure := side.IOPS
	if j.rw == "read" || j.rw == "write" {
		figure = side.BWBytes / (1 << 20)
	}
	if !(figure > 0) {
		return 0, fmt.Errorf("fio %s reported no %s progress", j.rw, j.rw)
	}
	return figure / float64(len(dirs)), nil
}

// fioSide is one direction of a fio job's results.
type fioSide struct {
	BWBytes float64 `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
}

// fioResult is the part of fio's JSON report the bench reads: the first job,
// which with group_reporting is the whole group.
type fioResult struct {
	JobName string  `json:"jobname"`
	Error   int     `json:"error"`
	Read    fioSide `json:"read"`
	Write   fioSide `json:"write"`
}

// parseFio reads fio's --output-format=json report.
func parseFio(data []byte) (fioResult, error) {
	var report struct {
		Jobs []fioResult `json:"jobs"`
	}
	if err := json.Unmarshal(data, &report); err != nil {
		return fioResult{}, fmt.Errorf("parse fio report: %w", err)
	}
	if len(report.Jobs) == 0 {
		return fioResult{}, fmt.Errorf("parse fio report: no jobs")
	}
	job := report.Jobs[0]
	if job.Error != 0 {
		return job, fmt.Errorf("fio job %s failed: errno %d", job.JobName, job.Error)
	}
	return job, nil
}
