#!/usr/bin/env bash
# Fetches the newest Debian cloud kernel (amd64) of version $BPFUSEFS_KERNEL_MIN
# (default 7.1) or later that trixie-backports, sid or trixie offer, and prints
# the directory it was unpacked into (vmlinuz, config, kernel/ modules) on stdout.
#
# With --source SERIES [VERSION] (e.g. 7.3 7.3.4-1~bpo13+1) it fetches
# Debian's linux-source-SERIES instead, the tree kernel/build.sh patches, at
# VERSION (default: the newest), and prints the path of its tarball
# (linux-source-SERIES.tar.xz; package-version beside it). A cached VERSION
# is used without touching the network.
#
# apt runs with a private configuration under the cache (its own sources list,
# lists, archives and state) so the host's package state is never touched; it
# points at the Debian mirror the host already uses and verifies signatures
# with the host's Debian archive keyring. Progress goes to stderr.
#
# Environment:
#   BPFUSEFS_CACHE         cache root (default ~/.cache/bpfusefs)
#   BPFUSEFS_KERNEL_MIN    oldest acceptable upstream version (default 7.1)
#   BPFUSEFS_DEBIAN_MIRROR mirror URI (default: the host's Debian mirror)
#   BPFUSEFS_APT_MAX_AGE   seconds before the package lists are refreshed (default 86400)
#   BPFUSEFS_OFFLINE=1     never touch the network: use the newest cached kernel
set -euo pipefail

cache=${BPFUSEFS_CACHE:-$HOME/.cache/bpfusefs}/kernels/debian
sources=${BPFUSEFS_CACHE:-$HOME/.cache/bpfusefs}/kernels/source
aptdir=$cache/apt
min_version=${BPFUSEFS_KERNEL_MIN:-7.1}
max_age=${BPFUSEFS_APT_MAX_AGE:-86400}
suites=(trixie-backports sid trixie)
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

log() { echo "debian-kernel: $*" >&2; }
die() {
	log "$*"
	exit 1
}

# host_mirror prints the first Debian (non-security) archive URI the host's
# apt sources use, deb822 or one-line style.
host_mirror() {
	local f
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -r "$f" ] || continue
		awk '
			/^[[:space:]]*#/ { next }
			/^URIs:/ { for (i = 2; i <= NF; i++) print $i }
			/^deb[[:space:]]/ {
				for (i = 2; i <= NF; i++) if ($i !~ /^\[/ && $i !~ /\]$/ && $i !~ /=/) { print $i; break }
			}' "$f"
	done | grep -E '/debian/?$' | head -n 1
}

# apt_private runs an apt command against the private configuration.
apt_private() {
	APT_CONFIG=$aptdir/apt.conf "$@"
}

