#!/usr/bin/env bash
# Installs the host packages the whole project needs. Idempotent: a fast no-op when all are present.
# Other parts of the project may append to PACKAGES; keep it the single list.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils
  btrfs-progs xfsprogs e2fsprogs
  busybox-static cpio zstd kmod
  curl python3 util-linux
)

missing=()
for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [[ "$status" == installed ]] || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "deps.sh: missing packages (${missing[*]}); run as root" >&2
  exit 1
fi

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be absent or stale on a fresh machine; refresh them once only when needed.
apt-get update -qq
# qemu-system-x86 and qemu-utils go in one command: installing the former alone may remove the latter.
# A newer qemu-utils (e.g. from backports) breaks the distribution's qemu-system-common, so pin
# qemu-utils to the version of qemu-system-x86 that apt would install.
args=()
for p in "${PACKAGES[@]}"; do
  if [[ "$p" == qemu-utils ]]; then
    qver=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
    if [[ -n "$qver" && "$qver" != "(none)" ]]; then
      args+=("qemu-utils=$qver")
      continue
    fi
  fi
  args+=("$p")
done
apt-get install -y -qq --no-install-recommends --allow-downgrades "${args[@]}" >/dev/null

for p in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  if [[ "$status" != installed ]]; then
    echo "deps.sh: package $p failed to install" >&2
    exit 1
  fi
done
