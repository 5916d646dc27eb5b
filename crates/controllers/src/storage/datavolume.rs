//! The DataVolume controller, with CDI's semantics: a DataVolume owns a claim of the same
//! name and fills it from its source (blank, pvc, snapshot, http, upload). A pvc clone
//! follows the target class's StorageProfile: csi-clone (the driver's copy-on-write clone),
//! snapshot (a temporary VolumeSnapshot of the source, then a restore), else a host-assisted
//! copy with progress. A host-assisted copy of a claim a running VM uses is refused until the
//! VM stops. Long steps record their phase first, so a restart redoes them from a clean volume.

use super::import::{self, TempImage};
use super::pools::{CloneStrategy, Pools};
use super::util::{self, format_quantity, quantity_value};
use crate::runtime::{
    ignore_not_found, map_to_owner, update_status_with, update_with, Action, Mapper, ObjectKey,
    Reconciler,
};
use api::registry::Resource;
use api::{meta, Error, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use store::Preconditions;

pub const DV_FINALIZER: &str = "cdi.kubevirt.io/dataVolumeFinalizer";
/// The clone method chosen for a claim, as CDI records it.
pub const CLONE_TYPE_ANNOTATION: &str = "cdi.kubevirt.io/cloneType";
const FOR_DV_ANNOTATION: &str = "vmsnap.io/for-datavolume";

pub struct DataVolumeReconciler {
    pub pools: Arc<Pools>,
}

impl Reconciler for DataVolumeReconciler {
    fn name(&self) -> &'static str {
        "datavolume"
    }
    fn resource(&self) -> &'static Resource {
        util::data_volumes()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        let for_dv: Mapper = Arc::new(|obj: &Value| {
            meta::annotation(obj, FOR_DV_ANNOTATION)
                .and_then(|s| s.split_once('/'))
                .map(|(ns, n)| vec![ObjectKey::new(ns, n)])
                .unwrap_or_default()
        });
        vec![
            (util::pvcs(), map_to_owner("DataVolume")),
            (util::volume_snapshots(), for_dv),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(&self.pools, key, "datavolume", Pools::reconcile_dv)
    }
}

/// Where a step stands.
enum Step {
    /// Look again after this long.
    Wait(Duration),
    /// Nothing to do until something changes.
    Idle,
    Done,
}

/// The claim a DataVolume wants.
struct Target {
    class: Option<String>,
    size: Option<u64>,
    access_modes: Value,
    volume_mode: Value,
}

fn temp_snapshot_name(dv: &Value) -> String {
    format!("cdi-tmp-{}", meta::uid(dv))
}

fn source_pvc(dv: &Value) -> Option<(String, String)> {
    let p = &dv["spec"]["source"]["pvc"];
    let name = p["name"].as_str()?;
    Some((
        p["namespace"]
            .as_str()
            .unwrap_or(meta::namespace(dv))
            .to_string(),
        name.to_string(),
    ))
}

fn source_snapshot(dv: &Value) -> Option<(String, String)> {
    let p = &dv["spec"]["source"]["snapshot"];
    let name = p["name"].as_str()?;
    Some((
        p["namespace"]
            .as_str()
            .unwrap_or(meta::namespace(dv))
            .to_string(),
        name.to_string(),
    ))
}

/// Marks a DataVolume Succeeded with CDI's conditions.
pub fn mark_succeeded(pools: &Pools, key: &ObjectKey, message: &str) -> api::Result<()> {
    update_status_with(pools.store.as_ref(), util::data_volumes(), key, |o| {
        o["status"]["phase"] = json!("Succeeded");
        o["status"]["progress"] = json!("100.0%");
        let claim = meta::name(o).to_string();
        api::set_condition(o, "Bound", true, "Bound", &format!("PVC {claim} Bound"));
        api::set_condition(o, "Ready", true, "", "");
        api::set_condition(o, "Running", false, "Completed", message);
    })?;
    Ok(())
}

