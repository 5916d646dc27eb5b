//! `vmsnap serve`: wires the store, controllers and API server together in one process.

use api::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use store::Store;

fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("VMSNAP_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

pub fn run(
    data_dir: PathBuf,
    listen: SocketAddr,
    accel: &str,
    opts: store::StoreOptions,
) -> api::Result<()> {
    init_logging();
    std::fs::create_dir_all(&data_dir).map_err(|e| {
        Error::internal(format!(
            "cannot create data dir {}: {e}",
            data_dir.display()
        ))
    })?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
    rt.block_on(serve(data_dir, listen, accel, opts))
}

async fn serve(
    data_dir: PathBuf,
    listen: SocketAddr,
    accel: &str,
    opts: store::StoreOptions,
) -> api::Result<()> {
    let store: Arc<dyn Store> =
        Arc::new(store::SqliteStore::open(&data_dir.join("store.db"), opts)?);
    controllers::bootstrap::bootstrap(store.as_ref())?;
    let mut rt = controllers::Runtime::new(store.clone());
    rt.register(Arc::new(controllers::gc::NamespaceReconciler {
        store: store.clone(),
    }));
    rt.register(Arc::new(controllers::kubevirt::KubeVirtReconciler {
        store: store.clone(),
        recorder: controllers::events::Recorder::new(store.clone(), "vmsnap-controller"),
    }));
    let ctx = controllers::Context::new(store.clone(), data_dir.clone());
    let metrics = controllers::metrics::Metrics::new();
    let mut vm_actions: Option<Arc<dyn apiserver::ext::VmActions>> = None;
    let mut uploads: Option<Arc<dyn apiserver::ext::Uploads>> = None;
    let mut hooks: Vec<Arc<dyn apiserver::AdmissionHook>> = Vec::new();
    // Like Incus, the default pool lives on a loop-mounted btrfs image when the data dir's
    // filesystem has no copy-on-write, so snapshots and clones stay O(1) on any host.
    if std::env::var_os("VMSNAP_PLAIN_DEFAULT_POOL").is_none() {
        match storage::looppool::prepare_default_pool(&data_dir.join("pools/default")) {
            Ok(what) => tracing::info!(what, "default pool prepared"),
            Err(e) => {
                tracing::warn!(error = %e, "no loop-backed default pool; using the data dir's filesystem")
            }
        }
    }
    // --- storage ---
    // Pools, claims, snapshots, DataVolumes and profiles. `pools` is what other controllers
    // use for volumes (e.g. `pools.attachment_for_claim(ns, claim)`).
    let pools = controllers::storage::start(store.clone(), data_dir.clone(), &mut rt)?;
    {
        type Fut<'a> = std::pin::Pin<
            Box<dyn std::future::Future<Output = api::Result<serde_json::Value>> + Send + 'a>,
        >;
        struct StorageUploads(Arc<controllers::storage::Pools>);
        impl apiserver::ext::Uploads for StorageUploads {
            fn upload<'a>(
                &'a self,
                namespace: &'a str,
                name: &'a str,
                content_length: Option<u64>,
                body: apiserver::ext::ByteStream,
            ) -> Fut<'a> {
                Box::pin(controllers::storage::receive_upload(
                    self.0.clone(),
                    namespace,
                    name,
                    content_length,
                    body,
                ))
            }
        }
        struct StorageAdmission(Arc<controllers::storage::Pools>);
        impl apiserver::AdmissionHook for StorageAdmission {
            fn admit(
                &self,
                req: &apiserver::AdmissionRequest<'_>,
                object: Option<&mut serde_json::Value>,
            ) -> api::Result<()> {
                let obj = object.map(|o| &*o).or(req.object);
                self.0.admit(req.resource, req.subresource, obj, req.old)
            }
        }
        if uploads.is_none() {
            uploads = Some(Arc::new(StorageUploads(pools.clone())));
        }
        hooks.push(Arc::new(StorageAdmission(pools.clone())));
    }
    // --- end storage ---
    // --- vm ---
    let accel_mode: controllers::vm::AccelMode = accel
        .parse()
        .map_err(|e| Error::bad_request(format!("--accel: {e}")))?;
    let vm_runtime = controllers::vm::VmRuntime::start(
        &ctx,
        controllers::vm::RuntimeOptions {
            accel: accel_mode,
            guest_dir: controllers::vm::default_guest_dir(),
            volumes: {
                let pools = pools.clone();
                Arc::new(move |ns: &str, claim: &str| pools.attachment_for_claim(ns, claim))
            },
        },
    )
    .await?;
    for r in controllers::vm::reconcilers(&vm_runtime) {
        rt.register(r);
    }
    if vm_actions.is_none() {
        vm_actions = Some(Arc::new(crate::vm_actions::VmActionsAdapter {
            rt: vm_runtime.clone(),
            pools: pools.clone(),
        }));
    }
    // --- end vm ---
    // --- snapshot ---
    {
        use controllers::snapshot::{adapters, content, restore, vmsnapshot};
        let guest: Arc<dyn controllers::snapshot::GuestControl> =
            Arc::new(adapters::VmGuest(vm_runtime.clone()));
        let backend: Arc<dyn controllers::snapshot::SnapshotBackend> =
            Arc::new(adapters::PoolBackend(pools.clone()));
        rt.register(Arc::new(vmsnapshot::SnapshotReconciler {
            ctx: ctx.clone(),
            guest: guest.clone(),
            backend: backend.clone(),
            metrics: metrics.clone(),
        }));
        rt.register(Arc::new(content::ContentReconciler {
            ctx: ctx.clone(),
            backend: backend.clone(),
        }));
        rt.register(Arc::new(restore::RestoreReconciler {
            ctx: ctx.clone(),
            guest,
            metrics: metrics.clone(),
        }));
        rt.register(Arc::new(controllers::clone::CloneReconciler {
            ctx: ctx.clone(),
            backend,
            metrics: metrics.clone(),
        }));
        hooks.push(Arc::new(SnapshotAdmission));
        // `vmsnap_snapshot_bytes`: the restore size of every ready VolumeSnapshot, i.e. the
        // logical bytes snapshots hold (CoW pools share most of them with live volumes).
        let (m, st) = (metrics.clone(), store.clone());
        tokio::spawn(async move {
            let vs = api::registry::by_plural("snapshot.storage.k8s.io", "volumesnapshots")
                .expect("registered");
            loop {
                let all = api::meta::LabelSelector::default();
                let none = api::meta::FieldSelector::default();
                if let Ok(l) = st.list(vs, None, &all, &none) {
                    let bytes: u64 = l
                        .items
                        .iter()
                        .filter(|s| s["status"]["readyToUse"] == true)
                        .filter_map(|s| {
                            s["status"]["restoreSize"]
                                .as_str()
                                .and_then(api::types::parse_quantity)
                                .or_else(|| s["status"]["restoreSize"].as_u64())
                        })
                        .sum();
                    m.snapshot_bytes.set(bytes);
                }
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            }
        });
    }
    // --- end snapshot ---
    rt.start();
    controllers::gc::spawn_garbage_collector(store.clone());
    tracing::info!(data_dir = %data_dir.display(), "vmsnap is starting; kubeconfig at {}", data_dir.join("kubeconfig").display());
    apiserver::serve(apiserver::Config {
        listen,
        data_dir,
        store,
        hooks,
        metrics: Some(Arc::new(move || metrics.render())),
        extra: None,
        public: None,
        vm_actions,
        uploads,
    })
    .await
}

