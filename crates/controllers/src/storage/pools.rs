//! Pools: which driver and which directory serve a StorageClass, and the shared state every
//! storage reconciler uses. A StorageClass whose provisioner is `vmsnap.io/<driver>` selects
//! that driver over `parameters.pool` (an absolute directory; default
//! `<data_dir>/pools/<class>`). Any other provisioner belongs to an external provisioner that
//! does not exist here, so its claims stay Pending, as in a cluster without that CSI driver.

use super::errors::StorageResultExt;
use super::util;
use crate::events::{EventType, Recorder};
use api::{meta, Error, ErrorKind};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use storage::{Attachment, Capabilities, Driver, PoolOptions, VolName};
use store::Store;

/// Provisioners `vmsnap.io/<driver>` are served in-process.
pub const PROVISIONER_PREFIX: &str = "vmsnap.io/";
/// The default StorageClass created on first start.
pub const DEFAULT_CLASS: &str = "vmsnap";
/// A class over the `dir` driver, which has no snapshots: clones from it are host-assisted copies.
pub const DIR_CLASS: &str = "vmsnap-dir";
/// The VolumeSnapshotClass created with the default class when its driver has snapshots.
pub const DEFAULT_SNAPSHOT_CLASS: &str = "vmsnap-snapclass";
pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const DEFAULT_SNAPSHOT_CLASS_ANNOTATION: &str =
    "snapshot.storage.kubernetes.io/is-default-class";
/// Bytes the volume of a claim allocates on the host, refreshed by the PVC controller.
pub const ALLOCATED_ANNOTATION: &str = "vmsnap.io/allocated-bytes";

/// A resolved StorageClass served by one of our drivers.
#[derive(Clone)]
pub struct ClassInfo {
    pub name: String,
    pub provisioner: String,
    pub driver: Arc<dyn Driver>,
    /// `Immediate` or `WaitForFirstConsumer`.
    pub binding_mode: String,
    pub allow_expansion: bool,
}

impl ClassInfo {
    pub fn caps(&self) -> Capabilities {
        self.driver.info()
    }
}

/// How a clone within a class is made, as CDI's StorageProfile names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneStrategy {
    CsiClone,
    Snapshot,
    Copy,
}

impl CloneStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            CloneStrategy::CsiClone => "csi-clone",
            CloneStrategy::Snapshot => "snapshot",
            CloneStrategy::Copy => "copy",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "csi-clone" => Some(CloneStrategy::CsiClone),
            "snapshot" => Some(CloneStrategy::Snapshot),
            "copy" => Some(CloneStrategy::Copy),
            _ => None,
        }
    }
}

/// Shared by every storage reconciler and by other controllers (VM, VM snapshot) that need
/// volumes. Cheap to clone behind an `Arc`.
pub struct Pools {
    pub store: Arc<dyn Store>,
    pub recorder: Recorder,
    pub data_dir: PathBuf,
    drivers: Mutex<HashMap<PathBuf, Arc<dyn Driver>>>,
    /// Last warning per (object uid, reason), so a retried failure is recorded once.
    warned: Mutex<HashMap<(String, String), String>>,
    /// Objects being reconciled right now: the runtime and inline callers (a DataVolume
    /// provisioning its claim) must not run the same object's driver operations at once.
    busy: Mutex<HashSet<String>>,
    freed: Condvar,
}

/// Holds an object's reconcile lock until dropped.
pub(crate) struct KeyGuard<'a> {
    pools: &'a Pools,
    key: String,
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        self.pools.busy.lock().expect("busy lock").remove(&self.key);
        self.pools.freed.notify_all();
    }
}

impl Pools {
    pub fn new(store: Arc<dyn Store>, data_dir: PathBuf) -> Arc<Pools> {
        Arc::new(Pools {
            recorder: Recorder::new(store.clone(), "vmsnap-storage"),
            store,
            data_dir,
            drivers: Mutex::new(HashMap::new()),
            warned: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            freed: Condvar::new(),
        })
    }

