//! Storage verbs: `vmsnap storage usage`, `vmsnap image-upload`.

use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum StorageCmd {
    /// Space used per pool and per volume.
    Usage,
}

#[derive(Args)]
pub struct ImageUploadArgs {}

pub fn storage(_c: &client::Client, _cmd: StorageCmd) -> api::Result<()> {
    Err(api::Error::unsupported("storage verbs are not built yet"))
}

pub fn image_upload(_c: &client::Client, _args: ImageUploadArgs) -> api::Result<()> {
    Err(api::Error::unsupported("image-upload is not built yet"))
}