/// Snapshot-era admission rules (VM locks, one restore per target) behind the API server's
/// hook interface.
struct SnapshotAdmission;

impl apiserver::AdmissionHook for SnapshotAdmission {
    fn admit(
        &self,
        req: &apiserver::AdmissionRequest<'_>,
        _object: Option<&mut serde_json::Value>,
    ) -> api::Result<()> {
        use controllers::snapshot::admission::{check, Op};
        let op = match req.operation {
            apiserver::Operation::Create => Op::Create,
            apiserver::Operation::Update => Op::Update,
            apiserver::Operation::Delete => Op::Delete,
        };
        check(
            req.store,
            req.resource.kind,
            op,
            req.subresource == Some("status"),
            req.object,
            req.old,
        )
    }
}

fn bench_runs(default: usize) -> usize {
    std::env::var("VMSNAP_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(default)
}

/// A script of the repo, found next to the executable's checkout (or $VMSNAP_REPO).
fn repo_script(name: &str) -> api::Result<PathBuf> {
    let mut bases: Vec<PathBuf> = std::env::var_os("VMSNAP_REPO")
        .map(PathBuf::from)
        .into_iter()
        .collect();
    if let Ok(exe) = std::env::current_exe() {
        bases.extend(exe.ancestors().map(Path::to_path_buf));
    }
    if let Ok(cwd) = std::env::current_dir() {
        bases.push(cwd);
    }
    bases
        .into_iter()
        .map(|b| b.join("scripts").join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::not_found(format!(
                "scripts/{name} not found; set VMSNAP_REPO to the checkout"
            ))
        })
}

pub fn bench(what: &str, dir: Option<PathBuf>) -> api::Result<()> {
    let tmp;
    let dir: &Path = match &dir {
        Some(d) => d,
        None => {
            tmp = std::env::temp_dir().join(format!("vmsnap-bench-{}", std::process::id()));
            std::fs::create_dir_all(&tmp).map_err(|e| Error::internal(e.to_string()))?;
            &tmp
        }
    };
    match what {
        "store" => {
            let report = store::bench::run(dir);
            println!("{report}");
            Ok(())
        }
        // --- vm bench ---
        "vm" => {
            // Boot-to-agent and 20 freeze/thaw round trips on the real guest image; the
            // accelerator comes from $VMSNAP_ACCEL (kvm, tcg or auto; default auto).
            let mode: controllers::vm::AccelMode = std::env::var("VMSNAP_ACCEL")
                .unwrap_or_else(|_| "auto".into())
                .parse()
                .map_err(|e| Error::bad_request(format!("VMSNAP_ACCEL: {e}")))?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::internal(format!("cannot start the runtime: {e}")))?;
            let guest = crate::vm_cli::ensure_guest_image()?;
            rt.block_on(controllers::vm::bench(&guest, dir, mode))?;
            Ok(())
        }
        // --- end vm bench ---
        "snapshot" => crate::snap_bench::snapshot(dir, bench_runs(20)),
        "clone" => crate::snap_bench::clone(dir, bench_runs(5)),
        "storage" => {
            let pools = dir.join("pools");
            let out = Command::new("bash")
                .arg(repo_script("mkpools.sh")?)
                .arg(&pools)
                .status()
                .map_err(|e| Error::internal(format!("mkpools.sh: {e}")))?;
            if !out.success() {
                return Err(Error::internal("mkpools.sh failed"));
            }
            let report = storage::bench::run(&pools).map_err(|e| Error::internal(e.to_string()))?;
            println!("{report}");
            Ok(())
        }
        other => Err(Error::bad_request(format!(
            "unknown benchmark {other:?} (try: store, vm, storage, snapshot, clone)"
        ))),
    }
}
