//! `dir` (like hostpath): sparse raw files on any filesystem, with no snapshot support.
//! Clones are host-assisted sparse copies (SEEK_DATA/SEEK_HOLE + copy_file_range) that
//! report progress; they cost the source's allocated bytes.

use std::path::Path;

use crate::error::{Error, Result};
use crate::rawfile::{CopyMode, RawPool};
use crate::{
    Attachment, Capabilities, Driver, PoolOptions, PoolUsage, Progress, RecoveryReport, SnapName,
    SnapshotInfo, Usage, VolName,
};

const NAME: &str = "dir";

pub struct DirDriver {
    pool: RawPool,
}

impl DirDriver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        Ok(DirDriver {
            pool: RawPool::open(NAME, root, opts)?,
        })
    }
}

fn no_snapshots() -> Error {
    Error::unsupported(NAME, "snapshots")
}

impl Driver for DirDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: false,
            restore_from_snapshot: false,
            cow_clone: false,
            rollback_any: false,
            live_snapshot: false,
            sparse: true,
            remote: false,
        }
    }

    fn root(&self) -> &Path {
        &self.pool.root
    }

    fn options(&self) -> PoolOptions {
        self.pool.opts
    }

    fn create_volume(&self, vol: &VolName, size: u64) -> Result<()> {
        self.pool.create_volume(vol, size)
    }

    fn delete_volume(&self, vol: &VolName) -> Result<()> {
        self.pool.delete_volume(vol)
    }

    fn resize_volume(&self, vol: &VolName, size: u64) -> Result<()> {
        self.pool.resize_volume(vol, size)
    }

    fn usage(&self, vol: &VolName) -> Result<Usage> {
        self.pool.usage(vol)
    }

    fn create_snapshot(&self, _vol: &VolName, _snap: &SnapName) -> Result<SnapshotInfo> {
        Err(no_snapshots())
    }

    fn delete_snapshot(&self, _vol: &VolName, _snap: &SnapName) -> Result<()> {
        Err(no_snapshots())
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        self.pool.require_vol(vol)?;
        Ok(Vec::new())
    }

    fn restore_volume(&self, _vol: &VolName, _snap: &SnapName) -> Result<()> {
        Err(no_snapshots())
    }

    fn create_volume_from_snapshot(
        &self,
        _new: &VolName,
        _vol: &VolName,
        _snap: &SnapName,
        _size: u64,
        _progress: &dyn Progress,
    ) -> Result<()> {
        Err(no_snapshots())
    }

    fn clone_volume(
        &self,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.pool
            .clone_volume(CopyMode::Copy, new, src, size, progress)
    }

    fn attachment(&self, vol: &VolName) -> Result<Attachment> {
        self.pool.attachment(vol)
    }

    fn recover(&self) -> Result<RecoveryReport> {
        self.pool.recover()
    }

    fn pool_usage(&self) -> Result<PoolUsage> {
        self.pool.pool_usage()
    }

    fn list_volumes(&self) -> Result<Vec<VolName>> {
        self.pool.list_volumes()
    }
}
