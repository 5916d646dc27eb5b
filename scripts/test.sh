#!/usr/bin/env bash
# The whole test suite, as CI runs it: host packages, the guest image, lints, then every test
# (unit, store, storage drivers on loop-mounted btrfs/xfs, real QEMU guests, real kubectl).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root: the tests loop-mount btrfs/xfs pools and start QEMU guests" >&2; exit 1; }
command -v cargo >/dev/null || { echo "cargo is required (Rust 1.95, see rust-toolchain.toml)" >&2; exit 1; }
bash scripts/deps.sh
bash scripts/build-guest.sh
export VMSNAP_GUEST_DIR="${VMSNAP_GUEST_DIR:-/var/cache/vmsnap/guest}"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --bins
cargo nextest run --workspace --locked --no-fail-fast "$@"
