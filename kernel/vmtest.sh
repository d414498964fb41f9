#!/usr/bin/env bash
# Runs bpfusefs test suites in a qemu guest on a chosen kernel. See
# kernel/README.md for the full story; in short:
#
#   kernel/vmtest.sh [options]           build, boot, run the tests, exit with their status
#   kernel/vmtest.sh --shell [options]   same guest, interactive shell on the console
#   kernel/vmtest.sh --bench [options]   same guest, runs `bpfusefs bench`
#   kernel/vmtest.sh --xfstests 'ARGS'   xfstests/run.sh ARGS in the guest, on the host's userspace
#   kernel/vmtest.sh --soak 'ARGS'       xfstests/soak.sh ARGS the same way
#
# Exit status: 0 the guest's tests passed; 1 they failed (or did not build);
# 2 usage error; 3 set-up error (no kernel, no qemu...); 4 the guest did not
# finish (timeout, panic, never reached init, no result line).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
cache=${BPFUSEFS_CACHE:-$HOME/.cache/bpfusefs}

readonly EXIT_FAIL=1 EXIT_USAGE=2 EXIT_SETUP=3 EXIT_GUEST=4
readonly INIT_MARKER="vmtest: init reached" RESULT_PREFIX="VMTEST-RESULT "

mode="test"
kernel=${BPFUSEFS_VM_KERNEL:-debian}
test_run=""
go_bench=""
read -ra packages <<<"${BPFUSEFS_VM_PACKAGES:-}"
full=0
timeout=35m
boot_timeout=180s
test_timeout=20m
mem=${BPFUSEFS_VM_MEM:-2G}
smp=${BPFUSEFS_VM_SMP:-2}
disk_size=""
bpfusefs=$repo/bin/bpfusefs
bench_args=${BENCHFLAGS:-}
accel=${BPFUSEFS_VM_ACCEL:-}
# Host programs the suites run (GNU semantics the busybox applets lack:
# cp -a keeping xattrs, ACLs, file attributes, sqlite3, git, xfs_io for
# mapped writes in a process other than the daemon's...). fio is
# left to --bench: its libraries alone are 80 MB, slow to boot under TCG.
read -ra host_tools <<<"${BPFUSEFS_VM_TOOLS:-tar cp setfattr getfattr setfacl getfacl chattr lsattr sqlite3 rsync git flock mount umount xfs_io}"
disk=""
xfstests_args="" xfstests_script=""
virtiofsd=""

