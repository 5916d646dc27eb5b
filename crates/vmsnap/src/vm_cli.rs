//! VM verbs: `demo`, `start`, `stop`, `restart`, `console`, `guest-exec`.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum VmCmd {}

pub fn run(_c: &client::Client, cmd: VmCmd) -> api::Result<()> {
    match cmd {}
}
