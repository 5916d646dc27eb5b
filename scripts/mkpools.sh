#!/usr/bin/env bash
# Creates (or tears down) loop-mounted test pools for the storage drivers:
#   DIR/btrfs  a btrfs filesystem          (btrfs driver)
#   DIR/xfs    an xfs filesystem with reflink (reflink and zfslike drivers)
# Backing images are sparse files (DIR/btrfs.img, DIR/xfs.img), so they cost only what is written.
# Idempotent: running it twice leaves the same mounts. Needs root, mkfs.btrfs and mkfs.xfs.
#
# Usage: mkpools.sh [--size 40G] DIR
#        mkpools.sh --down DIR
set -euo pipefail

size=40G
down=0
while [ $# -gt 0 ]; do
  case "$1" in
    --down) down=1; shift ;;
    --size) size="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) break ;;
  esac
done
[ $# -eq 1 ] || { echo "usage: $0 [--size 40G] [--down] DIR" >&2; exit 2; }
dir=$(realpath -m "$1")

if [ "$down" = 1 ]; then
  for fs in btrfs xfs; do
    if mountpoint -q "$dir/$fs"; then umount "$dir/$fs"; fi
  done
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "mkpools.sh: needs root (loop mounts)" >&2; exit 1; }
mkdir -p "$dir"

mkpool() {
  local fs=$1 img="$dir/$1.img" mnt="$dir/$1"
  mkdir -p "$mnt"
  if mountpoint -q "$mnt"; then
    echo "$mnt"
    return
  fi
  if [ ! -s "$img" ] || ! blkid -p "$img" 2>/dev/null | grep -q "TYPE=\"$fs\""; then
    rm -f "$img"
    truncate -s "$size" "$img"
    case "$fs" in
      btrfs) mkfs.btrfs -q -f "$img" >&2 ;;
      xfs) mkfs.xfs -q -f -m reflink=1 "$img" >&2 ;;
    esac
  fi
  # Concurrent callers (parallel test binaries) race here; a lock keeps one mount per pool.
  (
    flock 9
    mountpoint -q "$mnt" || mount -o loop "$img" "$mnt"
  ) 9>"$dir/.$fs.lock"
  echo "$mnt"
}

mkpool btrfs
mkpool xfs
