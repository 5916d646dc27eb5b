//! VirtualMachineClone (clone.kubevirt.io). With snapshot-capable storage it follows KubeVirt:
//! a temporary snapshot, a temporary restore into the new VM with identity patches, cleanup.
//! When a volume's storage cannot snapshot (seed 004's CDI fallback), the same API clones
//! through host-assisted copies instead, with per-volume progress; the source must be stopped.

pub mod seal;

use crate::context::Context;
use crate::events::EventType;
use crate::metrics::{self, Metrics};
use crate::runtime::{
    ignore_not_found, update_status_with, update_with, Action, ObjectKey, Reconciler,
};
use crate::snapshot::restore::restore_res;
use crate::snapshot::vmsnapshot::{pvc_res, snapshot_res, vm_res, vm_volumes};
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
        let patch: json_patch::Patch = serde_json::from_str(text)
            .or_else(|_| serde_json::from_str(&format!("[{text}]")))
            .map_err(|e| format!("patch {text:?} is not a JSON patch: {e}"))?;
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
    /// clone leaves nothing behind.
    fn cleanup_temporaries(&self, c: &Value, target_too: bool) -> api::Result<bool> {
        let ns = meta::namespace(c);
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
        let restore = ignore_not_found(self.store().get(restore_res(), ns, &Self::tmp_restore(c)))?;
        if target_too {
            let target = c["status"]["targetName"].as_str().unwrap_or("").to_string();
            if let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, &target))? {
                let ours = meta::annotation(&vm, CLONED_BY) == Some(meta::uid(c))
                    || restore.as_ref().is_some_and(|r| {
                        meta::annotation(&vm, crate::snapshot::restore::CREATED_BY_RESTORE)
                            == Some(meta::uid(r))
                    });
                if ours {
                    del(vm_res(), &target, &mut pending)?;
                }
            }
            if let Some(r) = &restore {
                for x in r["status"]["restores"].as_array().into_iter().flatten() {
                    if let Some(claim) = x["persistentVolumeClaim"].as_str() {
                        del(pvc_res(), claim, &mut pending)?;
                    }
                }
            }
            for dv in c["status"]["dataVolumes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|d| d.as_str())
            {
                del(dv_res(), dv, &mut pending)?;
                del(pvc_res(), dv, &mut pending)?;
            }
        }
        del(restore_res(), &Self::tmp_restore(c), &mut pending)?;
        del(snapshot_res(), &Self::tmp_snapshot(c), &mut pending)?;
        Ok(pending)
    }

    fn seal_target(&self, c: &Value, target: &Value) -> api::Result<Option<String>> {
        if meta::annotation(c, SEAL_ANNOTATION) != Some("true") {
            return Ok(None);
        }
        let ns = meta::namespace(c);
        let mut tools = Vec::new();
        for v in vm_volumes(&target["spec"]) {
            let Some(claim) = v.claim else { continue };
            let (path, format) = self.backend.attachment(ns, &claim)?;
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
        Ok(Some(tools.join("; ")))
    }

    async fn finish(&self, c: &Value, target_name: &str, strategy: &str) -> api::Result<Action> {
        let key = ObjectKey::of(c);
        let ns = meta::namespace(c);
        let target = self.store().get(vm_res(), ns, target_name)?;
        if c["status"]["sealed"].is_null() {
            match self.seal_target(c, &target) {
                Ok(Some(report)) => {
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
                Ok(None) => {}
                Err(e) => {
                    return self.fail(
                        c,
                        "SealFailed",
                        &format!("resetting the clone's guest identity failed: {}", e.message),
                    )
                }
            }
        }
        if self.cleanup_temporaries(c, false)? {
            return Ok(Action::Requeue(Duration::from_millis(200)));
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

    async fn by_snapshot(
        &self,
        c: &Value,
        source_vm: &Value,
        target_name: &str,
    ) -> api::Result<Action> {
        let key = ObjectKey::of(c);
        let ns = meta::namespace(c);
        let from_snapshot = c["spec"]["source"]["kind"] == "VirtualMachineSnapshot";
        let snap_name = if from_snapshot {
            c["spec"]["source"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string()
        } else {
            Self::tmp_snapshot(c)
        };
        if c["status"]["phase"]
            .as_str()
            .is_none_or(|p| p.is_empty() || p == "SnapshotInProgress")
        {
            let snap = match ignore_not_found(self.store().get(snapshot_res(), ns, &snap_name))? {
                Some(s) => s,
                None if from_snapshot => {
                    return self.fail(
                        c,
                        "SnapshotDeleted",
                        &format!("source snapshot {snap_name:?} was deleted"),
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
                    match self.store().create(snapshot_res(), s) {
                        Ok(s) => s,
                        Err(e) if e.is(api::ErrorKind::AlreadyExists) => {
                            self.store().get(snapshot_res(), ns, &snap_name)?
                        }
                        Err(e) => return Err(e),
                    }
                }
            };
            update_status_with(self.store(), clone_res(), &key, |o| {
                o["status"]["snapshotName"] = json!(snap_name);
            })?;
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
            self.set_phase(
                &key,
                "RestoreInProgress",
                "RestoreInProgress",
                "restoring the snapshot into the target",
            )?;
        }
        if from_snapshot
            && ignore_not_found(self.store().get(snapshot_res(), ns, &snap_name))?.is_none()
        {
            return self.fail(
                c,
                "SnapshotDeleted",
                &format!("source snapshot {snap_name:?} was deleted"),
            );
        }
        let rname = Self::tmp_restore(c);
        let restore = match ignore_not_found(self.store().get(restore_res(), ns, &rname))? {
            Some(r) => r,
            None => {
                if ignore_not_found(self.store().get(vm_res(), ns, target_name))?.is_some() {
                    return self.fail(
                        c,
                        "TargetExists",
                        &format!("VirtualMachine {target_name:?} already exists"),
                    );
                }
                let patches = match c["status"]["patches"].as_array() {
                    Some(p) => p
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect(),
                    None => identity_patches(c, source_vm),
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
        self.set_phase(
            &key,
            "CreatingTargetVM",
            "CreatingTargetVM",
            "waiting for the target VM",
        )?;
        if let Some(vm) = ignore_not_found(self.store().get(vm_res(), ns, target_name))? {
            if meta::annotation(&vm, CLONED_BY).is_none() {
                let uid = meta::uid(c).to_string();
                update_with(
                    self.store(),
                    vm_res(),
                    &ObjectKey::new(ns, target_name),
                    |o| meta::set_annotation(o, CLONED_BY, &uid),
                )?;
            }
        } else {
            return Ok(Action::Requeue(Duration::from_millis(200)));
        }
        self.finish(c, target_name, "snapshot").await
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
            let patches = identity_patches(c, source_vm);
            if let Err(e) = apply_patches(&mut vm, &patches) {
                return self.fail(c, "InvalidPatch", &e);
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
            if matches!(
                c["status"]["phase"].as_str(),
                Some("Succeeded") | Some("Failed")
            ) {
                return Ok(Action::AwaitChange);
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
                match ignore_not_found(self.store().get(snapshot_res(), ns, &source_name))? {
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
                                    "",
                                    "SnapshotNotReady",
                                    &format!("waiting for snapshot {source_name:?} to be ready"),
                                )?;
                                return Ok(Action::Requeue(Duration::from_millis(500)));
                            }
                        }
                    }
                    None if c["status"]["phase"].is_string() && c["status"]["phase"] != "" => {
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
}
