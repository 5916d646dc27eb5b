//! `reflink`: raw files on a filesystem with FICLONE (XFS with reflink=1, btrfs). Snapshots,
//! clones and rollbacks are reflinks: O(1) in data size, sharing blocks until written.
//! Snapshots are independent files, so a volume can be deleted while its snapshots live on,
//! and rollback works to any snapshot without touching the others.

use std::path::Path;

use crate::error::{Error, Result};
use crate::rawfile::{CopyMode, RawPool};
use crate::{
    Attachment, Capabilities, Driver, PoolOptions, PoolUsage, Progress, RecoveryReport, SnapName,
    SnapshotInfo, Usage, VolName,
};

const MODE: CopyMode = CopyMode::Reflink;

pub struct ReflinkDriver {
    pool: RawPool,
}

impl ReflinkDriver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        let pool = RawPool::open("reflink", root, opts)?;
        if !pool.reflink_ok {
            return Err(Error::FailedPrecondition(format!(
                "the reflink driver needs a filesystem with FICLONE (xfs with reflink=1, or btrfs) at {}",
                root.display()
            )));
        }
        Ok(ReflinkDriver { pool })
    }
}

impl Driver for ReflinkDriver {
    fn name(&self) -> &'static str {
        "reflink"
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            restore_from_snapshot: true,
            cow_clone: true,
            rollback_any: true,
            live_snapshot: true,
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

    fn create_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<SnapshotInfo> {
        self.pool.create_snapshot(MODE, vol, snap)
    }

    fn delete_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        self.pool.delete_snapshot(vol, snap)
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        self.pool.list_snapshots(vol)
    }

    fn restore_volume(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        self.pool.restore_volume(MODE, vol, snap)
    }

    fn create_volume_from_snapshot(
        &self,
        new: &VolName,
        vol: &VolName,
        snap: &SnapName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.pool
            .create_volume_from_snapshot(MODE, new, vol, snap, size, false, progress)
    }

    fn clone_volume(
        &self,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()> {
        self.pool.clone_volume(MODE, new, src, size, progress)
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
