#![allow(dead_code)]

use api::meta::{FieldSelector, LabelSelector};
use api::Resource;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;
use store::{SqliteStore, StoreOptions, Watch, WatchEvent};

pub fn vmsnap() -> &'static Resource {
    api::registry::by_plural("snapshot.kubevirt.io", "virtualmachinesnapshots").expect("vmsnapshot")
}
pub fn vm() -> &'static Resource {
    api::registry::by_plural("kubevirt.io", "virtualmachines").expect("vm")
}
pub fn storage_class() -> &'static Resource {
    api::registry::by_plural("storage.k8s.io", "storageclasses").expect("sc")
}
pub fn namespace_res() -> &'static Resource {
    api::registry::by_plural("", "namespaces").expect("ns")
}

pub fn snap(ns: &str, name: &str) -> Value {
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "db"}},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "vm1"}},
    })
}

pub fn sc(name: &str) -> Value {
    json!({
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name},
        "provisioner": "vmsnap.io/btrfs",
    })
}

pub struct Tmp {
    pub dir: tempfile::TempDir,
}

impl Tmp {
    pub fn new() -> Self {
        Tmp {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }
    pub fn db(&self) -> PathBuf {
        self.dir.path().join("store.db")
    }
    pub fn open(&self) -> SqliteStore {
        open_at(&self.db(), StoreOptions::default())
    }
    pub fn open_with(&self, opts: StoreOptions) -> SqliteStore {
        open_at(&self.db(), opts)
    }
}

pub fn open_at(path: &Path, opts: StoreOptions) -> SqliteStore {
    SqliteStore::open(path, opts).expect("open store")
}

pub fn rv(obj: &Value) -> u64 {
    api::meta::resource_version(obj)
        .parse()
        .expect("numeric rv")
}

pub fn all() -> (LabelSelector, FieldSelector) {
    (LabelSelector::default(), FieldSelector::default())
}

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The next event, or panics after a second.
pub async fn next(w: &mut Watch) -> api::Result<WatchEvent> {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("an event within 5 s")
        .expect("the watch is open")
}

/// Asserts that nothing arrives for a short while.
pub async fn quiet(w: &mut Watch) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(150), w.next()).await {
        panic!("unexpected event {ev:?}");
    }
}
