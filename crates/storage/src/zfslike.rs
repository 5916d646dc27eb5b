//! `zfslike` gives ZFS semantics on top of reflinks (seed 004):
//! - rollback only to the latest snapshot; a rollback to an older one fails with
//!   FailedPrecondition naming the newer snapshots, which must be destroyed first;
//! - a volume made from a snapshot pins that snapshot: deleting it fails while clones exist;
//! - a volume with snapshots cannot be deleted (`zfs destroy` without `-r`).

use std::path::Path;

use crate::error::{Error, Result};
use crate::rawfile::{CopyMode, RawPool};
use crate::{
    Attachment, Capabilities, Driver, PoolOptions, PoolUsage, Progress, RecoveryReport, SnapName,
    SnapshotInfo, Usage, VolName,
};

const NAME: &str = "zfslike";
const MODE: CopyMode = CopyMode::Reflink;

pub struct ZfsLikeDriver {
    pool: RawPool,
}

impl ZfsLikeDriver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        let pool = RawPool::open(NAME, root, opts)?;
        if !pool.reflink_ok {
            return Err(Error::FailedPrecondition(format!(
                "the zfslike driver needs a filesystem with FICLONE at {}",
                root.display()
            )));
        }
        Ok(ZfsLikeDriver { pool })
    }
}

impl Driver for ZfsLikeDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            restore_from_snapshot: true,
            cow_clone: true,
            rollback_any: false,
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
        self.pool.require_vol(vol)?;
        let snaps = self.pool.snapshot_names(vol)?;
        if !snaps.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "volume {vol} has snapshots: {}; destroy them first",
                snaps.join(", ")
            )));
        }
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
        self.pool.require_snap(vol, snap)?;
        let clones = self.pool.clones_of(vol, snap)?;
        if !clones.is_empty() {
            return Err(Error::FailedPrecondition(format!(
                "snapshot {vol}@{snap} has dependent clones: {}; delete them first",
                clones.join(", ")
            )));
        }
        self.pool.delete_snapshot(vol, snap)
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        self.pool.list_snapshots(vol)
    }

    fn restore_volume(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        self.pool.require_vol(vol)?;
        self.pool.require_snap(vol, snap)?;
        let snaps = self.pool.list_snapshots(vol)?;
        if let Some(pos) = snaps.iter().position(|s| &s.name == snap) {
            let newer: Vec<&str> = snaps[pos + 1..].iter().map(|s| s.name.as_str()).collect();
            if !newer.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "{vol}@{snap} is not the latest snapshot; newer snapshots must be destroyed first: {}",
                    newer.join(", ")
                )));
            }
        }
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
            .create_volume_from_snapshot(MODE, new, vol, snap, size, true, progress)
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
