//! `cargo bench -p virt`: boot-to-agent and freeze/thaw round trips on the real guest (TCG).
//! Needs the guest image: `scripts/build-guest.sh` (or VMSNAP_GUEST_DIR pointing at one).

fn main() {
    let guest_dir = virt::default_guest_dir();
    let work = match tempfile::tempdir() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("cannot create a work directory: {e}");
            std::process::exit(1);
        }
    };
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start tokio: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(virt::bench::run(&guest_dir, work.path())) {
        eprintln!("benchmark failed: {e}");
        std::process::exit(1);
    }
}
