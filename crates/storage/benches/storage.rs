//! `cargo bench -p storage`: sparse copy vs cp, and O(1) snapshot/clone on btrfs and reflink.
//! Needs root (loop-mounted pools). VMSNAP_BENCH_POOLS overrides the pools directory.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    let dir = std::env::var_os("VMSNAP_BENCH_POOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("vmsnap-storage-pools"));
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/mkpools.sh");
    let ok = Command::new("bash")
        .arg(&script)
        .arg(&dir)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("mkpools.sh failed: the benchmark needs root, mkfs.btrfs and mkfs.xfs");
        std::process::exit(1);
    }
    match storage::bench::run(&dir) {
        Ok(report) => print!("{report}"),
        Err(e) => {
            eprintln!("benchmark failed: {e}");
            std::process::exit(1);
        }
    }
}
