//! Storage pool drivers behind one Driver trait.
//!
//! A pool is a directory; a driver gives it semantics (btrfs subvolumes, reflinked raw files,
//! qcow2 images, plain sparse files). Controllers read [`Capabilities`] and never special-case a
//! driver by name. Every multi-step operation builds under a `.tmp-<op>-<name>` entry and
//! renames it into place at the end, so a crash leaves either nothing or a leftover that
//! [`Driver::recover`] removes or finishes.

pub mod bench;
mod btrfs;
mod dir;
mod error;
mod fsutil;
pub mod looppool;
mod names;
mod qcow2;
mod rawfile;
mod reflink;
mod snaponly;
mod zfslike;

use std::path::{Path, PathBuf};
use std::time::SystemTime;

pub use btrfs::BtrfsDriver;
pub use dir::DirDriver;
pub use error::{Error, ErrorKind, Result};
pub use fsutil::{allocated_bytes, sparse_copy, CopyStats};
pub use names::{SnapName, VolName};
pub use qcow2::Qcow2Driver;
pub use reflink::ReflinkDriver;
pub use snaponly::SnapOnlyDriver;
pub use zfslike::ZfsLikeDriver;

/// What a driver can do. Controllers decide strategies from these flags alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Capabilities {
    /// Snapshots can be taken.
    pub snapshots: bool,
    /// A new volume can be made from a snapshot, and a volume rolled back to one.
    pub restore_from_snapshot: bool,
    /// Clones share blocks with their source and take O(1) time.
    pub cow_clone: bool,
    /// Rollback works to any snapshot; when false only to the latest one (ZFS semantics).
    pub rollback_any: bool,
    /// A snapshot may be taken while a VM has the volume open (after freezing the guest).
    pub live_snapshot: bool,
    /// Volumes are thin: they only use the space that was written.
    pub sparse: bool,
    /// Volumes are reachable from other hosts.
    pub remote: bool,
}

/// The size of a volume and the space it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Virtual size as the guest sees it.
    pub size: u64,
    /// Bytes allocated on the host (shared CoW blocks are counted for each owner).
    pub allocated: u64,
}

/// A snapshot of a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SnapshotInfo {
    pub name: SnapName,
    /// The volume's virtual size when the snapshot was taken (the restore size).
    pub size: u64,
    pub created: SystemTime,
}

/// The on-disk format QEMU must be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Raw,
    Qcow2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// How QEMU opens a volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Attachment {
    pub path: PathBuf,
    pub format: Format,
}

/// Space in a pool's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PoolUsage {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// What [`Driver::recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecoveryReport {
    /// Leftovers of interrupted operations that were removed (pool-relative paths).
    pub removed: Vec<String>,
    /// Interrupted operations that were completed (pool-relative paths).
    pub finished: Vec<String>,
    /// Volumes that were checked and repaired after an interrupted in-place update.
    pub repaired: Vec<String>,
}

impl RecoveryReport {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.finished.is_empty() && self.repaired.is_empty()
    }
}

/// Receives progress of long copies.
pub trait Progress: Sync {
    /// `done` of `total` bytes have been handled.
    fn update(&self, done: u64, total: u64);
}

/// A [`Progress`] that ignores updates.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn update(&self, _done: u64, _total: u64) {}
}

impl<F: Fn(u64, u64) + Sync> Progress for F {
    fn update(&self, done: u64, total: u64) {
        self(done, total)
    }
}

/// Space kept free in a pool: the larger of a fraction of its size and a fixed floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Reserve this many per mille of the pool size.
    pub reserve_permille: u64,
    /// Reserve at least this many bytes.
    pub reserve_min: u64,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            reserve_permille: 20,
            reserve_min: 256 << 20,
        }
    }
}

impl PoolOptions {
    /// Bytes to keep free in a pool of `total` bytes.
    pub fn reserve(&self, total: u64) -> u64 {
        (total / 1000)
            .saturating_mul(self.reserve_permille)
            .max(self.reserve_min)
    }
}

