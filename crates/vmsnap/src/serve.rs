//! `vmsnap serve`: wires the store, controllers and API server together in one process.

use api::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
    _accel: &str,
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
    #[allow(unused_mut)]
    let mut vm_actions: Option<Arc<dyn apiserver::ext::VmActions>> = None;
    #[allow(unused_mut)]
    let mut uploads: Option<Arc<dyn apiserver::ext::Uploads>> = None;
    #[allow(unused_mut)]
    let mut hooks: Vec<Arc<dyn apiserver::AdmissionHook>> = Vec::new();
    // --- storage ---
    // --- end storage ---
    // --- vm ---
    // --- end vm ---
    // --- snapshot ---
    // --- end snapshot ---
    let _ = &ctx;
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
        other => Err(Error::bad_request(format!(
            "unknown benchmark {other:?} (try: store)"
        ))),
    }
}
