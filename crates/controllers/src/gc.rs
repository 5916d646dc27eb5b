//! Garbage collection through ownerReferences (background propagation) and namespace
//! termination. Both are level-triggered: a restart simply finds the remaining work again.

use crate::runtime::{Action, ObjectKey, Reconciler};
use api::meta;
use api::registry::{by_plural, Resource, RESOURCES};
use futures::future::BoxFuture;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use store::{Preconditions, Store};

/// Deletes every object whose owners are all gone. It scans on a short period and on every
/// deletion; scans read only memory, so they are cheap at the sizes vmsnap runs at.
pub fn spawn_garbage_collector(store: Arc<dyn Store>) {
    tokio::spawn(async move {
        let mut from = store.revision();
        loop {
            collect_orphans(store.as_ref());
            // Wake on the next deletion anywhere, or after a few seconds.
            let mut w = match store.watch(None, None, from) {
                Ok(w) => w,
                Err(_) => {
                    from = store.revision();
                    continue;
                }
            };
            let deadline = tokio::time::sleep(Duration::from_secs(5));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    ev = w.next() => match ev {
                        Some(Ok(ev)) => {
                            from = ev.revision;
                            if matches!(ev.ty, store::EventType::Deleted) || meta::is_deleting(&ev.object) {
                                break;
                            }
                        }
                        _ => { from = store.revision(); break; }
                    },
                    _ = &mut deadline => break,
                }
            }
        }
    });
}

/// One pass: returns how many dependents were deleted.
pub fn collect_orphans(store: &dyn Store) -> usize {
    let all = meta::LabelSelector::default();
    let none = meta::FieldSelector::default();
    let mut live: HashSet<String> = HashSet::new();
    let mut dependents: Vec<(&'static Resource, Arc<Value>)> = Vec::new();
    for res in RESOURCES {
        let Ok(list) = store.list(res, None, &all, &none) else {
            continue;
        };
        for o in list.items {
            // An owner being deleted in the foreground still counts as live; background
            // propagation only removes dependents of owners that are gone.
            live.insert(meta::uid(&o).to_string());
            if !meta::owner_uids(&o).is_empty() {
                dependents.push((res, o));
            }
        }
    }
    let mut n = 0;
    for (res, o) in dependents {
        let owners = meta::owner_uids(&o);
        if owners.iter().all(|u| !live.contains(u)) && !meta::is_deleting(&o) {
            let pre = Preconditions {
                uid: Some(meta::uid(&o).to_string()),
                resource_version: None,
            };
            match store.delete(res, meta::namespace(&o), meta::name(&o), &pre) {
                Ok(_) => {
                    n += 1;
                    tracing::info!(
                        kind = res.kind,
                        name = meta::name(&o),
                        namespace = meta::namespace(&o),
                        "garbage-collected a dependent whose owner is gone"
                    );
                }
                Err(e) => tracing::debug!(error = %e, "garbage collection of a dependent failed"),
            }
        }
    }
    n
}

pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// Namespaces: Active while they live; on deletion, every object inside is deleted, and the
/// namespace goes once it is empty.
pub struct NamespaceReconciler {
    pub store: Arc<dyn Store>,
}

impl Reconciler for NamespaceReconciler {
    fn name(&self) -> &'static str {
        "namespace"
    }
    fn resource(&self) -> &'static Resource {
        by_plural("", "namespaces").expect("registered")
    }
    fn concurrency(&self) -> usize {
        1
    }
    fn reconcile<'a>(&'a self, key: &'a ObjectKey) -> BoxFuture<'a, api::Result<Action>> {
        Box::pin(async move {
            let res = self.resource();
            let Some(ns) = crate::runtime::ignore_not_found(self.store.get(res, "", &key.name))?
            else {
                return Ok(Action::AwaitChange);
            };
            if !meta::is_deleting(&ns) {
                if !meta::has_finalizer(&ns, NAMESPACE_FINALIZER) {
                    crate::runtime::update_with(self.store.as_ref(), res, key, |o| {
                        meta::add_finalizer(o, NAMESPACE_FINALIZER);
                    })?;
                }
                crate::runtime::update_status_with(self.store.as_ref(), res, key, |o| {
                    o["status"] = serde_json::json!({"phase": "Active"});
                })?;
                return Ok(Action::AwaitChange);
            }
            crate::runtime::update_status_with(self.store.as_ref(), res, key, |o| {
                o["status"] = serde_json::json!({"phase": "Terminating"});
            })?;
            let all = meta::LabelSelector::default();
            let none = meta::FieldSelector::default();
            let mut remaining = 0;
            for r in RESOURCES.iter().filter(|r| r.namespaced) {
                for o in self.store.list(r, Some(&key.name), &all, &none)?.items {
                    remaining += 1;
                    if !meta::is_deleting(&o) {
                        let _ = self.store.delete(
                            r,
                            &key.name,
                            meta::name(&o),
                            &Preconditions::default(),
                        );
                    }
                }
            }
            if remaining > 0 {
                return Ok(Action::requeue_ms(500));
            }
            crate::runtime::update_with(self.store.as_ref(), res, key, |o| {
                meta::remove_finalizer(o, NAMESPACE_FINALIZER);
            })?;
            Ok(Action::AwaitChange)
        })
    }
}
