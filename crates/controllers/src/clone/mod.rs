//! VirtualMachineClone (clone.kubevirt.io). With snapshot-capable storage it follows KubeVirt:
//! a temporary snapshot, a temporary restore into the new VM with identity patches, cleanup.
//! When a volume's storage cannot snapshot (seed 004's CDI fallback), the same API clones
//! through host-assisted copies instead, with per-volume progress; the source must be stopped.
//!
//! The target is created Halted, as a restore into a new VM is (seed 004's flow labels it,
//! then starts it; `vmsnap clone --start` does both). With the `clone.vmsnap.io/seal`
//! annotation its disks are sealed before its first boot; a run strategy asked for by the
//! user's patches is applied after sealing. Beyond KubeVirt's fields the status records
//! `strategy` (snapshot or copy, also in a CloneStrategy event), `volumeProgress` and
//! `dataVolumes` (copy), `sealed` (the report), `snapshotIndications` (how the temporary
//! snapshot was taken) and `snapshotUID` (to sweep its leftovers).

pub mod seal;

use crate::context::Context;
use crate::events::EventType;
use crate::metrics::{self, Metrics};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, ObjectKey, Reconciler,
};
use crate::snapshot::restore::restore_res;
use crate::snapshot::vmsnapshot::{content_res, pvc_res, snapshot_res, vm_res, vm_volumes};
use crate::snapshot::{Eligibility, SnapshotBackend};
use api::registry::{by_plural, Resource};
use api::{meta, set_condition};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const CLONE_FINALIZER: &str = "vmsnap.io/clone-cleanup";
/// Set to "true" on a VirtualMachineClone to reset the target's guest identity (machine-id,
/// SSH host keys, logs, shell history) before it first boots.
pub const SEAL_ANNOTATION: &str = "clone.vmsnap.io/seal";
/// On a target VM: the clone that created it.
pub const CLONED_BY: &str = "clone.vmsnap.io/cloned-by";

pub fn clone_res() -> &'static Resource {
    by_plural("clone.kubevirt.io", "virtualmachineclones").expect("registered")
}
fn dv_res() -> &'static Resource {
    by_plural("cdi.kubevirt.io", "datavolumes").expect("registered")
}
fn volume_snapshot_res() -> &'static Resource {
    by_plural("snapshot.storage.k8s.io", "volumesnapshots").expect("registered")
}
fn vmi_res() -> &'static Resource {
    by_plural("kubevirt.io", "virtualmachineinstances").expect("registered")
}

pub struct CloneReconciler {
    pub ctx: Context,
    pub backend: Arc<dyn SnapshotBackend>,
    pub metrics: Arc<Metrics>,
}

/// KubeVirt's filter rule: patterns in order, `*` only at the end, `!` negates; the last
/// matching pattern decides. No filters means everything is kept.
pub fn filter_keeps(filters: Option<&Vec<Value>>, key: &str) -> bool {
    let Some(filters) = filters else { return true };
    let mut keep = false;
    for f in filters.iter().filter_map(|f| f.as_str()) {
        let (neg, pat) = match f.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, f),
        };
        let hit = match pat.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == pat,
        };
        if hit {
            keep = !neg;
        }
    }
    keep
}

/// A locally administered unicast MAC, unique enough for clones on one host.
pub fn random_mac() -> String {
    let b: [u8; 5] = rand::random();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4]
    )
}