setup_apt() {
	local mirror=${BPFUSEFS_DEBIAN_MIRROR:-$(host_mirror)}
	mirror=${mirror:-http://deb.debian.org/debian}
	mkdir -p "$aptdir"/{lists/partial,archives/partial,state,parts,preferences.d,sources.list.d}
	touch "$aptdir/state/status"
	[ -r "$keyring" ] || die "no Debian archive keyring at $keyring: apt-get install debian-archive-keyring"
	local suite sources=""
	for suite in "${suites[@]}"; do
		sources+="deb [signed-by=$keyring] $mirror $suite main"$'\n'
	done
	printf '%s' "$sources" >"$aptdir/sources.list.new"
	# The host's freshness policy carries over (a mirror that serves a
	# snapshot has Release files past Valid-Until; the host says so with
	# Check-Valid-Until "false"); signatures are verified regardless.
	local valid_until="" check_date=""
	eval "$(apt-config shell valid_until Acquire::Check-Valid-Until check_date Acquire::Check-Date)"
	# Dir::Etc::Parts points at an empty directory so the rest of the host's
	# apt.conf.d (extra index targets, hooks) stays out.
	cat >"$aptdir/apt.conf" <<-EOF
		Dir::Etc::Parts "$aptdir/parts";
		Dir::Etc::SourceList "$aptdir/sources.list";
		Dir::Etc::SourceParts "$aptdir/sources.list.d";
		Dir::Etc::Preferences "$aptdir/preferences";
		Dir::Etc::PreferencesParts "$aptdir/preferences.d";
		Dir::State "$aptdir/state";
		Dir::State::Lists "$aptdir/lists";
		Dir::State::status "$aptdir/state/status";
		Dir::Cache "$aptdir/cache";
		Dir::Cache::Archives "$aptdir/archives";
		APT::Architecture "amd64";
		APT::Architectures { "amd64"; };
		Acquire::Languages "none";
		APT::Sandbox::User "root";
		${valid_until:+Acquire::Check-Valid-Until "$valid_until";}
		${check_date:+Acquire::Check-Date "$check_date";}
	EOF
	# A changed mirror or suite list invalidates the lists.
	if ! cmp -s "$aptdir/sources.list.new" "$aptdir/sources.list" 2>/dev/null; then
		mv "$aptdir/sources.list.new" "$aptdir/sources.list"
		rm -f "$aptdir/updated"
	else
		rm -f "$aptdir/sources.list.new"
	fi
	log "mirror $mirror, suites ${suites[*]}"
}

lists_fresh() {
	[ -e "$aptdir/updated" ] && [ $(($(date +%s) - $(stat -c %Y "$aptdir/updated"))) -lt "$max_age" ]
}

update_lists() {
	lists_fresh && return 0
	log "refreshing package lists"
	apt_private apt-get -q -o APT::Update::Error-Mode=any update >&2 || return 1
	touch "$aptdir/updated"
}

# newest_available prints "abi version" of the newest linux-binary-*-cloud-amd64
# package at or above $min_version, or nothing.
newest_available() {
	local best_abi="" best_ver="" pkg ver
	while read -r pkg ver; do
		dpkg --compare-versions "$ver" ge "$min_version~" || continue
		if [ -z "$best_ver" ] || dpkg --compare-versions "$ver" gt "$best_ver"; then
			best_abi=${pkg#linux-binary-} best_ver=$ver
		fi
	done < <(apt_private apt-cache dumpavail | awk '
		/^Package: / { pkg = ($2 ~ /^linux-binary-[0-9][^ ]*-cloud-amd64$/) ? $2 : "" }
		/^Version: / && pkg != "" { print pkg, $2; pkg = "" }')
	[ -n "$best_abi" ] && echo "$best_abi $best_ver"
}

# newest_cached prints the directory of the newest file among $@ (a
# vmlinuz, a source tarball), by the package-version beside each.
newest_cached() {
	local f d best="" best_ver="" ver
	for f in "$@"; do
		[ -e "$f" ] || continue
		d=$(dirname "$f")
		ver=$(cat "$d/package-version")
		if [ -z "$best_ver" ] || dpkg --compare-versions "$ver" gt "$best_ver"; then
			best=$d best_ver=$ver
		fi
	done
	[ -n "$best" ] && echo "$best"
}

# unpack downloads the kernel, its modules and its config (linux-binary,
# linux-modules and linux-base; linux-image-* is only a meta package) and
# unpacks usr/lib/modules/<abi> into $cache/<abi>.
unpack() {
	local abi=$1 ver=$2 dest=$cache/$1
	[ -e "$dest/vmlinuz" ] && return 0
	local pkgs=(linux-binary-"$abi" linux-modules-"$abi" linux-base-"$abi")
	log "downloading ${pkgs[*]} ($ver)"
	if ! (cd "$aptdir/archives" && apt_private apt-get -q download "${pkgs[@]/%/=$ver}" >&2); then
		log "apt-get download ${pkgs[*]} failed"
		return 1
	fi
	local tmp deb
	tmp=$(mktemp -d "$cache/.unpack.XXXXXX")
	for deb in "${pkgs[@]}"; do
		dpkg-deb -x "$aptdir/archives/${deb}_${ver//:/%3a}_amd64.deb" "$tmp/root"
	done
	[ -e "$tmp/root/usr/lib/modules/$abi/vmlinuz" ] || die "no usr/lib/modules/$abi/vmlinuz in linux-binary-$abi"
	mv "$tmp/root/usr/lib/modules/$abi" "$tmp/kernel"
	echo "$ver" >"$tmp/kernel/package-version"
	rm -rf "$dest"
	mv "$tmp/kernel" "$dest"
	rm -rf "$tmp"
	# The .debs are unpacked; keep only the kernel in the cache.
	for deb in "${pkgs[@]}"; do
		rm -f "$aptdir/archives/${deb}_${ver//:/%3a}_amd64.deb"
	done
}

# fetch_source downloads linux-source-$1 at version $2 (default: the
# candidate), keeps only the source tarball it carries, under
# $sources/<version>/, and prints the tarball's path.
fetch_source() {
	local series=$1 pkg=linux-source-$1 ver=${2:-} dest tmp
	[ -n "$ver" ] || ver=$(apt_private apt-cache policy "$pkg" | awk '/Candidate:/ { print $2 }')
	[ -n "$ver" ] && [ "$ver" != "(none)" ] || return 1
	dest=$sources/$ver
	if [ ! -e "$dest/$pkg.tar.xz" ]; then
		log "downloading $pkg ($ver)"
		(cd "$aptdir/archives" && apt_private apt-get -q download "$pkg=$ver" >&2) || return 1
		mkdir -p "$dest"
		tmp=$(mktemp "$dest/.tar.XXXXXX")
		dpkg-deb --fsys-tarfile "$aptdir/archives/${pkg}_${ver//:/%3a}_all.deb" |
			tar -xO "./usr/src/$pkg.tar.xz" >"$tmp" || die "no usr/src/$pkg.tar.xz in $pkg $ver"
		chmod 644 "$tmp"
		mv "$tmp" "$dest/$pkg.tar.xz"
		echo "$ver" >"$dest/package-version"
		rm -f "$aptdir/archives/${pkg}_${ver//:/%3a}_all.deb"
	fi
	echo "$dest/$pkg.tar.xz"
}

main_source() {
	local series=$1 version=$2 found
	if [ -n "$version" ] && [ -e "$sources/$version/linux-source-$series.tar.xz" ]; then
		echo "$sources/$version/linux-source-$series.tar.xz"
		return 0
	fi
	if [ "${BPFUSEFS_OFFLINE:-0}" != 1 ]; then
		setup_apt
		if update_lists && found=$(fetch_source "$series" "$version"); then
			echo "$found"
			return 0
		fi
		log "could not fetch linux-source-$series ${version:-(newest)}; looking in the cache"
	fi
	[ -z "$version" ] || die "linux-source-$series $version is neither available nor cached in $sources"
	found=$(newest_cached "$sources"/*/"linux-source-$series.tar.xz") ||
		die "linux-source-$series is neither available nor cached in $sources"
	log "using cached linux-source-$series ($(cat "$found/package-version"))"
	echo "$found/linux-source-$series.tar.xz"
}

main() {
	mkdir -p "$cache"
	# Concurrent runs (make vmtest next to the harness's own tests) share
	# the apt state and the unpacked kernels.
	exec 9>"$cache/.lock"
	flock 9
	if [ "${1:-}" = --source ]; then
		main_source "${2:?--source needs a series, e.g. 7.3}" "${3:-}"
		return
	fi
	local abi ver found
	if [ "${BPFUSEFS_OFFLINE:-0}" != 1 ]; then
		setup_apt
		if update_lists && found=$(newest_available); then
			read -r abi ver <<<"$found"
			log "newest cloud kernel >= $min_version: $abi ($ver)"
			if unpack "$abi" "$ver"; then
				echo "$cache/$abi"
				return 0
			fi
		fi
		log "could not list Debian kernels >= $min_version; looking in the cache"
	fi
	found=$(newest_cached "$cache"/*/vmlinuz) || die "no Debian kernel >= $min_version available or cached in $cache"
	log "using cached $(basename "$found") ($(cat "$found/package-version"))"
	echo "$found"
}

main "$@"
