//! VirtualMachineSnapshotContent: on deletion, its VolumeSnapshots (and through them the
//! storage snapshots) go too, unless they are still being used to restore.

use super::*;
use crate::context::Context;
use crate::runtime::{ignore_not_found, update_with, Action, ObjectKey, Reconciler};
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
            let mut remaining = 0;
            for b in c["spec"]["volumeBackups"].as_array().into_iter().flatten() {
                let Some(vs) = b["volumeSnapshotName"].as_str() else {
                    continue;
                };
                match ignore_not_found(store.get(vs_res(), &key.namespace, vs))? {
                    Some(o) => {
                        remaining += 1;
                        if !meta::is_deleting(&o) {
                            store.delete(vs_res(), &key.namespace, vs, &Default::default())?;
                        }
                    }
                    None => {
                        // Never published (a failed or interrupted attempt): drop the storage
                        // snapshot directly so nothing is left behind.
                        let claim = b["persistentVolumeClaim"]["metadata"]["name"]
                            .as_str()
                            .unwrap_or("");
                        if let Err(e) = self.backend.discard(&key.namespace, claim, vs) {
                            if !e.is(api::ErrorKind::NotFound) {
                                tracing::warn!(error = %e, snapshot = vs, "could not discard an unpublished snapshot");
                                remaining += 1;
                            }
                        }
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
