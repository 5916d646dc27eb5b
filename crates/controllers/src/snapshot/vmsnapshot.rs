//! VirtualMachineSnapshot: lock the VM, record its spec and volumes in a content object,
//! quiesce the guest, take every volume's storage snapshot inside one short window, thaw, and
//! publish VolumeSnapshots. Each step is idempotent and every exit path ends the quiesce.

use super::*;
use crate::context::Context;
use crate::events::EventType;
use crate::metrics::{self, Metrics, QuiesceLabel};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, ObjectKey, Reconciler,
};
use api::registry::{by_plural, Resource};
use api::{meta, set_condition, Error, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub fn snapshot_res() -> &'static Resource {
    by_plural("snapshot.kubevirt.io", "virtualmachinesnapshots").expect("registered")
}
pub fn content_res() -> &'static Resource {
    by_plural("snapshot.kubevirt.io", "virtualmachinesnapshotcontents").expect("registered")
}
pub fn vm_res() -> &'static Resource {
    by_plural("kubevirt.io", "virtualmachines").expect("registered")
}
pub fn pvc_res() -> &'static Resource {
    by_plural("", "persistentvolumeclaims").expect("registered")
}

pub fn content_name(snap: &Value) -> String {
    format!("vmsnapshot-content-{}", meta::uid(snap))
}

pub fn volume_snapshot_name(snap_uid: &str, volume: &str) -> String {
    format!("vmsnapshot-{snap_uid}-volume-{volume}")
}

/// A VM volume and the claim behind it, if any.
#[derive(Debug, Clone)]
pub struct VmVolume {
    pub name: String,
    pub claim: Option<String>,
    /// The volume source kind, for messages (`containerDisk`, `cloudInitNoCloud`, ...).
    pub kind: String,
}

pub fn vm_volumes(vm_spec: &Value) -> Vec<VmVolume> {
    let mut out = Vec::new();
    for v in vm_spec["template"]["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let name = v["name"].as_str().unwrap_or("").to_string();
        let (claim, kind) = if let Some(c) = v["persistentVolumeClaim"]["claimName"].as_str() {
            (Some(c.to_string()), "persistentVolumeClaim")
        } else if let Some(d) = v["dataVolume"]["name"].as_str() {
            (Some(d.to_string()), "dataVolume")
        } else {
            let kind = v
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "name").cloned())
                .unwrap_or_default();
            out.push(VmVolume {
                name,
                claim: None,
                kind,
            });
            continue;
        };
        out.push(VmVolume {
            name,
            claim,
            kind: kind.to_string(),
        });
    }
    out
}

pub struct SnapshotReconciler {
    pub ctx: Context,
    pub guest: Arc<dyn GuestControl>,
    pub backend: Arc<dyn SnapshotBackend>,
    pub metrics: Arc<Metrics>,
}

struct Taken {
    indications: Vec<(&'static str, String)>,
    window: Option<(String, Duration)>,
    sizes: Vec<(String, u64)>,
}

enum TakeError {
    /// The snapshot was deleted or ran out of time while quiesced; the guest is thawed.
    Cancelled,
    /// Quiescing failed; retried until the deadline.
    Quiesce(Error),
    Other(Error),
}

impl SnapshotReconciler {
    fn store(&self) -> &dyn store::Store {
        self.ctx.store.as_ref()
    }

    fn deadline(snap: &Value) -> Option<chrono::DateTime<chrono::Utc>> {
        let d = snap["spec"]["failureDeadline"].as_str().unwrap_or("5m");
        let d = api::types::parse_duration(d)?;
        if d.is_zero() {
            return None;
        }
        let created =
            chrono::DateTime::parse_from_rfc3339(snap["metadata"]["creationTimestamp"].as_str()?)
                .ok()?;
        Some(created.with_timezone(&chrono::Utc) + chrono::Duration::from_std(d).ok()?)
    }

    fn past_deadline(snap: &Value) -> bool {
        Self::deadline(snap).is_some_and(|d| chrono::Utc::now() > d)
    }