fn escape_pointer(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

/// The JSON patches that turn the source VM into the clone: new MACs, SMBIOS serial and
/// firmware UUID, filtered labels and annotations, then the user's patches.
pub fn identity_patches(clone: &Value, source_vm: &Value) -> Vec<String> {
    let spec = &clone["spec"];
    let mut p: Vec<Value> = Vec::new();
    let ifaces = source_vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for (i, iface) in ifaces.iter().enumerate() {
        let name = iface["name"].as_str().unwrap_or("");
        let mac = spec["newMacAddresses"][name]
            .as_str()
            .map(|m| m.replace('-', ":").to_lowercase())
            .unwrap_or_else(random_mac);
        p.push(json!({"op": "add", "path": format!("/spec/template/spec/domain/devices/interfaces/{i}/macAddress"), "value": mac}));
    }
    if source_vm["spec"]["template"]["spec"]["domain"]["firmware"].is_null() {
        p.push(json!({"op": "add", "path": "/spec/template/spec/domain/firmware", "value": {}}));
    }
    let serial = spec["newSMBiosSerial"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    p.push(
        json!({"op": "add", "path": "/spec/template/spec/domain/firmware/serial", "value": serial}),
    );
    p.push(json!({"op": "add", "path": "/spec/template/spec/domain/firmware/uuid", "value": uuid::Uuid::new_v4().to_string()}));
    for (meta_path, obj_meta, filter_field) in [
        (
            "/metadata",
            &source_vm["metadata"],
            (&spec["labelFilters"], &spec["annotationFilters"]),
        ),
        (
            "/spec/template/metadata",
            &source_vm["spec"]["template"]["metadata"],
            (
                &spec["template"]["labelFilters"],
                &spec["template"]["annotationFilters"],
            ),
        ),
    ] {
        for (field, filters) in [("labels", filter_field.0), ("annotations", filter_field.1)] {
            for k in obj_meta[field]
                .as_object()
                .into_iter()
                .flat_map(|m| m.keys())
            {
                if !filter_keeps(filters.as_array(), k) {
                    p.push(json!({"op": "remove", "path": format!("{meta_path}/{field}/{}", escape_pointer(k))}));
                }
            }
        }
    }
    let mut out: Vec<String> = p.iter().map(|x| x.to_string()).collect();
    for up in spec["patches"].as_array().into_iter().flatten() {
        if let Some(s) = up.as_str() {
            out.push(s.to_string());
        }
    }
    out
}

fn apply_patches(obj: &mut Value, patches: &[String]) -> Result<(), String> {
    for text in patches {
        let patch = crate::snapshot::parse_patch(text)?;
        json_patch::patch(obj, &patch)
            .map_err(|e| format!("patch {text:?} could not be applied: {e}"))?;
    }
    Ok(())
}

impl CloneReconciler {
    fn store(&self) -> &dyn store::Store {
        self.ctx.store.as_ref()
    }

    fn set_phase(
        &self,
        key: &ObjectKey,
        phase: &str,
        reason: &str,
        message: &str,
    ) -> api::Result<()> {
        update_status_with(self.store(), clone_res(), key, |o| {
            o["status"]["phase"] = json!(phase);
            set_condition(o, "Progressing", true, reason, message);
            set_condition(o, "Ready", false, reason, message);
        })?;
        Ok(())
    }

    fn fail(&self, c: &Value, reason: &str, message: &str) -> api::Result<Action> {
        self.cleanup_temporaries(c, true)?;
        update_status_with(self.store(), clone_res(), &ObjectKey::of(c), |o| {
            o["status"]["phase"] = json!("Failed");
            set_condition(o, "Progressing", false, reason, message);
            set_condition(o, "Ready", false, reason, message);
        })?;
        self.metrics
            .clones
            .get_or_create(&metrics::result("failed"))
            .inc();
        self.ctx
            .recorder
            .record(c, EventType::Warning, reason, message);
        Ok(Action::AwaitChange)
    }

    fn tmp_snapshot(c: &Value) -> String {
        format!("tmp-snapshot-{}", meta::uid(c))
    }
    fn tmp_restore(c: &Value) -> String {
        format!("tmp-restore-{}", meta::uid(c))
    }

    /// Deletes the temporary snapshot and restore; with `target_too`, also a target VM this
    /// clone created and every claim or DataVolume made for it, so a cancelled or failed
    /// clone leaves nothing behind. Objects are found by what marks them (the restore's
    /// annotation, the clone's owner reference), not only by what the status recorded, so an
    /// object created just before a crash or a cancel is found too. Returns true while any
    /// of them still exists: callers repeat until it returns false, and because the restore
    /// is among them, a claim its last reconcile created is swept on the next pass.
    fn cleanup_temporaries(&self, c: &Value, target_too: bool) -> api::Result<bool> {
        let ns = meta::namespace(c);
        let uid = meta::uid(c);
        let mut pending = false;
        let del = |res: &'static Resource, name: &str, pending: &mut bool| -> api::Result<()> {
            if let Some(o) = ignore_not_found(self.store().get(res, ns, name))? {
                *pending = true;
                if !meta::is_deleting(&o) {
                    match self.store().delete(res, ns, name, &Default::default()) {
                        Ok(_) => {}
                        Err(e) if e.is(api::ErrorKind::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(())
        };
        // The restore records `<restore name>-<restore uid>` on the VM and claims it makes.
        let restore_mark = format!("{}-", Self::tmp_restore(c));
        let by_our_restore = |o: &Value| {
            meta::annotation(o, crate::snapshot::LAST_RESTORE_ANNOTATION)
                .is_some_and(|v| v.starts_with(&restore_mark))
        };
        let all = meta::LabelSelector::default();
        let none = meta::FieldSelector::default();
        if target_too {
            let target = c["status"]["targetName"].as_str().unwrap_or("").to_string();
            if let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, &target))? {
                if meta::annotation(&vm, CLONED_BY) == Some(uid) || by_our_restore(&vm) {
                    del(vm_res(), &target, &mut pending)?;
                }
            }
            for pvc in self.store().list(pvc_res(), Some(ns), &all, &none)?.items {
                if by_our_restore(&pvc) {
                    del(pvc_res(), meta::name(&pvc), &mut pending)?;
                }
            }
            let mut dvs: Vec<String> = c["status"]["dataVolumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str().map(String::from))
                .collect();
            for dv in self.store().list(dv_res(), Some(ns), &all, &none)?.items {
                if meta::owner_uids(&dv).iter().any(|u| u == uid) {
                    dvs.push(meta::name(&dv).to_string());
                }
            }
            dvs.sort();
            dvs.dedup();
            for dv in &dvs {
                del(dv_res(), dv, &mut pending)?;
                del(pvc_res(), dv, &mut pending)?;
            }
        }
        del(restore_res(), &Self::tmp_restore(c), &mut pending)?;
        del(snapshot_res(), &Self::tmp_snapshot(c), &mut pending)?;
        // The temporary snapshot's content and volume snapshots go with it; they count as
        // pending until gone, so "Succeeded" means nothing temporary is left. Once the
        // snapshot object is gone, leftovers are deleted here too.
        if let Some(snap_uid) = c["status"]["snapshotUID"].as_str() {
            let content = format!("vmsnapshot-content-{snap_uid}");
            let snap_gone = !pending;
            if let Some(o) = ignore_not_found(self.store().get(content_res(), ns, &content))? {
                pending = true;
                if snap_gone && !meta::is_deleting(&o) {
                    del(content_res(), &content, &mut pending)?;
                }
            }
            let prefix = format!("vmsnapshot-{snap_uid}-volume-");
            for vs in self
                .store()
                .list(volume_snapshot_res(), Some(ns), &all, &none)?
                .items
            {
                if meta::name(&vs).starts_with(&prefix) {
                    pending = true;
                    if snap_gone && !meta::is_deleting(&vs) {
                        del(volume_snapshot_res(), meta::name(&vs), &mut pending)?;
                    }
                }
            }
        }
        Ok(pending)
    }

    async fn finish(&self, c: &Value, target_name: &str, strategy: &str) -> api::Result<Action> {
        let key = ObjectKey::of(c);
        let ns = meta::namespace(c);
        let target = self.store().get(vm_res(), ns, target_name)?;
        if c["status"]["sealed"].is_null() && meta::annotation(c, SEAL_ANNOTATION) == Some("true") {
            // The target was created Halted so that it is sealed before its first boot.
            if ignore_not_found(self.store().get(vmi_res(), ns, target_name))?.is_some() {
                return self.fail(
                    c,
                    "SealFailed",
                    "the clone's VM started before its guest identity was reset",
                );
            }
            let c2 = c.clone();
            let t2 = target.clone();
            let this = self.backend.clone();
            let sealed = tokio::task::spawn_blocking(move || seal_volumes(this.as_ref(), &c2, &t2))
                .await
                .map_err(|e| api::Error::internal(e.to_string()))?;
            match sealed {
                Ok(report) => {
                    update_status_with(self.store(), clone_res(), &key, |o| {
                        o["status"]["sealed"] = json!(report);
                    })?;
                    self.ctx.recorder.record(
                        c,
                        EventType::Normal,
                        "Sealed",
                        &format!("guest identity reset: {report}"),
                    );
                }
                Err(e) => {
                    return self.fail(
                        c,
                        "SealFailed",
                        &format!("resetting the clone's guest identity failed: {}", e.message),
                    )
                }
            }
            if let Some(rs) = c["status"]["targetRunStrategy"].as_str() {
                let rs = rs.to_string();
                update_with(
                    self.store(),
                    vm_res(),
                    &ObjectKey::new(ns, target_name),
                    |o| o["spec"]["runStrategy"] = json!(rs),
                )?;
            }
        }
        if self.cleanup_temporaries(c, false)? {
            return Ok(Action::Requeue(Duration::from_millis(200)));
        }
        // The target's disks belong to it, as DataVolume templates do: deleting the clone VM
        // later deletes them instead of leaving orphaned claims.
        let restore_mark = format!("{}-", Self::tmp_restore(c));
        for v in vm_volumes(&target["spec"]) {
            let Some(claim) = v.claim else { continue };
            let Some(pvc) = ignore_not_found(self.store().get(pvc_res(), ns, &claim))? else {
                continue;
            };
            let ours = meta::annotation(&pvc, crate::snapshot::LAST_RESTORE_ANNOTATION)
                .is_some_and(|m| m.starts_with(&restore_mark));
            if ours && meta::owner_uids(&pvc).is_empty() {
                update_with(self.store(), pvc_res(), &ObjectKey::new(ns, &claim), |o| {
                    meta::set_owner(o, &target);
                })?;
            }
        }
        // Deleting the target later deletes this clone, as in KubeVirt.
        update_with(self.store(), clone_res(), &key, |o| {
            meta::set_owner(o, &target);
            if let Some(r) = o["metadata"]["ownerReferences"].as_array_mut() {
                for x in r.iter_mut() {
                    x["controller"] = json!(false);
                    x["blockOwnerDeletion"] = json!(false);
                }
            }
        })?;
        update_status_with(self.store(), clone_res(), &key, |o| {
            o["status"]["phase"] = json!("Succeeded");
            o["status"]["strategy"] = json!(strategy);
            set_condition(o, "Progressing", false, "Succeeded", "Clone complete");
            set_condition(o, "Ready", true, "Succeeded", "Clone complete");
        })?;
        self.metrics
            .clones
            .get_or_create(&metrics::result("succeeded"))
            .inc();
        self.ctx.recorder.record(
            c,
            EventType::Normal,
            "CloneSucceeded",
            &format!("VirtualMachine {target_name:?} created by {strategy}"),
        );
        Ok(Action::AwaitChange)
    }

    /// The snapshot path: the source snapshot (the user's, or a temporary one of the VM),
    /// then a temporary restore into the new target with the identity patches. Each step is
    /// re-entered on every reconcile, so it must decide from the stored state alone.
    async fn by_snapshot(
        &self,
        c: &Value,
        source_vm: &Value,
        target_name: &str,
    ) -> api::Result<Action> {
        let key = ObjectKey::of(c);
        let ns = meta::namespace(c);
        let uid = meta::uid(c);
        let phase = c["status"]["phase"].as_str().unwrap_or("").to_string();
        let from_snapshot = c["spec"]["source"]["kind"] == "VirtualMachineSnapshot";
        let snap_name = if from_snapshot {
            c["spec"]["source"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else {
            Self::tmp_snapshot(c)
        };
        // Once the restore made the target, the rest is finishing (the temporaries may
        // already be gone).
        if phase == "CreatingTargetVM" {
            if let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, target_name))? {
                if meta::annotation(&vm, CLONED_BY) == Some(uid) {
                    return self.finish(c, target_name, "snapshot").await;
                }
            }
        }
        let snap = ignore_not_found(self.store().get(snapshot_res(), ns, &snap_name))?
            .filter(|s| !meta::is_deleting(s));
        let snap = match snap {
            Some(s) => s,
            // Gone after this clone started using it: KubeVirt's SnapshotDeleted.
            None if from_snapshot || c["status"]["snapshotName"].is_string() => {
                return self.fail(
                    c,
                    "SnapshotDeleted",
                    &format!("snapshot {snap_name:?} was deleted before the clone finished"),
                )
            }
            None => {
                let mut s = json!({
                    "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineSnapshot",
                    "metadata": {"name": snap_name, "namespace": ns},
                    "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": meta::name(source_vm)}},
                });
                meta::set_owner(&mut s, c);
                let s = api::admit(snapshot_res(), s, api::FieldValidation::Strict)?.object;
                let s = match self.store().create(snapshot_res(), s) {
                    Ok(s) => s,
                    Err(e) if e.is(api::ErrorKind::AlreadyExists) => {
                        self.store().get(snapshot_res(), ns, &snap_name)?
                    }
                    Err(e) => return Err(e),
                };
                let snap_uid = meta::uid(&s).to_string();
                update_status_with(self.store(), clone_res(), &key, |o| {
                    o["status"]["snapshotName"] = json!(snap_name);
                    o["status"]["snapshotUID"] = json!(snap_uid);
                })?;
                s
            }
        };
        if c["status"]["snapshotName"].is_null()
            || (!from_snapshot && c["status"]["snapshotUID"].is_null())
        {
            let snap_uid = meta::uid(&snap).to_string();
            update_status_with(self.store(), clone_res(), &key, |o| {
                o["status"]["snapshotName"] = json!(snap_name);
                if !from_snapshot {
                    o["status"]["snapshotUID"] = json!(snap_uid);
                }
            })?;
        }
        if snap["status"]["phase"] == "Failed" {
            return self.fail(
                c,
                "SnapshotFailed",
                &format!(
                    "snapshot {snap_name:?} failed: {}",
                    snap["status"]["error"]["message"].as_str().unwrap_or("")
                ),
            );
        }
        if snap["status"]["readyToUse"] != true {
            self.set_phase(
                &key,
                "SnapshotInProgress",
                "SnapshotInProgress",
                &format!("waiting for snapshot {snap_name:?}"),
            )?;
            return Ok(Action::Requeue(Duration::from_millis(200)));
        }
        if phase != "RestoreInProgress" {
            // The temporary snapshot goes away: keep how it was taken (online, guest agent).
            let ind = snap["status"]["indications"].clone();
            update_status_with(self.store(), clone_res(), &key, |o| {
                if !ind.is_null() {
                    o["status"]["snapshotIndications"] = ind.clone();
                }
            })?;
            self.set_phase(
                &key,
                "RestoreInProgress",
                "RestoreInProgress",
                "restoring the snapshot into the target",
            )?;
        }
        let rname = Self::tmp_restore(c);
        let restore = match ignore_not_found(self.store().get(restore_res(), ns, &rname))? {
            Some(r) => r,
            None if c["status"]["restoreName"].is_string() => {
                return self.fail(
                    c,
                    "RestoreDeleted",
                    &format!("the temporary restore {rname:?} was deleted before it completed"),
                )
            }
            None => {
                if ignore_not_found(self.store().get(vm_res(), ns, target_name))?.is_some() {
                    return self.fail(
                        c,
                        "TargetExists",
                        &format!("VirtualMachine {target_name:?} already exists"),
                    );
                }
                let (patches, run_strategy) = match c["status"]["patches"].as_array() {
                    Some(p) => (
                        p.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect(),
                        c["status"]["targetRunStrategy"].as_str().map(String::from),
                    ),
                    None => restore_patches(c, source_vm),
                };
                let mut vpolicy = "RandomizeNames";
                if c["spec"]["volumeNamePolicy"] == "PrefixTargetName" {
                    vpolicy = "PrefixTargetName";
                }
                let mut r = json!({
                    "apiVersion": "snapshot.kubevirt.io/v1beta1", "kind": "VirtualMachineRestore",
                    "metadata": {"name": rname, "namespace": ns},
                    "spec": {
                        "target": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": target_name},
                        "virtualMachineSnapshotName": snap_name,
                        "patches": patches,
                        "volumeRestorePolicy": vpolicy,
                    },
                });
                meta::set_owner(&mut r, c);
                let r = api::admit(restore_res(), r, api::FieldValidation::Ignore)?.object;
                let pcopy = patches_of(&r);
                update_status_with(self.store(), clone_res(), &key, |o| {
                    o["status"]["restoreName"] = json!(rname);
                    o["status"]["patches"] = json!(pcopy);
                    if let Some(rs) = &run_strategy {
                        o["status"]["targetRunStrategy"] = json!(rs);
                    }
                })?;
                match self.store().create(restore_res(), r) {
                    Ok(r) => r,
                    Err(e) if e.is(api::ErrorKind::AlreadyExists) => {
                        self.store().get(restore_res(), ns, &rname)?
                    }
                    Err(e) => return Err(e),
                }
            }
        };
        if api::condition(&restore, "Failure") == Some(true) {
            let msg = restore["status"]["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|x| x["type"] == "Failure"))
                .and_then(|x| x["message"].as_str())
                .unwrap_or("")
                .to_string();
            return self.fail(
                c,
                "RestoreFailed",
                &format!("restore into the target failed: {msg}"),
            );
        }
        if restore["status"]["complete"] != true {
            return Ok(Action::Requeue(Duration::from_millis(200)));
        }
        let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, target_name))? else {
            return Ok(Action::Requeue(Duration::from_millis(200)));
        };
        if meta::annotation(&vm, CLONED_BY) != Some(uid) {
            let uid = uid.to_string();
            update_with(
                self.store(),
                vm_res(),
                &ObjectKey::new(ns, target_name),
                |o| meta::set_annotation(o, CLONED_BY, &uid),
            )?;
        }
        self.set_phase(
            &key,
            "CreatingTargetVM",
            "CreatingTargetVM",
            "finishing the target VM",
        )?;
        let c = self.store().get(clone_res(), ns, meta::name(c))?;
        self.finish(&c, target_name, "snapshot").await
    }

    async fn by_copy(
        &self,
        c: &Value,
        source_vm: &Value,
        target_name: &str,
        why: &str,
    ) -> api::Result<Action> {
        let key = ObjectKey::of(c);
        let ns = meta::namespace(c);
        if c["status"]["strategy"].is_null() {
            update_status_with(self.store(), clone_res(), &key, |o| {
                o["status"]["strategy"] = json!("copy");
            })?;
            self.ctx.recorder.record(
                c,
                EventType::Normal,
                "CloneStrategy",
                &format!("cloning by host-assisted copy: {why}"),
            );
        }
        // A copy of a disk in use would not be consistent: the source must be stopped.
        let running =
            ignore_not_found(self.store().get(vmi_res(), ns, meta::name(source_vm)))?.is_some();
        let copying_started = c["status"]["dataVolumes"].is_array();
        if running && !copying_started {
            return self.fail(
                c,
                "SourceRunning",
                &format!("VirtualMachine {:?} is running: its storage cannot snapshot ({why}), so it must be cloned by copying its disks, which needs the VM stopped; stop it and the clone will retry when recreated", meta::name(source_vm)),
            );
        }
        let policy_prefix = c["spec"]["volumeNamePolicy"] == "PrefixTargetName";
        let mut dvs = Vec::new();
        let mut progress = Vec::new();
        let mut all_done = true;
        for v in vm_volumes(&source_vm["spec"]) {
            let Some(claim) = v.claim else { continue };
            let dv_name = if policy_prefix {
                format!("{target_name}-{}", v.name)
            } else {
                format!("clone-{}-{}", meta::uid(c), v.name)
            };
            let dv = match ignore_not_found(self.store().get(dv_res(), ns, &dv_name))? {
                Some(d) => d,
                None => {
                    let pvc = self.store().get(pvc_res(), ns, &claim)?;
                    let size = pvc["status"]["capacity"]["storage"].clone();
                    let size = if size.is_null() {
                        pvc["spec"]["resources"]["requests"]["storage"].clone()
                    } else {
                        size
                    };
                    let mut storage = json!({"resources": {"requests": {"storage": size}}});
                    if let Some(sc) = pvc["spec"]["storageClassName"].as_str() {
                        storage["storageClassName"] = json!(sc);
                    }
                    let mut d = json!({
                        "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
                        "metadata": {"name": dv_name, "namespace": ns},
                        "spec": {"source": {"pvc": {"namespace": ns, "name": claim}}, "storage": storage},
                    });
                    meta::set_owner(&mut d, c);
                    let d = api::admit(dv_res(), d, api::FieldValidation::Ignore)?.object;
                    match self.store().create(dv_res(), d) {
                        Ok(d) => d,
                        Err(e) if e.is(api::ErrorKind::AlreadyExists) => {
                            self.store().get(dv_res(), ns, &dv_name)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            let phase = dv["status"]["phase"]
                .as_str()
                .unwrap_or("Pending")
                .to_string();
            if phase == "Failed" {
                let msg = dv["status"]["conditions"]
                    .as_array()
                    .and_then(|cs| {
                        cs.iter()
                            .find(|x| x["type"] == "Running" || x["type"] == "Ready")
                    })
                    .and_then(|x| x["message"].as_str())
                    .unwrap_or("")
                    .to_string();
                return self.fail(
                    c,
                    "CopyFailed",
                    &format!("copying volume {:?} failed: {msg}", v.name),
                );
            }
            if phase != "Succeeded" {
                all_done = false;
            }
            progress.push(json!({"volumeName": v.name, "dataVolume": dv_name, "phase": phase, "progress": dv["status"]["progress"].as_str().unwrap_or("N/A")}));
            dvs.push((v.name.clone(), dv_name));
        }
        let names: Vec<String> = dvs.iter().map(|(_, d)| d.clone()).collect();
        let prog = progress.clone();
        update_status_with(self.store(), clone_res(), &key, |o| {
            o["status"]["phase"] = json!(if all_done {
                "CreatingTargetVM"
            } else {
                "RestoreInProgress"
            });
            o["status"]["dataVolumes"] = json!(names);
            o["status"]["volumeProgress"] = json!(prog);
            let msg = prog
                .iter()
                .map(|p| {
                    format!(
                        "{} {}",
                        p["volumeName"].as_str().unwrap_or(""),
                        p["progress"].as_str().unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            set_condition(
                o,
                "Progressing",
                true,
                "HostAssistedCopy",
                &format!("copying volumes: {msg}"),
            );
            set_condition(o, "Ready", false, "HostAssistedCopy", "copy in progress");
        })?;
        if !all_done {
            return Ok(Action::Requeue(Duration::from_millis(300)));
        }
        if ignore_not_found(self.store().get(vm_res(), ns, target_name))?.is_none() {
            let mut vm = json!({
                "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                "metadata": {"name": target_name, "namespace": ns, "labels": source_vm["metadata"]["labels"], "annotations": source_vm["metadata"]["annotations"]},
                "spec": source_vm["spec"].clone(),
            });
            if let Some(vols) = vm["spec"]["template"]["spec"]["volumes"].as_array_mut() {
                for v in vols.iter_mut() {
                    let name = v["name"].as_str().unwrap_or("").to_string();
                    if let Some((_, d)) = dvs.iter().find(|(n, _)| *n == name) {
                        *v = json!({"name": name, "persistentVolumeClaim": {"claimName": d}});
                    }
                }
            }
            if let Some(m) = vm["spec"].as_object_mut() {
                m.remove("dataVolumeTemplates");
                m.remove("running");
            }
            vm["spec"]["runStrategy"] = json!("Halted");
            if let Some(m) = vm["metadata"].as_object_mut() {
                m.retain(|_, v| !v.is_null());
            }
            let (patches, run_strategy) = restore_patches(c, source_vm);
            if let Err(e) = apply_patches(&mut vm, &patches) {
                return self.fail(c, "InvalidPatch", &e);
            }
            if let Some(rs) = run_strategy {
                update_status_with(self.store(), clone_res(), &key, |o| {
                    o["status"]["targetRunStrategy"] = json!(rs);
                })?;
            }
            meta::set_annotation(&mut vm, CLONED_BY, meta::uid(c));
            let vm = match api::admit(vm_res(), vm, api::FieldValidation::Strict) {
                Ok(a) => a.object,
                Err(e) => {
                    return self.fail(
                        c,
                        "InvalidTarget",
                        &format!("the clone's VM is invalid: {}", e.message),
                    )
                }
            };
            match self.store().create(vm_res(), vm) {
                Ok(_) => {}
                Err(e) if e.is(api::ErrorKind::AlreadyExists) => {}
                Err(e) => return Err(e),
            }
        }
        // The copies now belong to the target VM, not to the clone object.
        let target = self.store().get(vm_res(), ns, target_name)?;
        for (_, d) in &dvs {
            update_with(self.store(), dv_res(), &ObjectKey::new(ns, d), |o| {
                if let Some(m) = o["metadata"].as_object_mut() {
                    m.remove("ownerReferences");
                }
                meta::set_owner(o, &target);
            })?;
        }
        self.finish(c, target_name, "copy").await
    }
}

/// Seals every claim of the target VM; returns a one-line report per volume.
fn seal_volumes(backend: &dyn SnapshotBackend, c: &Value, target: &Value) -> api::Result<String> {
    let ns = meta::namespace(c);
    let mut tools = Vec::new();
    for v in vm_volumes(&target["spec"]) {
        let Some(claim) = v.claim else { continue };
        let (path, format) = backend.attachment(ns, &claim)?;
        let r = seal::seal_image(&path, &format)?;
        tools.push(format!(
            "{}: {} ({})",
            v.name,
            r.tool,
            if r.actions.is_empty() {
                "nothing to reset".into()
            } else {
                r.actions.join(", ")
            }
        ));
    }
    Ok(tools.join("; "))
}

/// The restore's patches: the identity patches with the user's, and when the clone is to be
/// sealed, a final one keeping the target Halted until it is; the run strategy the user's
/// patches asked for is returned to be set after sealing.
fn restore_patches(c: &Value, source_vm: &Value) -> (Vec<String>, Option<String>) {
    let mut patches = identity_patches(c, source_vm);
    if meta::annotation(c, SEAL_ANNOTATION) != Some("true") {
        return (patches, None);
    }
    // A restore creates a new VM Halted, then applies the patches: replay that on a copy.
    let mut probe =
        json!({"metadata": source_vm["metadata"].clone(), "spec": source_vm["spec"].clone()});
    if let Some(m) = probe["spec"].as_object_mut() {
        m.remove("running");
    }
    probe["spec"]["runStrategy"] = json!("Halted");
    let wanted = apply_patches(&mut probe, &patches)
        .ok()
        .and_then(|_| probe["spec"]["runStrategy"].as_str().map(String::from))
        .filter(|rs| rs != "Halted");
    patches.push(json!({"op": "add", "path": "/spec/runStrategy", "value": "Halted"}).to_string());
    (patches, wanted)
}

fn patches_of(r: &Value) -> Vec<Value> {
    r["spec"]["patches"].as_array().cloned().unwrap_or_default()
}

impl Reconciler for CloneReconciler {
    fn name(&self) -> &'static str {
        "vmclone"
    }
    fn resource(&self) -> &'static Resource {
        clone_res()
    }
    fn watches(&self) -> Vec<(&'static Resource, crate::Mapper)> {
        let store = self.ctx.store.clone();
        let f: crate::Mapper = Arc::new(move |obj: &Value| {
            let all = meta::LabelSelector::default();
            let none = meta::FieldSelector::default();
            store
                .list(clone_res(), Some(meta::namespace(obj)), &all, &none)
                .map(|l| {
                    l.items
                        .iter()
                        .filter(|c| {
                            c["status"]["phase"] != "Succeeded" && c["status"]["phase"] != "Failed"
                        })
                        .map(|c| ObjectKey::of(c))
                        .collect()
                })
                .unwrap_or_default()
        });
        vec![
            (vm_res(), f.clone()),
            (snapshot_res(), f.clone()),
            (restore_res(), f.clone()),
            (dv_res(), f),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let Some(c) =
                ignore_not_found(self.store().get(clone_res(), &key.namespace, &key.name))?
            else {
                return Ok(Action::AwaitChange);
            };
            if meta::is_deleting(&c) {
                let done = c["status"]["phase"] == "Succeeded";
                if self.cleanup_temporaries(&c, !done)? {
                    return Ok(Action::Requeue(Duration::from_millis(200)));
                }
                update_with(self.store(), clone_res(), key, |o| {
                    meta::remove_finalizer(o, CLONE_FINALIZER);
                })?;
                return Ok(Action::AwaitChange);
            }
            if !meta::has_finalizer(&c, CLONE_FINALIZER) {
                update_with(self.store(), clone_res(), key, |o| {
                    meta::add_finalizer(o, CLONE_FINALIZER);
                })?;
            }
            let phase = c["status"]["phase"].as_str().unwrap_or("").to_string();
            if phase == "Succeeded" {
                return Ok(Action::AwaitChange);
            }
            if phase == "Failed" {
                // A failed clone keeps nothing it made, including what a controller created
                // while the failure was being recorded.
                return Ok(if self.cleanup_temporaries(&c, true)? {
                    Action::Requeue(Duration::from_millis(500))
                } else {
                    Action::AwaitChange
                });
            }
            let ns = key.namespace.as_str();
            // The source: a VM, or a snapshot (whose content records the VM).
            let source_kind = c["spec"]["source"]["kind"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let source_name = c["spec"]["source"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let source_vm: Value = if source_kind == "VirtualMachineSnapshot" {
                match ignore_not_found(self.store().get(snapshot_res(), ns, &source_name))?
                    .filter(|s| !meta::is_deleting(s))
                {
                    Some(s) => {
                        let cname = s["status"]["virtualMachineSnapshotContentName"]
                            .as_str()
                            .unwrap_or("");
                        match ignore_not_found(self.store().get(
                            crate::snapshot::vmsnapshot::content_res(),
                            ns,
                            cname,
                        ))? {
                            Some(content) => content["spec"]["source"]["virtualMachine"].clone(),
                            None => {
                                self.set_phase(
                                    key,
                                    "SnapshotInProgress",
                                    "SnapshotNotReady",
                                    &format!("waiting for snapshot {source_name:?} to be ready"),
                                )?;
                                return Ok(Action::Requeue(Duration::from_millis(500)));
                            }
                        }
                    }
                    // The restore is complete: only finishing is left, which needs no source.
                    None if phase == "CreatingTargetVM" => Value::Null,
                    None if !phase.is_empty() => {
                        return self.fail(
                            &c,
                            "SnapshotDeleted",
                            &format!("source snapshot {source_name:?} was deleted"),
                        );
                    }
                    None => {
                        update_status_with(self.store(), clone_res(), key, |o| {
                            set_condition(
                                o,
                                "Progressing",
                                false,
                                "SourceDoesNotExist",
                                &format!("source snapshot {source_name:?} does not exist"),
                            );
                            set_condition(
                                o,
                                "Ready",
                                false,
                                "SourceDoesNotExist",
                                &format!("source snapshot {source_name:?} does not exist"),
                            );
                        })?;
                        return Ok(Action::Requeue(Duration::from_secs(2)));
                    }
                }
            } else {
                match ignore_not_found(self.store().get(vm_res(), ns, &source_name))? {
                    Some(vm) => (*vm).clone(),
                    // The snapshot is taken: the restore works from it, not from the VM.
                    None if c["status"]["strategy"] == "snapshot"
                        && matches!(phase.as_str(), "RestoreInProgress" | "CreatingTargetVM") =>
                    {
                        Value::Null
                    }
                    None => {
                        update_status_with(self.store(), clone_res(), key, |o| {
                            set_condition(
                                o,
                                "Progressing",
                                false,
                                "SourceDoesNotExist",
                                &format!("source VirtualMachine {source_name:?} does not exist"),
                            );
                            set_condition(
                                o,
                                "Ready",
                                false,
                                "SourceDoesNotExist",
                                &format!("source VirtualMachine {source_name:?} does not exist"),
                            );
                        })?;
                        return Ok(Action::Requeue(Duration::from_secs(2)));
                    }
                }
            };
            // The target name, chosen once.
            let target_name = match c["status"]["targetName"].as_str() {
                Some(t) => t.to_string(),
                None => {
                    let t = c["spec"]["target"]["name"]
                        .as_str()
                        .map(String::from)
                        .unwrap_or_else(|| {
                            let suffix: String = (0..5)
                                .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
                                .collect();
                            format!("clone-{}-{suffix}", meta::name(&source_vm))
                        });
                    let t2 = t.clone();
                    update_status_with(self.store(), clone_res(), key, |o| {
                        o["status"]["targetName"] = json!(t2);
                    })?;
                    t
                }
            };
            // Strategy: every claim must be snapshottable and restorable, else copy.
            let mut why_copy = None;
            if source_kind == "VirtualMachine" && c["status"]["strategy"] != "snapshot" {
                for v in vm_volumes(&source_vm["spec"]) {
                    let Some(claim) = v.claim else { continue };
                    match self.backend.eligibility(ns, &claim)? {
                        Eligibility::Yes {
                            restorable: true, ..
                        } => {}
                        Eligibility::Yes { driver, .. } => {
                            why_copy = Some(format!("volume {:?} is on storage ({driver}) that cannot create volumes from snapshots", v.name));
                            break;
                        }
                        Eligibility::No { reason } => {
                            why_copy = Some(format!("volume {:?}: {reason}", v.name));
                            break;
                        }
                    }
                }
            }
            let c2 = self.store().get(clone_res(), ns, &key.name)?;
            match why_copy {
                Some(why) if c["status"]["strategy"] != "snapshot" => {
                    self.by_copy(&c2, &source_vm, &target_name, &why).await
                }
                _ => {
                    if c["status"]["strategy"].is_null() {
                        update_status_with(self.store(), clone_res(), key, |o| {
                            o["status"]["strategy"] = json!("snapshot");
                        })?;
                        self.ctx.recorder.record(&c, EventType::Normal, "CloneStrategy", "cloning through a snapshot and a restore (copy-on-write where the storage allows)");
                    }
                    let c3 = self.store().get(clone_res(), ns, &key.name)?;
                    self.by_snapshot(&c3, &source_vm, &target_name).await
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_follow_kubevirt_rules() {
        let f = vec![json!("*"), json!("!someKey/*")];
        assert!(filter_keeps(Some(&f), "app"));
        assert!(!filter_keeps(Some(&f), "someKey/x"));
        let g = vec![json!("anotherKey/*")];
        assert!(filter_keeps(Some(&g), "anotherKey/a"));
        assert!(!filter_keeps(Some(&g), "other"));
        assert!(filter_keeps(None, "anything"));
    }

    #[test]
    fn identity_patches_replace_mac_serial_uuid_and_filter_labels() {
        let clone = json!({"spec": {"newMacAddresses": {"default": "02-00-00-00-00-01"}, "newSMBiosSerial": "s1", "labelFilters": ["*", "!drop/*"]}});
        let vm = json!({"metadata": {"labels": {"keep": "1", "drop/me": "2"}}, "spec": {"template": {"spec": {"domain": {"devices": {"interfaces": [{"name": "default", "macAddress": "02:aa:aa:aa:aa:aa"}, {"name": "other"}]}}}}}});
        let patches = identity_patches(&clone, &vm);
        let mut obj = vm.clone();
        apply_patches(&mut obj, &patches).unwrap();
        let ifs = &obj["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"];
        assert_eq!(ifs[0]["macAddress"], "02:00:00:00:00:01");
        assert!(ifs[1]["macAddress"].as_str().unwrap().starts_with("02:"));
        assert_eq!(
            obj["spec"]["template"]["spec"]["domain"]["firmware"]["serial"],
            "s1"
        );
        assert!(obj["spec"]["template"]["spec"]["domain"]["firmware"]["uuid"].is_string());
        assert_eq!(obj["metadata"]["labels"], json!({"keep": "1"}));
    }

    #[test]
    fn sealing_keeps_the_target_halted_until_sealed() {
        let vm = json!({"metadata": {}, "spec": {"running": true, "template": {"spec": {"domain": {"devices": {}}}}}});
        let plain = json!({"metadata": {}, "spec": {}});
        let (p, rs) = restore_patches(&plain, &vm);
        assert_eq!(rs, None);
        assert!(!p.iter().any(|x| x.contains("runStrategy")));
        let sealed = json!({"metadata": {"annotations": {SEAL_ANNOTATION: "true"}}, "spec": {
            "patches": [r#"{"op": "replace", "path": "/spec/runStrategy", "value": "Always"}"#]}});
        let (p, rs) = restore_patches(&sealed, &vm);
        assert_eq!(rs.as_deref(), Some("Always"));
        let last: Value = serde_json::from_str(p.last().unwrap()).unwrap();
        assert_eq!(last["path"], "/spec/runStrategy");
        assert_eq!(last["value"], "Halted");
    }
}