usage() {
	cat <<-EOF
		usage: $0 [--shell | --bench] [options]
		  --kernel K         debian (default), patched, or a path to a bzImage
		  --tests REGEXP     -test.run pattern passed to every test binary
		  --go-bench REGEXP  run the Go benchmarks matching REGEXP (-test.bench,
		                     -test.benchtime=20x) instead of the tests
		  --packages 'P...'  go packages whose tests run (default: every package with
		                     tests except the harness's own; e.g. './uring ./fs')
		  --full             do not pass -test.short (passed by default: the guest is emulated)
		  --timeout D        bound on the whole guest run (default $timeout)
		  --boot-timeout D   bound on reaching /init; retried once (default $boot_timeout)
		  --test-timeout D   -test.timeout for each test binary (default $test_timeout)
		  --disk [SIZE]      attach an ext4 virtio-blk scratch disk (default 4G),
		                     mounted at \$BPFUSEFS_VM_SCRATCH in the guest
		  --bpfusefs PATH    binary to put in the guest, or 'none' (default bin/bpfusefs)
		  --bench-args ARGS  arguments for bpfusefs bench (default \$BENCHFLAGS)
		  --xfstests ARGS    run xfstests/run.sh ARGS in the guest (e.g. '--accel bpf
		                     --smoke') on the host's / (virtiofs, beneath an overlay);
		                     implies --disk 24G and --timeout 12h unless given
		  --soak ARGS        the same for xfstests/soak.sh ARGS (e.g. '--accel bpf')
		  --tools 'T...'     host programs copied into the guest with their libraries
		                     (default: ${host_tools[*]})
		  --mem M, --smp N   guest memory (default $mem) and vCPUs (default $smp)
		Durations: 90s, 20m, 1h or plain seconds.
	EOF
}

log() { echo "vmtest: $*" >&2; }
die() {
	local code=$1
	shift
	log "$*"
	exit "$code"
}

seconds() {
	case $1 in
	*[0-9]s) echo "${1%s}" ;;
	*[0-9]m) echo $((${1%m} * 60)) ;;
	*[0-9]h) echo $((${1%h} * 3600)) ;;
	*[0-9]) echo "$1" ;;
	*) die $EXIT_USAGE "bad duration: $1" ;;
	esac
}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--shell) mode=shell ;;
		--bench) mode=bench ;;
		--xfstests) mode=xfstests xfstests_script=run.sh xfstests_args=${2?--xfstests needs a value} && shift ;;
		--soak) mode=xfstests xfstests_script=soak.sh xfstests_args=${2?--soak needs a value} && shift ;;
		--kernel) kernel=${2:?--kernel needs a value} && shift ;;
		--tests) test_run=${2?--tests needs a value} && shift ;;
		--go-bench) go_bench=${2:?--go-bench needs a value} && shift ;;
		--packages) read -ra packages <<<"${2:?--packages needs a value}" && shift ;;
		--full) full=1 ;;
		--timeout) timeout=${2:?} timeout_given=1 && shift ;;
		--boot-timeout) boot_timeout=${2:?} && shift ;;
		--test-timeout) test_timeout=${2:?} && shift ;;
		--disk)
			disk_size=4G
			if [[ ${2:-} =~ ^[0-9]+[KMGT]?$ ]]; then
				disk_size=$2 && shift
			fi
			;;
		--bpfusefs) bpfusefs=${2:?} && shift ;;
		--bench-args) bench_args=${2?} && shift ;;
		--tools) read -ra host_tools <<<"${2?}" && shift ;;
		--mem) mem=${2:?} && shift ;;
		--smp) smp=${2:?} && shift ;;
		-h | --help) usage && exit 0 ;;
		*) usage >&2 && exit $EXIT_USAGE ;;
		esac
		shift
	done
	if [ "$mode" = xfstests ]; then
		[ -n "$disk_size" ] || disk_size=24G # two sparse 8 GiB images and the overlay
		[ -n "${timeout_given:-}" ] || timeout=12h
		host_tools=() # the guest runs the suite on the host's own userspace
	fi
	timeout=$(seconds "$timeout")
	boot_timeout=$(seconds "$boot_timeout")
	test_timeout=$(seconds "$test_timeout")
	if [ "$mode" = bench ]; then
		[ "$bpfusefs" != none ] || die $EXIT_USAGE "--bench needs a bpfusefs binary"
		"$bpfusefs" bench -h >/dev/null 2>&1 ||
			die $EXIT_SETUP "$bpfusefs has no bench subcommand ('bpfusefs bench -h' fails): nothing to run"
		[ -n "$disk_size" ] || disk_size=4G # benchmarks want a real block file system under them
		[[ " ${host_tools[*]} " == *" fio "* ]] || host_tools+=(fio) # the reference for I/O numbers
	fi
}

# need_tools installs what the harness runs on the host when it is missing
# (as scripts/deps.sh does for the host suites).
need_tools() {
	command -v go >/dev/null || die $EXIT_SETUP "go is not on PATH"
	local -A package_of=([qemu-system-x86_64]=qemu-system-x86 [cpio]=cpio [zstd]=zstd [mkfs.ext4]=e2fsprogs)
	local missing=() tool
	for tool in "${!package_of[@]}"; do
		command -v "$tool" >/dev/null || missing+=("${package_of[$tool]}")
	done
	dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q "ok installed" || missing+=(busybox-static)
	if [ "$mode" = xfstests ]; then
		virtiofsd=$(find_virtiofsd)
		[ -n "$virtiofsd" ] || missing+=(virtiofsd)
	fi
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die $EXIT_SETUP "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
	log "installing ${missing[*]}"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
		die $EXIT_SETUP "apt-get install ${missing[*]} failed"
	if [ "$mode" = xfstests ] && [ -z "$virtiofsd" ]; then
		virtiofsd=$(find_virtiofsd)
		[ -n "$virtiofsd" ] || die $EXIT_SETUP "the virtiofsd package installed no virtiofsd"
	fi
}