    async fn unlock(&self, snap: &Value) -> api::Result<()> {
        let ns = meta::namespace(snap);
        let vm_name = snap["spec"]["source"]["name"].as_str().unwrap_or("");
        let key = ObjectKey::new(ns, vm_name);
        let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, vm_name))? else {
            return Ok(());
        };
        if vm["status"]["snapshotInProgress"].as_str() == Some(meta::name(snap)) {
            update_status_with(self.store(), vm_res(), &key, |o| {
                if o["status"]["snapshotInProgress"].as_str() == Some(meta::name(snap)) {
                    if let Some(s) = o["status"].as_object_mut() {
                        s.remove("snapshotInProgress");
                    }
                }
            })?;
        }
        if meta::has_finalizer(&vm, SOURCE_FINALIZER) {
            // Another snapshot may still hold the VM; it re-adds the finalizer when it locks.
            update_with(self.store(), vm_res(), &key, |o| {
                if o["status"]["snapshotInProgress"].is_null() {
                    meta::remove_finalizer(o, SOURCE_FINALIZER);
                }
            })?;
        }
        Ok(())
    }

    async fn finalize(&self, snap: &Value) -> api::Result<Action> {
        let key = ObjectKey::of(snap);
        let ns = meta::namespace(snap);
        let done = snap["status"]["phase"] == "Succeeded";
        if !done {
            // It may be frozen by an attempt that a crash or this deletion interrupted.
            let vm = snap["spec"]["source"]["name"].as_str().unwrap_or("");
            if let Err(e) = self.guest.thaw(ns, vm).await {
                tracing::debug!(error = %e, "thaw on snapshot deletion");
            }
        }
        self.unlock(snap).await?;
        let retain = snap["spec"]["deletionPolicy"] == "Retain" && done;
        let cname = content_name(snap);
        if !retain {
            if let Some(c) = ignore_not_found(self.store().get(content_res(), ns, &cname))? {
                if !meta::is_deleting(&c) {
                    self.store()
                        .delete(content_res(), ns, &cname, &Default::default())?;
                }
            }
        } else if let Some(c) = ignore_not_found(self.store().get(content_res(), ns, &cname))? {
            // A retained content outlives its snapshot: drop the back-reference's owner.
            if c["metadata"]["ownerReferences"].is_array() {
                update_with(self.store(), content_res(), &ObjectKey::of(&c), |o| {
                    if let Some(m) = o["metadata"].as_object_mut() {
                        m.remove("ownerReferences");
                    }
                })?;
            }
        }
        update_with(self.store(), snapshot_res(), &key, |o| {
            meta::remove_finalizer(o, SNAPSHOT_FINALIZER);
        })?;
        Ok(Action::AwaitChange)
    }

    async fn fail(&self, snap: &Value, message: &str) -> api::Result<Action> {
        let key = ObjectKey::of(snap);
        let ns = meta::namespace(snap);
        let vm = snap["spec"]["source"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let _ = self.guest.thaw(ns, &vm).await;
        // The content and any storage snapshots of a failed attempt must not linger.
        let cname = content_name(snap);
        if let Some(c) = ignore_not_found(self.store().get(content_res(), ns, &cname))? {
            if !meta::is_deleting(&c) {
                self.store()
                    .delete(content_res(), ns, &cname, &Default::default())?;
            }
        } else if let Some(vmobj) = ignore_not_found(self.store().get(vm_res(), ns, &vm))? {
            for v in vm_volumes(&vmobj["spec"]) {
                if let Some(claim) = &v.claim {
                    let _ = self.backend.discard(
                        ns,
                        claim,
                        &volume_snapshot_name(meta::uid(snap), &v.name),
                    );
                }
            }
        }
        let now = meta::now_rfc3339();
        update_status_with(self.store(), snapshot_res(), &key, |o| {
            o["status"]["phase"] = json!("Failed");
            o["status"]["readyToUse"] = json!(false);
            o["status"]["error"] = json!({"time": now, "message": message});
            set_condition(o, "Ready", false, "Failed", message);
            set_condition(o, "Progressing", false, "Failed", message);
            set_condition(o, "Failure", true, "Failed", message);
        })?;
        self.unlock(snap).await?;
        self.metrics
            .snapshots
            .get_or_create(&metrics::result("failed"))
            .inc();
        self.ctx
            .recorder
            .record(snap, EventType::Warning, "SnapshotFailed", message);
        Ok(Action::AwaitChange)
    }

    fn progressing(&self, key: &ObjectKey, reason: &str, message: &str) -> api::Result<()> {
        update_status_with(self.store(), snapshot_res(), key, |o| {
            o["status"]["phase"] = json!("InProgress");
            o["status"]["readyToUse"] = json!(false);
            set_condition(o, "Progressing", true, reason, message);
            set_condition(o, "Ready", false, reason, message);
        })?;
        Ok(())
    }

    /// Records an existing content in the snapshot's status: its name, the source UID, and
    /// which volumes it includes.
    fn record_content(&self, key: &ObjectKey, content: &Value) -> api::Result<()> {
        let backups = content["spec"]["volumeBackups"].as_array();
        let included: Vec<String> = backups
            .into_iter()
            .flatten()
            .filter(|b| b["volumeSnapshotName"].is_string())
            .filter_map(|b| b["volumeName"].as_str().map(String::from))
            .collect();
        let source = &content["spec"]["source"]["virtualMachine"];
        let excluded: Vec<String> = vm_volumes(&source["spec"])
            .into_iter()
            .map(|v| v.name)
            .filter(|n| !included.contains(n))
            .collect();
        let uid = source["metadata"]["uid"].clone();
        let cname = meta::name(content).to_string();
        update_status_with(self.store(), snapshot_res(), key, |o| {
            o["status"]["sourceUID"] = uid.clone();
            o["status"]["virtualMachineSnapshotContentName"] = json!(cname);
            o["status"]["snapshotVolumes"] =
                json!({"includedVolumes": included, "excludedVolumes": excluded});
        })?;
        Ok(())
    }

    /// True when the snapshot is being deleted or its deadline passed: a quiesced guest must
    /// be released at once.
    fn cancelled(&self, key: &ObjectKey) -> bool {
        match self.store().get(snapshot_res(), &key.namespace, &key.name) {
            Ok(s) => meta::is_deleting(&s) || Self::past_deadline(&s),
            Err(_) => true,
        }
    }

    async fn take(
        &self,
        snap: &Value,
        vm: &Value,
        volumes: &[(VmVolume, String)],
    ) -> Result<Taken, TakeError> {
        let key = ObjectKey::of(snap);
        let ns = meta::namespace(snap);
        let vm_name = meta::name(vm);
        let uid = meta::uid(snap).to_string();
        let mut indications: Vec<(&'static str, String)> = Vec::new();
        let state = self.guest.state(ns, vm_name).await;
        for (v, claim) in volumes {
            let handle = volume_snapshot_name(&uid, &v.name);
            let backend = self.backend.clone();
            let (ns2, claim2) = (ns.to_string(), claim.clone());
            tokio::task::spawn_blocking(move || backend.prepare(&ns2, &claim2, &handle))
                .await
                .map_err(|e| {
                    TakeError::Other(Error::internal(format!("snapshot task failed: {e}")))
                })?
                .map_err(TakeError::Other)?;
        }
        test_pause_at("before-quiesce").await;
        let quiesce: Option<(Box<dyn Quiesce>, &'static str)> = match state {
            GuestState::Stopped => None,
            GuestState::Running { paused: true, .. } => {
                indications.push((
                    "Online",
                    "the VM was running when the snapshot was taken".into(),
                ));
                indications.push((
                    "Paused",
                    "the VM was paused: its disks were quiet without a freeze".into(),
                ));
                None
            }
            GuestState::Running { agent: true, .. } if !volumes.is_empty() => {
                indications.push((
                    "Online",
                    "the VM was running when the snapshot was taken".into(),
                ));
                indications.push((
                    "GuestAgent",
                    "filesystems were frozen through the guest agent".into(),
                ));
                let timeout = Duration::from_secs(10);
                let q = self
                    .guest
                    .freeze(ns, vm_name, timeout)
                    .await
                    .map_err(TakeError::Quiesce)?;
                Some((q, "freeze"))
            }
            GuestState::Running { .. } if !volumes.is_empty() => {
                indications.push((
                    "Online",
                    "the VM was running when the snapshot was taken".into(),
                ));
                indications.push((
                    "NoGuestAgent",
                    "no guest agent: the snapshot is crash-consistent (vCPUs paused to drain I/O)"
                        .into(),
                ));
                let q = self
                    .guest
                    .pause(ns, vm_name)
                    .await
                    .map_err(TakeError::Quiesce)?;
                Some((q, "pause"))
            }
            GuestState::Running { agent, .. } => {
                indications.push((
                    "Online",
                    "the VM was running when the snapshot was taken".into(),
                ));
                if agent {
                    indications.push((
                        "GuestAgent",
                        "no volume to snapshot, so no freeze was needed".into(),
                    ));
                } else {
                    indications.push(("NoGuestAgent", "no guest agent connected".into()));
                }
                None
            }
        };
        test_pause_at("quiesced").await;
        // Inside the quiesce: only the storage snapshots, all volumes at once, nothing that
        // waits on controllers.
        let took = Instant::now();
        let tasks: Vec<_> = volumes
            .iter()
            .map(|(v, claim)| {
                let handle = volume_snapshot_name(&uid, &v.name);
                let backend = self.backend.clone();
                let (ns2, claim2) = (ns.to_string(), claim.clone());
                let name = v.name.clone();
                tokio::task::spawn_blocking(move || (name, backend.take(&ns2, &claim2, &handle)))
            })
            .collect();
        let mut sizes = Vec::new();
        let mut err = None;
        for t in futures::future::join_all(tasks).await {
            match t {
                Ok((name, Ok(snap))) => sizes.push((name, snap.restore_size)),
                Ok((_, Err(e))) => err = err.or(Some(e)),
                Err(e) => err = err.or(Some(Error::internal(format!("snapshot task failed: {e}")))),
            }
        }
        tracing::debug!(volumes = volumes.len(), took = ?took.elapsed(), "storage snapshots taken");
        let mut cancelled = false;
        if let Some(delay) = test_delay() {
            let until = Instant::now() + delay;
            while Instant::now() < until {
                if self.cancelled(&key) {
                    cancelled = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let window = match quiesce {
            Some((q, method)) => {
                let w = q.end().await.map_err(TakeError::Other)?;
                self.metrics
                    .freeze_window_seconds
                    .get_or_create(&QuiesceLabel {
                        method: method.into(),
                    })
                    .observe(w.as_secs_f64());
                Some((method.to_string(), w))
            }
            None => None,
        };
        test_pause_at("thawed").await;
        if cancelled || (err.is_none() && self.cancelled(&key)) {
            return Err(TakeError::Cancelled);
        }
        if let Some(e) = err {
            return Err(TakeError::Other(e));
        }
        Ok(Taken {
            indications,
            window,
            sizes,
        })
    }
}

impl Reconciler for SnapshotReconciler {
    fn name(&self) -> &'static str {
        "vmsnapshot"
    }
    fn resource(&self) -> &'static Resource {
        snapshot_res()
    }
    fn watches(&self) -> Vec<(&'static Resource, crate::Mapper)> {
        // A VM that appears or is unlocked wakes the snapshots that name it.
        let store = self.ctx.store.clone();
        vec![(
            vm_res(),
            Arc::new(move |vm: &Value| {
                let all = meta::LabelSelector::default();
                let none = meta::FieldSelector::default();
                store
                    .list(snapshot_res(), Some(meta::namespace(vm)), &all, &none)
                    .map(|l| {
                        l.items
                            .iter()
                            .filter(|s| {
                                s["spec"]["source"]["name"].as_str() == Some(meta::name(vm))
                            })
                            .filter(|s| {
                                s["status"]["phase"] != "Succeeded"
                                    && s["status"]["phase"] != "Failed"
                            })
                            .map(|s| ObjectKey::of(s))
                            .collect()
                    })
                    .unwrap_or_default()
            }),
        )]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let Some(snap) =
                ignore_not_found(self.store().get(snapshot_res(), &key.namespace, &key.name))?
            else {
                return Ok(Action::AwaitChange);
            };
            if meta::is_deleting(&snap) {
                return self.finalize(&snap).await;
            }
            let snap = if !meta::has_finalizer(&snap, SNAPSHOT_FINALIZER) {
                update_with(self.store(), snapshot_res(), key, |o| {
                    meta::add_finalizer(o, SNAPSHOT_FINALIZER);
                })?
            } else {
                Arc::new((*snap).clone())
            };
            match snap["status"]["phase"].as_str() {
                Some("Succeeded") | Some("Failed") => {
                    self.unlock(&snap).await?;
                    return Ok(Action::AwaitChange);
                }
                _ => {}
            }
            if Self::past_deadline(&snap) {
                return self.fail(&snap, "snapshot deadline exceeded").await;
            }
            let retry = Duration::from_millis(500);
            let requeue = |d: Duration| {
                let left = Self::deadline(&snap)
                    .map(|dl| (dl - chrono::Utc::now()).to_std().unwrap_or_default());
                Action::Requeue(left.map_or(d, |l| d.min(l + Duration::from_millis(50))))
            };
            let ns = key.namespace.as_str();
            let vm_name = snap["spec"]["source"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            if snap["spec"]["source"]["kind"] != "VirtualMachine" {
                return self
                    .fail(&snap, "the source must be a kubevirt.io VirtualMachine")
                    .await;
            }
            let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, &vm_name))? else {
                self.progressing(
                    key,
                    "SourceDoesNotExist",
                    &format!("VirtualMachine {vm_name:?} does not exist"),
                )?;
                return Ok(requeue(Duration::from_secs(2)));
            };
            if meta::is_deleting(&vm) {
                return self
                    .fail(
                        &snap,
                        &format!("VirtualMachine {vm_name:?} is being deleted"),
                    )
                    .await;
            }
            // Lock: one snapshot at a time per VM, and only while no restore runs.
            let holder = vm["status"]["snapshotInProgress"]
                .as_str()
                .map(String::from);
            if holder.as_deref() != Some(key.name.as_str()) {
                if let Some(other) = holder {
                    let other_live =
                        ignore_not_found(self.store().get(snapshot_res(), ns, &other))?
                            .is_some_and(|o| {
                                o["status"]["phase"] != "Succeeded"
                                    && o["status"]["phase"] != "Failed"
                            });
                    if other_live {
                        self.progressing(
                            key,
                            "SourceLocked",
                            &format!("waiting for snapshot {other:?} of the same VM to finish"),
                        )?;
                        return Ok(requeue(retry));
                    }
                }
                if let Some(r) = vm["status"]["restoreInProgress"].as_str() {
                    self.progressing(
                        key,
                        "RestoreInProgress",
                        &format!("waiting for restore {r:?} of the VM to finish"),
                    )?;
                    return Ok(requeue(retry));
                }
                // Volumes must be bound before the spec is frozen into the content.
                for v in vm_volumes(&vm["spec"]) {
                    if let Some(c) = &v.claim {
                        let bound = ignore_not_found(self.store().get(pvc_res(), ns, c))?
                            .is_some_and(|p| p["status"]["phase"] == "Bound");
                        if !bound {
                            self.progressing(
                                key,
                                "VolumesNotBound",
                                &format!("waiting for claim {c:?} to be Bound"),
                            )?;
                            return Ok(requeue(retry));
                        }
                    }
                }
                let vkey = ObjectKey::new(ns, &vm_name);
                update_with(self.store(), vm_res(), &vkey, |o| {
                    meta::add_finalizer(o, SOURCE_FINALIZER);
                })?;
                let name = key.name.clone();
                let mut won = false;
                update_status_with(self.store(), vm_res(), &vkey, |o| {
                    won = o["status"]["snapshotInProgress"].is_null()
                        || o["status"]["snapshotInProgress"] == name.as_str();
                    if won {
                        o["status"]["snapshotInProgress"] = json!(name);
                    }
                })?;
                if !won {
                    return Ok(requeue(retry));
                }
                test_pause_at("locked").await;
            }
            let vm = self.store().get(vm_res(), ns, &vm_name)?;

            // The content records the VM as it is now, and which volumes are included.
            let cname = content_name(&snap);
            let content = match ignore_not_found(self.store().get(content_res(), ns, &cname))? {
                Some(c) => {
                    // A restart between creating the content and recording it here leaves the
                    // status short: it is rebuilt from the content.
                    if snap["status"]["virtualMachineSnapshotContentName"].is_null() {
                        self.record_content(key, &c)?;
                    }
                    c
                }
                None => {
                    let mut included = Vec::new();
                    let mut excluded = Vec::new();
                    let mut backups = Vec::new();
                    let mut statuses = Vec::new();
                    for v in vm_volumes(&vm["spec"]) {
                        let Some(claim) = v.claim.clone() else {
                            excluded.push(v.name.clone());
                            statuses.push(json!({"name": v.name, "enabled": false, "reason": format!("{} volumes are not snapshotted", v.kind)}));
                            continue;
                        };
                        let pvc = self.store().get(pvc_res(), ns, &claim)?;
                        let elig = self.backend.eligibility(ns, &claim)?;
                        let mut backup = json!({
                            "volumeName": v.name,
                            "persistentVolumeClaim": {
                                "metadata": {
                                    "name": claim,
                                    "namespace": ns,
                                    "labels": pvc["metadata"]["labels"],
                                    "annotations": pvc["metadata"]["annotations"],
                                },
                                "spec": pvc["spec"],
                            },
                        });
                        match elig {
                            Eligibility::Yes { .. } => {
                                backup["volumeSnapshotName"] =
                                    json!(volume_snapshot_name(meta::uid(&snap), &v.name));
                                included.push(v.name.clone());
                                statuses.push(json!({"name": v.name, "enabled": true}));
                            }
                            Eligibility::No { reason } => {
                                excluded.push(v.name.clone());
                                statuses.push(
                                    json!({"name": v.name, "enabled": false, "reason": reason}),
                                );
                            }
                        }
                        backups.push(backup);
                    }
                    let source_vm = json!({
                        "metadata": {
                            "name": meta::name(&vm),
                            "namespace": ns,
                            "uid": meta::uid(&vm),
                            "generation": vm["metadata"]["generation"],
                            "labels": vm["metadata"]["labels"],
                            "annotations": vm["metadata"]["annotations"],
                        },
                        "spec": vm["spec"],
                    });
                    let mut c = json!({
                        "apiVersion": "snapshot.kubevirt.io/v1beta1",
                        "kind": "VirtualMachineSnapshotContent",
                        "metadata": {"name": cname, "namespace": ns, "finalizers": [CONTENT_FINALIZER]},
                        "spec": {
                            "virtualMachineSnapshotName": key.name,
                            "source": {"virtualMachine": source_vm},
                            "volumeBackups": backups,
                        },
                    });
                    if snap["spec"]["deletionPolicy"] != "Retain" {
                        meta::set_owner(&mut c, &snap);
                    }
                    let c = api::admit(content_res(), c, api::FieldValidation::Ignore)?.object;
                    let created = match self.store().create(content_res(), c) {
                        Ok(c) => c,
                        Err(e) if e.is(ErrorKind::AlreadyExists) => {
                            self.store().get(content_res(), ns, &cname)?
                        }
                        Err(e) => return Err(e),
                    };
                    test_pause_at("content-stored").await;
                    let (inc, exc) = (included.clone(), excluded.clone());
                    let vm_uid = meta::uid(&vm).to_string();
                    update_status_with(self.store(), snapshot_res(), key, |o| {
                        o["status"]["phase"] = json!("InProgress");
                        o["status"]["readyToUse"] = json!(false);
                        o["status"]["sourceUID"] = json!(vm_uid);
                        o["status"]["virtualMachineSnapshotContentName"] = json!(cname);
                        o["status"]["snapshotVolumes"] =
                            json!({"includedVolumes": inc, "excludedVolumes": exc});
                        set_condition(
                            o,
                            "Progressing",
                            true,
                            "InProgress",
                            "Source locked and operation in progress",
                        );
                        set_condition(o, "Ready", false, "InProgress", "Not ready");
                    })?;
                    update_status_with(
                        self.store(),
                        vm_res(),
                        &ObjectKey::new(ns, &vm_name),
                        |o| {
                            o["status"]["volumeSnapshotStatuses"] = json!(statuses);
                        },
                    )?;
                    if !excluded.is_empty() {
                        self.ctx.recorder.record(
                            &snap,
                            EventType::Warning,
                            "VolumesExcluded",
                            &format!("volumes {excluded:?} cannot be snapshotted and keep their live data on restore"),
                        );
                    }
                    test_pause_at("content-created").await;
                    created
                }
            };

            if content["status"]["readyToUse"] != true {
                let mut volumes = Vec::new();
                for b in content["spec"]["volumeBackups"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if b["volumeSnapshotName"].is_string() {
                        let v = VmVolume {
                            name: b["volumeName"].as_str().unwrap_or("").into(),
                            claim: None,
                            kind: String::new(),
                        };
                        volumes.push((
                            v,
                            b["persistentVolumeClaim"]["metadata"]["name"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        ));
                    }
                }
                let taken = match self.take(&snap, &vm, &volumes).await {
                    Ok(t) => t,
                    Err(TakeError::Cancelled) => return Ok(Action::Requeue(Duration::ZERO)),
                    Err(TakeError::Quiesce(e)) => {
                        let msg = format!("failed to freeze the guest: {}", e.message);
                        let now = meta::now_rfc3339();
                        update_status_with(self.store(), snapshot_res(), key, |o| {
                            o["status"]["error"] = json!({"time": now, "message": msg});
                            set_condition(o, "Progressing", true, "QuiesceFailed", &msg);
                        })?;
                        return Ok(requeue(Duration::from_secs(5)));
                    }
                    Err(TakeError::Other(e)) => {
                        return self
                            .fail(
                                &snap,
                                &format!("taking the volume snapshots failed: {}", e.message),
                            )
                            .await
                    }
                };
                for (v, claim) in &volumes {
                    let vs = volume_snapshot_name(meta::uid(&snap), &v.name);
                    let size = taken
                        .sizes
                        .iter()
                        .find(|(n, _)| *n == v.name)
                        .map(|(_, s)| *s)
                        .unwrap_or(0);
                    self.backend.publish(ns, claim, &vs, size, &content)?;
                }
                test_pause_at("published").await;
                let now = meta::now_rfc3339();
                let vstatus: Vec<Value> = volumes
                    .iter()
                    .map(|(v, _)| json!({"volumeSnapshotName": volume_snapshot_name(meta::uid(&snap), &v.name), "readyToUse": true, "creationTime": now}))
                    .collect();
                update_status_with(self.store(), content_res(), &ObjectKey::of(&content), |o| {
                    o["status"] = json!({"readyToUse": true, "creationTime": now, "volumeSnapshotStatus": vstatus});
                })?;
                let inds: Vec<&str> = taken.indications.iter().map(|(i, _)| *i).collect();
                let src_inds: Vec<Value> = taken
                    .indications
                    .iter()
                    .map(|(i, m)| json!({"indication": i, "message": m}))
                    .collect();
                let window = taken.window.clone();
                update_status_with(self.store(), snapshot_res(), key, |o| {
                    o["status"]["indications"] = json!(inds);
                    o["status"]["sourceIndications"] = json!(src_inds);
                    o["status"]["creationTime"] = json!(now);
                    if let Some((method, w)) = &window {
                        o["status"]["freezeWindow"] =
                            json!(format!("{:.1}ms", w.as_secs_f64() * 1000.0));
                        o["status"]["quiesce"] = json!({"method": method, "windowMillis": (w.as_secs_f64() * 1e4).round() / 10.0});
                    }
                })?;
                let msg = match &taken.window {
                    Some((m, w)) => format!(
                        "snapshot taken; guest held by {m} for {:.1} ms",
                        w.as_secs_f64() * 1000.0
                    ),
                    None => "snapshot taken".to_string(),
                };
                self.ctx
                    .recorder
                    .record(&snap, EventType::Normal, "SnapshotTaken", &msg);
            }
            let created = super::restore::age(&snap);
            // Unlock first: whoever sees Ready may change the VM right away.
            self.unlock(&snap).await?;
            update_status_with(self.store(), snapshot_res(), key, |o| {
                o["status"]["phase"] = json!("Succeeded");
                o["status"]["readyToUse"] = json!(true);
                if let Some(s) = o["status"].as_object_mut() {
                    s.remove("error");
                }
                set_condition(o, "Progressing", false, "Succeeded", "Operation complete");
                set_condition(o, "Ready", true, "Succeeded", "Operation complete");
            })?;
            self.metrics
                .snapshots
                .get_or_create(&metrics::result("succeeded"))
                .inc();
            self.metrics.snapshot_seconds.observe(created.as_secs_f64());
            Ok(Action::AwaitChange)
        })
    }
}
