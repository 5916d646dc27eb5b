//! StorageProfiles, computed per StorageClass as CDI does: `status.cloneStrategy` from the
//! driver's flags (csi-clone when clones are copy-on-write, snapshot when it can snapshot and
//! restore and a VolumeSnapshotClass exists, else copy) unless `spec.cloneStrategy` overrides
//! it; `status.snapshotClass`; `status.claimPropertySets`. vmsnap adds `status.pool` (driver,
//! path, total, used, free, reserve) and `status.capabilities`, refreshed every few seconds,
//! which `vmsnap storage usage` reads. A profile whose class does not exist is left alone.

use super::pools::Pools;
use super::util;
use crate::runtime::{ignore_not_found, update_status_with, Action, Mapper, ObjectKey, Reconciler};
use api::registry::Resource;
use api::{meta, ErrorKind};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub struct StorageProfileReconciler {
    pub pools: Arc<Pools>,
}

impl Reconciler for StorageProfileReconciler {
    fn name(&self) -> &'static str {
        "storageprofile"
    }
    fn resource(&self) -> &'static Resource {
        util::storage_profiles()
    }
    fn concurrency(&self) -> usize {
        1
    }
    fn watches(&self) -> Vec<(&'static Resource, Mapper)> {
        let same_name: Mapper = Arc::new(|o: &Value| vec![ObjectKey::new("", meta::name(o))]);
        let store = self.pools.store.clone();
        let every_class: Mapper = Arc::new(move |_: &Value| {
            util::list_all(store.as_ref(), util::storage_classes(), None)
                .unwrap_or_default()
                .iter()
                .map(|c| ObjectKey::new("", meta::name(c)))
                .collect()
        });
        vec![
            (util::storage_classes(), same_name),
            (util::snapshot_classes(), every_class),
        ]
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        util::blocking_pass(&self.pools, key, "storageprofile", Pools::reconcile_profile)
    }
}

impl Pools {
    pub(crate) fn reconcile_profile(&self, key: &ObjectKey) -> api::Result<Action> {
        let store = self.store.as_ref();
        let Some(sc) = ignore_not_found(store.get(util::storage_classes(), "", &key.name))? else {
            return Ok(Action::AwaitChange);
        };
        let res = util::storage_profiles();
        let profile = match ignore_not_found(store.get(res, "", &key.name))? {
            Some(p) => p,
            None => {
                let mut p = json!({
                    "apiVersion": "cdi.kubevirt.io/v1beta1",
                    "kind": "StorageProfile",
                    "metadata": {"name": key.name, "labels": {"app": "containerized-data-importer"}},
                    "spec": {},
                });
                meta::set_owner(&mut p, &sc);
                let p = api::admit(res, p, api::FieldValidation::Strict)?.object;
                match store.create(res, p) {
                    Ok(p) => p,
                    Err(e) if e.is(ErrorKind::AlreadyExists) => store.get(res, "", &key.name)?,
                    Err(e) => return Err(e),
                }
            }
        };
        let provisioner = sc["provisioner"].as_str().unwrap_or("").to_string();
        let spec = &profile["spec"];
        let default_sets = json!([{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}]);
        let mut status = json!({"storageClass": key.name, "provisioner": provisioner});
        let vsc = self.snapshot_class_for(&key.name, &provisioner)?;
        if let Some(v) = &vsc {
            status["snapshotClass"] = json!(meta::name(v));
        }
        let ours = match self.class(&key.name) {
            Ok(class) => {
                let computed = self.computed_strategy(&class)?;
                status["cloneStrategy"] = spec["cloneStrategy"]
                    .as_str()
                    .map(|s| json!(s))
                    .unwrap_or(json!(computed.as_str()));
                status["claimPropertySets"] = if spec["claimPropertySets"].is_array() {
                    spec["claimPropertySets"].clone()
                } else {
                    default_sets
                };
                status["pool"] = self.pool_summary(&class);
                status["capabilities"] = serde_json::to_value(class.caps()).unwrap_or(Value::Null);
                true
            }
            Err(_) => {
                let fallback = if vsc.is_some() { "snapshot" } else { "copy" };
                status["cloneStrategy"] = spec["cloneStrategy"]
                    .as_str()
                    .map(|s| json!(s))
                    .unwrap_or(json!(fallback));
                if spec["claimPropertySets"].is_array() {
                    status["claimPropertySets"] = spec["claimPropertySets"].clone();
                }
                false
            }
        };
        // Free space moves with every write anywhere on the filesystem; publishing each
        // change would make every profile write (and wake its watchers) continuously.
        if let Some(prev) = profile["status"]["pool"].as_object() {
            let total = status["pool"]["total"].as_u64().unwrap_or(0);
            let threshold = (total / 1000).max(1 << 20);
            let close = |k: &str| {
                let (a, b) = (
                    prev.get(k).and_then(Value::as_u64),
                    status["pool"][k].as_u64(),
                );
                matches!((a, b), (Some(a), Some(b)) if a.abs_diff(b) < threshold)
            };
            if close("free") && close("used") && close("total") {
                status["pool"] = profile["status"]["pool"].clone();
            }
        }
        update_status_with(store, res, key, |o| {
            o["status"] = status.clone();
        })?;
        Ok(if ours {
            Action::Requeue(Duration::from_secs(10))
        } else {
            Action::AwaitChange
        })
    }
}
