//! Kubernetes Events, so `kubectl describe` shows what controllers did.

use api::meta;
use api::registry::by_plural;
use serde_json::{json, Value};
use std::sync::Arc;
use store::Store;

#[derive(Clone)]
pub struct Recorder {
    store: Arc<dyn Store>,
    component: &'static str,
}

#[derive(Debug, Clone, Copy)]
pub enum EventType {
    Normal,
    Warning,
}

impl Recorder {
    pub fn new(store: Arc<dyn Store>, component: &'static str) -> Self {
        Recorder { store, component }
    }

    /// Records an event about `obj`. A failure to record is logged, never fatal: events are
    /// advisory and must not block the work they describe.
    pub fn record(&self, obj: &Value, ty: EventType, reason: &str, message: &str) {
        let res = by_plural("", "events").expect("events are registered");
        let ns = match meta::namespace(obj) {
            "" => "default",
            ns => ns,
        };
        let now = chrono::Utc::now();
        let name = format!(
            "{}.{:x}",
            meta::name(obj),
            now.timestamp_nanos_opt().unwrap_or(0)
        );
        let ts = meta::now_rfc3339();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": obj["apiVersion"],
                "kind": obj["kind"],
                "name": meta::name(obj),
                "namespace": meta::namespace(obj),
                "uid": meta::uid(obj),
                "resourceVersion": meta::resource_version(obj),
            },
            "reason": reason,
            "message": message,
            "type": match ty { EventType::Normal => "Normal", EventType::Warning => "Warning" },
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
        });
        if let Err(e) = self.store.create(res, ev) {
            tracing::debug!(error = %e, reason, "could not record event");
        }
    }
}