# find_virtiofsd prints virtiofsd's path, or nothing: Debian 12 ships it with
# qemu, later releases as its own package.
find_virtiofsd() {
	command -v /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd | head -n 1 || true
}

# resolve_kernel sets kernel_image, and kernel_config and kernel_modules when
# they are known (a Debian kernel has both; a build tree has its .config).
resolve_kernel() {
	kernel_config="" kernel_modules=""
	case $kernel in
	debian)
		local dir
		dir=$("$here/debian-kernel.sh") || die $EXIT_SETUP "no Debian kernel (see above)"
		kernel_image=$dir/vmlinuz kernel_config=$dir/config kernel_modules=$dir
		;;
	patched)
		kernel_image=$cache/kernels/patched/bzImage
		[ -e "$kernel_image" ] || die $EXIT_SETUP "no patched kernel at $kernel_image: run make kernel"
		[ -e "$cache/kernels/patched/config" ] && kernel_config=$cache/kernels/patched/config
		;;
	*)
		kernel_image=$(realpath -e "$kernel") || die $EXIT_SETUP "no kernel image at $kernel"
		local tree=${kernel_image%/arch/x86/boot/bzImage}
		if [ -e "$(dirname "$kernel_image")/config" ]; then
			kernel_config=$(dirname "$kernel_image")/config
		elif [ "$tree" != "$kernel_image" ] && [ -e "$tree/.config" ]; then
			kernel_config=$tree/.config
		fi
		;;
	esac
	log "kernel $kernel_image${kernel_config:+ (config $kernel_config)}"
}

kernel_has() { [ -n "$kernel_config" ] && grep -q "^CONFIG_$1=y" "$kernel_config"; }

# module_file prints the path of module $1 under the kernel's module tree.
module_file() {
	find "$kernel_modules/kernel" \( -name "$1.ko*" -o -name "${1//_/-}.ko*" \) -print -quit
}

# module_cat prints module file $1 (.ko, .ko.xz, .ko.zst or .ko.gz) uncompressed.
module_cat() {
	case $1 in
	*.xz) xz -dc "$1" ;;
	*.zst) zstd -dcq "$1" ;;
	*.gz) gzip -dc "$1" ;;
	*) cat "$1" ;;
	esac
}

# module_depends prints the modules module file $1 depends on, read from its
# .modinfo strings: the host may have no kmod.
module_depends() {
	module_cat "$1" | grep -a -o -m 1 'depends=[[:alnum:]_,-]*' | sed 's/^depends=//; s/,/ /g'
}

# add_module unpacks module $1 and, first, its dependencies into the guest's
# /lib/modules, appending each to guest_modules in load order. Built-in
# drivers need nothing.
add_module() {
	local name=$1 file dep
	[[ " $guest_modules " == *" $name "* ]] && return 0
	file=$(module_file "$name")
	if [ -z "$file" ]; then
		grep -q "/${name//_/[-_]}\.ko" "$kernel_modules/modules.builtin" 2>/dev/null ||
			log "module $name is neither built in nor shipped: skipped"
		return 0
	fi
	for dep in $(module_depends "$file"); do
		add_module "$dep"
	done
	module_cat "$file" >"$root/lib/modules/$name.ko"
	guest_modules+=" $name"
}

