//! VolumeSnapshot and VolumeSnapshotContent controllers, as the CSI external-snapshotter
//! behaves: a VolumeSnapshot of a Bound claim gets a content `snapcontent-<vs uid>` and a
//! driver snapshot of the same name; deletionPolicy Delete removes the driver snapshot with the
//! content, Retain keeps both. The content is created before the driver snapshot so a crash in
//! between is finished by the next pass (the driver call is idempotent here).
//!
//! Other controllers (VM snapshot, restore, clone) use [`Pools::snapshot_claim`],
//! [`Pools::claim_snapshot_support`] and [`Pools::rollback_claim`] to act without waiting for a
//! reconcile pass.

use super::errors::StorageResultExt;
use super::pools::Pools;
use super::pvc::{DRIVER_ANNOTATION, POOL_ANNOTATION};
use super::util::{self, format_quantity};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, Mapper, ObjectKey, Reconciler,
};
use api::registry::Resource;
use api::{meta, Error, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use storage::{Capabilities, SnapName};
use store::Preconditions;

pub const VS_FINALIZER: &str = "snapshot.storage.kubernetes.io/volumesnapshot-bound-protection";
pub const CONTENT_FINALIZER: &str =
    "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection";

/// Whether and how a claim can be snapshotted, for controllers that decide which volumes a VM
/// snapshot includes.
#[derive(Debug, Clone)]
pub struct SnapshotSupport {
    pub storage_class: String,
    pub provisioner: String,
    /// The VolumeSnapshotClass that would be used; None means the claim cannot be snapshotted.
    pub snapshot_class: Option<String>,
    pub caps: Capabilities,
    /// Why the claim cannot be snapshotted, when it cannot.
    pub reason: Option<String>,
}

impl SnapshotSupport {
    pub fn can_snapshot(&self) -> bool {
        self.reason.is_none()
    }
}

pub struct VolumeSnapshotReconciler {
    pub pools: Arc<Pools>,
}

pub struct ContentReconciler {
    pub pools: Arc<Pools>,
}

fn content_name(vs: &Value) -> String {
    format!("snapcontent-{}", meta::uid(vs))
}

impl Reconciler for VolumeSnapshotReconciler {
    fn name(&self) -> &'static str {
        "volumesnapshot"
    }
    fn resource(&self) -> &'static Resource {
        util::volume_snapshots()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        let store = self.pools.store.clone();
        let not_ready: Mapper = Arc::new(move |obj: &Value| {
            let ns = meta::namespace(obj);
            util::list_all(
                store.as_ref(),
                util::volume_snapshots(),
                if ns.is_empty() { None } else { Some(ns) },
            )
            .unwrap_or_default()
            .iter()
            .filter(|v| v["status"]["readyToUse"] != true)
            .map(|v| ObjectKey::of(v))
            .collect()
        });
        let by_ref: Mapper = Arc::new(|obj: &Value| {
            let r = &obj["spec"]["volumeSnapshotRef"];
            match (r["namespace"].as_str(), r["name"].as_str()) {
                (Some(ns), Some(n)) => vec![ObjectKey::new(ns, n)],
                _ => vec![],
            }
        });
        vec![
            (util::pvcs(), not_ready.clone()),
            (util::snapshot_classes(), not_ready),
            (util::snapshot_contents(), by_ref),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(
            &self.pools,
            key,
            "volumesnapshot",
            Pools::reconcile_volume_snapshot,
        )
    }
}

impl Reconciler for ContentReconciler {
    fn name(&self) -> &'static str {
        "volumesnapshotcontent"
    }
    fn resource(&self) -> &'static Resource {
        util::snapshot_contents()
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        let by_status: Mapper = Arc::new(|obj: &Value| {
            obj["status"]["boundVolumeSnapshotContentName"]
                .as_str()
                .map(|n| vec![ObjectKey::new("", n)])
                .unwrap_or_else(|| vec![ObjectKey::new("", &content_name(obj))])
        });
        vec![(util::volume_snapshots(), by_status)]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(
            &self.pools,
            key,
            "volumesnapshotcontent",
            Pools::reconcile_content,
        )
    }
}

