//! VirtualMachineRestore: restore a VM (existing or new) from a snapshot. Restored claims are
//! new volumes made from the volume snapshots (O(1) on CoW drivers); the VM spec becomes the
//! snapshot's, re-pointed at them. Beyond KubeVirt, the claims the restore replaced are
//! deleted once nothing references them, so restores do not leak storage.

use super::*;
use crate::context::Context;
use crate::events::EventType;
use crate::metrics::{self, Metrics};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, ObjectKey, Reconciler,
};
use crate::snapshot::vmsnapshot::{content_res, pvc_res, snapshot_res, vm_res, vm_volumes};
use api::registry::{by_plural, Resource};
use api::{meta, set_condition};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub fn restore_res() -> &'static Resource {
    by_plural("snapshot.kubevirt.io", "virtualmachinerestores").expect("registered")
}
fn vmi_res() -> &'static Resource {
    by_plural("kubevirt.io", "virtualmachineinstances").expect("registered")
}

/// Marks a VM this restore created, so the source-UID check lets it restore onto it again.
pub const CREATED_BY_RESTORE: &str = "vmsnap.io/created-by-restore";
const GRACE: Duration = Duration::from_secs(300);

pub struct RestoreReconciler {
    pub ctx: Context,
    pub guest: Arc<dyn GuestControl>,
    pub metrics: Arc<Metrics>,
}

fn restore_uid_value(r: &Value) -> String {
    format!("{}-{}", meta::name(r), meta::uid(r))
}

