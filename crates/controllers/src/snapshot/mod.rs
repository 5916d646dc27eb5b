//! VM snapshot and restore, with KubeVirt's semantics (snapshot.kubevirt.io) and two things
//! KubeVirt lacks: the freeze window is measured and published, and volumes a restore
//! replaced are reclaimed instead of orphaned.
//!
//! The controllers reach the guest and the storage through the two small traits below, so the
//! freeze-snapshot-thaw sequence runs in one task with no controller hop inside the freeze.

pub mod adapters;
pub mod admission;
pub mod content;
pub mod restore;
pub mod vmsnapshot;

use futures::future::BoxFuture;
use std::time::Duration;

pub const SNAPSHOT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshot-protection";
pub const CONTENT_FINALIZER: &str = "snapshot.kubevirt.io/vmsnapshotcontent-protection";
pub const SOURCE_FINALIZER: &str = "snapshot.kubevirt.io/snapshot-source-protection";
pub const RESTORE_FINALIZER: &str = "snapshot.kubevirt.io/vmrestore-protection";
pub const LAST_RESTORE_ANNOTATION: &str = "restore.kubevirt.io/lastRestoreUID";
pub const SOURCE_VM_NAME_LABEL: &str = "restore.kubevirt.io/source-vm-name";
pub const SOURCE_VM_NAMESPACE_LABEL: &str = "restore.kubevirt.io/source-vm-namespace";

/// What the guest is doing, as far as snapshots care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestState {
    /// No QEMU process: an offline snapshot.
    Stopped,
    Running {
        agent: bool,
        paused: bool,
    },
}

/// A quiesced guest. Ending it (thaw or resume) returns how long the guest was held.
pub trait Quiesce: Send {
    fn end(self: Box<Self>) -> BoxFuture<'static, api::Result<Duration>>;
}

/// Guest control, implemented over the VM runtime.
pub trait GuestControl: Send + Sync {
    fn state<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, GuestState>;
    /// Freezes filesystems through the guest agent. The returned guard thaws on `end`, and
    /// also if dropped, so no path leaves the guest frozen.
    fn freeze<'a>(
        &'a self,
        namespace: &'a str,
        vm: &'a str,
        timeout: Duration,
    ) -> BoxFuture<'a, api::Result<Box<dyn Quiesce>>>;
    /// Pauses the vCPUs (QMP stop), which drains in-flight I/O: a crash-consistent point for
    /// guests without an agent.
    fn pause<'a>(
        &'a self,
        namespace: &'a str,
        vm: &'a str,
    ) -> BoxFuture<'a, api::Result<Box<dyn Quiesce>>>;
    /// Thaws a guest regardless of who froze it (deletion of a snapshot mid-freeze, restarts).
    fn thaw<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, api::Result<()>>;
    /// Asks the VM to stop (for restores with StopTarget).
    fn stop<'a>(&'a self, namespace: &'a str, vm: &'a str) -> BoxFuture<'a, api::Result<()>>;
}

/// Why a volume is, or is not, part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Eligibility {
    /// Snapshottable with this VolumeSnapshotClass; `restorable` when the driver can also make
    /// volumes from its snapshots (a clone needs both).
    Yes {
        class: String,
        driver: String,
        restorable: bool,
    },
    No {
        reason: String,
    },
}

/// A storage snapshot that was taken.
#[derive(Debug, Clone)]
pub struct TakenSnapshot {
    /// The driver's snapshot name (`snapshotHandle` in the VolumeSnapshotContent).
    pub handle: String,
    pub restore_size: u64,
}

/// Storage operations, implemented over the pools.
pub trait SnapshotBackend: Send + Sync {
    /// Whether a claim can be snapshotted: Bound, on a class with a VolumeSnapshotClass (or a
    /// StorageProfile naming one), on a driver with snapshots.
    fn eligibility(&self, namespace: &str, claim: &str) -> api::Result<Eligibility>;
    /// Gets a claim ready for a snapshot, outside the quiesce window: flushes the host's
    /// cached writes of its volume and removes a stale snapshot an interrupted attempt left
    /// under `handle`, so that `take` inside the window has as little to do as possible.
    fn prepare(&self, _namespace: &str, _claim: &str, _handle: &str) -> api::Result<()> {
        Ok(())
    }
    /// Takes a storage snapshot of the claim's volume now (O(1) on CoW drivers). Idempotent
    /// for the same handle: an existing snapshot of that name is replaced.
    fn take(&self, namespace: &str, claim: &str, handle: &str) -> api::Result<TakenSnapshot>;
    /// Deletes a storage snapshot taken by `take` (for failed or cancelled snapshots).
    fn discard(&self, namespace: &str, claim: &str, handle: &str) -> api::Result<()>;
    /// Like `discard`, for a volume named directly (its claim may be gone by then).
    fn discard_volume(&self, class: &str, volume: &str, handle: &str) -> api::Result<()>;
    /// The name of the VolumeSnapshotContent `publish` makes for `handle`.
    fn content_name(&self, handle: &str) -> String;
    /// Publishes a snapshot taken by `take` as a ready VolumeSnapshot named `handle`, bound to
    /// a pre-provisioned VolumeSnapshotContent, as CSI does for existing snapshots. The
    /// VolumeSnapshot is owned by `owner` (the VM snapshot content). Idempotent.
    fn publish(
        &self,
        namespace: &str,
        claim: &str,
        handle: &str,
        restore_size: u64,
        owner: &serde_json::Value,
    ) -> api::Result<()>;
    /// Where a claim's volume lives and its format (`raw`, `qcow2`), for offline tools.
    fn attachment(&self, namespace: &str, claim: &str)
        -> api::Result<(std::path::PathBuf, String)>;
}

/// Parses one patch of a restore's or clone's `patches`: a JSON patch array, or a single
/// operation object as KubeVirt also accepts.
pub fn parse_patch(text: &str) -> Result<json_patch::Patch, String> {
    serde_json::from_str(text)
        .or_else(|_| serde_json::from_str(&format!("[{text}]")))
        .map_err(|e| format!("patch {text:?} is not a JSON patch: {e}"))
}

/// Test hooks: a slow storage step, and pausing at a named step so a test can kill the
/// daemon there. Read from the environment so production never sets them by accident.
pub(crate) fn test_delay() -> Option<Duration> {
    std::env::var("VMSNAP_TEST_SNAPSHOT_DELAY_MS")
        .ok()?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

pub(crate) async fn test_pause_at(step: &str) {
    if std::env::var("VMSNAP_TEST_PAUSE_AT").is_ok_and(|s| s == step) {
        tracing::warn!(step, "test hook: pausing here until the process is killed");
        let marker = std::env::var("VMSNAP_TEST_PAUSE_MARKER").ok();
        if let Some(m) = marker {
            let _ = std::fs::write(m, step);
        }
        loop {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    }
}
