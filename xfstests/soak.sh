#!/usr/bin/env bash
# Soaks bpfusefs with fsx and fsstress from the pinned xfstests build, for a
# bounded time each, in every requested accel mode; then compares what the
# mount shows with the backing dir. Any tool error or divergence fails the run.
#
#   xfstests/soak.sh [--accel none|engine|passthrough|fusering|bpf|all|LIST]
#                    [--minutes N] [--mirror | --failover | --reference]
#
# --minutes is per tool and mode (default 10). --mirror mounts with one mirror
# beside the backing dir and compares it with the backing dir too: every
# write fanned out, nothing missed. --failover does so with the backing dir
# on a filesystem fsstress fills ($XFSTESTS_FAILOVER_SIZE, default 1G): it
# must be taken out of service for that alone, fsstress carry on on the
# mirror without an error, and the mount show the mirror's tree.
# --reference soaks go-fuse v2.12.1's loopback example instead, for
# comparison. Logs and the final comparison land in
# $BPFUSEFS_CACHE/xfstests-soak/<mode>[-mirror|-failover]/.
set -euo pipefail

accel=none minutes=10 reference= mirror= failover=
# shellcheck source-path=SCRIPTDIR source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# XFSTESTS_SOAK_WORK relocates the image, the mount and the logs.
WORK=${XFSTESTS_SOAK_WORK:-$CACHE/xfstests-soak}

parse_args() {
	while [ $# -gt 0 ]; do
		case $1 in
		--accel) accel=${2:?--accel needs a value}; shift 2 ;;
		--minutes) minutes=${2:?--minutes needs a number}; shift 2 ;;
		--reference) reference=1; shift ;;
		--mirror) mirror=1; shift ;;
		--failover) mirror=1 failover=1; shift ;;
		-h|--help) usage 0 ;;
		*) echo "soak: unknown argument $1" >&2; usage 2 ;;
		esac
	done
	[[ $minutes =~ ^[1-9][0-9]*$ ]] || die "--minutes must be a positive number"
	[ -z "$mirror" ] || [ -z "$reference" ] || die "--mirror or --failover and --reference are exclusive"
	[ -z "$mirror" ] || export XFSTESTS_IMAGE_SIZE=${XFSTESTS_IMAGE_SIZE:-64G}
}

mnt=$WORK/mnt
ext4=$WORK/ext4
backing=$ext4/backing
# The mirror has a filesystem of its own. Where one replica runs out of
# space and the other does not, the full one is rightly degraded, and the
# comparison has nothing to show: with --mirror both images are 64 GiB
# unless XFSTESTS_IMAGE_SIZE says otherwise (sparse, and fsstress's
# fallocates stay unwritten in them), far more than fsstress fills in ten
# minutes, where 8 GiB filled in four.
mirror_ext4=$WORK/mirror-ext4
mirror_dir=$mirror_ext4/backing

mount_fs() {
	local opts
	opts=$(mount_options "$1")
	[ -z "$mirror" ] || opts+=",mirror=$mirror_dir"
	mount -t "$(fuse_type)" -o "$opts" "$backing" "$mnt" ||
		die "mount -t $(fuse_type) $backing $mnt failed"
}

# tree lists everything under a root with the attributes both sides must agree
# on: type, size, mode, link count, owner, symlink target, then the xattrs, a
# line each, sorted (getfattr lists in readdir order, which is the backing
# filesystem's own and differs between two of them).
# Times are left out: atime moves on every read, and the mount may still hold
# a kernel-cached mtime within its attribute timeout.
tree() {
	(cd "$1" && find . -path ./lost+found -prune -o -printf '%P\t%y\t%s\t%m\t%n\t%U:%G\t%l\n' | LC_ALL=C sort &&
		getfattr -R -h -d -m - --absolute-names . 2>/dev/null |
		awk '/^# file: /{file = substr($0, 9); next} NF {print file "\t" $0}' | LC_ALL=C sort || true)
}

# compare_with checks that dir (the mount, or the mirror), saved as
# tree.NAME in out, shows the tree of ref (saved as tree.REFNAME) and the
# same bytes in every regular file. It prints what differs.
compare_with() {
	local out=$1 ref=$2 refname=$3 dir=$4 name=$5 f diverged=0
	tree "$dir" >"$out/tree.$name"
	if ! diff -u "$out/tree.$refname" "$out/tree.$name" >"$out/tree.$name.diff"; then
		echo "soak: metadata differs between $ref and $dir:" >&2
		head -n 40 "$out/tree.$name.diff" >&2
		diverged=1
	fi
	while IFS= read -r -d '' f; do
		cmp -s "$ref/$f" "$dir/$f" && continue
		echo "soak: contents differ: $dir/$f" >&2
		diverged=1
	done < <(cd "$ref" && find . -type f -print0)
	return $diverged
}

# compare checks the mount, and the mirror if there is one, against the
# backing dir; after a failover, the mount against the mirror.
compare() {
	local out=$1 diverged=0
	sync
	if [ -n "$failover" ]; then
		failed_over "$out" || diverged=1
		tree "$mirror_dir" >"$out/tree.mirror"
		compare_with "$out" "$mirror_dir" mirror "$mnt" mount || diverged=1
		return $diverged
	fi
	tree "$backing" >"$out/tree.backing"
	compare_with "$out" "$backing" backing "$mnt" mount || diverged=1
	if [ -n "$mirror" ]; then
		if degraded "$out" || ! compare_with "$out" "$backing" backing "$mirror_dir" mirror; then
			diverged=1
		fi
	fi
	return $diverged
}

