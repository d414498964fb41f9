# bpfusefs — see README.md. Caches (kernels, images, xfstests builds) live in
# $(BPFUSEFS_CACHE), never in the repository.
export BPFUSEFS_CACHE ?= $(HOME)/.cache/bpfusefs
GO      ?= go
BIN     := bin/bpfusefs
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)

.PHONY: all build test test-host lint demo vmtest vmtest-patched vmshell vmbench kernel bpf bench xfstests deps clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/bpfusefs

deps:
	scripts/deps.sh

lint:
	@bad=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$bad" ]; then echo "gofmt: $$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) tool staticcheck ./...

# Host suites first (unit + integration as root with /dev/fuse), then the VM
# suite on the newest Debian 7.x kernel, then the suites of the packages the
# kernel series changes on the patched kernel (built, or cached by the
# series' hash), then the xfstests smoke subset.
test: deps build lint test-host vmtest vmtest-patched xfstests-smoke

PATCHED_PKGS := ./uring ./bpf ./features
# The mount with the BPF loop, which uses the series' extra CQs there, on an
# ext4 disk: cached backing READs then complete inline, as they do not on tmpfs;
# a mirror's failed fsync, which the loop hands over only there (FUTIMENS); and
# copies, which the loop serves only there (IORING_COPY_KEEP_HOLES).
PATCHED_FS_TESTS := ^(TestBPFOffload|TestMirrorFsyncFailover|TestCopyFileRangeCases|TestMirrorCopyFailover|TestBPFCopyAnyCaller)$$
# KERNEL=patched boots the kernel of the current series: build it first
# (a no-op when the cache has it).
BUILD_PATCHED = $(if $(filter patched,$(KERNEL)),kernel/build.sh >/dev/null)

vmtest-patched: build
	kernel/build.sh >/dev/null
	kernel/vmtest.sh --kernel patched --packages '$(PATCHED_PKGS)'
	kernel/vmtest.sh --kernel patched --disk --packages ./fs --tests '$(PATCHED_FS_TESTS)'

test-host:
	$(GO) test -race -count=1 -timeout 20m ./...

demo: build
	scripts/demo.sh

# make vmtest XFSTESTS=smoke|quick|auto|'generic/001 ...' [ACCEL=...] runs
# xfstests in the guest instead, by default in the modes that need its kernel;
# make vmtest SOAK=MINUTES [ACCEL=...] runs xfstests/soak.sh there.
VM_XFSTESTS_ACCEL := fusering,bpf
VM_XFSTESTS_SELECT = $(if $(filter smoke,$(XFSTESTS)),--smoke,$(if $(filter quick auto,$(XFSTESTS)),--group $(XFSTESTS),--tests '$(XFSTESTS)'))

vmtest: build
	$(BUILD_PATCHED)
	kernel/vmtest.sh $(if $(KERNEL),--kernel $(KERNEL)) \
		$(if $(XFSTESTS),--xfstests "--accel $(or $(ACCEL),$(VM_XFSTESTS_ACCEL)) $(VM_XFSTESTS_SELECT)") \
		$(if $(SOAK),--soak "--accel $(or $(ACCEL),$(VM_XFSTESTS_ACCEL)) --minutes $(SOAK)") \
		$(if $(TESTS),--tests '$(TESTS)') $(if $(PKGS),--packages '$(PKGS)')

vmshell: build
	$(BUILD_PATCHED)
	kernel/vmtest.sh --shell $(if $(KERNEL),--kernel $(KERNEL))

kernel:
	kernel/build.sh

bpf:
	$(GO) generate ./bpf/...

bench: build
	$(BIN) bench $(BENCHFLAGS)

# Benchmarks under emulation take long: the 2026-12-01 run in BENCHMARKS.md
# took 29 minutes of guest time with reduced sizes.
vmbench: build
	$(BUILD_PATCHED)
	kernel/vmtest.sh --bench --timeout 2h $(if $(KERNEL),--kernel $(KERNEL))

xfstests: build
	xfstests/run.sh $(if $(ACCEL),--accel $(ACCEL)) $(if $(GROUP),--group $(GROUP)) $(if $(TESTS),--tests '$(TESTS)')

xfstests-smoke: build
	xfstests/run.sh --smoke

clean:
	rm -rf bin
