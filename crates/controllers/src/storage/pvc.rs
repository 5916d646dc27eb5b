//! The PersistentVolumeClaim controller: provisions a volume `pvc-<uid>` in the class's pool
//! (blank, restored from a VolumeSnapshot, or cloned from a claim in the same pool), binds the
//! claim, grows it on request, keeps its usage annotation fresh, and deletes the volume
//! behind a finalizer. Binding is the commit point: every driver operation builds under a
//! temporary name and renames at the end, so a volume that exists is complete, and after a
//! crash the next pass simply binds it.

use super::errors::StorageResultExt;
use super::pools::{ClassInfo, Pools, ALLOCATED_ANNOTATION};
use super::util::{self, format_quantity, quantity_value};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, Mapper, ObjectKey, Reconciler,
};
use api::registry::Resource;
use api::{meta, Error, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use storage::{Driver, NoProgress, VolName};

pub const PVC_FINALIZER: &str = "vmsnap.io/volume-protection";
/// Where the volume lives, recorded at binding so deletion works even after the class is gone.
pub const POOL_ANNOTATION: &str = "vmsnap.io/pool";
pub const DRIVER_ANNOTATION: &str = "vmsnap.io/driver";
const USAGE_PERIOD: Duration = Duration::from_secs(10);

/// A claim's data source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimSource {
    Snapshot { namespace: String, name: String },
    Claim { namespace: String, name: String },
}

/// Reads `dataSourceRef`, else `dataSource`. Unknown kinds are an error.
pub fn claim_source(pvc: &Value) -> api::Result<Option<ClaimSource>> {
    let ns = meta::namespace(pvc);
    let r = &pvc["spec"]["dataSourceRef"];
    let r = if r.is_object() {
        r
    } else {
        &pvc["spec"]["dataSource"]
    };
    if !r.is_object() {
        return Ok(None);
    }
    let kind = r["kind"].as_str().unwrap_or("");
    let group = r["apiGroup"].as_str().unwrap_or("");
    let name = r["name"].as_str().unwrap_or("").to_string();
    let namespace = r["namespace"].as_str().unwrap_or(ns).to_string();
    match (group, kind) {
        ("snapshot.storage.k8s.io", "VolumeSnapshot") => {
            Ok(Some(ClaimSource::Snapshot { namespace, name }))
        }
        ("", "PersistentVolumeClaim") => Ok(Some(ClaimSource::Claim { namespace, name })),
        _ => Err(Error::unsupported(format!(
            "data source {group}/{kind} is not supported; use a VolumeSnapshot or a PersistentVolumeClaim"
        ))),
    }
}

/// The volume name of a claim: fixed by its uid, so a retry after a crash finds it again.
pub fn volume_name(pvc: &Value) -> api::Result<VolName> {
    VolName::new(format!("pvc-{}", meta::uid(pvc))).api()
}

pub struct PvcReconciler {
    pub pools: Arc<Pools>,
}

/// Wakes the claims that are not Bound yet (in the object's namespace, or everywhere for
/// cluster-scoped objects): a class, snapshot or source claim they wait for may have changed.
fn pending_claims(pools: &Arc<Pools>) -> Mapper {
    let store = pools.store.clone();
    Arc::new(move |obj: &Value| {
        let ns = meta::namespace(obj);
        let ns = if ns.is_empty() { None } else { Some(ns) };
        util::list_all(store.as_ref(), util::pvcs(), ns)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["status"]["phase"] != "Bound")
            .map(|p| ObjectKey::of(p))
            .collect()
    })
}

impl Reconciler for PvcReconciler {
    fn name(&self) -> &'static str {
        "persistentvolumeclaim"
    }
    fn resource(&self) -> &'static Resource {
        util::pvcs()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        let consumers: Mapper = Arc::new(|obj: &Value| {
            util::referenced_claims(obj)
                .into_iter()
                .map(|(ns, n)| ObjectKey::new(&ns, &n))
                .collect()
        });
        vec![
            (util::storage_classes(), pending_claims(&self.pools)),
            (util::volume_snapshots(), pending_claims(&self.pools)),
            (util::pvcs(), pending_claims(&self.pools)),
            (util::vms(), consumers.clone()),
            (util::vmis(), consumers.clone()),
            (util::data_volumes(), consumers),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(&self.pools, key, "pvc", Pools::reconcile_pvc)
    }
}

/// Why provisioning did not finish, and when to look again.
struct Pending {
    reason: &'static str,
    message: String,
    retry: Option<Duration>,
    warning: bool,
}