# failed_over checks that the mount's stats (in out) show the backing dir
# taken out of service for running out of space, and the mirror serving.
failed_over() {
	local states
	states=$(jq -r '[.replicas[] | "\(.state) \(.cause // "")"] | join("; ")' "$1/stats.json" 2>/dev/null) ||
		states="no replica state in $1/stats.json"
	case $states in
	"degraded "*"no space left on device"*"; ok ") return 0 ;;
	esac
	echo "soak: want the backing dir degraded for lack of space and the mirror ok, got: $states" >&2
	return 1
}

# degraded says whether the mount's stats (in out) show a replica out of
# service, and which and why: the daemon stopped writing to it, so it is
# not compared.
degraded() {
	local bad
	bad=$(jq -r '.replicas[] | select(.state != "ok") | "\(.path): \(.state) (\(.cause))"' "$1/stats.json" 2>/dev/null) ||
		bad="no replica state in $1/stats.json"
	[ -n "$bad" ] || return 1
	echo "soak: a replica was taken out of service: $bad" >&2
}

# soak_mode runs fsx then fsstress in one mode, each under the watchdog with
# a bound well past its own --duration, and compares afterwards.
soak_mode() {
	local mode=$1 label=$1 out secs=$((minutes * 60)) failed=0 size agreed
	[ -n "$reference" ] && label=go-fuse-loopback
	[ -n "$mirror" ] && label=$mode-mirror
	[ -n "$failover" ] && label=$mode-failover
	out=$WORK/$label
	rm -rf "$out"
	mkdir -p "$out"
	unmount_all "$mnt" "$ext4" "$mirror_ext4"
	size=${XFSTESTS_IMAGE_SIZE:-8G}
	[ -z "$failover" ] || size=${XFSTESTS_FAILOVER_SIZE:-1G}
	XFSTESTS_IMAGE_SIZE=$size make_ext4 "$WORK/soak.img" "$ext4"
	[ -z "$mirror" ] || make_ext4 "$WORK/mirror.img" "$mirror_ext4"
	mkdir -p "$mnt"
	mount_fs "$mode"

	local bound=$((secs + 300))s
	log "$label: fsx for $minutes min"
	if ! "$WATCHDOG" -timeout "$bound" -abort-fuse "$mnt" -- \
		"$SUITE/ltp/fsx" -q -S 0 -l 4194304 -P "$out" --duration="$secs" "$mnt/fsx.file" \
		</dev/null >"$out/fsx.log" 2>&1; then
		echo "soak: $label: fsx failed:" >&2
		tail -n 30 "$out/fsx.log" >&2
		failed=1
	fi
	log "$label: fsstress for $minutes min"
	mkdir -p "$mnt/fsstress"
	if ! "$WATCHDOG" -timeout "$bound" -abort-fuse "$mnt" -- \
		"$SUITE/ltp/fsstress" -d "$mnt/fsstress" -p 4 -n 100000000 --duration="$secs" \
		</dev/null >"$out/fsstress.log" 2>&1; then
		echo "soak: $label: fsstress failed:" >&2
		tail -n 30 "$out/fsstress.log" >&2
		failed=1
	elif grep -v '^seed = ' "$out/fsstress.log" >"$out/fsstress.errors"; then
		# fsstress exits 0 whatever became of its workers: one that
		# finds something wrong (check_cwd's st_ino, say) says so and
		# aborts.
		echo "soak: $label: fsstress's workers failed:" >&2
		head -n 30 "$out/fsstress.errors" >&2
		failed=1
	fi
	# Which paths served the requests (the BPF loop, io_uring...): the
	# soak tests them only if they did the work.
	[ -n "$reference" ] || "$BPFUSEFS" stats --json "$mnt" >"$out/stats.json" 2>&1 || true
	if compare "$out" 2>"$out/compare.log"; then
		agreed="mount${mirror:+, mirror} and backing dir agree"
		[ -z "$failover" ] || agreed="the backing dir filled and was taken out of service; mount and mirror agree"
		log "$label: $agreed ($(wc -l <"$out/tree.mount") entries and xattr lines)"
		log "$label: fsx: $(grep -m 1 'operations completed' "$out/fsx.log" || echo 'no summary line')"
		[ -n "$reference" ] || log "$label: requests served by: $(jq -c .paths "$out/stats.json" 2>/dev/null || echo unknown)"
	else
		cat "$out/compare.log" >&2
		failed=1
	fi
	unmount_all "$mnt" "$ext4" "$mirror_ext4"
	return $failed
}

main() {
	parse_args "$@"
	[ "$(id -u)" -eq 0 ] || die "must run as root (mounts, loop devices)"
	isolate "$@"
	detach_foreign_mounts
	local m modes bad=()
	modes=$(modes_to_run)
	ensure_suite
	mkdir -p "$WORK"
	install_helpers
	trap 'unmount_all "$mnt" "$ext4" "$mirror_ext4"; restore_enable_uring' EXIT
	for m in $modes; do
		enable_uring_for "$m"
		soak_mode "$m" || bad+=("$m")
		restore_enable_uring
	done
	if [ ${#bad[@]} -gt 0 ]; then
		echo "soak: failed in: ${bad[*]} (logs in $WORK)" >&2
		exit 1
	fi
	log "soak: no error and no divergence in: $modes"
}

main "$@"
