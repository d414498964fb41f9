package bench

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// The application mix works on a generated C project: srcModules
// directories of C files, a shared header, a main.c and a Makefile that
// compiles every file and links them.
const srcFilesPerModule = 50

// srcEpoch is the modification time of every entry of the generated
// tarball, so that the same parameters always give the same bytes.
var srcEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const srcMakefile = `CFLAGS ?= -O2 -Iinclude
SRCS := main.c $(sort $(wildcard mod*/*.c))
OBJS := $(SRCS:.c=.o)

prog: $(OBJS)
	$(CC) -o $@ $(OBJS)

%.o: %.c include/common.h
	$(CC) $(CFLAGS) -c -o $@ $<

clean:
	rm -f prog $(OBJS)

.PHONY: clean
`

const srcHeader = `#ifndef COMMON_H
#define COMMON_H
static inline unsigned mix(unsigned x) { x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; return x; }
#endif
`

// srcFile is the i'th generated C file: a few functions with loops, so that
// the compiler has some work to do.
func srcFile(i int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "#include \"common.h\"\n\n")
	for k := range 4 {
		fmt.Fprintf(&b, "unsigned f%05d_%d(const unsigned *v, int n)\n{\n", i, k)
		fmt.Fprintf(&b, "\tunsigned acc = %dU;\n", i*4+k)
		fmt.Fprintf(&b, "\tfor (int j = 0; j < n; j++) {\n\t\tacc = mix(acc + v[j] * %dU);\n", 2*k+1)
		fmt.Fprintf(&b, "\t\tif (acc %% %d == 0)\n\t\t\tacc ^= (unsigned)j << %d;\n\t}\n", k+3, k)
		fmt.Fprintf(&b, "\treturn acc;\n}\n\n")
	}
	return b.Bytes()
}

// writeSourceTar writes the generated project with files C files as an
// uncompressed tarball rooted at src/. The Makefile comes last, so its
// presence means an extraction finished.
func writeSourceTar(path string, files int) error {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dir := func(name string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: srcEpoch, Format: tar.FormatPAX})
	}
	file := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: srcEpoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	steps := []func() error{
		func() error { return dir("src/") },
		func() error { return dir("src/include/") },
		func() error { return file("src/include/common.h", []byte(srcHeader)) },
		func() error { return file("src/.gitignore", []byte("*.o\nprog\n")) },
		func() error { return file("src/main.c", []byte("int main(void) { return 0; }\n")) },
	}
	for i := range files {
		module := fmt.Sprintf("src/mod%03d/", i/srcFilesPerModule)
		if i%srcFilesPerModule == 0 {
			steps = append(steps, func() error { return dir(module) })
		}
		steps = append(steps, func() error { return file(fmt.Sprintf("%sf%05d.c", module, i), srcFile(i)) })
	}
	steps = append(steps, func() error { return file("src/Makefile", []byte(srcMakefile)) }, tw.Close)
	for _, step := range steps {
		if err := step(); err != nil {
			return fmt.Errorf("generate %s: %w", path, err)
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// sourceTar returns the cached tarball of the generated project,
// generating it when missing.
func sourceTar(cache string, files int) (string, error) {
	path := filepath.Join(cache, "bench", fmt.Sprintf("src-%d.tar", files))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, writeSourceTar(path, files)
}

// ensureApp leaves the project extracted under dir/src.
func ensureApp(ctx context.Context, dir, tarball string) error {
	if _, err := os.Stat(filepath.Join(dir, "src", "Makefile")); err == nil {
		return nil
	}
	if err := freshDir(dir); err != nil {
		return err
	}
	return runCommand(ctx, "", "tar", "-xf", tarball, "-C", dir)
}

// gitEnv keeps the user's and the system's git configuration out of the
// measurement.
var gitEnv = []string{"GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null"}

func gitArgs(args ...string) []string {
	return append([]string{"-c", "user.name=bench", "-c", "user.email=bench@localhost", "-c", "safe.directory=*", "-c", "init.defaultBranch=main"}, args...)
}

// ensureAppRepo leaves the extracted project committed to a git repository.
func ensureAppRepo(ctx context.Context, dir, tarball string) error {
	if err := ensureApp(ctx, dir, tarball); err != nil {
		return err
	}
	src := filepath.Join(dir, "src")
	if runGit(ctx, src, "rev-parse", "--verify", "-q", "HEAD") == nil {
		return nil
	}
	for _, args := range [][]string{{"init", "-q"}, {"add", "-A"}, {"commit", "-q", "-m", "generated project"}} {
		if err := runGit(ctx, src, args...); err != nil {
			return err
		}
	}
	return nil
}

func runGit(ctx context.Context, dir string, args ...string) error {
	return runCommandEnv(ctx, dir, gitEnv, "git", gitArgs(args...)...)
}

// makeJobs is the parallelism of the build: one job per CPU.
func makeJobs() string { return fmt.Sprintf("-j%d", runtime.NumCPU()) }

// cleanBuild removes what a previous build left.
func cleanBuild(ctx context.Context, dir, tarball string) error {
	if err := ensureApp(ctx, dir, tarball); err != nil {
		return err
	}
	return runCommand(ctx, filepath.Join(dir, "src"), "make", "-s", "clean")
}

func buildApp(ctx context.Context, dir string) error {
	return runCommand(ctx, filepath.Join(dir, "src"), "make", "-s", makeJobs())
}

// gitStatus runs `git status` and checks it saw a clean tree, which is what
// the prepared repository is.
func gitStatus(ctx context.Context, dir string) error {
	out, err := commandOutput(ctx, filepath.Join(dir, "src"), gitEnv, "git", gitArgs("status", "--porcelain")...)
	if err != nil {
		return err
	}
	if s := strings.TrimSpace(out); s != "" {
		return fmt.Errorf("git status: tree not clean: %.200s", s)
	}
	return nil
}