/// Time since the object was created.
pub(crate) fn age(obj: &Value) -> Duration {
    chrono::DateTime::parse_from_rfc3339(
        obj["metadata"]["creationTimestamp"].as_str().unwrap_or(""),
    )
    .map(|t| {
        (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
            .to_std()
            .unwrap_or_default()
    })
    .unwrap_or_default()
}

/// Every path a JSON patch writes or reads from (`from` of move and copy included).
fn patch_paths(patch: &json_patch::Patch) -> Vec<String> {
    let mut out = Vec::new();
    for op in &patch.0 {
        out.push(op.path().as_str().to_string());
        match op {
            json_patch::PatchOperation::Move(m) => out.push(m.from.as_str().to_string()),
            json_patch::PatchOperation::Copy(c) => out.push(c.from.as_str().to_string()),
            _ => {}
        }
    }
    out
}

/// KubeVirt's rule for restore patches: `/spec/...`, `/metadata/labels/...` and
/// `/metadata/annotations/...` only.
fn patch_path_allowed(path: &str) -> bool {
    ["/spec/", "/metadata/labels/", "/metadata/annotations/"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// Claims a VM spec refers to.
pub fn claims_of(spec: &Value) -> BTreeSet<String> {
    vm_volumes(spec)
        .into_iter()
        .filter_map(|v| v.claim)
        .collect()
}

/// True when any VM (running or not) or VMI in the namespace refers to the claim; unlike
/// `storage::util::claim_in_use`, a stopped VM counts, since its disk must survive.
fn claim_referenced(store: &dyn store::Store, ns: &str, claim: &str) -> api::Result<bool> {
    let all = meta::LabelSelector::default();
    let none = meta::FieldSelector::default();
    for vm in store.list(vm_res(), Some(ns), &all, &none)?.items {
        if claims_of(&vm["spec"]).contains(claim) {
            return Ok(true);
        }
    }
    for vmi in store.list(vmi_res(), Some(ns), &all, &none)?.items {
        let spec = json!({"template": {"spec": vmi["spec"]}});
        if claims_of(&spec).contains(claim) {
            return Ok(true);
        }
    }
    Ok(false)
}

impl RestoreReconciler {
    fn store(&self) -> &dyn store::Store {
        self.ctx.store.as_ref()
    }

    fn unlock(&self, r: &Value) -> api::Result<()> {
        let ns = meta::namespace(r);
        let target = r["spec"]["target"]["name"].as_str().unwrap_or("");
        if let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, target))? {
            if vm["status"]["restoreInProgress"].as_str() == Some(meta::name(r)) {
                update_status_with(self.store(), vm_res(), &ObjectKey::new(ns, target), |o| {
                    if o["status"]["restoreInProgress"].as_str() == Some(meta::name(r)) {
                        if let Some(s) = o["status"].as_object_mut() {
                            s.remove("restoreInProgress");
                        }
                    }
                })?;
            }
        }
        Ok(())
    }

    fn fail(&self, r: &Value, message: &str) -> api::Result<Action> {
        let key = ObjectKey::of(r);
        update_status_with(self.store(), restore_res(), &key, |o| {
            o["status"]["complete"] = json!(false);
            set_condition(o, "Progressing", false, "Failed", message);
            set_condition(o, "Ready", false, "Failed", message);
            set_condition(o, "Failure", true, "Failed", message);
        })?;
        self.unlock(r)?;
        self.metrics
            .restores
            .get_or_create(&metrics::result("failed"))
            .inc();
        self.ctx
            .recorder
            .record(r, EventType::Warning, "RestoreFailed", message);
        Ok(Action::AwaitChange)
    }

    fn progressing(&self, key: &ObjectKey, reason: &str, message: &str) -> api::Result<()> {
        update_status_with(self.store(), restore_res(), key, |o| {
            if o["status"]["complete"].is_null() {
                o["status"]["complete"] = json!(false);
            }
            set_condition(o, "Progressing", true, reason, message);
            set_condition(o, "Ready", false, reason, message);
        })?;
        Ok(())
    }

    /// Deletes the claims a completed restore replaced, once no VM or VMI uses them.
    fn reclaim(&self, r: &Value) -> api::Result<Action> {
        let ns = meta::namespace(r);
        let mut pending = false;
        let mut changed = Vec::new();
        for e in r["status"]["replacedVolumes"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if e["reclaimed"] == true {
                continue;
            }
            let claim = e["claimName"].as_str().unwrap_or("");
            if claim_referenced(self.store(), ns, claim)? {
                pending = true;
                continue;
            }
            match ignore_not_found(self.store().get(pvc_res(), ns, claim))? {
                Some(p) => {
                    self.delete_owning_dv(ns, &p)?;
                    if !meta::is_deleting(&p) {
                        self.store()
                            .delete(pvc_res(), ns, claim, &Default::default())?;
                        self.ctx.recorder.record(
                            r,
                            EventType::Normal,
                            "VolumeReclaimed",
                            &format!("deleting claim {claim:?}, which the restore replaced"),
                        );
                    }
                    pending = true;
                }
                None => changed.push(claim.to_string()),
            }
        }
        if !changed.is_empty() {
            update_status_with(self.store(), restore_res(), &ObjectKey::of(r), |o| {
                for e in o["status"]["replacedVolumes"]
                    .as_array_mut()
                    .into_iter()
                    .flatten()
                {
                    if e["claimName"]
                        .as_str()
                        .is_some_and(|c| changed.iter().any(|x| x == c))
                    {
                        e["reclaimed"] = json!(true);
                    }
                }
            })?;
        }
        Ok(if pending {
            Action::Requeue(Duration::from_millis(500))
        } else {
            Action::AwaitChange
        })
    }

    /// A claim made by a DataVolume goes with it, or the DataVolume would stay behind
    /// describing a volume that no longer exists.
    fn delete_owning_dv(&self, ns: &str, pvc: &Value) -> api::Result<()> {
        let owner = pvc["metadata"]["ownerReferences"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["kind"] == "DataVolume"))
            .and_then(|r| r["name"].as_str());
        if let Some(dv) = owner {
            let dvres = by_plural("cdi.kubevirt.io", "datavolumes").expect("registered");
            if let Some(d) = ignore_not_found(self.store().get(dvres, ns, dv))? {
                if !meta::is_deleting(&d) {
                    self.store().delete(dvres, ns, dv, &Default::default())?;
                }
            }
        }
        Ok(())
    }

    async fn target_running(&self, ns: &str, name: &str) -> api::Result<bool> {
        if ignore_not_found(self.store().get(vmi_res(), ns, name))?.is_some() {
            return Ok(true);
        }
        Ok(self.guest.state(ns, name).await != GuestState::Stopped)
    }
}