# test_packages prints "importpath<TAB>dir" for each selected package that
# has tests, leaving out the harness's own package (its tests boot VMs).
test_packages() {
	local pkgs=("${packages[@]}")
	[ ${#pkgs[@]} -gt 0 ] || pkgs=(./...)
	(cd "$repo" && go list -e -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{"\t"}}{{.Dir}}{{end}}' "${pkgs[@]}") |
		awk -F '\t' -v self="$here" 'NF == 2 && $2 != self'
}

# build_tests compiles each selected package's tests into a static binary
# at /src/<package dir>/<name>.test, with the package's testdata beside it
# (tests run from their package directory, as under go test). Symbol tables
# are stripped: a smaller initramfs boots faster under emulation, and
# tracebacks only need the pclntab, which stays.
build_tests() {
	local importpath dir rel n=0
	: >"$root/etc/vmtest.tests"
	while IFS=$'\t' read -r importpath dir; do
		rel=${dir#"$repo"/}
		mkdir -p "$root/src/$rel"
		log "building tests of $rel"
		(cd "$repo" && CGO_ENABLED=0 go test -c -ldflags='-s -w' -o "$root/src/$rel/$(basename "$rel").test" "$importpath") ||
			die $EXIT_FAIL "tests of $rel do not build"
		[ -d "$dir/testdata" ] && cp -a "$dir/testdata" "$root/src/$rel/"
		echo "$rel" >>"$root/etc/vmtest.tests"
		n=$((n + 1))
	done < <(test_packages)
	[ $n -gt 0 ] || die $EXIT_USAGE "no packages with tests in: ${packages[*]:-./...}"
}

# add_host_tool copies host program $1 into the guest's /usr/local/bin (ahead
# of busybox in PATH) with the shared libraries ldd lists, at their host paths.
add_host_tool() {
	local path lib
	path=$(command -v "$1") || {
		log "host has no $1: the guest will not either"
		return 0
	}
	cp -L "$path" "$root/usr/local/bin/$1"
	for lib in $(ldd "$path" 2>/dev/null | grep -o '/[^ ]*'); do
		[ -e "$root$lib" ] && continue
		mkdir -p "$root$(dirname "$lib")"
		cp -L "$lib" "$root$lib"
	done
}

# build_payload assembles the guest's root file system in $root.
build_payload() {
	root=$work/root
	mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,usr/local/bin,etc,src,lib/modules,proc,sys,dev,tmp,run,root,mnt}
	cp "$(dpkg -L busybox-static | grep -m1 '/bin/busybox$')" "$root/bin/busybox"
	cp "$here/guest/init" "$root/init"
	cp "$here/guest/vmtest-run" "$root/bin/vmtest-run"
	printf '%s\n' root:x:0:0:root:/root:/bin/sh nobody:x:65534:65534:nobody:/nonexistent:/bin/false >"$root/etc/passwd"
	printf '%s\n' root:x:0: nogroup:x:65534: >"$root/etc/group"
	if [ "$bpfusefs" != none ]; then
		[ -x "$bpfusefs" ] || die $EXIT_SETUP "no bpfusefs binary at $bpfusefs: run make build (or pass --bpfusefs none)"
		cp "$bpfusefs" "$root/bin/bpfusefs"
	fi
	case $mode in
	bench) ;;
	xfstests) cp "$here/guest/vmtest-xfstests" "$root/bin/vmtest-xfstests" ;;
	*) build_tests ;;
	esac
	local tool
	for tool in "${host_tools[@]}"; do
		add_host_tool "$tool"
	done
	guest_modules=""
	if [ -n "$kernel_modules" ]; then
		add_module virtio_blk # the scratch disk
		add_module loop       # tests that build file systems on image files
		[ "$mode" != xfstests ] || add_module overlay
	fi
	local flags="-test.timeout=${test_timeout}s"
	[ "$full" = 1 ] || flags+=" -test.short"
	if [ -n "$go_bench" ]; then
		flags+=" -test.bench=$go_bench -test.benchtime=20x"
		test_run='^$'
	fi
	printf 'VMTEST_%s=%q\n' MODE "$mode" TEST_RUN "$test_run" TEST_FLAGS "$flags" \
		TEST_SECONDS "$test_timeout" GRACE 30 BENCH_ARGS "$bench_args" \
		MODULES "${guest_modules# }" XFSTESTS_SCRIPT "$xfstests_script" XFSTESTS_ARGS "$xfstests_args" REPO "$repo" \
		CACHE "$cache" >"$root/etc/vmtest.conf"
}

