//! The store benchmark behind `cargo bench -p store` and `vmsnap bench store`: create and list
//! throughput with 10,000 VirtualMachineSnapshots, and the latency from a write until 100
//! concurrent watchers see it.

use crate::{SqliteStore, Store, StoreOptions};
use api::meta::{FieldSelector, LabelSelector};
use api::{Error, Resource, Result};
use serde_json::{json, Value};
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What the benchmark does; [`BenchConfig::default`] is the workload.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub objects: usize,
    pub selected: usize,
    pub create_threads: usize,
    pub watchers: usize,
    pub watch_writes: usize,
    pub list_runs: usize,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            objects: 10_000,
            selected: 100,
            create_threads: 8,
            watchers: 100,
            watch_writes: 1_000,
            list_runs: 7,
        }
    }
}

/// The measured figures. Times are in milliseconds unless named otherwise.
#[derive(Debug, Clone, Default)]
pub struct BenchReport {
    pub objects: usize,
    pub object_bytes: usize,
    pub create_threads: usize,
    pub create_secs: f64,
    pub creates_per_sec: f64,
    pub list_all_count: usize,
    pub list_all_ms: f64,
    pub list_all_max_ms: f64,
    /// Listing all objects and serializing them into one JSON list body, as a server would.
    pub list_all_json_ms: f64,
    pub list_all_json_bytes: usize,
    pub list_selected_count: usize,
    pub list_selected_ms: f64,
    pub list_selected_max_ms: f64,
    pub watchers: usize,
    pub watch_writes: usize,
    /// Latency from the start of a write until one watcher receives it, over every
    /// (write, watcher) pair.
    pub watch_p50_ms: f64,
    pub watch_p99_ms: f64,
    pub watch_max_ms: f64,
    /// Latency from the start of a write until the last of all watchers received it.
    pub watch_all_p99_ms: f64,
    /// How long each of those writes took to be acknowledged (committed and synced).
    pub write_p50_ms: f64,
    pub write_p99_ms: f64,
    /// Set when the benchmark could not run to the end.
    pub error: Option<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            return writeln!(f, "store benchmark failed: {e}");
        }
        let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
        writeln!(
            f,
            "create:        {} VirtualMachineSnapshots (~{} bytes each) from {} threads in {:.2} s = {:.0} creates/s",
            self.objects, self.object_bytes, self.create_threads, self.create_secs, self.creates_per_sec
        )?;
        writeln!(
            f,
            "list all:      {} objects in {:.2} ms median, {:.2} ms max (goal < 200 ms: {}); with JSON encoding of {:.1} MB: {:.1} ms",
            self.list_all_count,
            self.list_all_ms,
            self.list_all_max_ms,
            verdict(self.list_all_max_ms < 200.0),
            self.list_all_json_bytes as f64 / 1e6,
            self.list_all_json_ms
        )?;
        writeln!(
            f,
            "list selected: {} objects by label in {:.3} ms median, {:.3} ms max (goal < 20 ms: {})",
            self.list_selected_count,
            self.list_selected_ms,
            self.list_selected_max_ms,
            verdict(self.list_selected_max_ms < 20.0)
        )?;
        writeln!(
            f,
            "write:         each of the watched writes acknowledged (fsynced) in p50 {:.2} ms, p99 {:.2} ms",
            self.write_p50_ms, self.write_p99_ms
        )?;
        write!(
            f,
            "watch:         {} writes to {} watchers: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; all watchers p99 {:.2} ms (goal p99 < 50 ms: {})",
            self.watch_writes,
            self.watchers,
            self.watch_p50_ms,
            self.watch_p99_ms,
            self.watch_max_ms,
            self.watch_all_p99_ms,
            verdict(self.watch_p99_ms < 50.0)
        )
    }
}

/// Runs the default benchmark in `dir` (a fresh database file is created there and removed
/// afterwards). Failures are reported in [`BenchReport::error`].
pub fn run(dir: &Path) -> BenchReport {
    try_run(dir, &BenchConfig::default()).unwrap_or_else(|e| BenchReport {
        error: Some(e.to_string()),
        ..Default::default()
    })
}