impl Pending {
    fn from_error(e: Error) -> Pending {
        let retry = match e.kind {
            ErrorKind::NotFound
            | ErrorKind::FailedPrecondition
            | ErrorKind::Conflict
            | ErrorKind::Internal => 3,
            _ => 30,
        };
        Pending {
            reason: "ProvisioningFailed",
            message: e.message.clone(),
            retry: Some(Duration::from_secs(retry)),
            warning: true,
        }
    }
}

impl Pools {
    /// One pass of the PVC controller; also callable inline (blocking) by other controllers.
    pub fn reconcile_pvc(&self, key: &ObjectKey) -> api::Result<Action> {
        let _guard = self.lock_object("pvc", key);
        let store = self.store.as_ref();
        let Some(pvc) = ignore_not_found(store.get(util::pvcs(), &key.namespace, &key.name))?
        else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_deleting(&pvc) {
            return self.finalize_pvc(key, &pvc);
        }
        let pvc = if meta::has_finalizer(&pvc, PVC_FINALIZER) {
            pvc
        } else {
            update_with(store, util::pvcs(), key, |o| {
                meta::add_finalizer(o, PVC_FINALIZER);
            })?
        };
        if pvc["status"]["phase"] == "Bound" && pvc["spec"]["volumeName"].is_string() {
            return self.maintain_bound(key, &pvc);
        }
        match self.provision(&pvc) {
            Ok(bound) => {
                self.clear_warnings(&bound);
                Ok(Action::Requeue(USAGE_PERIOD))
            }
            Err(p) => {
                update_status_with(store, util::pvcs(), key, |o| {
                    o["status"]["phase"] = json!("Pending");
                    api::set_condition(o, "Provisioning", false, p.reason, &p.message);
                })?;
                if p.warning {
                    self.warn(&pvc, p.reason, &p.message);
                } else {
                    self.note_once(&pvc, p.reason, &p.message);
                }
                Ok(p.retry.map(Action::Requeue).unwrap_or(Action::AwaitChange))
            }
        }
    }

    /// Provisions and binds a Pending claim, or says why not yet.
    fn provision(&self, pvc: &Value) -> Result<Arc<Value>, Pending> {
        let key = ObjectKey::of(pvc);
        let class_name = self
            .claim_class_name(pvc)
            .map_err(Pending::from_error)?
            .ok_or_else(|| Pending {
                reason: "ProvisioningFailed",
                message: "no storageClassName is set and no StorageClass is marked as default"
                    .into(),
                retry: None,
                warning: true,
            })?;
        let class = match self.class(&class_name) {
            Ok(c) => c,
            Err(e) if e.is(ErrorKind::Unsupported) => {
                return Err(Pending {
                    reason: "ExternalProvisioning",
                    message: e.message.clone(),
                    retry: None,
                    warning: false,
                });
            }
            Err(e) if e.is(ErrorKind::NotFound) => {
                return Err(Pending {
                    reason: "ProvisioningFailed",
                    message: e.message.clone(),
                    retry: None,
                    warning: true,
                });
            }
            Err(e) => return Err(Pending::from_error(e)),
        };
        if class.binding_mode == "WaitForFirstConsumer"
            && !self.has_consumer(pvc).map_err(Pending::from_error)?
        {
            return Err(Pending {
                reason: "WaitForFirstConsumer",
                message: "waiting for first consumer to be created before binding".into(),
                retry: None,
                warning: false,
            });
        }
        let size = requested_size(pvc).map_err(Pending::from_error)?;
        let vol = volume_name(pvc).map_err(Pending::from_error)?;
        let exists = match class.driver.usage(&vol) {
            Ok(_) => true,
            Err(e) if e.kind() == storage::ErrorKind::NotFound => false,
            Err(e) => return Err(Pending::from_error(super::errors::api_error(e))),
        };
        if !exists {
            let source = claim_source(pvc).map_err(Pending::from_error)?;
            let done = match &source {
                None => class.driver.create_volume(&vol, size).api(),
                Some(ClaimSource::Snapshot { namespace, name }) => {
                    self.restore_into(&class, &vol, size, namespace, name)
                }
                Some(ClaimSource::Claim { namespace, name }) => {
                    self.clone_into(&class, &vol, size, namespace, name)
                }
            };
            match done {
                Ok(()) => {}
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(Pending::from_error(e)),
            }
            let what = match source {
                None => "a blank volume".to_string(),
                Some(ClaimSource::Snapshot { namespace, name }) => {
                    format!("volumesnapshot {namespace}/{name}")
                }
                Some(ClaimSource::Claim { namespace, name }) => {
                    format!("persistentvolumeclaim {namespace}/{name}")
                }
            };
            self.normal(
                pvc,
                "ProvisioningSucceeded",
                &format!(
                    "Successfully provisioned volume {vol} from {what} ({} driver)",
                    class.driver.name()
                ),
            );
        }
        let usage = class
            .driver
            .usage(&vol)
            .api()
            .map_err(Pending::from_error)?;
        let driver_root = class.driver.root().to_string_lossy().into_owned();
        let driver_name = class.driver.name();
        let provisioner = class.provisioner.clone();
        let store = self.store.as_ref();
        update_with(store, util::pvcs(), &key, |o| {
            o["spec"]["volumeName"] = json!(vol.as_str());
            if o["spec"]["storageClassName"]
                .as_str()
                .unwrap_or("")
                .is_empty()
            {
                o["spec"]["storageClassName"] = json!(class.name);
            }
            meta::set_annotation(o, POOL_ANNOTATION, &driver_root);
            meta::set_annotation(o, DRIVER_ANNOTATION, driver_name);
            meta::set_annotation(o, "pv.kubernetes.io/bind-completed", "yes");
            meta::set_annotation(o, "volume.kubernetes.io/storage-provisioner", &provisioner);
            meta::set_annotation(o, ALLOCATED_ANNOTATION, &usage.allocated.to_string());
        })
        .map_err(Pending::from_error)?;
        update_status_with(store, util::pvcs(), &key, |o| {
            let modes = o["spec"]["accessModes"].clone();
            o["status"]["phase"] = json!("Bound");
            o["status"]["accessModes"] = modes;
            o["status"]["capacity"] = json!({"storage": format_quantity(usage.size)});
            if let Some(c) = o["status"]["conditions"].as_array_mut() {
                c.retain(|c| c["type"] != "Provisioning");
            }
        })
        .map_err(Pending::from_error)
    }

