//! The `KubeVirt` object: vmsnap is always "deployed"; the reconciler reports that, and turns
//! feature-gate changes into events so operators can see when they took effect.

use crate::events::{EventType, Recorder};
use crate::runtime::{ignore_not_found, update_status_with, Action, ObjectKey, Reconciler};
use api::registry::{by_plural, Resource};
use futures::future::BoxFuture;
use serde_json::{json, Value};
use std::sync::Arc;
use store::Store;

pub struct KubeVirtReconciler {
    pub store: Arc<dyn Store>,
    pub recorder: Recorder,
}

pub fn feature_gates(kv: &Value) -> Vec<String> {
    kv["spec"]["configuration"]["developerConfiguration"]["featureGates"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

impl Reconciler for KubeVirtReconciler {
    fn name(&self) -> &'static str {
        "kubevirt"
    }
    fn resource(&self) -> &'static Resource {
        by_plural("kubevirt.io", "kubevirts").expect("registered")
    }
    fn concurrency(&self) -> usize {
        1
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let res = self.resource();
            let Some(kv) = ignore_not_found(self.store.get(res, &key.namespace, &key.name))? else {
                return Ok(Action::AwaitChange);
            };
            let gates = feature_gates(&kv);
            let observed: Vec<String> = kv["status"]["observedFeatureGates"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|g| g.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let first = kv["status"]["phase"].is_null();
            let generation = api::meta::generation(&kv);
            update_status_with(self.store.as_ref(), res, key, |o| {
                o["status"]["phase"] = json!("Deployed");
                o["status"]["observedGeneration"] = json!(generation);
                o["status"]["observedFeatureGates"] = json!(gates);
                api::set_condition(
                    o,
                    "Available",
                    true,
                    "AllResourcesReady",
                    "vmsnap serves every KubeVirt API in-process",
                );
            })?;
            if !first && gates != observed {
                let msg = format!(
                    "feature gates are now [{}] (were [{}])",
                    gates.join(", "),
                    observed.join(", ")
                );
                self.recorder
                    .record(&kv, EventType::Normal, "FeatureGatesChanged", &msg);
            }
            Ok(Action::AwaitChange)
        })
    }
}
