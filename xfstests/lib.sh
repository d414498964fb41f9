# shellcheck shell=bash
# Shared by xfstests/run.sh and xfstests/soak.sh (sourced, not run): the pinned
# suite's build, the machine set-up both need, and the mount helpers.
# Callers set `reference` (non-empty: go-fuse's loopback instead of bpfusefs)
# and `accel` before calling modes_to_run or install_helpers.

readonly VERSION=v2026.01.27
readonly TARBALL_SHA256=2a1b62f0cb9a90cc81d0b887ca9adf36b6c82a23acc00fd0f0981f6092476a1f
# Bump PATCH_LEVEL whenever patch_suite changes: it names the cached build.
readonly PATCH_LEVEL=2
readonly MODES=(none engine passthrough fusering bpf)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HERE=$REPO/xfstests
CACHE=${BPFUSEFS_CACHE:-$HOME/.cache/bpfusefs}
TARBALL=${XFSTESTS_TARBALL:-$(cd "$REPO/.." && pwd)/shared/thirdparty/xfstests-$VERSION.tar.gz}
SUITE=$CACHE/xfstests-$VERSION-p$PATCH_LEVEL
KERNEL=$(uname -r)
BPFUSEFS=$REPO/bin/bpfusefs
WATCHDOG=$CACHE/xfstests-watchdog
LOOPBACK=$CACHE/go-fuse-loopback

die() { echo "xfstests: $*" >&2; exit 2; }
log() { echo "xfstests: $*" >&2; }

# usage prints the header comment of the script that was run and exits with
# status $1.
usage() {
	awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "${BASH_SOURCE[-1]}"
	exit "${1:-0}"
}

# ---- building the suite --------------------------------------------------