fn snapshot_resource() -> Result<&'static Resource> {
    api::registry::by_plural("snapshot.kubevirt.io", "virtualmachinesnapshots")
        .ok_or_else(|| Error::internal("VirtualMachineSnapshot is not registered"))
}

/// A VirtualMachineSnapshot as a user or controller would write it, about 600 bytes.
pub fn sample_snapshot(i: usize, selected: bool) -> Value {
    let mut labels = json!({
        "app.kubernetes.io/name": "database",
        "app.kubernetes.io/part-of": "inventory",
        "vmsnap.io/vm": format!("vm-{:05}", i % 500),
        "tier": "backend",
    });
    if selected {
        labels["bench.vmsnap.io/selected"] = json!("yes");
    }
    json!({
        "apiVersion": "snapshot.kubevirt.io/v1beta1",
        "kind": "VirtualMachineSnapshot",
        "metadata": {
            "name": format!("snap-{i:05}"),
            "namespace": "bench",
            "labels": labels,
            "annotations": {
                "vmsnap.io/description": "nightly snapshot taken by the backup schedule before maintenance",
            },
        },
        "spec": {
            "source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": format!("vm-{:05}", i % 500)},
            "failureDeadline": "5m0s",
            "deletionPolicy": "Delete",
        },
        "status": {
            "phase": "Succeeded",
            "readyToUse": true,
            "creationTime": "2025-01-01T00:00:00Z",
            "indications": ["Online", "GuestAgent"],
        },
    })
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    ms(sorted[idx.min(sorted.len() - 1)])
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
}

/// Runs the benchmark with an explicit workload.
pub fn try_run(dir: &Path, cfg: &BenchConfig) -> Result<BenchReport> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::internal(format!("cannot create {}: {e}", dir.display())))?;
    let db = dir.join("bench-store.db");
    remove_db(&db);
    let store = Arc::new(SqliteStore::open(&db, StoreOptions::default())?);
    let report = measure(&store, cfg);
    drop(store);
    remove_db(&db);
    report
}

fn measure(store: &Arc<SqliteStore>, cfg: &BenchConfig) -> Result<BenchReport> {
    let res = snapshot_resource()?;
    let mut report = BenchReport {
        objects: cfg.objects,
        object_bytes: serde_json::to_vec(&sample_snapshot(0, false))
            .map(|v| v.len())
            .unwrap_or(0),
        create_threads: cfg.create_threads,
        watchers: cfg.watchers,
        watch_writes: cfg.watch_writes,
        ..Default::default()
    };

    // Every n-th object carries the selected label, spread over the key space.
    let stride = (cfg.objects / cfg.selected.max(1)).max(1);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..cfg.create_threads.max(1))
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    let mut i = t;
                    while i < cfg.objects {
                        let selected = i % stride == 0 && i / stride < cfg.selected;
                        store.create(res, sample_snapshot(i, selected))?;
                        i += cfg.create_threads.max(1);
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| Error::internal("a create thread panicked"))??;
        }
        Ok(())
    })?;
    let elapsed = start.elapsed();
    report.create_secs = elapsed.as_secs_f64();
    report.creates_per_sec = cfg.objects as f64 / elapsed.as_secs_f64();

    let all = LabelSelector::default();
    let none = FieldSelector::default();
    let selector = LabelSelector::parse("bench.vmsnap.io/selected=yes")?;
    let mut all_times = Vec::new();
    let mut sel_times = Vec::new();
    for _ in 0..cfg.list_runs.max(1) {
        let t = Instant::now();
        let list = store.list(res, Some("bench"), &all, &none)?;
        all_times.push(t.elapsed());
        report.list_all_count = list.items.len();
        let t = Instant::now();
        let list = store.list(res, Some("bench"), &selector, &none)?;
        sel_times.push(t.elapsed());
        report.list_selected_count = list.items.len();
    }
    all_times.sort();
    sel_times.sort();
    report.list_all_ms = percentile(&all_times, 0.5);
    report.list_all_max_ms = percentile(&all_times, 1.0);
    report.list_selected_ms = percentile(&sel_times, 0.5);
    report.list_selected_max_ms = percentile(&sel_times, 1.0);
    let t = Instant::now();
    let list = store.list(res, Some("bench"), &all, &none)?;
    let body = ListBody {
        api_version: "snapshot.kubevirt.io/v1beta1",
        kind: "VirtualMachineSnapshotList",
        metadata: json!({"resourceVersion": list.revision.to_string()}),
        items: list.items.iter().map(|o| &**o).collect(),
    };
    let encoded = serde_json::to_vec(&body)?;
    report.list_all_json_ms = ms(t.elapsed());
    report.list_all_json_bytes = encoded.len();

    watch_latency(store, res, cfg, &mut report)?;
    Ok(report)
}

