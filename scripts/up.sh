#!/usr/bin/env bash
# Brings vmsnap up on embedded defaults (SQLite store, a local pool, QEMU) in the background and
# starts a demo VM with the guest agent. Idempotent: a second run reuses what is there.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (vmsnap manages QEMU guests and storage pools)" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required (Rust 1.95, see rust-toolchain.toml)" >&2; exit 1; }
bash scripts/deps.sh
bash scripts/build-guest.sh
cargo build --release --locked --bin vmsnap
install -m 0755 target/release/vmsnap /usr/local/bin/vmsnap
DATA=/var/lib/vmsnap
mkdir -p "$DATA"
if ! curl -skf https://127.0.0.1:6443/healthz >/dev/null 2>&1; then
  nohup /usr/local/bin/vmsnap serve --data-dir "$DATA" >>"$DATA/vmsnap.log" 2>&1 &
  echo $! >"$DATA/vmsnap.pid"
  for _ in $(seq 1 100); do
    curl -skf https://127.0.0.1:6443/healthz >/dev/null 2>&1 && break
    sleep 0.1
  done
fi
curl -skf https://127.0.0.1:6443/healthz >/dev/null || { echo "vmsnap did not start; see $DATA/vmsnap.log" >&2; exit 1; }
export KUBECONFIG="$DATA/kubeconfig"
if vmsnap demo --help >/dev/null 2>&1; then
  vmsnap demo --name demo
fi
cat <<MSG

vmsnap is running (log: $DATA/vmsnap.log). Next:
  export KUBECONFIG=$DATA/kubeconfig
  kubectl get vm,vmi                       # the demo VM
  vmsnap guest-exec demo -- cat /etc/hostname
  vmsnap snapshot create demo --name first --wait
  kubectl get vmsnapshot
  vmsnap restore demo --snapshot first --policy StopTarget --wait
  vmsnap clone demo --target demo-copy --start --wait
MSG