# ensure_deps installs what building and running the suite needs. gawk is not
# optional: with Debian's default mawk, tests using asort() fail (generic/062).
ensure_deps() {
	local pkgs=(xfslibs-dev libacl1-dev libattr1-dev libaio-dev liburing-dev uuid-dev
		libtool autoconf make gcc pkg-config e2fsprogs xfsprogs attr acl bc psmisc gawk
		uuid-runtime libcap2-bin jq)
	local missing=() p
	for p in "${pkgs[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return
	log "installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# patch_suite adapts the built copy to a FUSE filesystem whose mount source is
# a directory. Each change is documented in xfstests/README.md ("Patches").
patch_suite() {
	local rc=$1/common/rc
	# 1. Unmount the mount point: `umount $TEST_DEV` with a directory source
	#    finds no mount (or, were the backing dir a mount root, the wrong one).
	sed -i -e 's|^\t\t_unmount \$TEST_DEV$|\t\t_unmount $([ "$FSTYP" = fuse ] \&\& echo $TEST_DIR \|\| echo $TEST_DEV)|' \
		-e 's|^\t\t_unmount \$SCRATCH_DEV$|\t\t_unmount $([ "$FSTYP" = fuse ] \&\& echo $SCRATCH_MNT \|\| echo $SCRATCH_DEV)|' "$rc"
	# 2. _fs_type: the kernel reports fuse.<subtype>; the suite compares with $FSTYP.
	sed -i -e "s|-e 's/fuse.ceph-fuse/ceph-fuse/'\$|-e 's/fuse.ceph-fuse/ceph-fuse/' -e 's/^fuse\\\\..*/fuse/'|" "$rc"
	grep -q 'echo $TEST_DIR ||' "$rc" && grep -q 'echo $SCRATCH_MNT ||' "$rc" &&
		grep -q "s/^fuse\\\\..\\*/fuse/" "$rc" || die "patching $rc failed (upstream changed?)"
	# 3. generic/615 waits for its stat loop instead of killing it: the
	#    kill orphans the loop's last stat, which can run after check has
	#    unmounted the scratch fs and print ENOENT into the test's output.
	local t615=$1/tests/generic/615
	sed -i -e 's|^kill \$loop_pid &> /dev/null$|wait $loop_pid # bpfusefs: the loop ends once $loop_file is gone|' "$t615"
	grep -q '^wait \$loop_pid # bpfusefs' "$t615" || die "patching $t615 failed (upstream changed?)"
}

ensure_suite() {
	ensure_deps
	[ -f "$SUITE/.built" ] && return
	[ -f "$TARBALL" ] || die "missing $TARBALL"
	echo "$TARBALL_SHA256  $TARBALL" | sha256sum -c --quiet - || die "checksum mismatch: $TARBALL"
	log "building xfstests $VERSION in $SUITE"
	rm -rf "$SUITE"
	mkdir -p "$SUITE"
	tar -xzf "$TARBALL" -C "$SUITE" --strip-components=1
	make -C "$SUITE" -j"$(nproc)" >"$CACHE/xfstests-build.log" 2>&1 ||
		die "build failed, see $CACHE/xfstests-build.log"
	patch_suite "$SUITE"
	touch "$SUITE/.built"
}

# ensure_tools builds the watchdog (and the reference filesystem when asked).
# XFSTESTS_PREPARED=1 says `run.sh --prepare` built them already and go may be
# slow or absent here (the VM harness runs the suite on the host's userspace).
ensure_tools() {
	mkdir -p "$CACHE"
	[ -n "${XFSTESTS_PREPARED:-}" ] && [ -x "$WATCHDOG" ] && { [ -z "$reference" ] || [ -x "$LOOPBACK" ]; } && return
	(cd "$REPO" && CGO_ENABLED=0 go build -o "$WATCHDOG" ./xfstests/watchdog) ||
		die "building the watchdog failed"
	if [ -n "$reference" ]; then
		(cd "$REPO" && CGO_ENABLED=0 go build -o "$LOOPBACK" github.com/hanwen/go-fuse/v2/example/loopback) ||
			die "building go-fuse's loopback example failed"
	fi
}

# isolate re-executes the calling script in a private mount namespace under the
# watchdog as subreaper. PID 1 on these machines does not reap orphans
# (daemonized FUSE servers, tests' background workers), so the run reaps them
# itself. The namespace keeps the run's loop and FUSE mounts out of everyone
# else's view and theirs out of ours: the suite runs df, which stats every
# mount, and a FUSE mount whose daemon another test killed on purpose hangs it.
isolate() {
	[ -n "${BPFUSEFS_XFSTESTS_ISOLATED:-}" ] && return
	ensure_tools
	export BPFUSEFS_XFSTESTS_ISOLATED=1
	exec unshare --mount --propagation private -- "$WATCHDOG" -linger 10s -- "$0" "$@"
}

# detach_foreign_mounts drops, from this private namespace only, the FUSE
# mounts that were there before it was made (other users' mounts, possibly
# with dead daemons). Nothing changes outside the namespace.
detach_foreign_mounts() {
	local m
	findmnt -ln -o TARGET,FSTYPE | awk '$2 ~ /^fuse/ { print $1 }' |
		while read -r m; do
			umount -l "$m" 2>/dev/null || true
		done
}

# ---- the machine: users, reachability, mount helpers ---------------------

# ensure_users creates what the suite's README asks for: the fsgqa group, the
# users fsgqa and 123456-fsgqa in it, and fsgqa2 with a group of its own
# (generic/597, 598 protect files owned by fsgqa2:fsgqa2).
ensure_users() {
	local g u
	for g in fsgqa fsgqa2; do
		getent group "$g" >/dev/null || groupadd "$g" || die "cannot create group $g"
	done
	for u in fsgqa fsgqa2 123456-fsgqa; do
		g=fsgqa
		[ "$u" = fsgqa2 ] && g=fsgqa2
		getent passwd "$u" >/dev/null || useradd -m -g "$g" "$u" ||
			die "cannot create user $u"
	done
}

# ensure_reachable lets the test users walk down to dir: tests run helpers from
# the suite and touch files under the mounts as fsgqa, and some (generic/079's
# t_immutable) drop to nobody. Only search permission is granted, through an
# ACL for those users where the filesystem allows it.
ensure_reachable() {
	local dir=$1 d= part
	local -a parts
	IFS=/ read -ra parts <<<"${dir#/}"
	for part in "${parts[@]}"; do
		d=$d/$part
		reachable "$d" && continue
		log "granting the test users search permission on $d"
		setfacl -m u:fsgqa:x,u:fsgqa2:x,u:123456-fsgqa:x,u:nobody:x "$d" 2>/dev/null || chmod o+x "$d"
	done
	reachable "$dir" || die "$dir is not reachable by fsgqa and nobody"
}

reachable() {
	su -s /bin/sh fsgqa -c "test -x '$1'" 2>/dev/null && su -s /bin/sh nobody -c "test -x '$1'" 2>/dev/null
}

mounted() { findmnt -n --mountpoint "$1" >/dev/null 2>&1; }

unmount_all() {
	local m
	for m in "$@"; do
		while mounted "$m"; do umount "$m" 2>/dev/null || umount -l "$m"; done
	done
}

# make_ext4 creates a fresh ext4 loop image, mounts it on mnt and creates the
# backing dir beneath it: results do not depend on the host's filesystem or on
# earlier runs, and the suite is never handed the root of a mount.
make_ext4() {
	local img=$1 mnt=$2
	rm -f "$img"
	truncate -s "${XFSTESTS_IMAGE_SIZE:-8G}" "$img"
	mkfs.ext4 -F -q -E nodiscard "$img"
	mkdir -p "$mnt"
	mount -o loop "$img" "$mnt"
	mkdir -m 0755 "$mnt/backing"
}

# fuse_type is the filesystem type the mounts have: fuse.bpfusefs, or
# fuse.loopback for the reference.
fuse_type() { if [ -n "$reference" ]; then echo fuse.loopback; else echo fuse.bpfusefs; fi; }

# mount_options are the options every mount of mode gets.
mount_options() {
	if [ -n "$reference" ]; then
		echo allow_other,default_permissions
	else
		echo "allow_other,default_permissions,accel=$1"
	fi
}

# install_helpers makes `mount -t fuse.bpfusefs` (or fuse.loopback for the
# reference) run this checkout's helper, in the run's mount namespace only
# (isolate), so that runs of different checkouts side by side each mount
# their own build. mount(8) looks for mount.TYPE in /sbin, then in /sbin/fs.d
# and mounts with mount(2) itself, bpfusefs's options and all, when it finds
# none. So the helper must not be reached through a path someone else can
# take away mid-run: a link into another checkout that is deleted or rebuilt
# (an unlinked file's bind mounts are detached in every namespace), or the
# host's files under a VM's overlay root. The run keeps a copy in its work dir
# and binds that directory over /sbin/fs.d; a helper installed in /sbin,
# found first, is covered by the copy while it lasts and by fs.d after.
install_helpers() {
	local type helpers=$WORK/helpers installed
	type=$(fuse_type)
	mkdir -p "$helpers" /sbin/fs.d
	if [ -n "$reference" ]; then
		cat >"$helpers/mount.$type.new" <<-EOF
			#!/bin/bash
			# mount(8) helper for go-fuse's loopback example, written by xfstests/run.sh.
			exec $HERE/loopback-helper.sh $LOOPBACK "\$@"
		EOF
	else
		[ -x "$BPFUSEFS" ] || die "$BPFUSEFS missing: run make build"
		cp "$BPFUSEFS" "$helpers/mount.$type.new"
		# What the results name: the build that runs, not the tree's
		# state when they are written.
		HELPER_VERSION=$("$BPFUSEFS" --version | cut -d' ' -f2)
	fi
	chmod 0755 "$helpers/mount.$type.new"
	mv -f "$helpers/mount.$type.new" "$helpers/mount.$type"
	mount --bind "$helpers" /sbin/fs.d || die "cannot bind $helpers over /sbin/fs.d"
	installed=/sbin/mount.$type
	if [ -e "$installed" ]; then
		mount --bind "$helpers/mount.$type" "$(readlink -f "$installed")" ||
			die "cannot bind $helpers/mount.$type over $installed"
	fi
}

# The fuse module's enable_uring parameter gates FUSE-over-io_uring. It is
# global, so the Go code (internal/enableuring) changes it only under an
# exclusive lock on one file; a fusering run takes the same lock, sets Y for
# the mode's duration and then restores the old value.
URING_PARAM=/sys/module/fuse/parameters/enable_uring
URING_LOCK=${TMPDIR:-/tmp}/bpfusefs-test-enable-uring.lock
uring_saved=

# enable_uring_for MODE sets enable_uring to Y when MODE needs it.
enable_uring_for() {
	[ "$1" = fusering ] || return 0
	[ -w "$URING_PARAM" ] || die "fusering: no writable $URING_PARAM (the kernel lacks FUSE-over-io_uring, or this is not root)"
	exec {uring_lock_fd}>"$URING_LOCK"
	flock "$uring_lock_fd"
	uring_saved=$(cat "$URING_PARAM")
	echo Y >"$URING_PARAM"
}

# restore_enable_uring undoes enable_uring_for; it is safe to call always.
restore_enable_uring() {
	[ -n "$uring_saved" ] || return 0
	echo "$uring_saved" >"$URING_PARAM"
	uring_saved=
	exec {uring_lock_fd}>&-
}

# modes_to_run expands --accel: `all` is none plus every mode `bpfusefs
# doctor --json` reports available (fusering also when only enable_uring is
# off), or none alone when doctor cannot say.
modes_to_run() {
	local m chosen=()
	if [ -n "$reference" ]; then
		chosen=(none)
	elif [ "$accel" != all ]; then
		IFS=, read -ra chosen <<<"$accel"
	else
		local doctor
		chosen=(none) # the daemon's own syscalls: always there
		if doctor=$("$BPFUSEFS" doctor --json 2>/dev/null) &&
			jq -e '.accel | type == "object"' >/dev/null 2>&1 <<<"$doctor"; then
			for m in "${MODES[@]:1}"; do
				jq -e --arg m "$m" '.accel[$m] | if type == "object" then (.available // .supported // false) else . == true end' \
					>/dev/null 2>&1 <<<"$doctor" && chosen+=("$m")
				# fusering off only because enable_uring is N: the run
				# turns it on for the mode (enable_uring_for).
				[ "$m" = fusering ] && jq -e '.fuse.enable_uring == "N" and (.accel.fusering.reason | startswith("enable_uring is N"))' \
					>/dev/null 2>&1 <<<"$doctor" && chosen+=("$m")
			done
		else
			log "bpfusefs doctor --json did not answer; running mode none only"
		fi
	fi
	for m in "${chosen[@]}"; do
		[[ " ${MODES[*]} " == *" $m "* ]] || die "unknown accel mode $m (want one of ${MODES[*]} or all)"
	done
	echo "${chosen[@]}"
}