impl Pools {
    /// Whether a Bound claim can be snapshotted and with which VolumeSnapshotClass.
    pub fn claim_snapshot_support(
        &self,
        namespace: &str,
        claim: &str,
    ) -> api::Result<SnapshotSupport> {
        let (_, class, _) = self.bound_claim(namespace, claim)?;
        let caps = class.caps();
        let vsc = self.snapshot_class_for(&class.name, &class.provisioner)?;
        let reason = if vsc.is_none() {
            Some(format!(
                "storage class {} (provisioner {}) has no VolumeSnapshotClass with driver {}",
                class.name, class.provisioner, class.provisioner
            ))
        } else if !caps.snapshots {
            Some(format!(
                "the {} driver of storage class {} cannot take snapshots",
                class.driver.name(),
                class.name
            ))
        } else {
            None
        };
        Ok(SnapshotSupport {
            storage_class: class.name.clone(),
            provisioner: class.provisioner.clone(),
            snapshot_class: vsc.map(|v| meta::name(&v).to_string()),
            caps,
            reason,
        })
    }

    /// Creates VolumeSnapshot `name` of `claim` (if absent) and takes it right now, without
    /// waiting for the controller. `metadata` is merged into the new object's metadata
    /// (labels, annotations, ownerReferences). Blocking. Returns the VolumeSnapshot as it is
    /// after the attempt: `status.readyToUse` true, or `status.error.message` saying why not.
    pub fn snapshot_claim(
        &self,
        namespace: &str,
        claim: &str,
        name: &str,
        metadata: Option<Value>,
    ) -> api::Result<Arc<Value>> {
        let res = util::volume_snapshots();
        if ignore_not_found(self.store.get(res, namespace, name))?.is_none() {
            let mut vs = json!({
                "apiVersion": "snapshot.storage.k8s.io/v1",
                "kind": "VolumeSnapshot",
                "metadata": {"name": name, "namespace": namespace},
                "spec": {"source": {"persistentVolumeClaimName": claim}},
            });
            if let Some(Value::Object(m)) = metadata {
                for (k, v) in m {
                    if k != "name" && k != "namespace" {
                        vs["metadata"][k] = v;
                    }
                }
            }
            let vs = api::admit(res, vs, api::FieldValidation::Strict)?.object;
            match self.store.create(res, vs) {
                Ok(_) => {}
                Err(e) if e.is(ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        self.reconcile_volume_snapshot(&ObjectKey::new(namespace, name))?;
        self.store.get(res, namespace, name)
    }

    /// Rolls a Bound claim back in place to the data of one of its ready VolumeSnapshots.
    /// Drivers without `rollback_any` refuse when later snapshots exist (ZFS semantics).
    /// Blocking; the caller makes sure no VM uses the claim.
    pub fn rollback_claim(&self, namespace: &str, claim: &str, snapshot: &str) -> api::Result<()> {
        let (pvc, class, vol) = self.bound_claim(namespace, claim)?;
        let (driver, src_vol, snap, _) = self.ready_snapshot(namespace, snapshot)?;
        if driver.root() != class.driver.root() || src_vol != vol {
            return Err(Error::precondition(format!(
                "volumesnapshot {namespace}/{snapshot} is not a snapshot of persistentvolumeclaim {namespace}/{claim}"
            )));
        }
        if let Some(user) = util::claim_in_use(self.store.as_ref(), namespace, claim)? {
            return Err(Error::precondition(format!(
                "cannot roll back {namespace}/{claim} while {user} uses it"
            )));
        }
        driver.restore_volume(&vol, &snap).api()?;
        self.normal(
            &pvc,
            "VolumeRolledBack",
            &format!("volume {vol} rolled back to volumesnapshot {snapshot}"),
        );
        Ok(())
    }

    /// One pass of the VolumeSnapshot controller; callable inline (blocking).
    pub fn reconcile_volume_snapshot(&self, key: &ObjectKey) -> api::Result<Action> {
        let _guard = self.lock_object("vs", key);
        let store = self.store.as_ref();
        let res = util::volume_snapshots();
        let Some(vs) = ignore_not_found(store.get(res, &key.namespace, &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        if meta::is_deleting(&vs) {
            if meta::has_finalizer(&vs, VS_FINALIZER) {
                let cname = vs["status"]["boundVolumeSnapshotContentName"]
                    .as_str()
                    .map(String::from)
                    .unwrap_or_else(|| content_name(&vs));
                if let Some(c) = ignore_not_found(store.get(util::snapshot_contents(), "", &cname))?
                {
                    let ours =
                        c["spec"]["volumeSnapshotRef"]["uid"].as_str() == Some(meta::uid(&vs));
                    if ours && c["spec"]["deletionPolicy"] != "Retain" && !meta::is_deleting(&c) {
                        ignore_not_found(store.delete(
                            util::snapshot_contents(),
                            "",
                            &cname,
                            &Preconditions::default(),
                        ))?;
                    }
                }
                update_with(store, res, key, |o| {
                    meta::remove_finalizer(o, VS_FINALIZER);
                })?;
            }
            return Ok(Action::AwaitChange);
        }
        if let Some(cname) = vs["spec"]["source"]["volumeSnapshotContentName"].as_str() {
            return self.bind_preprovisioned(key, &vs, cname);
        }
        if vs["status"]["readyToUse"] == true
            && vs["status"]["boundVolumeSnapshotContentName"].is_string()
        {
            return Ok(Action::AwaitChange);
        }
        let vs = if meta::has_finalizer(&vs, VS_FINALIZER) {
            vs
        } else {
            update_with(store, res, key, |o| {
                meta::add_finalizer(o, VS_FINALIZER);
            })?
        };
        match self.take_snapshot(&vs) {
            Ok((status, class_name)) => {
                if vs["spec"]["volumeSnapshotClassName"].is_null() {
                    // The external-snapshotter records the class it defaulted to.
                    update_with(store, res, key, |o| {
                        o["spec"]["volumeSnapshotClassName"] = json!(class_name);
                    })?;
                }
                update_status_with(store, res, key, |o| {
                    let st = meta::ensure_object(o, "status");
                    for (k, v) in status.as_object().into_iter().flatten() {
                        st.insert(k.clone(), v.clone());
                    }
                    st.remove("error");
                })?;
                self.clear_warnings(&vs);
                self.normal(
                    &vs,
                    "SnapshotReady",
                    &format!("snapshot {} is ready to use", content_name(&vs)),
                );
                Ok(Action::AwaitChange)
            }
            Err(e) => {
                let msg = e.message.clone();
                update_status_with(store, res, key, |o| {
                    o["status"]["readyToUse"] = json!(false);
                    if o["status"]["error"]["message"].as_str() != Some(msg.as_str()) {
                        o["status"]["error"] = json!({"message": msg, "time": util::now()});
                    }
                })?;
                self.warn(&vs, "SnapshotCreationFailed", &e.message);
                let retry = match e.kind {
                    ErrorKind::FailedPrecondition
                    | ErrorKind::NotFound
                    | ErrorKind::Conflict
                    | ErrorKind::Internal => 3,
                    _ => 15,
                };
                Ok(Action::Requeue(Duration::from_secs(retry)))
            }
        }
    }

    fn bind_preprovisioned(&self, key: &ObjectKey, vs: &Value, cname: &str) -> api::Result<Action> {
        let mut content = ignore_not_found(self.store.get(util::snapshot_contents(), "", cname))?;
        // Binding records the snapshot's uid in the content, as the external-snapshotter does:
        // both deletion paths (snapshot deleted -> content follows its policy) key on it.
        if let Some(c) = &content {
            let r = &c["spec"]["volumeSnapshotRef"];
            let names_us = r["name"].as_str() == Some(meta::name(vs))
                && r["namespace"].as_str() == Some(meta::namespace(vs));
            if names_us && r["uid"].as_str() != Some(meta::uid(vs)) {
                let uid = meta::uid(vs).to_string();
                content = Some(update_with(
                    self.store.as_ref(),
                    util::snapshot_contents(),
                    &ObjectKey::new("", cname),
                    |o| o["spec"]["volumeSnapshotRef"]["uid"] = json!(uid),
                )?);
            }
        }
        if !meta::has_finalizer(vs, VS_FINALIZER) {
            update_with(self.store.as_ref(), util::volume_snapshots(), key, |o| {
                meta::add_finalizer(o, VS_FINALIZER);
            })?;
        }
        update_status_with(
            self.store.as_ref(),
            util::volume_snapshots(),
            key,
            |o| match &content {
                Some(c) => {
                    o["status"]["boundVolumeSnapshotContentName"] = json!(cname);
                    o["status"]["readyToUse"] = json!(c["status"]["readyToUse"] == true);
                    if let Some(size) = util::quantity_value(&c["status"]["restoreSize"]) {
                        o["status"]["restoreSize"] = json!(format_quantity(size));
                    }
                    if let Some(ns) = c["status"]["creationTime"].as_i64() {
                        o["status"]["creationTime"] = json!(rfc3339_from_nanos(ns));
                    }
                }
                None => {
                    o["status"]["readyToUse"] = json!(false);
                    o["status"]["error"] = json!({"message": format!("volumesnapshotcontent {cname} not found"), "time": util::now()});
                }
            },
        )?;
        if content.is_none() {
            self.warn(
                vs,
                "SnapshotContentMissing",
                &format!("volumesnapshotcontent {cname} not found"),
            );
        }
        Ok(Action::AwaitChange)
    }

    /// Makes sure the content and the driver snapshot exist; returns the VolumeSnapshot status.
    fn take_snapshot(&self, vs: &Value) -> api::Result<(Value, String)> {
        let ns = meta::namespace(vs);
        let claim = vs["spec"]["source"]["persistentVolumeClaimName"]
            .as_str()
            .unwrap_or("");
        let (pvc, class, vol) = match self.bound_claim(ns, claim) {
            Ok(x) => x,
            Err(e) if e.is(ErrorKind::NotFound) => {
                return Err(Error::not_found(format!(
                    "persistentvolumeclaim {ns}/{claim} not found"
                )));
            }
            Err(e) => return Err(e),
        };
        let vsc = match vs["spec"]["volumeSnapshotClassName"].as_str() {
            Some(n) => {
                let c = self
                    .store
                    .get(util::snapshot_classes(), "", n)
                    .map_err(|_| Error::not_found(format!("volumesnapshotclass {n:?} not found")))?;
                if c["driver"].as_str() != Some(class.provisioner.as_str()) {
                    return Err(Error::new(
                        ErrorKind::Invalid,
                        format!(
                            "volumesnapshotclass {n} has driver {}, but persistentvolumeclaim {ns}/{claim} is provisioned by {}",
                            c["driver"], class.provisioner
                        ),
                    ));
                }
                (*c).clone()
            }
            None => self.snapshot_class_for(&class.name, &class.provisioner)?.ok_or_else(|| {
                Error::unsupported(format!(
                    "cannot snapshot persistentvolumeclaim {ns}/{claim}: its storage class {} (provisioner {}) has no VolumeSnapshotClass with driver {}; this class does not support snapshots",
                    class.name, class.provisioner, class.provisioner
                ))
            })?,
        };
        if !class.caps().snapshots {
            return Err(Error::unsupported(format!(
                "cannot snapshot persistentvolumeclaim {ns}/{claim}: the {} driver of storage class {} has no snapshot support",
                class.driver.name(),
                class.name
            )));
        }
        let cname = content_name(vs);
        let contents = util::snapshot_contents();
        let content = match ignore_not_found(self.store.get(contents, "", &cname))? {
            Some(c) => c,
            None => {
                let obj = json!({
                    "apiVersion": "snapshot.storage.k8s.io/v1",
                    "kind": "VolumeSnapshotContent",
                    "metadata": {
                        "name": cname,
                        "annotations": {
                            POOL_ANNOTATION: class.driver.root().to_string_lossy(),
                            DRIVER_ANNOTATION: class.driver.name(),
                        },
                        "finalizers": [CONTENT_FINALIZER],
                    },
                    "spec": {
                        "volumeSnapshotRef": {
                            "apiVersion": "snapshot.storage.k8s.io/v1",
                            "kind": "VolumeSnapshot",
                            "name": meta::name(vs),
                            "namespace": ns,
                            "uid": meta::uid(vs),
                        },
                        "deletionPolicy": vsc["deletionPolicy"].as_str().unwrap_or("Delete"),
                        "driver": class.provisioner,
                        "volumeSnapshotClassName": meta::name(&vsc),
                        "source": {"volumeHandle": vol.as_str()},
                        "sourceVolumeMode": pvc["spec"]["volumeMode"].as_str().unwrap_or("Filesystem"),
                    },
                });
                let obj = api::admit(contents, obj, api::FieldValidation::Strict)?.object;
                match self.store.create(contents, obj) {
                    Ok(c) => c,
                    Err(e) if e.is(ErrorKind::AlreadyExists) => {
                        self.store.get(contents, "", &cname)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        let snap = SnapName::new(cname.clone()).api()?;
        let info = match class.driver.create_snapshot(&vol, &snap) {
            Ok(i) => {
                self.normal(
                    vs,
                    "SnapshotCreated",
                    &format!(
                        "created snapshot {snap} of volume {vol} ({} driver)",
                        class.driver.name()
                    ),
                );
                i
            }
            Err(e) if e.kind() == storage::ErrorKind::AlreadyExists => class
                .driver
                .list_snapshots(&vol)
                .api()?
                .into_iter()
                .find(|s| s.name == snap)
                .ok_or_else(|| {
                    Error::internal(format!("snapshot {snap} exists but is not listed"))
                })?,
            Err(e) => return Err(super::errors::api_error(e)),
        };
        let nanos = info
            .created
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0);
        let handle = format!("{vol}@{snap}");
        update_status_with(
            self.store.as_ref(),
            contents,
            &ObjectKey::new("", meta::name(&content)),
            |o| {
                o["status"] = json!({
                    "snapshotHandle": handle,
                    "readyToUse": true,
                    "restoreSize": info.size,
                    "creationTime": nanos,
                });
            },
        )?;
        Ok((
            json!({
                "boundVolumeSnapshotContentName": cname,
                "readyToUse": true,
                "restoreSize": format_quantity(info.size),
                "creationTime": rfc3339_from_nanos(nanos),
            }),
            meta::name(&vsc).to_string(),
        ))
    }

    /// One pass of the VolumeSnapshotContent controller; callable inline (blocking).
    pub fn reconcile_content(&self, key: &ObjectKey) -> api::Result<Action> {
        let _guard = self.lock_object("vsc", key);
        let store = self.store.as_ref();
        let res = util::snapshot_contents();
        let Some(c) = ignore_not_found(store.get(res, "", &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        let ours = meta::annotation(&c, POOL_ANNOTATION).is_some();
        if meta::is_deleting(&c) {
            if !meta::has_finalizer(&c, CONTENT_FINALIZER) {
                return Ok(Action::AwaitChange);
            }
            if ours && c["spec"]["deletionPolicy"] != "Retain" {
                let (driver, vol, snap) = self.content_handle(&c)?;
                match driver.delete_snapshot(&vol, &snap) {
                    Ok(()) => self.normal(
                        &c,
                        "SnapshotDeleted",
                        &format!("deleted snapshot {snap} of volume {vol}"),
                    ),
                    Err(e) if e.kind() == storage::ErrorKind::NotFound => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            storage::ErrorKind::FailedPrecondition | storage::ErrorKind::Conflict
                        ) =>
                    {
                        self.warn(
                            &c,
                            "SnapshotDeleteBlocked",
                            &format!("snapshot {snap} is kept until this is resolved: {e}"),
                        );
                        return Ok(Action::Requeue(Duration::from_secs(5)));
                    }
                    Err(e) => return Err(super::errors::api_error(e)),
                }
            }
            update_with(store, res, key, |o| {
                meta::remove_finalizer(o, CONTENT_FINALIZER);
            })?;
            return Ok(Action::AwaitChange);
        }
        // A dynamically provisioned content whose snapshot is gone follows its deletion policy.
        let r = &c["spec"]["volumeSnapshotRef"];
        if ours && c["spec"]["deletionPolicy"] != "Retain" {
            let (ns, name, uid) = (
                r["namespace"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or(""),
                r["uid"].as_str(),
            );
            let vs = ignore_not_found(store.get(util::volume_snapshots(), ns, name))?;
            // Only contents bound to a snapshot uid are collected: a pre-provisioned content
            // may exist shortly before its VolumeSnapshot is created.
            let gone = match (&vs, uid) {
                (None, Some(_)) => true,
                (Some(v), Some(u)) => u != meta::uid(v),
                _ => false,
            };
            if gone {
                ignore_not_found(store.delete(res, "", &key.name, &Preconditions::default()))?;
            }
        }
        Ok(Action::AwaitChange)
    }
}

fn rfc3339_from_nanos(nanos: i64) -> String {
    chrono::DateTime::from_timestamp(nanos / 1_000_000_000, (nanos % 1_000_000_000) as u32)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(util::now)
}