# make_initramfs packs $root as a newc cpio, zstd-compressed when the kernel
# is known to take it, else gzip (which every kernel we boot takes).
make_initramfs() {
	initramfs=$work/initramfs
	local compress=(gzip -1)
	kernel_has RD_ZSTD && compress=(zstd -q -T0 -3)
	(cd "$root" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) | "${compress[@]}" >"$initramfs"
	log "initramfs $(du -h "$initramfs" | cut -f1) (${compress[0]})"
}

make_disk() {
	[ -n "$disk_size" ] || return 0
	disk=$work/scratch.img
	truncate -s "$disk_size" "$disk"
	mkfs.ext4 -q -F "$disk"
	log "scratch disk $disk_size ext4"
}

# qemu_cmd prints nothing; it fills the array qemu with the command line for
# accelerator $1 and extra kernel arguments $2.
qemu_cmd() {
	local cpu=max
	[ "$1" = kvm ] && cpu=host
	qemu=(qemu-system-x86_64 -accel "$1" -cpu "$cpu" -m "$mem" -smp "$smp" -no-reboot -nic none
		-kernel "$kernel_image" -initrd "$initramfs"
		-append "console=ttyS0 panic=-1 oops=panic loglevel=5 rdinit=/init $2")
	[ -z "$disk" ] || qemu+=(-drive "file=$disk,if=virtio,format=raw")
	# vhost-user devices need the guest's memory shared with virtiofsd.
	[ -z "$virtiofsd" ] || [ "$2" = vmtest.probe ] || qemu+=(-object "memory-backend-memfd,id=mem,size=$mem,share=on" -numa node,memdev=mem
		-chardev "socket,id=hostroot,path=$work/hostroot.sock" -device vhost-user-fs-pci,chardev=hostroot,tag=hostroot)
}

# prepare_xfstests builds the suite and the watchdog on the host: the guest
# runs them from the shared root, and building there would take long under TCG.
prepare_xfstests() {
	[ "$mode" = xfstests ] || return 0
	[ "$(id -u)" -eq 0 ] || die $EXIT_SETUP "--xfstests must run as root (it shares / with the guest)"
	"$repo/xfstests/run.sh" --prepare || die $EXIT_SETUP "xfstests/run.sh --prepare failed"
}

# start_virtiofsd serves / to the next boot; it exits when the guest does.
# Its default namespace sandbox cannot pivot_root into /, so it chroots.
start_virtiofsd() {
	[ -n "$virtiofsd" ] || return 0
	rm -f "$work/hostroot.sock"
	"$virtiofsd" --socket-path="$work/hostroot.sock" -o source=/ -o sandbox=chroot -o cache=auto -o xattr \
		>"$work/virtiofsd.log" 2>&1 &
	virtiofsd_pid=$!
	local i
	for i in $(seq 50); do
		[ -S "$work/hostroot.sock" ] && return 0
		kill -0 "$virtiofsd_pid" 2>/dev/null || break
		sleep 0.1
	done
	cat "$work/virtiofsd.log" >&2
	die $EXIT_SETUP "virtiofsd did not start"
}

# choose_accel uses KVM only when a short trial boot with it reaches init:
# /dev/kvm can exist on a CPU without VMX, where KVM fails.
choose_accel() {
	if [ -n "$accel" ]; then
		log "accel $accel (BPFUSEFS_VM_ACCEL)"
		return
	fi
	accel=tcg
	if [ ! -w /dev/kvm ]; then
		log "accel tcg (no usable /dev/kvm)"
		return
	fi
	qemu_cmd kvm vmtest.probe
	local out
	out=$(timeout 60 "${qemu[@]}" -display none -serial stdio -monitor none </dev/null 2>&1 || true)
	if grep -q "$INIT_MARKER" <<<"$out"; then
		accel=kvm
		log "accel kvm (trial boot reached init)"
	else
		log "accel tcg (KVM trial boot failed: $(tail -n 1 <<<"$out" | tr -d '\r'))"
	fi
}

