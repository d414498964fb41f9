#!/bin/sh
# Regenerates the BPF objects and their Go bindings (go generate ./bpf/...,
# `make bpf`). The outputs are committed, so `go build` never needs clang.
set -eu

clang=${BPF_CLANG:-}
if [ -z "$clang" ]; then
	for c in clang-19 clang; do
		if command -v "$c" >/dev/null 2>&1; then clang=$c; break; fi
	done
fi
if [ -z "$clang" ]; then
	echo "bpf/gen.sh: installing clang-19 (Debian package)" >&2
	apt-get install -y --no-install-recommends clang-19 llvm-19 >&2
	clang=clang-19
fi
strip=llvm-strip-${clang#clang-}
command -v "$strip" >/dev/null 2>&1 || strip=llvm-strip

bpf2go() {
	go tool bpf2go -cc "$clang" -strip "$strip" -target bpfel -no-global-types "$@" -- -I c -O2 -g -Wall -Werror
}
# The loop, for any kernel with io_uring bpf-ops.
bpf2go -type loop_shared -type loop_stats -type offload_file -type entry_state -type fsync_scratch loop c/loop.bpf.c
# The sparse copy's filter, for kernels with our series (IORING_OP_BPF).
bpf2go -type sparse_stats sparse c/sparse.bpf.c
