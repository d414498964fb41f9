#!/usr/bin/env bash
# Builds the patched kernel: Debian's linux-source-7.3 with the series in
# kernel/patches/ applied in order, configured as `make tinyconfig` plus
# kernel/config.fragment, and prints the directory holding its bzImage and
# config. The result is cached under $BPFUSEFS_CACHE/kernels/patched-<key>,
# where the key hashes what the build depends on (source version, series,
# fragment, the recipe version below), and $BPFUSEFS_CACHE/kernels/patched
# points at the newest: that is what `kernel/vmtest.sh --kernel patched` boots.
#
# Usage: kernel/build.sh [--force]
#   --force   rebuild even when the cache has this key
#
# Exit status: 0 built (or cached), 1 a patch does not apply, the
# configuration drops an option of the fragment, or the build fails;
# 2 usage; 3 set-up (build dependencies, the source package).
#
# Environment:
#   BPFUSEFS_CACHE      cache root (default ~/.cache/bpfusefs)
#   BPFUSEFS_JOBS       make -j (default: the number of CPUs)
#   BPFUSEFS_OFFLINE=1  use the cached linux-source, never the network
#   BPFUSEFS_KERNEL_SERIES  directory of the series (default kernel/patches)
#   BPFUSEFS_KERNEL_SOURCE  Debian version of linux-source-7.3 (default: the
#                           one the series is made against, below)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
series=7.3
# The Debian source the series is made and tested against. Moving to a
# newer one is a change of the series (rebase, rebuild, retest), never
# something a build does on its own because the archive moved on.
source_version=${BPFUSEFS_KERNEL_SOURCE:-7.3.4-1~bpo13+1}
# recipe joins the cache key: bump it when a change to this script changes
# the kernel it builds (not for messages or options).
recipe=1
cache=${BPFUSEFS_CACHE:-$HOME/.cache/bpfusefs}/kernels
fragment=$here/config.fragment
patches=("${BPFUSEFS_KERNEL_SERIES:-$here/patches}"/*.patch)
[ -e "${patches[0]}" ] || patches=()
jobs=${BPFUSEFS_JOBS:-$(nproc)}
force=0

EXIT_FAIL=1 EXIT_USAGE=2 EXIT_SETUP=3
log() { echo "build: $*" >&2; }
die() {
	local code=$1
	shift
	log "$*"
	exit "$code"
}

# need_build_deps installs the kernel's build dependencies when one is missing.
need_build_deps() {
	local pkgs=(build-essential flex bison bc libelf-dev libssl-dev dwarves xz-utils) missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	[ "$(id -u)" -eq 0 ] || die $EXIT_SETUP "missing ${missing[*]}: install them (apt-get install ${missing[*]})"
	log "installing ${missing[*]}"
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } ||
		die $EXIT_SETUP "apt-get install ${missing[*]} failed"
}

# build_key hashes what the kernel is built from.
build_key() {
	{
		echo "linux-source-$series $1 recipe $recipe"
		local p
		for p in "${patches[@]}"; do
			echo "patch $(basename "$p")"
			cat "$p"
		done
		cat "$fragment"
	} | sha256sum | cut -c1-16
}

# apply_series applies every patch to source tree $1 without fuzz: a patch
# that does not apply exactly stops the build.
apply_series() {
	local p
	for p in "${patches[@]}"; do
		log "applying $(basename "$p")"
		patch -d "$1" -p1 -F0 -s --batch --forward --no-backup-if-mismatch <"$p" ||
			die $EXIT_FAIL "$(basename "$p") does not apply to linux-source-$series"
	done
}

# configure writes $2/.config: tinyconfig plus the fragment, then checks
# that every option the fragment sets survived dependency resolution.
configure() {
	local src=$1 obj=$2 line
	make -s -C "$src" O="$obj" tinyconfig >/dev/null || die $EXIT_FAIL "make tinyconfig failed in $src"
	"$src/scripts/kconfig/merge_config.sh" -m -O "$obj" "$obj/.config" "$fragment" >"$obj/merge.log" 2>&1 ||
		die $EXIT_FAIL "merging $fragment failed (see $obj/merge.log)"
	make -s -C "$src" O="$obj" olddefconfig || die $EXIT_FAIL "make olddefconfig failed"
	while read -r line; do
		grep -qxF "$line" "$obj/.config" ||
			die $EXIT_FAIL "config.fragment sets '$line' but the configuration does not keep it (a missing dependency?)"
	done < <(grep -E '^(CONFIG_|# CONFIG_.* is not set)' "$fragment")
}

main() {
	case ${1:-} in
	"") ;;
	--force) force=1 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*) die $EXIT_USAGE "unknown argument $1 (see --help)" ;;
	esac
	local tarball version key out
	tarball=$("$here/debian-kernel.sh" --source "$series" "$source_version") ||
		die $EXIT_SETUP "no linux-source-$series $source_version (see above)"
	version=$(cat "$(dirname "$tarball")/package-version")
	key=$(build_key "$version")
	out=$cache/patched-$key
	mkdir -p "$cache"
	exec 9>"$cache/.build.lock"
	flock 9
	if [ "$force" = 0 ] && [ -e "$out/bzImage" ]; then
		log "cached: linux-source-$series $version with ${#patches[@]} patches ($out)"
	else
		need_build_deps
		local work=$cache/build
		rm -rf "$work" && mkdir -p "$work/obj"
		log "unpacking linux-source-$series $version"
		tar -xf "$tarball" -C "$work"
		local src=$work/linux-source-$series
		apply_series "$src"
		configure "$src" "$work/obj"
		log "building bzImage with $jobs jobs (log: $work/make.log)"
		local start=$SECONDS
		make -C "$src" O="$work/obj" -j"$jobs" LOCALVERSION=-bpfusefs bzImage >"$work/make.log" 2>&1 || {
			tail -n 30 "$work/make.log" >&2
			die $EXIT_FAIL "the kernel build failed (log: $work/make.log)"
		}
		log "built in $((SECONDS - start)) s"
		rm -rf "$out.new" && mkdir -p "$out.new"
		cp "$work/obj/arch/x86/boot/bzImage" "$out.new/bzImage"
		cp "$work/obj/.config" "$out.new/config"
		printf '%s\n' "linux-source-$series $version" "${patches[@]##*/}" >"$out.new/series"
		rm -rf "$out" && mv "$out.new" "$out"
		# The tree is a gigabyte or more of objects and is rebuilt from
		# scratch whenever the key changes: keep only the result.
		rm -rf "$work"
	fi
	ln -sfn "$(basename "$out")" "$cache/patched"
	# Keep the three most recently used kernels.
	touch "$out"
	ls -dt "$cache"/patched-*/ | tail -n +4 | xargs -r rm -rf
	echo "$out"
}

main "$@"