# boot runs the guest once with its console streamed to stdout and copied
# to $1, and sets outcome: exited, timeout or no-init.
boot() {
	local console=$1 tpid start=$SECONDS reached=0
	start_virtiofsd
	qemu_cmd "$accel" ""
	# The file exists before tail opens it: the background job below
	# creates it only when it gets to run.
	: >"$console"
	"${qemu[@]}" -display none -serial stdio -monitor none </dev/null >"$console" 2>&1 &
	qpid=$!
	tail -n +1 -f --pid=$qpid "$console" &
	tpid=$!
	outcome=exited
	while kill -0 $qpid 2>/dev/null; do
		if [ $reached = 0 ] && grep -aq "$INIT_MARKER" "$console"; then
			reached=1
			log "guest reached init after $((SECONDS - start))s"
		fi
		if [ $reached = 0 ] && [ $((SECONDS - start)) -ge "$boot_timeout" ]; then
			outcome=no-init
		elif [ $((SECONDS - start)) -ge "$timeout" ]; then
			outcome=timeout
		fi
		if [ $outcome != exited ]; then
			kill $qpid
			break
		fi
		sleep 1
	done
	wait $qpid || true
	qpid=""
	wait $tpid || true
	if [ $outcome = exited ] && ! grep -aq "$INIT_MARKER" "$console"; then
		outcome=no-init
	fi
}

# report turns the console log $1 into the exit status, showing the console
# tail when the guest did not finish.
report() {
	local console=$1 result
	mkdir -p "$cache/vmtest"
	cp "$console" "$cache/vmtest/last-console.log"
	result=$({ grep -a "^$RESULT_PREFIX" "$console" || true; } | tail -n 1 | tr -d '\r')
	echo
	log "console log: $cache/vmtest/last-console.log; guest run took $((SECONDS - run_start))s ($accel)"
	local splats
	splats=$(grep -a -c -E '^\[ *[0-9.]+\] (WARNING|BUG):' "$console" || true)
	[ "$splats" = 0 ] || log "the guest kernel logged $splats WARNING/BUG splat(s): see the console log"
	case $result in
	*status=pass*)
		log "PASS: ${result#"$RESULT_PREFIX"}"
		exit 0
		;;
	*status=fail*)
		log "FAIL: ${result#"$RESULT_PREFIX"}"
		grep -a -E -- '^[[:space:]]*--- FAIL' "$console" | tr -d '\r' | sed 's/^/vmtest:   /' >&2 || true
		exit $EXIT_FAIL
		;;
	esac
	local why="the guest stopped without a result line"
	case $outcome in
	timeout) why="the guest did not finish within ${timeout}s (--timeout)" ;;
	no-init) why="the guest never reached init (twice)" ;;
	esac
	grep -aq "Kernel panic" "$console" && why="the guest kernel panicked"
	log "console tail:"
	tail -n 40 "$console" | tr -d '\r' | sed 's/^/  | /' >&2
	log "ERROR: $why"
	exit $EXIT_GUEST
}

cleanup() {
	[ -z "${qpid:-}" ] || kill "$qpid" 2>/dev/null || true
	[ -z "${virtiofsd_pid:-}" ] || kill "$virtiofsd_pid" 2>/dev/null || true
	rm -rf "$work"
}

main() {
	parse_args "$@"
	need_tools
	resolve_kernel
	work=$(mktemp -d "${TMPDIR:-/tmp}/vmtest.XXXXXX")
	# qemu runs in the background, where a script's children ignore SIGINT:
	# stop it ourselves however we end.
	trap 'cleanup' EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	build_payload
	make_initramfs
	make_disk
	prepare_xfstests
	if [ "$mode" = shell ]; then
		choose_accel
		qemu_cmd "$accel" ""
		log "shell: Ctrl-A X quits qemu; 'exit' powers the guest off"
		"${qemu[@]}" -nographic
		return
	fi
	choose_accel
	run_start=$SECONDS
	boot "$work/console.log"
	if [ $outcome = no-init ]; then
		log "the guest never reached init (early crash, seen about once in 30 TCG boots): booting again"
		boot "$work/console.log"
	fi
	report "$work/console.log"
}

main "$@"
