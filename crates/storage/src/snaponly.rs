//! `snaponly` models OpenEBS Local PV LVM: it can take snapshots, but cannot create a volume
//! from one nor roll a volume back (no VolumeSnapshotRestore), so snapshots serve backups
//! only. Like LVM snapshots, they depend on their origin volume: the volume cannot be deleted
//! while snapshots exist. Snapshots are reflinks where the filesystem allows, else full
//! sparse copies (LVM's thick snapshots cost space too). Clones are host-assisted copies.

use std::path::Path;

use crate::error::{Error, Result};
use crate::rawfile::{CopyMode, RawPool};
use crate::{
    Attachment, Capabilities, Driver, PoolOptions, PoolUsage, Progress, RecoveryReport, SnapName,
    SnapshotInfo, Usage, VolName,
};

const NAME: &str = "snaponly";

pub struct SnapOnlyDriver {
    pool: RawPool,
}

impl SnapOnlyDriver {
    pub fn open(root: &Path, opts: PoolOptions) -> Result<Self> {
        Ok(SnapOnlyDriver {
            pool: RawPool::open(NAME, root, opts)?,
        })
    }
}

fn no_restore() -> Error {
    Error::unsupported(
        NAME,
        "restoring from a snapshot (snapshots of this pool are for backup only)",
    )
}

impl Driver for SnapOnlyDriver {
    fn name(&self) -> &'static str {
        NAME
    }

    fn info(&self) -> Capabilities {
        Capabilities {
            snapshots: true,
            restore_from_snapshot: false,
            cow_clone: false,
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
                "volume {vol} still has snapshots that depend on it: {}; delete them first",
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
        self.pool
            .create_snapshot(CopyMode::ReflinkOrCopy, vol, snap)
    }

    fn delete_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<()> {
        self.pool.delete_snapshot(vol, snap)
    }

    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>> {
        self.pool.list_snapshots(vol)
    }

    fn restore_volume(&self, _vol: &VolName, _snap: &SnapName) -> Result<()> {
        Err(no_restore())
    }

    fn create_volume_from_snapshot(
        &self,
        _new: &VolName,
        _vol: &VolName,
        _snap: &SnapName,
        _size: u64,
        _progress: &dyn Progress,
    ) -> Result<()> {
        Err(no_restore())
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
