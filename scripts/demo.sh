#!/usr/bin/env bash
# make demo: mounts a demo backing directory with bpfusefs, runs unmodified
# programs on it (cp -a, tar, sqlite3, git), prints the daemon's live
# counters, unmounts and cleans up. Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
bin="$PWD/bin/bpfusefs"

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: needs root (FUSE mounts without fusermount use mount(2))" >&2
	exit 1
fi
[ -x "$bin" ] || { echo "demo: $bin missing; run make build" >&2; exit 1; }
[ -e /dev/fuse ] || { echo "demo: /dev/fuse missing (modprobe fuse)" >&2; exit 1; }

missing=()
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v git >/dev/null || missing+=(git)
if [ ${#missing[@]} -gt 0 ]; then
	echo "demo: installing ${missing[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

work=$(mktemp -d /tmp/bpfusefs-demo.XXXXXX)
backing="$work/backing"
mnt="$work/mnt"
mkdir "$backing" "$mnt"
# is_mounted: a bpfusefs mount sits on $mnt (mountinfo field 5 is the mount
# point; the filesystem type follows the " - " separator).
is_mounted() {
	awk -v m="$mnt" '$5 == m && / - fuse\.bpfusefs / { found = 1 } END { exit !found }' /proc/self/mountinfo
}
cleanup() {
	status=$?
	if is_mounted; then
		"$bin" umount "$mnt" || "$bin" umount -l "$mnt" || true
	fi
	rm -rf "$work"
	if [ $status -ne 0 ]; then
		echo "demo: FAILED (exit $status)" >&2
	fi
	exit $status
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "bpfusefs doctor"
"$bin" doctor

step "bpfusefs mount -d $backing $mnt"
"$bin" mount -d "$backing" "$mnt"
is_mounted

step "cp -a /usr/include/linux into the mount, compare with the source"
cp -a /usr/include/linux "$mnt/include"
diff -r /usr/include/linux "$mnt/include"
diff -r /usr/include/linux "$backing/include"
echo "identical: $(find "$mnt/include" -type f | wc -l) files"

step "tar: archive the copy on the mount, extract it again, compare"
tar -C "$mnt" -cf "$mnt/include.tar" include
mkdir "$mnt/untarred"
tar -C "$mnt/untarred" -xf "$mnt/include.tar"
diff -r "$mnt/include" "$mnt/untarred/include"
ls -l "$mnt/include.tar"

step "sqlite3: 100 transactions, then PRAGMA integrity_check"
{
	echo "PRAGMA journal_mode=WAL;"
	echo "CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);"
	for i in $(seq 100); do
		echo "BEGIN; INSERT INTO t(v) SELECT hex(randomblob(64)) FROM (SELECT 1 UNION SELECT 2 UNION SELECT 3); COMMIT;"
	done
} | sqlite3 "$mnt/demo.db" >/dev/null
rows=$(sqlite3 "$mnt/demo.db" "SELECT count(*) FROM t;")
check=$(sqlite3 "$mnt/demo.db" "PRAGMA integrity_check;")
echo "rows: $rows, integrity_check: $check"
[ "$rows" = 300 ] && [ "$check" = ok ]

step "git: init, add, commit, status, gc on the mount"
git_() { git -C "$mnt/repo" -c user.name=demo -c user.email=demo@example.com -c safe.directory='*' "$@"; }
mkdir "$mnt/repo"
cp -a "$mnt/include" "$mnt/repo/"
git_ init -q
git_ add -A
git_ commit -q -m "demo commit"
echo "changed" >> "$mnt/repo/include/fs.h"
git_ status --short
git_ commit -q -am "second commit"
[ -z "$(git_ status --porcelain)" ]
git_ gc -q
git_ fsck --no-progress
git_ log --oneline

step "bpfusefs stats $mnt"
"$bin" stats "$mnt"

step "bpfusefs umount $mnt"
"$bin" umount "$mnt"
if is_mounted; then
	echo "demo: still mounted after umount" >&2
	exit 1
fi
[ -f "$backing/demo.db" ] && [ -d "$backing/repo/.git" ]
echo
echo "demo: OK"