impl Pools {
    /// One pass of the DataVolume controller (blocking; imports and copies run to completion).
    pub fn reconcile_dv(&self, key: &ObjectKey) -> api::Result<Action> {
        let store = self.store.as_ref();
        let res = util::data_volumes();
        let Some(dv) = ignore_not_found(store.get(res, &key.namespace, &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_deleting(&dv) {
            if meta::has_finalizer(&dv, DV_FINALIZER) {
                self.delete_temp_snapshot(&dv)?;
                update_with(store, res, key, |o| {
                    meta::remove_finalizer(o, DV_FINALIZER);
                })?;
            }
            return Ok(Action::AwaitChange);
        }
        let dv = if meta::has_finalizer(&dv, DV_FINALIZER) {
            dv
        } else {
            update_with(store, res, key, |o| {
                meta::add_finalizer(o, DV_FINALIZER);
            })?
        };
        let phase = dv["status"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "Succeeded" || phase == "Failed" {
            return Ok(Action::AwaitChange);
        }
        if phase.is_empty() {
            self.set_phase(key, "Pending", None, "")?;
        }
        match self.drive_dv(key, &dv) {
            Ok(Step::Done) => {
                mark_succeeded(self, key, "Import Complete")?;
                self.delete_temp_snapshot(&dv)?;
                self.clear_warnings(&dv);
                self.normal(
                    &dv,
                    "ImportSucceeded",
                    &format!("datavolume {} is populated", key),
                );
                Ok(Action::AwaitChange)
            }
            Ok(Step::Wait(d)) => Ok(Action::Requeue(d)),
            Ok(Step::Idle) => Ok(Action::AwaitChange),
            Err(e) if matches!(e.kind, ErrorKind::Conflict) => Err(e),
            Err(e) => {
                let msg = e.message.clone();
                update_status_with(store, res, key, |o| {
                    o["status"]["phase"] = json!("Failed");
                    o["status"]["progress"] = json!("N/A");
                    api::set_condition(o, "Ready", false, "Failed", &msg);
                    api::set_condition(o, "Running", false, "Error", &msg);
                })?;
                self.warn(&dv, "DataVolumeFailed", &e.message);
                self.delete_temp_snapshot(&dv)?;
                Ok(Action::AwaitChange)
            }
        }
    }

    fn set_phase(
        &self,
        key: &ObjectKey,
        phase: &str,
        running: Option<(&str, &str)>,
        progress: &str,
    ) -> api::Result<()> {
        update_status_with(self.store.as_ref(), util::data_volumes(), key, |o| {
            o["status"]["phase"] = json!(phase);
            if !progress.is_empty() {
                o["status"]["progress"] = json!(progress);
            } else if o["status"]["progress"].is_null() {
                o["status"]["progress"] = json!("N/A");
            }
            if api::condition(o, "Ready").is_none() {
                api::set_condition(o, "Ready", false, "", "");
            }
            match running {
                Some((reason, msg)) => {
                    api::set_condition(o, "Running", reason.is_empty(), reason, msg)
                }
                None => {
                    if api::condition(o, "Running").is_none() {
                        api::set_condition(o, "Running", false, "", "");
                    }
                }
            }
        })?;
        Ok(())
    }

    fn target(&self, dv: &Value) -> Target {
        let spec = &dv["spec"];
        let (claim, is_storage) = if spec["pvc"].is_object() {
            (&spec["pvc"], false)
        } else {
            (&spec["storage"], true)
        };
        let class = claim["storageClassName"]
            .as_str()
            .filter(|s| !s.is_empty())
            .map(String::from);
        let size = quantity_value(&claim["resources"]["requests"]["storage"]);
        let mut access_modes = claim["accessModes"].clone();
        if access_modes.as_array().is_none_or(|a| a.is_empty()) {
            access_modes = json!(["ReadWriteOnce"]);
        }
        let mut volume_mode = claim["volumeMode"].clone();
        if is_storage && volume_mode.is_null() {
            volume_mode = json!("Filesystem");
        }
        Target {
            class,
            size,
            access_modes,
            volume_mode,
        }
    }

    /// Creates the DataVolume's claim if absent and provisions it now; returns it once Bound.
    fn ensure_claim(
        &self,
        dv: &Value,
        target: &Target,
        size: u64,
        data_source: Option<Value>,
        clone_type: Option<&str>,
    ) -> api::Result<Option<Arc<Value>>> {
        let (ns, name) = (meta::namespace(dv), meta::name(dv));
        let res = util::pvcs();
        let pvc = match ignore_not_found(self.store.get(res, ns, name))? {
            Some(p) => {
                if !meta::owner_uids(&p).iter().any(|u| u == meta::uid(dv)) {
                    return Err(Error::conflict_free(format!(
                        "persistentvolumeclaim {ns}/{name} already exists and does not belong to this DataVolume"
                    )));
                }
                p
            }
            None => {
                let mut spec = json!({
                    "accessModes": target.access_modes,
                    "resources": {"requests": {"storage": format_quantity(size)}},
                });
                if let Some(c) = &target.class {
                    spec["storageClassName"] = json!(c);
                }
                if !target.volume_mode.is_null() {
                    spec["volumeMode"] = target.volume_mode.clone();
                }
                if let Some(ds) = data_source {
                    spec["dataSourceRef"] = ds;
                }
                let mut pvc = json!({
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": name,
                        "namespace": ns,
                        "labels": {"app": "containerized-data-importer", "app.kubernetes.io/component": "storage"},
                        "annotations": {"cdi.kubevirt.io/storage.populatedFor": name},
                    },
                    "spec": spec,
                });
                if let Some(t) = clone_type {
                    meta::set_annotation(&mut pvc, CLONE_TYPE_ANNOTATION, t);
                }
                meta::set_owner(&mut pvc, dv);
                let pvc = api::admit(res, pvc, api::FieldValidation::Strict)?.object;
                match self.store.create(res, pvc) {
                    Ok(p) => p,
                    Err(e) if e.is(ErrorKind::AlreadyExists) => self.store.get(res, ns, name)?,
                    Err(e) => return Err(e),
                }
            }
        };
        if pvc["status"]["phase"] == "Bound" {
            return Ok(Some(pvc));
        }
        self.reconcile_pvc(&ObjectKey::new(ns, name))?;
        let pvc = self.store.get(res, ns, name)?;
        Ok((pvc["status"]["phase"] == "Bound").then_some(pvc))
    }

    fn waiting_for_claim(&self, key: &ObjectKey, dv: &Value) -> api::Result<Step> {
        let pvc = ignore_not_found(self.store.get(util::pvcs(), &key.namespace, &key.name))?;
        let why = pvc
            .as_ref()
            .and_then(|p| p["status"]["conditions"].as_array().cloned())
            .and_then(|c| c.into_iter().find(|c| c["type"] == "Provisioning"))
            .map(|c| {
                (
                    c["reason"].as_str().unwrap_or("").to_string(),
                    c["message"].as_str().unwrap_or("").to_string(),
                )
            });
        let phase = match why.as_ref().map(|(r, _)| r.as_str()) {
            Some("WaitForFirstConsumer") => "WaitForFirstConsumer",
            _ => "PVCBound",
        };
        let msg = why
            .map(|(_, m)| m)
            .unwrap_or_else(|| "waiting for the claim to be bound".into());
        let claim = key.name.clone();
        update_status_with(self.store.as_ref(), util::data_volumes(), key, |o| {
            o["status"]["phase"] = json!(if phase == "PVCBound" {
                "Pending"
            } else {
                phase
            });
            api::set_condition(
                o,
                "Bound",
                false,
                "Pending",
                &format!("PVC {claim} Pending: {msg}"),
            );
        })?;
        let _ = dv;
        Ok(Step::Wait(Duration::from_secs(2)))
    }

    fn mark_bound(&self, key: &ObjectKey) -> api::Result<()> {
        let claim = key.name.clone();
        update_status_with(self.store.as_ref(), util::data_volumes(), key, |o| {
            api::set_condition(o, "Bound", true, "Bound", &format!("PVC {claim} Bound"));
            o["status"]["claimName"] = json!(claim);
        })?;
        Ok(())
    }

    fn drive_dv(&self, key: &ObjectKey, dv: &Value) -> api::Result<Step> {
        let src = &dv["spec"]["source"];
        let target = self.target(dv);
        let phase = dv["status"]["phase"].as_str().unwrap_or("");
        if src["blank"].is_object() || src["upload"].is_object() || src["http"].is_object() {
            let size = target.size.ok_or_else(|| {
                invalid("spec.storage.resources.requests.storage is required for this source")
            })?;
            let Some(_) = self.ensure_claim(dv, &target, size, None, None)? else {
                return self.waiting_for_claim(key, dv);
            };
            self.mark_bound(key)?;
            if src["blank"].is_object() {
                return Ok(Step::Done);
            }
            if src["upload"].is_object() {
                if phase != "UploadReady" {
                    self.set_phase(
                        key,
                        "UploadReady",
                        Some(("", "upload server is ready")),
                        "N/A",
                    )?;
                    self.normal(
                        dv,
                        "UploadReady",
                        "upload into this DataVolume with vmsnap image-upload",
                    );
                }
                return Ok(Step::Idle);
            }
            let url = src["http"]["url"].as_str().unwrap_or("").to_string();
            return self.import_http(key, dv, &url);
        }
        if let Some((sns, sname)) = source_pvc(dv) {
            return self.clone_pvc(key, dv, &target, &sns, &sname);
        }
        if let Some((sns, sname)) = source_snapshot(dv) {
            let (driver, _, _, restore_size) = match self.ready_snapshot(&sns, &sname) {
                Ok(x) => x,
                Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::FailedPrecondition) => {
                    self.set_phase(
                        key,
                        "SnapshotForSmartCloneInProgress",
                        Some(("SnapshotNotReady", &e.message)),
                        "",
                    )?;
                    return Ok(Step::Wait(Duration::from_secs(2)));
                }
                Err(e) => return Err(e),
            };
            let size = target.size.unwrap_or(restore_size);
            let Some(class) = self.target_class_or_wait(key, &target)? else {
                return Ok(Step::Wait(Duration::from_secs(5)));
            };
            if class.driver.root() != driver.root() {
                return Err(invalid(format!(
                    "volumesnapshot {sns}/{sname} lives in pool {} but the target class {} uses {}; restore into the snapshot's storage class",
                    driver.root().display(),
                    class.name,
                    class.driver.root().display()
                )));
            }
            self.set_phase(
                key,
                "CloneFromSnapshotSourceInProgress",
                Some(("", "restoring the snapshot")),
                "",
            )?;
            let ds = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": sname, "namespace": sns});
            return match self.ensure_claim(dv, &target, size, Some(ds), Some("snapshot"))? {
                Some(_) => Ok(Step::Done),
                None => self.claim_failure_or_wait(key, dv),
            };
        }
        Err(invalid(format!(
            "source {} is not supported; use blank, pvc, snapshot, http or upload",
            src.as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default()
        )))
    }

    /// A claim with a data source that does not bind: fail on permanent provisioning errors.
    fn claim_failure_or_wait(&self, key: &ObjectKey, dv: &Value) -> api::Result<Step> {
        let pvc = self.store.get(util::pvcs(), &key.namespace, &key.name)?;
        if let Some(c) = pvc["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Provisioning"))
        {
            let msg = c["message"].as_str().unwrap_or("");
            let permanent = [
                "smaller than",
                "cannot create a volume from",
                "Not enough space",
                "not supported",
                "lives in",
            ];
            if permanent.iter().any(|p| msg.contains(p)) {
                return Err(invalid(format!("cannot provision the claim: {msg}")));
            }
        }
        self.waiting_for_claim(key, dv)
    }