/// A list response body, encoded without copying the objects.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ListBody<'a> {
    api_version: &'a str,
    kind: &'a str,
    metadata: Value,
    items: Vec<&'a Value>,
}

fn watch_latency(
    store: &Arc<SqliteStore>,
    res: &'static Resource,
    cfg: &BenchConfig,
    report: &mut BenchReport,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start a runtime: {e}")))?;
    let from = store.revision();
    let writes = cfg.watch_writes;
    let mut tasks = Vec::new();
    for _ in 0..cfg.watchers {
        let mut w = store.watch(Some(res), Some("bench"), from)?;
        tasks.push(rt.spawn(async move {
            let mut seen = Vec::with_capacity(writes);
            while seen.len() < writes {
                match w.next().await {
                    Some(Ok(ev)) => seen.push((ev.revision, Instant::now())),
                    Some(Err(e)) => return Err(e),
                    None => return Err(Error::internal("the watch ended early")),
                }
            }
            Ok(seen)
        }));
    }

    let mut started = std::collections::HashMap::with_capacity(writes);
    let mut write_times = Vec::with_capacity(writes);
    for i in 0..writes {
        let body = json!({
            "metadata": {"name": format!("snap-{:05}", i % cfg.objects.max(1)), "namespace": "bench"},
            "status": {"phase": "InProgress", "readyToUse": false, "progress": i},
        });
        let t = Instant::now();
        let obj = store.update_status(res, body)?;
        write_times.push(t.elapsed());
        let rev: u64 = api::meta::resource_version(&obj).parse().unwrap_or(0);
        started.insert(rev, t);
    }

    let results = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(
                tokio::time::timeout(Duration::from_secs(60), t)
                    .await
                    .map_err(|_| Error::internal("watchers did not see every write"))?
                    .map_err(|e| Error::internal(format!("a watcher failed: {e}")))??,
            );
        }
        Ok::<_, Error>(out)
    })?;
    let mut each = Vec::with_capacity(writes * cfg.watchers);
    let mut last_seen: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
    for seen in &results {
        for (rev, at) in seen {
            let Some(start) = started.get(rev) else {
                return Err(Error::internal(format!(
                    "a watcher saw revision {rev} that no write produced"
                )));
            };
            each.push(at.saturating_duration_since(*start));
            let e = last_seen.entry(*rev).or_insert(*at);
            if *at > *e {
                *e = *at;
            }
        }
    }
    let mut all: Vec<Duration> = last_seen
        .iter()
        .filter_map(|(rev, at)| started.get(rev).map(|s| at.saturating_duration_since(*s)))
        .collect();
    each.sort();
    all.sort();
    write_times.sort();
    report.write_p50_ms = percentile(&write_times, 0.5);
    report.write_p99_ms = percentile(&write_times, 0.99);
    report.watch_p50_ms = percentile(&each, 0.5);
    report.watch_p99_ms = percentile(&each, 0.99);
    report.watch_max_ms = percentile(&each, 1.0);
    report.watch_all_p99_ms = percentile(&all, 0.99);
    Ok(())
}