/// A storage driver over one pool directory.
pub trait Driver: Send + Sync {
    /// Driver name: "btrfs", "reflink", "qcow2", "dir", "snaponly" or "zfslike".
    fn name(&self) -> &'static str;
    fn info(&self) -> Capabilities;
    /// The pool directory.
    fn root(&self) -> &Path;
    /// Creates an empty (zeroed, thin) volume of `size` bytes.
    fn create_volume(&self, vol: &VolName, size: u64) -> Result<()>;
    /// Deletes a volume. Drivers whose snapshots live independently keep them; drivers whose
    /// snapshots or clones depend on the volume refuse with FailedPrecondition naming them.
    fn delete_volume(&self, vol: &VolName) -> Result<()>;
    /// Grows a volume; shrinking is Invalid.
    fn resize_volume(&self, vol: &VolName, size: u64) -> Result<()>;
    fn usage(&self, vol: &VolName) -> Result<Usage>;
    fn create_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<SnapshotInfo>;
    fn delete_snapshot(&self, vol: &VolName, snap: &SnapName) -> Result<()>;
    /// Snapshots of a volume, oldest first.
    fn list_snapshots(&self, vol: &VolName) -> Result<Vec<SnapshotInfo>>;
    /// Rolls a volume back in place to a snapshot.
    fn restore_volume(&self, vol: &VolName, snap: &SnapName) -> Result<()>;
    /// Makes a new volume holding a snapshot's data, at least as large as the snapshot.
    fn create_volume_from_snapshot(
        &self,
        new: &VolName,
        vol: &VolName,
        snap: &SnapName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()>;
    /// Makes a new volume holding a copy of `src`, at least as large as it.
    fn clone_volume(
        &self,
        new: &VolName,
        src: &VolName,
        size: u64,
        progress: &dyn Progress,
    ) -> Result<()>;
    fn attachment(&self, vol: &VolName) -> Result<Attachment>;
    /// Finishes or removes what interrupted operations left behind. Call once at start,
    /// before other operations.
    fn recover(&self) -> Result<RecoveryReport>;
    fn pool_usage(&self) -> Result<PoolUsage>;
    fn list_volumes(&self) -> Result<Vec<VolName>>;
    /// The pool's reserve policy.
    fn options(&self) -> PoolOptions;

    /// Refuses with NoSpace when `needed` bytes exceed the pool's free space minus its reserve.
    /// Importers call this before writing into a volume.
    fn ensure_space(&self, what: &str, needed: u64) -> Result<()> {
        check_space(self.pool_usage()?, self.options(), what, needed)
    }
}

/// Even a copy-on-write operation writes metadata, so every operation needs at least this.
pub const MIN_OP_BYTES: u64 = 1 << 20;

/// Refuses with NoSpace when `needed` bytes (at least [`MIN_OP_BYTES`]) exceed the pool's free
/// space minus its reserve.
pub fn check_space(pool: PoolUsage, opts: PoolOptions, what: &str, needed: u64) -> Result<()> {
    let reserve = opts.reserve(pool.total);
    let available = pool.free.saturating_sub(reserve);
    let needed = needed.max(MIN_OP_BYTES);
    if needed > available {
        return Err(Error::NoSpace {
            what: what.to_string(),
            needed,
            available,
            reserve,
        });
    }
    Ok(())
}

/// Every driver name [`open_driver`] accepts.
pub const DRIVERS: &[&str] = &["btrfs", "reflink", "qcow2", "dir", "snaponly", "zfslike"];

/// Opens (creating if needed) a pool at `root` with the named driver.
pub fn open_driver(name: &str, root: &Path) -> Result<Box<dyn Driver>> {
    open_driver_with(name, root, PoolOptions::default())
}

/// Like [`open_driver`], with an explicit reserve policy.
pub fn open_driver_with(name: &str, root: &Path, opts: PoolOptions) -> Result<Box<dyn Driver>> {
    Ok(match name {
        "btrfs" => Box::new(BtrfsDriver::open(root, opts)?),
        "reflink" => Box::new(ReflinkDriver::open(root, opts)?),
        "qcow2" => Box::new(Qcow2Driver::open(root, opts)?),
        "dir" => Box::new(DirDriver::open(root, opts)?),
        "snaponly" => Box::new(SnapOnlyDriver::open(root, opts)?),
        "zfslike" => Box::new(ZfsLikeDriver::open(root, opts)?),
        other => {
            return Err(Error::Invalid(format!(
                "unknown storage driver {other:?}; known: {}",
                DRIVERS.join(", ")
            )))
        }
    })
}

/// The best driver for a pool at `root`: btrfs on btrfs, reflink where FICLONE works,
/// else qcow2.
pub fn detect_best(root: &Path) -> &'static str {
    if std::fs::create_dir_all(root).is_err() {
        return "qcow2";
    }
    if fsutil::is_btrfs(root) {
        return "btrfs";
    }
    if fsutil::reflink_works(root) {
        return "reflink";
    }
    "qcow2"
}

/// Fault injection for crash tests: when `VMSNAP_STORAGE_CRASH_AT` names this point, the
/// process aborts here, exactly as a kill -9 would leave things.
pub(crate) fn crash_point(point: &str) {
    static AT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let at = AT.get_or_init(|| std::env::var("VMSNAP_STORAGE_CRASH_AT").ok());
    if at.as_deref() == Some(point) {
        std::process::abort();
    }
}