    fn target_class(&self, target: &Target) -> api::Result<super::pools::ClassInfo> {
        let name = match &target.class {
            Some(c) => c.clone(),
            None => self.default_class_name()?.ok_or_else(|| {
                invalid("no storage class is named and none is marked as default")
            })?,
        };
        self.class(&name)
    }

    /// The target class, or None (phase Pending with the reason) while it is missing or served
    /// by an external provisioner, as CDI waits for the claim in that case.
    fn target_class_or_wait(
        &self,
        key: &ObjectKey,
        target: &Target,
    ) -> api::Result<Option<super::pools::ClassInfo>> {
        match self.target_class(target) {
            Ok(c) => Ok(Some(c)),
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Unsupported) => {
                self.set_phase(
                    key,
                    "Pending",
                    Some(("StorageClassNotReady", &e.message)),
                    "",
                )?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn import_http(&self, key: &ObjectKey, dv: &Value, url: &str) -> api::Result<Step> {
        let (_, class, vol) = self.bound_claim(&key.namespace, &key.name)?;
        self.set_phase(
            key,
            "ImportInProgress",
            Some(("", "Import in progress")),
            "0.0%",
        )?;
        self.normal(dv, "ImportInProgress", &format!("importing {url}"));
        let driver = class.driver.clone();
        let size = driver.usage(&vol).map_err(super::errors::api_error)?.size;
        let tmp = TempImage::new(driver.as_ref(), "import", meta::uid(dv));
        let p1 = import::progress_writer(self, key, 0.0, 50.0);
        import::download(driver.as_ref(), url, &tmp.0, &p1)?;
        let p2 = import::progress_writer(self, key, 50.0, 100.0);
        import::write_image(driver.as_ref(), &vol, size, &tmp.0, &p2)?;
        Ok(Step::Done)
    }

    fn clone_pvc(
        &self,
        key: &ObjectKey,
        dv: &Value,
        target: &Target,
        sns: &str,
        sname: &str,
    ) -> api::Result<Step> {
        let (src_pvc, src_class, src_vol) = match self.bound_claim(sns, sname) {
            Ok(x) => x,
            Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::FailedPrecondition) => {
                let msg = if e.is(ErrorKind::NotFound) {
                    format!("source persistentvolumeclaim {sns}/{sname} not found")
                } else {
                    e.message.clone()
                };
                self.set_phase(
                    key,
                    "CloneScheduled",
                    Some(("CloneSourceNotReady", &msg)),
                    "",
                )?;
                return Ok(Step::Wait(Duration::from_secs(2)));
            }
            Err(e) => return Err(e),
        };
        let src_size = src_class
            .driver
            .usage(&src_vol)
            .map_err(super::errors::api_error)?
            .size;
        let size = target.size.unwrap_or(src_size);
        if size < src_size {
            return Err(invalid(format!(
                "the target size {} is smaller than the source persistentvolumeclaim {sns}/{sname} ({})",
                format_quantity(size),
                format_quantity(src_size)
            )));
        }
        let Some(class) = self.target_class_or_wait(key, target)? else {
            return Ok(Step::Wait(Duration::from_secs(5)));
        };
        let same_pool = class.driver.root() == src_class.driver.root();
        let caps = class.caps();
        let strategy = self.clone_strategy(&class)?;
        // An existing claim keeps the method it was made with.
        let existing = ignore_not_found(self.store.get(util::pvcs(), &key.namespace, &key.name))?;
        let chosen = existing
            .as_ref()
            .and_then(|p| meta::annotation(p, CLONE_TYPE_ANNOTATION).map(String::from))
            .unwrap_or_else(|| {
                if same_pool && strategy == CloneStrategy::CsiClone && caps.cow_clone {
                    "csi-clone".into()
                } else if same_pool
                    && strategy != CloneStrategy::Copy
                    && caps.snapshots
                    && caps.restore_from_snapshot
                    && self
                        .snapshot_class_for(&src_class.name, &src_class.provisioner)
                        .ok()
                        .flatten()
                        .is_some()
                {
                    "snapshot".into()
                } else {
                    "copy".into()
                }
            });
        if existing.is_none() {
            self.normal(
                dv,
                "CloneStrategy",
                &format!(
                    "cloning {sns}/{sname} with {chosen} (profile strategy {}, {})",
                    strategy.as_str(),
                    if same_pool {
                        "same pool"
                    } else {
                        "different pools"
                    }
                ),
            );
        }
        let _ = src_pvc;
        match chosen.as_str() {
            "csi-clone" => {
                self.set_phase(
                    key,
                    "CSICloneInProgress",
                    Some(("", "CSI clone in progress")),
                    "",
                )?;
                let ds = json!({"apiGroup": "", "kind": "PersistentVolumeClaim", "name": sname, "namespace": sns});
                match self.ensure_claim(dv, target, size, Some(ds), Some("csi-clone"))? {
                    Some(_) => Ok(Step::Done),
                    None => self.claim_failure_or_wait(key, dv),
                }
            }
            "snapshot" => {
                if existing.is_none() {
                    self.set_phase(
                        key,
                        "SnapshotForSmartCloneInProgress",
                        Some(("", "taking a snapshot of the source")),
                        "",
                    )?;
                    let vs_name = temp_snapshot_name(dv);
                    let vs = self.snapshot_claim(
                        sns,
                        sname,
                        &vs_name,
                        Some(json!({
                            "labels": {"cdi.kubevirt.io": "cdi-smart-clone"},
                            "annotations": {FOR_DV_ANNOTATION: format!("{}/{}", key.namespace, key.name)},
                        })),
                    )?;
                    if vs["status"]["readyToUse"] != true {
                        let msg = vs["status"]["error"]["message"]
                            .as_str()
                            .unwrap_or("waiting for the snapshot")
                            .to_string();
                        self.set_phase(
                            key,
                            "SnapshotForSmartCloneInProgress",
                            Some(("SnapshotNotReady", &msg)),
                            "",
                        )?;
                        return Ok(Step::Wait(Duration::from_secs(2)));
                    }
                }
                self.set_phase(
                    key,
                    "SmartClonePVCInProgress",
                    Some(("", "restoring the snapshot")),
                    "",
                )?;
                let ds = json!({"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": temp_snapshot_name(dv), "namespace": sns});
                match self.ensure_claim(dv, target, size, Some(ds), Some("snapshot"))? {
                    Some(_) => Ok(Step::Done),
                    None => self.claim_failure_or_wait(key, dv),
                }
            }
            _ => {
                if let Some(user) = util::claim_in_use(self.store.as_ref(), sns, sname)? {
                    let msg = format!(
                        "cannot copy persistentvolumeclaim {sns}/{sname}: it is in use by the running {user}; a host-assisted copy needs the VM stopped (or clone through a VolumeSnapshot)"
                    );
                    self.set_phase(key, "CloneScheduled", Some(("CloneSourceInUse", &msg)), "")?;
                    self.warn(dv, "CloneSourceInUse", &msg);
                    return Ok(Step::Wait(Duration::from_secs(5)));
                }
                let Some(_) = self.ensure_claim(dv, target, size, None, Some("copy"))? else {
                    return self.waiting_for_claim(key, dv);
                };
                self.mark_bound(key)?;
                let (_, dst_class, dst_vol) = self.bound_claim(&key.namespace, &key.name)?;
                let dst_size = dst_class
                    .driver
                    .usage(&dst_vol)
                    .map_err(super::errors::api_error)?
                    .size;
                self.set_phase(
                    key,
                    "CloneInProgress",
                    Some(("", "host-assisted copy in progress")),
                    "0.0%",
                )?;
                let progress = import::progress_writer(self, key, 0.0, 100.0);
                import::copy_volume(
                    src_class.driver.as_ref(),
                    &src_vol,
                    dst_class.driver.as_ref(),
                    &dst_vol,
                    dst_size,
                    &progress,
                )?;
                Ok(Step::Done)
            }
        }
    }

    fn delete_temp_snapshot(&self, dv: &Value) -> api::Result<()> {
        let Some((sns, _)) = source_pvc(dv) else {
            return Ok(());
        };
        let name = temp_snapshot_name(dv);
        ignore_not_found(self.store.delete(
            util::volume_snapshots(),
            &sns,
            &name,
            &Preconditions::default(),
        ))?;
        Ok(())
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Invalid, msg)
}

/// An error that must not be retried as a write conflict.
trait ConflictFree {
    fn conflict_free(msg: impl Into<String>) -> Error;
}

impl ConflictFree for Error {
    fn conflict_free(msg: impl Into<String>) -> Error {
        Error::new(ErrorKind::AlreadyExists, msg)
    }
}
