//! The `vmsnap` binary: `serve` runs the control plane; every other verb is a client of its
//! API, found through `$KUBECONFIG` or the default data dir.

mod cli;
mod kubectl;
mod serve;
mod snap_bench;
mod snap_cli;
mod storage_cli;
mod vm_actions;
mod vm_cli;

use clap::Parser;

fn main() {
    let args = cli::Cli::parse();
    let code = match cli::run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error from server ({}): {}", e.kind.reason(), e.message);
            1
        }
    };
    std::process::exit(code);
}
