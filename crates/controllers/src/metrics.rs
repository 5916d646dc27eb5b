//! Prometheus metrics for snapshots and restores, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuiesceLabel {
    /// `freeze` (guest agent) or `pause` (QMP stop/cont).
    pub method: String,
}

pub struct Metrics {
    registry: Mutex<Registry>,
    pub snapshots: Family<ResultLabel, Counter>,
    pub snapshot_seconds: Histogram,
    pub freeze_window_seconds: Family<QuiesceLabel, Histogram>,
    pub restores: Family<ResultLabel, Counter>,
    pub restore_seconds: Histogram,
    pub snapshot_bytes: Gauge<u64, AtomicU64>,
    pub clones: Family<ResultLabel, Counter>,
}

fn buckets() -> impl Iterator<Item = f64> {
    [
        0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0,
    ]
    .into_iter()
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("vmsnap");
        let m = Metrics {
            registry: Mutex::new(Registry::default()),
            snapshots: Family::default(),
            snapshot_seconds: Histogram::new(buckets()),
            freeze_window_seconds: Family::new_with_constructor(|| Histogram::new(buckets())),
            restores: Family::default(),
            restore_seconds: Histogram::new(buckets()),
            snapshot_bytes: Gauge::default(),
            clones: Family::default(),
        };
        registry.register(
            "snapshots",
            "VM snapshots finished, by result",
            m.snapshots.clone(),
        );
        registry.register(
            "snapshot_duration_seconds",
            "From VirtualMachineSnapshot creation to Ready",
            m.snapshot_seconds.clone(),
        );
        registry.register(
            "freeze_window_seconds",
            "How long guest I/O was held for a snapshot",
            m.freeze_window_seconds.clone(),
        );
        registry.register(
            "restores",
            "VM restores finished, by result",
            m.restores.clone(),
        );
        registry.register(
            "restore_duration_seconds",
            "From VirtualMachineRestore creation to Ready",
            m.restore_seconds.clone(),
        );
        registry.register(
            "snapshot_bytes",
            "Bytes held by volume snapshots",
            m.snapshot_bytes.clone(),
        );
        registry.register("clones", "VM clones finished, by result", m.clones.clone());
        *m.registry.lock().expect("metrics lock") = registry;
        Arc::new(m)
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().expect("metrics lock");
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}

pub fn result(r: &str) -> ResultLabel {
    ResultLabel {
        result: r.to_string(),
    }
}
