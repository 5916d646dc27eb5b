//! Snapshot, restore and clone verbs.

use clap::Subcommand;

#[derive(Subcommand)]
pub enum SnapCmd {}

pub fn run(_c: &client::Client, cmd: SnapCmd) -> api::Result<()> {
    match cmd {}
}
