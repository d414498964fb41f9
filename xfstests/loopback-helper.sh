#!/bin/bash
# mount(8) helper for go-fuse v2.12.1's example/loopback, the reference the
# xfstests results are compared with (run.sh --reference installs it as
# /sbin/mount.fuse.loopback). mount(8) calls it as
#   mount.fuse.loopback SOURCE MOUNTPOINT [-sfnv] [-N ns] [-o OPTIONS] [-t TYPE]
# It starts the daemon detached, returns once the mount is live, and turns a
# remount into a plain VFS remount, since the example has no remount support.
set -u
loopback=$1 source=$2 mnt=$3
shift 3
opts=
while [ $# -gt 0 ]; do
	case $1 in
	-o) opts=${2:-}; shift 2 ;;
	-o*) opts=${1#-o}; shift ;;
	-N|-t) shift 2 ;;
	*) shift ;;
	esac
done

remount= ro= vfs=()
IFS=, read -ra list <<<"$opts"
for o in "${list[@]}"; do
	case $o in
	remount) remount=1 ;;
	ro) ro=1; vfs+=(ro) ;;
	rw|nosuid|suid|nodev|dev|noexec|exec|noatime|atime|relatime|norelatime|strictatime|nodiratime|diratime|sync|async|dirsync|lazytime|nolazytime)
		vfs+=("$o") ;;
	esac
done

if [ -n "$remount" ]; then
	exec mount -i -o "remount$(printf ',%s' "${vfs[@]}")" "$mnt"
fi

args=(-allow-other -directmountstrict -q)
[ -n "$ro" ] && args+=(-ro)
ulimit -n "$(ulimit -Hn)" 2>/dev/null
setsid "$loopback" "${args[@]}" "$mnt" "$source" </dev/null >>/tmp/go-fuse-loopback.log 2>&1 &
daemon=$!
for _ in $(seq 200); do
	[ "$(findmnt -n -o FSTYPE --mountpoint "$mnt" 2>/dev/null | tail -n1)" = fuse.loopback ] && exit 0
	kill -0 "$daemon" 2>/dev/null || exit 1
	sleep 0.05
done
echo "mount.fuse.loopback: $mnt did not come up" >&2
exit 1