impl Reconciler for RestoreReconciler {
    fn name(&self) -> &'static str {
        "vmrestore"
    }
    fn resource(&self) -> &'static Resource {
        restore_res()
    }
    fn watches(&self) -> Vec<(&'static Resource, crate::Mapper)> {
        // Claims binding, VMs stopping and snapshots becoming ready all move restores on.
        let store = self.ctx.store.clone();
        let by_ns = move |obj: &Value| -> Vec<ObjectKey> {
            let all = meta::LabelSelector::default();
            let none = meta::FieldSelector::default();
            store
                .list(restore_res(), Some(meta::namespace(obj)), &all, &none)
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|r| {
                            r["status"]["complete"] != true
                                || r["status"]["replacedVolumes"].is_array()
                        })
                        .map(|r| ObjectKey::of(r))
                        .collect()
                })
                .unwrap_or_default()
        };
        let f: crate::Mapper = Arc::new(by_ns);
        vec![
            (pvc_res(), f.clone()),
            (vm_res(), f.clone()),
            (vmi_res(), f.clone()),
            (snapshot_res(), f),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let Some(r) =
                ignore_not_found(self.store().get(restore_res(), &key.namespace, &key.name))?
            else {
                return Ok(Action::AwaitChange);
            };
            if meta::is_deleting(&r) {
                if r["status"]["complete"] != true {
                    self.unlock(&r)?;
                }
                update_with(self.store(), restore_res(), key, |o| {
                    meta::remove_finalizer(o, RESTORE_FINALIZER);
                })?;
                return Ok(Action::AwaitChange);
            }
            if !meta::has_finalizer(&r, RESTORE_FINALIZER) {
                update_with(self.store(), restore_res(), key, |o| {
                    meta::add_finalizer(o, RESTORE_FINALIZER);
                })?;
            }
            if r["status"]["complete"] == true {
                return self.reclaim(&r);
            }
            if api::condition(&r, "Failure") == Some(true) {
                self.unlock(&r)?;
                return Ok(Action::AwaitChange);
            }
            let ns = key.namespace.as_str();
            let rid = restore_uid_value(&r);
            let snap_name = r["spec"]["virtualMachineSnapshotName"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let Some(snap) = ignore_not_found(self.store().get(snapshot_res(), ns, &snap_name))?
            else {
                self.progressing(
                    key,
                    "SnapshotNotFound",
                    &format!("VirtualMachineSnapshot {snap_name:?} does not exist"),
                )?;
                return Ok(Action::Requeue(Duration::from_secs(1)));
            };
            if snap["status"]["readyToUse"] != true {
                if snap["status"]["phase"] == "Failed" {
                    return self.fail(
                        &r,
                        &format!(
                            "VirtualMachineSnapshot {snap_name:?} failed and cannot be restored"
                        ),
                    );
                }
                self.progressing(
                    key,
                    "SnapshotNotReady",
                    &format!("waiting for VirtualMachineSnapshot {snap_name:?} to be ready"),
                )?;
                return Ok(Action::Requeue(Duration::from_millis(500)));
            }
            let cname = snap["status"]["virtualMachineSnapshotContentName"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let content = self.store().get(content_res(), ns, &cname)?;
            let source = &content["spec"]["source"]["virtualMachine"];
            let target_name = r["spec"]["target"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let target = ignore_not_found(self.store().get(vm_res(), ns, &target_name))?;
            let policy = r["spec"]["targetReadinessPolicy"]
                .as_str()
                .unwrap_or("WaitGracePeriod")
                .to_string();

            if let Some(t) = &target {
                let ours = meta::annotation(t, CREATED_BY_RESTORE).is_some();
                if meta::uid(t) != source["metadata"]["uid"].as_str().unwrap_or("") && !ours {
                    return self.fail(&r, &format!(
                        "VirtualMachine {target_name:?} is not the source of snapshot {snap_name:?} (UID {} differs from {}); restore into a new VM name instead",
                        meta::uid(t), source["metadata"]["uid"].as_str().unwrap_or("")
                    ));
                }
                if let Some(other) = t["status"]["restoreInProgress"]
                    .as_str()
                    .filter(|o| *o != key.name)
                {
                    let live = ignore_not_found(self.store().get(restore_res(), ns, other))?
                        .is_some_and(|o| {
                            o["status"]["complete"] != true
                                && api::condition(&o, "Failure") != Some(true)
                        });
                    if live {
                        return self.fail(
                            &r,
                            &format!("restore {other:?} of the same VM is still in progress"),
                        );
                    }
                }
                if let Some(s) = t["status"]["snapshotInProgress"].as_str() {
                    self.progressing(
                        key,
                        "SnapshotInProgress",
                        &format!("waiting for snapshot {s:?} of the target to finish"),
                    )?;
                    return Ok(Action::Requeue(Duration::from_millis(500)));
                }
                if self.target_running(ns, &target_name).await? {
                    match policy.as_str() {
                        "FailImmediate" => return self.fail(
                            &r,
                            "the target VM is running and targetReadinessPolicy is FailImmediate",
                        ),
                        "StopTarget" => {
                            self.guest.stop(ns, &target_name).await?;
                            self.progressing(
                                key,
                                "StoppingTarget",
                                "stopping the target VM (targetReadinessPolicy StopTarget)",
                            )?;
                            return Ok(Action::Requeue(Duration::from_millis(300)));
                        }
                        "WaitEventually" => {
                            self.progressing(
                                key,
                                "WaitingForTarget",
                                "waiting for the target VM to be stopped",
                            )?;
                            return Ok(Action::Requeue(Duration::from_secs(1)));
                        }
                        _ => {
                            if age(&r) > GRACE {
                                return self.fail(
                                    &r,
                                    "the target VM was not stopped within the 5m grace period",
                                );
                            }
                            self.progressing(
                                key,
                                "WaitingForTarget",
                                "waiting up to 5m for the target VM to be stopped",
                            )?;
                            return Ok(Action::Requeue(Duration::from_secs(1)));
                        }
                    }
                }
                // Lock the target; record what it used so replaced volumes can be reclaimed.
                if t["status"]["restoreInProgress"].as_str() != Some(key.name.as_str()) {
                    let old_claims: Vec<String> = claims_of(&t["spec"]).into_iter().collect();
                    let old_volumes: Vec<Value> = vm_volumes(&t["spec"])
                        .into_iter()
                        .filter_map(|v| {
                            v.claim
                                .map(|c| json!({"volumeName": v.name, "claimName": c}))
                        })
                        .collect();
                    update_status_with(self.store(), restore_res(), key, |o| {
                        if o["status"]["previousClaims"].is_null() {
                            o["status"]["previousClaims"] = json!(old_claims);
                            o["status"]["previousVolumes"] = json!(old_volumes);
                        }
                    })?;
                    update_status_with(
                        self.store(),
                        vm_res(),
                        &ObjectKey::new(ns, &target_name),
                        |o| {
                            o["status"]["restoreInProgress"] = json!(key.name);
                        },
                    )?;
                    test_pause_at("restore-locked").await;
                }
            }
            self.progressing(key, "RestoreInProgress", "restoring volumes")?;

            // Restored claims.
            let vpolicy = r["spec"]["volumeRestorePolicy"]
                .as_str()
                .unwrap_or("RandomizeNames")
                .to_string();
            let overrides = r["spec"]["volumeRestoreOverrides"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let mut restores = Vec::new();
            let mut all_bound = true;
            for b in content["spec"]["volumeBackups"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let Some(vs) = b["volumeSnapshotName"].as_str() else {
                    continue;
                };
                let vol = b["volumeName"].as_str().unwrap_or("");
                let orig = &b["persistentVolumeClaim"];
                let orig_name = orig["metadata"]["name"].as_str().unwrap_or("");
                let ov = overrides.iter().find(|o| o["volumeName"] == vol);
                let claim = match (ov.and_then(|o| o["restoreName"].as_str()), vpolicy.as_str()) {
                    (Some(n), _) => n.to_string(),
                    (None, "InPlace") => orig_name.to_string(),
                    (None, "PrefixTargetName") => format!("{target_name}-{vol}"),
                    _ => format!("restore-{}-{}", meta::uid(&r), vol),
                };
                if let Some(e) = api::meta::validate_subdomain(&claim) {
                    return self.fail(
                        &r,
                        &format!("restored claim name {claim:?} is invalid: {e}"),
                    );
                }
                let existing = ignore_not_found(self.store().get(pvc_res(), ns, &claim))?;
                let ours = existing.as_ref().is_some_and(|p| {
                    meta::annotation(p, LAST_RESTORE_ANNOTATION) == Some(rid.as_str())
                });
                if let Some(p) = existing.as_ref().filter(|_| !ours) {
                    if vpolicy == "InPlace" && claim == orig_name {
                        // InPlace: the original claim goes first; its snapshots stay usable.
                        self.delete_owning_dv(ns, p)?;
                        if !meta::is_deleting(p) {
                            self.store()
                                .delete(pvc_res(), ns, &claim, &Default::default())?;
                        }
                        all_bound = false;
                        continue;
                    }
                    return self.fail(&r, &format!("claim {claim:?} already exists; choose another name with volumeRestoreOverrides"));
                }
                if existing.is_none() {
                    let vsobj = self.store().get(
                        by_plural("snapshot.storage.k8s.io", "volumesnapshots")
                            .expect("registered"),
                        ns,
                        vs,
                    )?;
                    let restore_size = vsobj["status"]["restoreSize"]
                        .as_str()
                        .and_then(api::types::parse_quantity)
                        .or_else(|| vsobj["status"]["restoreSize"].as_u64())
                        .unwrap_or(0);
                    let orig_size = orig["spec"]["resources"]["requests"]["storage"]
                        .as_str()
                        .and_then(api::types::parse_quantity)
                        .unwrap_or(0);
                    let size = orig_size.max(restore_size);
                    let mut labels = orig["metadata"]["labels"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    labels.insert(
                        SOURCE_VM_NAME_LABEL.into(),
                        json!(source["metadata"]["name"]),
                    );
                    labels.insert(SOURCE_VM_NAMESPACE_LABEL.into(), json!(ns));
                    let mut annotations = orig["metadata"]["annotations"]
                        .as_object()
                        .cloned()
                        .unwrap_or_default();
                    annotations.retain(|k, _| {
                        !k.starts_with("pv.kubernetes.io/") && !k.starts_with("volume.")
                    });
                    annotations.insert(LAST_RESTORE_ANNOTATION.into(), json!(rid));
                    if let Some(o) = ov {
                        for (k, v) in o["labels"].as_object().into_iter().flatten() {
                            labels.insert(k.clone(), v.clone());
                        }
                        for (k, v) in o["annotations"].as_object().into_iter().flatten() {
                            annotations.insert(k.clone(), v.clone());
                        }
                    }
                    let mut spec = json!({
                        "accessModes": orig["spec"]["accessModes"],
                        "resources": {"requests": {"storage": size.to_string()}},
                        "dataSource": {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": vs},
                    });
                    for f in ["storageClassName", "volumeMode"] {
                        if !orig["spec"][f].is_null() {
                            spec[f] = orig["spec"][f].clone();
                        }
                    }
                    let pvc = json!({
                        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": ns, "labels": labels, "annotations": annotations},
                        "spec": spec,
                    });
                    let pvc = api::admit(pvc_res(), pvc, api::FieldValidation::Ignore)?.object;
                    match self.store().create(pvc_res(), pvc) {
                        Ok(_) => {}
                        Err(e) if e.is(api::ErrorKind::AlreadyExists) => {}
                        Err(e) => return Err(e),
                    }
                    all_bound = false;
                } else if existing
                    .as_ref()
                    .is_some_and(|p| p["status"]["phase"] != "Bound")
                {
                    all_bound = false;
                    if let Some(msg) = existing.as_ref().and_then(|p| {
                        p["status"]["conditions"]
                            .as_array()
                            .and_then(|c| c.iter().find(|c| c["type"] == "ProvisioningFailed"))
                            .and_then(|c| c["message"].as_str())
                    }) {
                        return self.fail(&r, &format!("restoring volume {vol:?} failed: {msg}"));
                    }
                }
                restores.push(json!({"volumeName": vol, "persistentVolumeClaim": claim, "volumeSnapshotName": vs}));
            }
            let rs = restores.clone();
            update_status_with(self.store(), restore_res(), key, |o| {
                o["status"]["restores"] = json!(rs);
            })?;
            test_pause_at("restore-claims-created").await;
            if !all_bound {
                return Ok(Action::Requeue(Duration::from_millis(100)));
            }

            // The new VM spec: the snapshot's, with restored volumes re-pointed.
            let mut spec = source["spec"].clone();
            let mut deleted_dvs = Vec::new();
            if let Some(vols) = spec["template"]["spec"]["volumes"].as_array_mut() {
                for v in vols.iter_mut() {
                    let name = v["name"].as_str().unwrap_or("").to_string();
                    if let Some(rest) = restores.iter().find(|x| x["volumeName"] == name.as_str()) {
                        if let Some(dv) = v["dataVolume"]["name"].as_str() {
                            deleted_dvs.push(dv.to_string());
                        }
                        *v = json!({"name": name, "persistentVolumeClaim": {"claimName": rest["persistentVolumeClaim"]}});
                    }
                }
            }
            if let Some(tpls) = spec["dataVolumeTemplates"].as_array_mut() {
                tpls.retain(|t| {
                    !deleted_dvs
                        .iter()
                        .any(|d| t["metadata"]["name"] == d.as_str())
                });
            }
            if spec["dataVolumeTemplates"]
                .as_array()
                .is_some_and(|a| a.is_empty())
            {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("dataVolumeTemplates");
                }
            }
            match &target {
                Some(t) => {
                    // The target keeps its run state: a restore never starts a VM by itself.
                    for f in ["running", "runStrategy"] {
                        match t["spec"].get(f) {
                            Some(v) if !v.is_null() => spec[f] = v.clone(),
                            _ => {
                                if let Some(m) = spec.as_object_mut() {
                                    m.remove(f);
                                }
                            }
                        }
                    }
                    let rid2 = rid.clone();
                    update_with(
                        self.store(),
                        vm_res(),
                        &ObjectKey::new(ns, &target_name),
                        |o| {
                            o["spec"] = spec.clone();
                            meta::set_annotation(o, LAST_RESTORE_ANNOTATION, &rid2);
                        },
                    )?;
                }
                None => {
                    if let Some(m) = spec.as_object_mut() {
                        m.remove("running");
                    }
                    spec["runStrategy"] = json!("Halted");
                    let mut vm = json!({
                        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                        "metadata": {
                            "name": target_name, "namespace": ns,
                            "labels": source["metadata"]["labels"],
                            "annotations": source["metadata"]["annotations"],
                        },
                        "spec": spec,
                    });
                    meta::set_annotation(&mut vm, LAST_RESTORE_ANNOTATION, &rid);
                    meta::set_annotation(&mut vm, CREATED_BY_RESTORE, meta::uid(&r));
                    for p in r["spec"]["patches"].as_array().into_iter().flatten() {
                        let Some(text) = p.as_str() else { continue };
                        let patch = match parse_patch(text) {
                            Ok(p) => p,
                            Err(e) => return self.fail(&r, &e),
                        };
                        if let Some(bad) = patch_paths(&patch)
                            .into_iter()
                            .find(|p| !patch_path_allowed(p))
                        {
                            return self.fail(&r, &format!(
                                "patch {text:?} touches {bad:?}: restore patches may only change /spec/... and /metadata/labels or /metadata/annotations"
                            ));
                        }
                        if let Err(e) = json_patch::patch(&mut vm, &patch) {
                            return self
                                .fail(&r, &format!("patch {text:?} could not be applied: {e}"));
                        }
                    }
                    let vm = match api::admit(vm_res(), vm, api::FieldValidation::Strict) {
                        Ok(a) => a.object,
                        Err(e) => {
                            return self
                                .fail(&r, &format!("the restored VM is invalid: {}", e.message))
                        }
                    };
                    match self.store().create(vm_res(), vm) {
                        Ok(_) => {}
                        Err(e) if e.is(api::ErrorKind::AlreadyExists) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            test_pause_at("restore-vm-updated").await;

            let new_claims: BTreeSet<String> = restores
                .iter()
                .filter_map(|x| x["persistentVolumeClaim"].as_str().map(String::from))
                .collect();
            // (volume, claim) pairs the target used before; objects older than
            // `previousVolumes` only recorded the claims.
            let previous: Vec<(Option<String>, String)> =
                ignore_not_found(self.store().get(restore_res(), ns, &key.name))?
                    .map(|cur| match cur["status"]["previousVolumes"].as_array() {
                        Some(a) => a
                            .iter()
                            .filter_map(|v| {
                                Some((
                                    v["volumeName"].as_str().map(String::from),
                                    v["claimName"].as_str()?.to_string(),
                                ))
                            })
                            .collect(),
                        None => cur["status"]["previousClaims"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|c| c.as_str().map(|c| (None, c.to_string())))
                            .collect(),
                    })
                    .unwrap_or_default();
            let final_spec = self.store().get(vm_res(), ns, &target_name)?;
            let now_used = claims_of(&final_spec["spec"]);
            let restored_volumes: BTreeSet<&str> = restores
                .iter()
                .filter_map(|x| x["volumeName"].as_str())
                .collect();
            // A claim is replaced when its volume now uses a restored copy: it is reclaimed. A
            // disk added after the snapshot only leaves the VM; its data exists nowhere else, so
            // its claim is kept (and reported).
            let mut replaced = Vec::new();
            let mut detached = Vec::new();
            for (vol, claim) in &previous {
                if now_used.contains(claim) || new_claims.contains(claim) {
                    continue;
                }
                match vol {
                    Some(v) if !restored_volumes.contains(v.as_str()) => {
                        detached.push(json!({"volumeName": v, "claimName": claim}));
                    }
                    _ => replaced.push(json!({"claimName": claim, "reclaimed": false})),
                }
            }
            for d in &detached {
                self.ctx.recorder.record(
                    &r,
                    EventType::Normal,
                    "VolumeDetached",
                    &format!(
                        "volume {} is not in snapshot {snap_name:?}: it left the VM and its claim {} is kept",
                        d["volumeName"], d["claimName"]
                    ),
                );
            }
            let now = meta::now_rfc3339();
            let took = age(&r);
            update_status_with(self.store(), restore_res(), key, |o| {
                o["status"]["complete"] = json!(true);
                o["status"]["restoreTime"] = json!(now);
                o["status"]["deletedDataVolumes"] = json!(deleted_dvs);
                if !replaced.is_empty() {
                    o["status"]["replacedVolumes"] = json!(replaced);
                }
                if !detached.is_empty() {
                    o["status"]["detachedVolumes"] = json!(detached);
                }
                set_condition(o, "Progressing", false, "Succeeded", "Operation complete");
                set_condition(o, "Ready", true, "Succeeded", "Operation complete");
            })?;
            self.unlock(&r)?;
            self.metrics
                .restores
                .get_or_create(&metrics::result("succeeded"))
                .inc();
            self.metrics.restore_seconds.observe(took.as_secs_f64());
            self.ctx.recorder.record(
                &r,
                EventType::Normal,
                "RestoreComplete",
                &format!("VirtualMachine {target_name:?} restored from {snap_name:?}"),
            );
            Ok(Action::Requeue(Duration::ZERO))
        })
    }
}