    fn has_consumer(&self, pvc: &Value) -> api::Result<bool> {
        let ns = meta::namespace(pvc);
        let name = meta::name(pvc);
        for res in [util::vms(), util::vmis(), util::data_volumes()] {
            for o in util::list_all(self.store.as_ref(), res, Some(ns))? {
                if util::referenced_claims(&o)
                    .iter()
                    .any(|(n, c)| n == ns && c == name)
                {
                    return Ok(true);
                }
            }
        }
        // Claims in other namespaces may clone from this one through a DataVolume.
        for dv in util::list_all(self.store.as_ref(), util::data_volumes(), None)? {
            if util::referenced_claims(&dv)
                .iter()
                .any(|(n, c)| n == ns && c == name)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Restores a snapshot into a new volume of the same pool.
    fn restore_into(
        &self,
        class: &ClassInfo,
        vol: &VolName,
        size: u64,
        ns: &str,
        name: &str,
    ) -> api::Result<()> {
        let (driver, src_vol, snap, restore_size) = self.ready_snapshot(ns, name)?;
        if driver.root() != class.driver.root() {
            return Err(Error::unsupported(format!(
                "volumesnapshot {ns}/{name} lives in pool {} ({} driver) but storage class {} uses pool {}; restore into a claim of the snapshot's storage class",
                driver.root().display(),
                driver.name(),
                class.name,
                class.driver.root().display()
            )));
        }
        let caps = driver.info();
        if !caps.restore_from_snapshot {
            return Err(Error::unsupported(format!(
                "the {} driver of storage class {} can take snapshots but cannot create a volume from one (restore_from_snapshot=false); volumesnapshot {ns}/{name} can only be kept as a backup",
                driver.name(),
                class.name
            )));
        }
        if size < restore_size {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "requested size {} ({size} bytes) is smaller than the restore size {} ({restore_size} bytes) of volumesnapshot {ns}/{name}",
                    format_quantity(size),
                    format_quantity(restore_size)
                ),
            ));
        }
        driver
            .create_volume_from_snapshot(vol, &src_vol, &snap, size, &NoProgress)
            .api()
    }

    /// Clones a Bound claim of the same pool with the driver's own clone.
    fn clone_into(
        &self,
        class: &ClassInfo,
        vol: &VolName,
        size: u64,
        ns: &str,
        name: &str,
    ) -> api::Result<()> {
        let (_, src_class, src_vol) = self.bound_claim(ns, name)?;
        if src_class.driver.root() != class.driver.root() {
            return Err(Error::unsupported(format!(
                "persistentvolumeclaim {ns}/{name} lives in storage class {} (pool {}), not in {}; clone across pools with a DataVolume, which copies the data",
                src_class.name,
                src_class.driver.root().display(),
                class.name
            )));
        }
        let src_size = class.driver.usage(&src_vol).api()?.size;
        if size < src_size {
            return Err(Error::new(
                ErrorKind::Invalid,
                format!(
                    "requested size {} is smaller than the source claim {ns}/{name} ({})",
                    format_quantity(size),
                    format_quantity(src_size)
                ),
            ));
        }
        if !class.caps().cow_clone {
            if let Some(user) = util::claim_in_use(self.store.as_ref(), ns, name)? {
                return Err(Error::precondition(format!(
                    "cannot copy persistentvolumeclaim {ns}/{name}: it is in use by the running {user}; stop it first or clone from a VolumeSnapshot"
                )));
            }
        }
        class
            .driver
            .clone_volume(vol, &src_vol, size, &NoProgress)
            .api()
    }

    /// The driver, volume, snapshot name and restore size behind a ready VolumeSnapshot.
    pub fn ready_snapshot(
        &self,
        ns: &str,
        name: &str,
    ) -> api::Result<(Arc<dyn Driver>, VolName, storage::SnapName, u64)> {
        let vs = self
            .store
            .get(util::volume_snapshots(), ns, name)
            .map_err(|_| Error::not_found(format!("volumesnapshot {ns}/{name} not found")))?;
        if vs["status"]["readyToUse"] != true {
            let why = vs["status"]["error"]["message"]
                .as_str()
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(Error::precondition(format!(
                "volumesnapshot {ns}/{name} is not ready to use{why}"
            )));
        }
        let content_name = vs["status"]["boundVolumeSnapshotContentName"]
            .as_str()
            .unwrap_or("");
        let content = self
            .store
            .get(util::snapshot_contents(), "", content_name)?;
        let (driver, vol, snap) = self.content_handle(&content)?;
        let restore_size = quantity_value(&content["status"]["restoreSize"])
            .or_else(|| quantity_value(&vs["status"]["restoreSize"]))
            .unwrap_or(0);
        Ok((driver, vol, snap, restore_size))
    }

    /// Opens a pool recorded in an annotation (the class may be gone by now).
    pub fn driver_at(&self, driver: &str, root: &str) -> api::Result<Arc<dyn Driver>> {
        let root = super::pools::validate_pool_dir(root)?;
        if let Some(d) = self.open_pools().into_iter().find(|d| d.root() == root) {
            return Ok(d);
        }
        self.open_pool_public(driver, &root)
    }

    fn maintain_bound(&self, key: &ObjectKey, pvc: &Value) -> api::Result<Action> {
        let (driver, vol) = match self.bound_driver(pvc) {
            Ok(x) => x,
            Err(e) => {
                self.warn(pvc, "VolumeUnavailable", &e.message);
                return Ok(Action::Requeue(Duration::from_secs(30)));
            }
        };
        let usage = match driver.usage(&vol) {
            Ok(u) => u,
            // A DataVolume may be re-creating the volume for a fresh import.
            Err(e) if e.kind() == storage::ErrorKind::NotFound => {
                return Ok(Action::Requeue(Duration::from_secs(2)));
            }
            Err(e) => return Err(super::errors::api_error(e)),
        };
        let mut size = usage.size;
        if let Ok(want) = requested_size(pvc) {
            if want > usage.size {
                let class = self.claim_class_name(pvc)?.map(|c| self.class(&c));
                let allowed = matches!(&class, Some(Ok(c)) if c.allow_expansion);
                if !allowed {
                    self.warn(pvc, "VolumeResizeFailed", "the storage class does not allow volume expansion (allowVolumeExpansion is not true)");
                } else {
                    match driver.resize_volume(&vol, want) {
                        Ok(()) => {
                            size = want;
                            self.normal(
                                pvc,
                                "VolumeResizeSuccessful",
                                &format!(
                                    "volume {vol} grew from {} to {}",
                                    format_quantity(usage.size),
                                    format_quantity(want)
                                ),
                            );
                        }
                        Err(e) => self.warn(pvc, "VolumeResizeFailed", &e.to_string()),
                    }
                }
            }
        }
        let cap = format_quantity(size);
        if pvc["status"]["capacity"]["storage"].as_str() != Some(cap.as_str()) {
            update_status_with(self.store.as_ref(), util::pvcs(), key, |o| {
                o["status"]["capacity"]["storage"] = json!(cap);
            })?;
        }
        let allocated = usage.allocated.to_string();
        if meta::annotation(pvc, ALLOCATED_ANNOTATION) != Some(allocated.as_str()) {
            update_with(self.store.as_ref(), util::pvcs(), key, |o| {
                meta::set_annotation(o, ALLOCATED_ANNOTATION, &allocated);
            })?;
        }
        Ok(Action::Requeue(USAGE_PERIOD))
    }

    /// The driver and volume of a Bound claim, from what was recorded at binding.
    pub(crate) fn bound_driver(&self, pvc: &Value) -> api::Result<(Arc<dyn Driver>, VolName)> {
        let vol = VolName::new(pvc["spec"]["volumeName"].as_str().unwrap_or("")).api()?;
        match (
            meta::annotation(pvc, DRIVER_ANNOTATION),
            meta::annotation(pvc, POOL_ANNOTATION),
        ) {
            (Some(d), Some(root)) => Ok((self.driver_at(d, root)?, vol)),
            _ => {
                let class = self
                    .claim_class_name(pvc)?
                    .ok_or_else(|| Error::precondition("the claim has no storage class"))?;
                Ok((self.class(&class)?.driver, vol))
            }
        }
    }

    fn finalize_pvc(&self, key: &ObjectKey, pvc: &Value) -> api::Result<Action> {
        if !meta::has_finalizer(pvc, PVC_FINALIZER) {
            return Ok(Action::AwaitChange);
        }
        let target = if pvc["spec"]["volumeName"].is_string() {
            Some(self.bound_driver(pvc))
        } else {
            // Provisioning may have made the volume before a crash; look for it.
            self.claim_class_name(pvc)?
                .and_then(|c| self.class(&c).ok())
                .map(|c| volume_name(pvc).map(|v| (c.driver, v)))
        };
        if let Some(target) = target {
            let (driver, vol) = target?;
            if let Some(user) =
                util::claim_in_use(self.store.as_ref(), meta::namespace(pvc), meta::name(pvc))?
            {
                self.warn(
                    pvc,
                    "VolumeInUse",
                    &format!("the volume is kept while {user} uses it"),
                );
                return Ok(Action::Requeue(Duration::from_secs(5)));
            }
            match driver.delete_volume(&vol) {
                Ok(()) => self.normal(
                    pvc,
                    "VolumeDeleted",
                    &format!("deleted volume {vol} ({} driver)", driver.name()),
                ),
                Err(e) if e.kind() == storage::ErrorKind::NotFound => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        storage::ErrorKind::FailedPrecondition | storage::ErrorKind::Conflict
                    ) =>
                {
                    self.warn(
                        pvc,
                        "VolumeDeleteBlocked",
                        &format!("volume {vol} is kept and the claim stays Terminating until this is resolved: {e}"),
                    );
                    return Ok(Action::Requeue(Duration::from_secs(5)));
                }
                Err(e) => return Err(super::errors::api_error(e)),
            }
        }
        update_with(self.store.as_ref(), util::pvcs(), key, |o| {
            meta::remove_finalizer(o, PVC_FINALIZER);
        })?;
        self.clear_warnings(pvc);
        Ok(Action::AwaitChange)
    }

    /// Records a Normal event unless the same one was recorded last for this object.
    pub fn note_once(&self, obj: &Value, reason: &str, message: &str) {
        if self.first_time(obj, reason, message) {
            self.normal(obj, reason, message);
        }
    }

    /// Runs the PVC controller for one claim right now (blocking) and returns the claim.
    /// Other controllers call this after creating a claim so they need not wait for a pass.
    pub fn provision_claim(&self, namespace: &str, name: &str) -> api::Result<Arc<Value>> {
        self.reconcile_pvc(&ObjectKey::new(namespace, name))?;
        self.store.get(util::pvcs(), namespace, name)
    }
}

/// The requested size of a claim in bytes.
pub fn requested_size(pvc: &Value) -> api::Result<u64> {
    let q = &pvc["spec"]["resources"]["requests"]["storage"];
    quantity_value(q).filter(|s| *s > 0).ok_or_else(|| {
        Error::new(
            ErrorKind::Invalid,
            format!("spec.resources.requests.storage {q} is not a positive quantity"),
        )
    })
}
