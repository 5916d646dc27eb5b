//! VirtualMachineSnapshotContent: on deletion, its VolumeSnapshots (and through them the
//! storage snapshots) go too, unless they are still being used to restore.

use super::*;
use crate::context::Context;
use crate::runtime::{ignore_not_found, update_with, Action, ObjectKey, Reconciler};
use crate::snapshot::restore::restore_res;
use crate::snapshot::vmsnapshot::content_res;
use api::meta;
use api::registry::{by_plural, Resource};
use futures::future::BoxFuture;
use std::sync::Arc;

pub struct ContentReconciler {
    pub ctx: Context,
    pub backend: Arc<dyn SnapshotBackend>,
}

fn vs_res() -> &'static Resource {
    by_plural("snapshot.storage.k8s.io", "volumesnapshots").expect("registered")
}

fn vsc_res() -> &'static Resource {
    by_plural("snapshot.storage.k8s.io", "volumesnapshotcontents").expect("registered")
}

impl Reconciler for ContentReconciler {
    fn name(&self) -> &'static str {
        "vmsnapshotcontent"
    }
    fn resource(&self) -> &'static Resource {
        content_res()
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let store = self.ctx.store.as_ref();
            let Some(c) = ignore_not_found(store.get(content_res(), &key.namespace, &key.name))?
            else {
                return Ok(Action::AwaitChange);
            };
            if !meta::is_deleting(&c) {
                return Ok(Action::AwaitChange);
            }
            // A restore still making claims from these volume snapshots keeps them.
            let snap_name = c["spec"]["virtualMachineSnapshotName"]
                .as_str()
                .unwrap_or("");
            let all = meta::LabelSelector::default();
            let none = meta::FieldSelector::default();
            let restoring = store
                .list(restore_res(), Some(&key.namespace), &all, &none)?
                .items
                .iter()
                .any(|r| {
                    r["spec"]["virtualMachineSnapshotName"] == snap_name
                        && r["status"]["complete"] != true
                        && api::condition(r, "Failure") != Some(true)
                        && !meta::is_deleting(r)
                });
            if restoring {
                return Ok(Action::requeue_ms(500));
            }
            let mut remaining = 0;
            for b in c["spec"]["volumeBackups"].as_array().into_iter().flatten() {
                let Some(vs) = b["volumeSnapshotName"].as_str() else {
                    continue;
                };
                if let Some(o) = ignore_not_found(store.get(vs_res(), &key.namespace, vs))? {
                    remaining += 1;
                    if !meta::is_deleting(&o) {
                        store.delete(vs_res(), &key.namespace, vs, &Default::default())?;
                    }
                    continue;
                }
                // The VolumeSnapshot is gone; its pre-provisioned content goes with it. From
                // there the storage controller owns the storage snapshot (its finalizer deletes
                // it, or keeps it while the driver refuses), so this does not wait for it.
                let vsc = self.backend.content_name(vs);
                if let Some(o) = ignore_not_found(store.get(vsc_res(), "", &vsc))? {
                    if o["spec"]["deletionPolicy"] != "Retain" && !meta::is_deleting(&o) {
                        store.delete(vsc_res(), "", &vsc, &Default::default())?;
                    }
                    continue;
                }
                // Never published (a failed or interrupted attempt): drop the storage snapshot
                // directly so nothing is left behind, even when the claim is gone by now.
                let pvc = &b["persistentVolumeClaim"];
                let claim = pvc["metadata"]["name"].as_str().unwrap_or("");
                let r = match (
                    pvc["spec"]["storageClassName"].as_str(),
                    pvc["spec"]["volumeName"].as_str(),
                ) {
                    (Some(class), Some(vol)) => self.backend.discard_volume(class, vol, vs),
                    _ => self.backend.discard(&key.namespace, claim, vs),
                };
                if let Err(e) = r {
                    if !e.is(api::ErrorKind::NotFound) {
                        tracing::warn!(error = %e, snapshot = vs, "could not discard an unpublished snapshot");
                        remaining += 1;
                    }
                }
            }
            if remaining > 0 {
                return Ok(Action::requeue_ms(300));
            }
            update_with(store, content_res(), key, |o| {
                meta::remove_finalizer(o, CONTENT_FINALIZER);
            })?;
            Ok(Action::AwaitChange)
        })
    }
}
