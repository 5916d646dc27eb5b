//! The Kubernetes-compatible HTTP API. This is the only crate that knows HTTP: it parses
//! requests into store operations and renders results and errors (as `Status`) back.

pub mod discovery;
pub mod ext;
pub mod pki;
mod proto;
mod routes;
pub mod table;
mod watch;

use api::registry::Resource;
use axum::Router;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use store::Store;

pub use pki::Pki;

/// Largest accepted request body, as kube-apiserver's default (3 MiB).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Update,
    Delete,
}

/// What an admission hook sees. Hooks enforce rules that need other objects (a VM locked by a
/// snapshot, one restore per target); schema checks happen before, in `api::admit`.
pub struct AdmissionRequest<'a> {
    pub resource: &'static Resource,
    pub operation: Operation,
    pub subresource: Option<&'a str>,
    /// The object as it would be stored (None for a delete).
    pub object: Option<&'a Value>,
    /// The stored object (None for a create).
    pub old: Option<&'a Value>,
    pub store: &'a dyn Store,
}

pub trait AdmissionHook: Send + Sync {
    /// Refuses a write by returning an error; may also adjust the object (defaults that need
    /// other objects). Nothing is stored when any hook refuses.
    fn admit(&self, req: &AdmissionRequest<'_>, object: Option<&mut Value>) -> api::Result<()>;
}

/// Renders Prometheus text for `/metrics`.
pub type MetricsFn = Arc<dyn Fn() -> String + Send + Sync>;

pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub store: Arc<dyn Store>,
    pub hooks: Vec<Arc<dyn AdmissionHook>>,
    pub metrics: Option<MetricsFn>,
    /// Extra routes (platform API, console), served behind the same authentication.
    pub extra: Option<Router>,
    /// Routes served without authentication (the console's static assets).
    pub public: Option<Router>,
    pub vm_actions: Option<Arc<dyn ext::VmActions>>,
    pub uploads: Option<Arc<dyn ext::Uploads>>,
}

pub(crate) struct State {
    pub store: Arc<dyn Store>,
    pub token: String,
    pub hooks: Vec<Arc<dyn AdmissionHook>>,
    pub metrics: Option<MetricsFn>,
    pub vm_actions: Option<Arc<dyn ext::VmActions>>,
    pub uploads: Option<Arc<dyn ext::Uploads>>,
}

/// Prepares the PKI and kubeconfig, binds, and returns a future that serves forever.
pub async fn serve(cfg: Config) -> api::Result<()> {
    let pki = Pki::load_or_create(&cfg.data_dir, cfg.listen)?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| api::Error::internal(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let local = listener
        .local_addr()
        .map_err(|e| api::Error::internal(e.to_string()))?;
    let pki = if local != cfg.listen {
        Pki::load_or_create(&cfg.data_dir, local)?
    } else {
        pki
    };
    pki::write_private(
        &cfg.data_dir.join("kubeconfig"),
        pki.kubeconfig(local).as_bytes(),
    )?;
    let tls = tokio_rustls::TlsAcceptor::from(pki.rustls_config()?);
    let state = Arc::new(State {
        store: cfg.store,
        token: pki.token.clone(),
        hooks: cfg.hooks,
        metrics: cfg.metrics,
        vm_actions: cfg.vm_actions,
        uploads: cfg.uploads,
    });
    let app = routes::router(state, cfg.extra, cfg.public);
    tracing::info!(address = %local, "serving the vmsnap API");
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let stream = match tls.accept(tcp).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
            };
            let svc = hyper_util::service::TowerToHyperService::new(app);
            let io = hyper_util::rt::TokioIo::new(stream);
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if let Err(e) = builder.serve_connection_with_upgrades(io, svc).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}