    /// Waits until no one else reconciles `kind/key`, then holds it.
    pub(crate) fn lock_object(&self, kind: &str, key: &crate::runtime::ObjectKey) -> KeyGuard<'_> {
        let k = format!("{kind}/{key}");
        let mut busy = self.busy.lock().expect("busy lock");
        while busy.contains(&k) {
            busy = self.freed.wait(busy).expect("busy lock");
        }
        busy.insert(k.clone());
        KeyGuard {
            pools: self,
            key: k,
        }
    }

    /// The store, for callers holding only the pools.
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn pools_dir(&self) -> PathBuf {
        self.data_dir.join("pools")
    }

    /// Creates the default pool, StorageClass and VolumeSnapshotClass on first start, and the
    /// `vmsnap-dir` class; then opens every pool so that each driver's `recover()` runs
    /// before any operation.
    pub fn bootstrap(&self) -> api::Result<()> {
        let pools = self.pools_dir();
        std::fs::create_dir_all(&pools)
            .map_err(|e| Error::internal(format!("cannot create {}: {e}", pools.display())))?;
        let marker = pools.join(".bootstrapped");
        if !marker.exists() {
            let default_root = pools.join("default");
            let best = storage::detect_best(&default_root);
            let provisioner = format!("{PROVISIONER_PREFIX}{best}");
            self.ensure_object(util::storage_classes(), json!({
                "apiVersion": "storage.k8s.io/v1",
                "kind": "StorageClass",
                "metadata": {"name": DEFAULT_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
                "provisioner": provisioner,
                "parameters": {"pool": default_root.to_string_lossy()},
                "reclaimPolicy": "Delete",
                "volumeBindingMode": "Immediate",
                "allowVolumeExpansion": true,
            }))?;
            let driver = self.open_pool(best, &default_root, PoolOptions::default())?;
            if driver.info().snapshots {
                self.ensure_object(util::snapshot_classes(), json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotClass",
                    "metadata": {"name": DEFAULT_SNAPSHOT_CLASS, "annotations": {DEFAULT_SNAPSHOT_CLASS_ANNOTATION: "true"}},
                    "driver": provisioner,
                    "deletionPolicy": "Delete",
                }))?;
            }
            self.ensure_object(
                util::storage_classes(),
                json!({
                    "apiVersion": "storage.k8s.io/v1",
                    "kind": "StorageClass",
                    "metadata": {"name": DIR_CLASS},
                    "provisioner": format!("{PROVISIONER_PREFIX}dir"),
                    "parameters": {"pool": pools.join("dir").to_string_lossy()},
                    "reclaimPolicy": "Delete",
                    "volumeBindingMode": "Immediate",
                    "allowVolumeExpansion": true,
                }),
            )?;
            std::fs::write(&marker, b"")
                .map_err(|e| Error::internal(format!("cannot write {}: {e}", marker.display())))?;
        }
        for sc in util::list_all(self.store.as_ref(), util::storage_classes(), None)? {
            match self.class_from(&sc) {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::Unsupported) => {}
                Err(e) => {
                    tracing::warn!(class = meta::name(&sc), error = %e, "storage class pool cannot be opened")
                }
            }
        }
        Ok(())
    }

    fn ensure_object(&self, res: &'static api::Resource, obj: Value) -> api::Result<()> {
        let obj = api::admit(res, obj, api::FieldValidation::Strict)?.object;
        match self.store.create(res, obj) {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrorKind::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Opens a pool once per process; the first open runs the driver's recovery.
    fn open_pool(
        &self,
        driver: &str,
        root: &Path,
        opts: PoolOptions,
    ) -> api::Result<Arc<dyn Driver>> {
        let mut drivers = self.drivers.lock().expect("pools lock");
        if let Some(d) = drivers.get(root) {
            if d.name() != driver {
                return Err(Error::invalid_msg(format!(
                    "pool {} is already served by the {} driver, not {driver}",
                    root.display(),
                    d.name()
                )));
            }
            return Ok(d.clone());
        }
        let d: Arc<dyn Driver> = Arc::from(storage::open_driver_with(driver, root, opts).api()?);
        let report = d.recover().api()?;
        if !report.is_empty() {
            tracing::info!(pool = %root.display(), driver, ?report, "recovered interrupted storage operations");
        }
        drivers.insert(root.to_path_buf(), d.clone());
        Ok(d)
    }

    /// Opens a pool by driver name and directory with the default reserve.
    pub(crate) fn open_pool_public(
        &self,
        driver: &str,
        root: &Path,
    ) -> api::Result<Arc<dyn Driver>> {
        self.open_pool(driver, root, PoolOptions::default())
    }

    /// The driver, volume and snapshot a VolumeSnapshotContent stands for.
    pub fn content_handle(
        &self,
        content: &Value,
    ) -> api::Result<(Arc<dyn Driver>, VolName, storage::SnapName)> {
        let name = meta::name(content);
        let driver = meta::annotation(content, super::pvc::DRIVER_ANNOTATION);
        let root = meta::annotation(content, super::pvc::POOL_ANNOTATION);
        let (Some(driver), Some(root)) = (driver, root) else {
            return Err(Error::precondition(format!(
                "volumesnapshotcontent {name} was not made by vmsnap (it has no {} annotation)",
                super::pvc::POOL_ANNOTATION
            )));
        };
        let driver = self.driver_at(driver, root)?;
        let handle = content["status"]["snapshotHandle"]
            .as_str()
            .or_else(|| content["spec"]["source"]["snapshotHandle"].as_str());
        let (vol, snap) = match handle.and_then(|h| h.split_once('@')) {
            Some((v, s)) => (v.to_string(), s.to_string()),
            None => (
                content["spec"]["source"]["volumeHandle"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                name.to_string(),
            ),
        };
        Ok((
            driver,
            VolName::new(vol).api()?,
            storage::SnapName::new(snap).api()?,
        ))
    }

    /// Every pool opened so far.
    pub fn open_pools(&self) -> Vec<Arc<dyn Driver>> {
        self.drivers
            .lock()
            .expect("pools lock")
            .values()
            .cloned()
            .collect()
    }

    /// The name of the class annotated as default, if any.
    pub fn default_class_name(&self) -> api::Result<Option<String>> {
        let mut classes = util::list_all(self.store.as_ref(), util::storage_classes(), None)?;
        classes.sort_by(|a, b| meta::name(a).cmp(meta::name(b)));
        Ok(classes
            .iter()
            .find(|c| meta::annotation(c, DEFAULT_CLASS_ANNOTATION) == Some("true"))
            .map(|c| meta::name(c).to_string()))
    }

    /// The class a claim uses: its own, else the default one.
    pub fn claim_class_name(&self, pvc: &Value) -> api::Result<Option<String>> {
        match pvc["spec"]["storageClassName"].as_str() {
            Some(c) if !c.is_empty() => Ok(Some(c.to_string())),
            _ => self.default_class_name(),
        }
    }

    /// Resolves a StorageClass by name. NotFound when it does not exist; Unsupported when an
    /// external provisioner serves it.
    pub fn class(&self, name: &str) -> api::Result<ClassInfo> {
        let sc = self
            .store
            .get(util::storage_classes(), "", name)
            .map_err(|_| {
                Error::not_found(format!("storageclass.storage.k8s.io {name:?} not found"))
            })?;
        self.class_from(&sc)
    }

    fn class_from(&self, sc: &Value) -> api::Result<ClassInfo> {
        let name = meta::name(sc);
        let provisioner = sc["provisioner"].as_str().unwrap_or("");
        let Some(driver_name) = provisioner.strip_prefix(PROVISIONER_PREFIX) else {
            return Err(Error::unsupported(format!(
                "waiting for a volume to be created by the external provisioner {provisioner:?}; vmsnap serves only {PROVISIONER_PREFIX}<driver> ({})",
                storage::DRIVERS.join(", ")
            )));
        };
        if !storage::DRIVERS.contains(&driver_name) {
            return Err(Error::unsupported(format!(
                "storage class {name}: unknown vmsnap driver {driver_name:?}; known: {}",
                storage::DRIVERS.join(", ")
            )));
        }
        let params = &sc["parameters"];
        let root = match params["pool"].as_str() {
            Some(p) => validate_pool_dir(p)?,
            None => self.pools_dir().join(name),
        };
        let mut opts = PoolOptions::default();
        if let Some(q) = params["reserveMin"].as_str() {
            opts.reserve_min = api::types::parse_quantity(q).ok_or_else(|| {
                Error::invalid_msg(format!(
                    "storage class {name}: parameters.reserveMin {q:?} is not a quantity"
                ))
            })?;
        }
        if let Some(p) = params["reservePermille"].as_str() {
            opts.reserve_permille = p.parse().map_err(|_| {
                Error::invalid_msg(format!(
                    "storage class {name}: parameters.reservePermille {p:?} is not a number"
                ))
            })?;
        }
        let driver = self.open_pool(driver_name, &root, opts)?;
        Ok(ClassInfo {
            name: name.to_string(),
            provisioner: provisioner.to_string(),
            driver,
            binding_mode: sc["volumeBindingMode"]
                .as_str()
                .unwrap_or("Immediate")
                .to_string(),
            allow_expansion: sc["allowVolumeExpansion"].as_bool().unwrap_or(false),
        })
    }

    /// The VolumeSnapshotClass for a StorageClass: the StorageProfile's `spec.snapshotClass`
    /// when set, else one whose driver equals the provisioner (the default-annotated first).
    pub fn snapshot_class_for(&self, class: &str, provisioner: &str) -> api::Result<Option<Value>> {
        if let Some(p) =
            crate::runtime::ignore_not_found(self.store.get(util::storage_profiles(), "", class))?
        {
            if let Some(name) = p["spec"]["snapshotClass"].as_str() {
                if let Some(vsc) = crate::runtime::ignore_not_found(self.store.get(
                    util::snapshot_classes(),
                    "",
                    name,
                ))? {
                    return Ok(Some((*vsc).clone()));
                }
            }
        }
        let mut matching: Vec<Arc<Value>> =
            util::list_all(self.store.as_ref(), util::snapshot_classes(), None)?
                .into_iter()
                .filter(|c| c["driver"].as_str() == Some(provisioner))
                .collect();
        matching.sort_by_key(|c| {
            (
                meta::annotation(c, DEFAULT_SNAPSHOT_CLASS_ANNOTATION) != Some("true"),
                meta::name(c).to_string(),
            )
        });
        Ok(matching.first().map(|c| (**c).clone()))
    }

    /// The clone strategy CDI would pick for a class: the profile's override, else csi-clone
    /// when clones are copy-on-write, else snapshot when the class can snapshot and restore,
    /// else copy.
    pub fn clone_strategy(&self, class: &ClassInfo) -> api::Result<CloneStrategy> {
        if let Some(p) = crate::runtime::ignore_not_found(self.store.get(
            util::storage_profiles(),
            "",
            &class.name,
        ))? {
            if let Some(s) = p["spec"]["cloneStrategy"]
                .as_str()
                .and_then(CloneStrategy::parse)
            {
                return Ok(s);
            }
        }
        self.computed_strategy(class)
    }

    pub fn computed_strategy(&self, class: &ClassInfo) -> api::Result<CloneStrategy> {
        let caps = class.caps();
        let has_vsc = self
            .snapshot_class_for(&class.name, &class.provisioner)?
            .is_some();
        Ok(if caps.cow_clone {
            CloneStrategy::CsiClone
        } else if caps.snapshots && caps.restore_from_snapshot && has_vsc {
            CloneStrategy::Snapshot
        } else {
            CloneStrategy::Copy
        })
    }

    /// The class and volume of a Bound claim. NotFound when the claim does not exist;
    /// FailedPrecondition while it is not Bound.
    pub fn bound_claim(
        &self,
        namespace: &str,
        claim: &str,
    ) -> api::Result<(Arc<Value>, ClassInfo, VolName)> {
        let pvc = self.store.get(util::pvcs(), namespace, claim)?;
        let phase = pvc["status"]["phase"].as_str().unwrap_or("Pending");
        let vol = pvc["spec"]["volumeName"].as_str().unwrap_or("");
        if phase != "Bound" || vol.is_empty() {
            return Err(Error::precondition(format!(
                "persistentvolumeclaim {namespace}/{claim} is {phase}, not Bound"
            )));
        }
        let class = self.claim_class_name(&pvc)?.ok_or_else(|| {
            Error::precondition(format!(
                "persistentvolumeclaim {namespace}/{claim} has no storage class"
            ))
        })?;
        let class = self.class(&class)?;
        let vol = VolName::new(vol).api()?;
        Ok((pvc, class, vol))
    }

    /// The driver and volume name behind a Bound claim.
    pub fn driver_for_claim(
        &self,
        namespace: &str,
        claim: &str,
    ) -> api::Result<(Arc<dyn Driver>, VolName)> {
        let (_, class, vol) = self.bound_claim(namespace, claim)?;
        Ok((class.driver, vol))
    }

    /// How QEMU opens the volume of a Bound claim. NotFound when the claim does not exist;
    /// FailedPrecondition while it is not Bound.
    pub fn attachment_for_claim(&self, namespace: &str, claim: &str) -> api::Result<Attachment> {
        let (driver, vol) = self.driver_for_claim(namespace, claim)?;
        driver.attachment(&vol).api()
    }

    /// True the first time `message` is seen for (object, reason) since it last changed.
    pub(crate) fn first_time(&self, obj: &Value, reason: &str, message: &str) -> bool {
        let key = (meta::uid(obj).to_string(), reason.to_string());
        let mut w = self.warned.lock().expect("warned lock");
        if w.get(&key).map(String::as_str) == Some(message) {
            return false;
        }
        w.insert(key, message.to_string());
        true
    }

    /// Records a Warning event unless the same one was recorded last for this object.
    pub fn warn(&self, obj: &Value, reason: &str, message: &str) {
        if !self.first_time(obj, reason, message) {
            return;
        }
        tracing::info!(object = %format!("{}/{}", meta::namespace(obj), meta::name(obj)), reason, message, "storage warning");
        self.recorder
            .record(obj, EventType::Warning, reason, message);
    }

    /// Forgets recorded warnings of an object after it recovered.
    pub fn clear_warnings(&self, obj: &Value) {
        let uid = meta::uid(obj);
        self.warned
            .lock()
            .expect("warned lock")
            .retain(|(u, _), _| u != uid);
    }

    pub fn normal(&self, obj: &Value, reason: &str, message: &str) {
        self.recorder
            .record(obj, EventType::Normal, reason, message);
    }

    /// Pool summary for status and the CLI.
    pub fn pool_summary(&self, class: &ClassInfo) -> Value {
        let d = &class.driver;
        match d.pool_usage() {
            Ok(u) => json!({
                "driver": d.name(),
                "path": d.root().to_string_lossy(),
                "total": u.total,
                "used": u.used,
                "free": u.free,
                "reserve": d.options().reserve(u.total),
            }),
            Err(e) => {
                json!({"driver": d.name(), "path": d.root().to_string_lossy(), "error": e.to_string()})
            }
        }
    }
}

/// A pool directory must be absolute and free of `..`, so a class cannot point the driver at
/// a relative or escaping path.
pub fn validate_pool_dir(p: &str) -> api::Result<PathBuf> {
    let path = Path::new(p);
    if !path.is_absolute() {
        return Err(Error::invalid_msg(format!(
            "parameters.pool {p:?} must be an absolute directory"
        )));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::invalid_msg(format!(
            "parameters.pool {p:?} must not contain \"..\""
        )));
    }
    if path == Path::new("/") {
        return Err(Error::invalid_msg(
            "parameters.pool must not be the root directory",
        ));
    }
    Ok(path.to_path_buf())
}

/// A plain Invalid error without field causes.
trait InvalidMsg {
    fn invalid_msg(msg: impl Into<String>) -> Error;
}

impl InvalidMsg for Error {
    fn invalid_msg(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::Invalid, msg)
    }
}
