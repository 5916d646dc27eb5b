//! The Store trait, its SQLite backend, and the watch hub.
//!
//! The store keeps every object of every kind under one global revision, as etcd does for
//! kube-apiserver. Writes go through one writer thread that batches concurrent requests into a
//! single SQLite transaction (group commit); reads are served from an in-memory index, so a
//! `get` or `list` never touches SQLite. A watch replays the event log from a revision and then
//! continues live without a gap or a duplicate.

// `api::Error` is the one error type of the control plane (it carries a Status's causes), so
// results are as large as it is; boxing it here would only add an allocation per error.
#![allow(clippy::result_large_err)]

pub mod bench;
mod ops;
mod sqlite;
mod watch;

use api::meta::{FieldSelector, LabelSelector};
use api::Resource;
use serde_json::Value;
use std::sync::Arc;

pub use sqlite::SqliteStore;
pub use watch::Watch;

/// The type of a watch event, as kube-apiserver names them on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ADDED" => Some(EventType::Added),
            "MODIFIED" => Some(EventType::Modified),
            "DELETED" => Some(EventType::Deleted),
            _ => None,
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change to one object. `object` is the object as written; for `Deleted` it is the last
/// state of the object with `metadata.resourceVersion` set to the revision of the deletion.
#[derive(Debug, Clone)]
pub struct WatchEvent {
    pub ty: EventType,
    pub revision: u64,
    /// The resource's [`Resource::key`], `group/plural`.
    pub resource: String,
    pub object: Arc<Value>,
}

/// The result of a list: the matching objects sorted by namespace and name, and the revision
/// the list is consistent with (a watch from it misses nothing).
#[derive(Debug, Clone)]
pub struct ObjectList {
    pub items: Vec<Arc<Value>>,
    pub revision: u64,
}

/// Delete preconditions, as in `DeleteOptions.preconditions`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

/// Tuning of a [`SqliteStore`]. Build it with `..Default::default()` so new knobs do not break
/// callers.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How many events the log keeps; older events are compacted automatically, and a watch
    /// from before them gets 410 Expired.
    pub retain_events: usize,
    /// How many events a watcher may have queued before it is ended with 410 Expired (the
    /// client then relists) instead of letting the store's memory grow without bound.
    pub watch_buffer: usize,
    /// How many recent events are kept in memory so that a watch from a recent revision
    /// replays without reading SQLite.
    pub watch_cache: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retain_events: 100_000,
            watch_buffer: 10_000,
            watch_cache: 10_000,
        }
    }
}

/// A durable object store with Kubernetes semantics. Cluster-scoped kinds use namespace `""`.
/// Every method blocks the calling thread until its answer is known; writes return only after
/// they are on disk (a few milliseconds: one fsync, shared by all writes that arrive together).
/// Async callers should make writes through `tokio::task::spawn_blocking` (or `block_in_place`)
/// so that a runtime worker is not parked during the sync; reads are in-memory and cheap.
pub trait Store: Send + Sync + 'static {
    fn get(&self, res: &'static Resource, namespace: &str, name: &str) -> api::Result<Arc<Value>>;
    fn list(
        &self,
        res: &'static Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> api::Result<ObjectList>;
    /// Creates an object; server-owned metadata is set here and any client-supplied value of
    /// it is dropped. A provided `status` is kept.
    fn create(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>>;
    /// Replaces the main resource; `status` is kept from the stored object where the kind has
    /// a status subresource. A non-empty `metadata.resourceVersion` must match the stored one.
    fn update(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>>;
    /// Replaces only `status` (the status subresource).
    fn update_status(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>>;
    /// Deletes an object, or marks it for deletion while it has finalizers.
    fn delete(
        &self,
        res: &'static Resource,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
    ) -> api::Result<Arc<Value>>;
    /// Events with a revision above `from_revision` for `res` (all kinds if `None`) in
    /// `namespace` (all if `None`). Pass [`Store::revision`] (or a list's revision) to get only
    /// future events.
    fn watch(
        &self,
        res: Option<&'static Resource>,
        namespace: Option<&str>,
        from_revision: u64,
    ) -> api::Result<Watch>;
    /// The revision of the latest acknowledged write.
    fn revision(&self) -> u64;
    /// Events up to and including this revision are gone; a watch from before it gets 410.
    fn compacted_revision(&self) -> u64;
    /// Drops events up to and including `up_to`.
    fn compact(&self, up_to: u64) -> api::Result<()>;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn get(&self, res: &'static Resource, namespace: &str, name: &str) -> api::Result<Arc<Value>> {
        (**self).get(res, namespace, name)
    }
    fn list(
        &self,
        res: &'static Resource,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> api::Result<ObjectList> {
        (**self).list(res, namespace, labels, fields)
    }
    fn create(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>> {
        (**self).create(res, obj)
    }
    fn update(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>> {
        (**self).update(res, obj)
    }
    fn update_status(&self, res: &'static Resource, obj: Value) -> api::Result<Arc<Value>> {
        (**self).update_status(res, obj)
    }
    fn delete(
        &self,
        res: &'static Resource,
        namespace: &str,
        name: &str,
        pre: &Preconditions,
    ) -> api::Result<Arc<Value>> {
        (**self).delete(res, namespace, name, pre)
    }
    fn watch(
        &self,
        res: Option<&'static Resource>,
        namespace: Option<&str>,
        from_revision: u64,
    ) -> api::Result<Watch> {
        (**self).watch(res, namespace, from_revision)
    }
    fn revision(&self) -> u64 {
        (**self).revision()
    }
    fn compacted_revision(&self) -> u64 {
        (**self).compacted_revision()
    }
    fn compact(&self, up_to: u64) -> api::Result<()> {
        (**self).compact(up_to)
    }
}

/// `plural.group` (or just `plural` for the core group), as kube-apiserver names a resource in
/// error messages.
pub fn qualified_name(res: &Resource) -> String {
    if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    }
}

/// The 404 kube-apiserver gives for a missing object.
pub fn not_found(res: &Resource, name: &str) -> api::Error {
    api::Error::not_found(format!("{} \"{name}\" not found", qualified_name(res)))
        .with_subject(res.group, res.plural, name)
}

/// The 409 kube-apiserver gives for a stale resourceVersion.
pub fn conflict(res: &Resource, name: &str) -> api::Error {
    api::Error::conflict(format!(
        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
        qualified_name(res)
    ))
    .with_subject(res.group, res.plural, name)
}

/// The 410 for a watch from a compacted revision.
pub fn too_old(from: u64, compacted: u64) -> api::Error {
    api::Error::expired(format!("too old resource version: {from} ({compacted})"))
}
