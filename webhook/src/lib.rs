//! mizzen-webhook: serves mizzen's sidecar injection to the Kubernetes API server as a mutating admission webhook.
//!
//! Transport only: parsing and answering reviews is `mizzen::admission`, injection is `mizzen::inject`. This crate
//! adds TLS (with certificate reload), the caches fed by watches, metrics, Events and a graceful lifecycle.
#![forbid(unsafe_code)]

pub mod conn;
pub mod events;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls;
pub mod watch;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mizzen::events::Reporter;
use tokio::sync::{Semaphore, watch as signal};
use tokio::task::JoinHandle;

use crate::events::EventSink;
use crate::metrics::Metrics;
use crate::server::AppState;
use crate::store::Store;

/// Why the webhook could not start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The serving certificate is missing or unusable.
    #[error("TLS certificate: {0}")]
    Tls(#[from] tls::TlsError),
    /// The TLS configuration was refused.
    #[error("TLS configuration: {0}")]
    TlsConfig(#[from] rustls::Error),
    /// Neither `--tls-secret` nor `--tls-cert-file` / `--tls-key-file` given (or both).
    #[error(
        "give either --tls-secret or both --tls-cert-file and --tls-key-file: the admission port serves HTTPS only"
    )]
    NoCertificate,
    /// `--tls-secret` is not `namespace/name`, or has no cluster to read it from.
    #[error("--tls-secret {0}: expected namespace/name of a Secret, read from the cluster (not with --meshinstall)")]
    TlsSecret(String),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: String,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A `--meshinstall` file could not be used.
    #[error("--meshinstall {path}: {message}")]
    MeshInstallFile {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// No Kubernetes client could be built.
    #[error("Kubernetes client: {0}")]
    Kube(String),
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Admission (HTTPS) listener.
    pub listen: SocketAddr,
    /// Admin (HTTP) listener.
    pub admin_listen: SocketAddr,
    /// PEM certificate chain.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key.
    pub tls_key_file: Option<PathBuf>,
    /// Serve the certificate of this Secret (`namespace/name`, read through the API) instead of files.
    pub tls_secret: Option<String>,
    /// Kubeconfig for running outside the cluster.
    pub kubeconfig: Option<PathBuf>,
    /// Serve from these MeshInstall files instead of watching a cluster.
    pub meshinstall: Vec<PathBuf>,
    /// Concurrent reviews at most.
    pub max_concurrency: usize,
    /// Deadline of one review, queueing included.
    pub request_timeout: Duration,
    /// How often the certificate files are checked for rotation.
    pub cert_reload_interval: Duration,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout: Duration,
    /// After SIGTERM: how long to keep serving while not ready (so endpoints drop this pod) before the listener
    /// closes. Keep it below the pod's `terminationGracePeriodSeconds` minus `drain_timeout`.
    pub shutdown_delay: Duration,
    /// Open admission connections at most (lowered to fit the open-files limit).
    pub max_connections: usize,
    /// A TLS handshake, or a request's headers once begun, must complete within this.
    pub header_read_timeout: Duration,
    /// Keep-alive connections idle this long are closed. Longer than the 90 s the API server keeps an idle one:
    /// a client that closes first never sends a review on a connection the server is closing (Go does not resend
    /// a POST that met the close, so the pod would be refused with EOF).
    pub idle_timeout: Duration,
    /// A request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Request body bytes held in memory at once across requests (large reviews beyond it wait their turn).
    pub max_body_bytes_in_flight: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: ([0, 0, 0, 0], 8443).into(),
            admin_listen: ([0, 0, 0, 0], 9090).into(),
            tls_cert_file: None,
            tls_key_file: None,
            tls_secret: None,
            kubeconfig: None,
            meshinstall: Vec::new(),
            max_concurrency: 64,
            request_timeout: Duration::from_secs(8),
            cert_reload_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(15),
            shutdown_delay: Duration::from_secs(5),
            max_connections: 512,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(120),
            body_read_timeout: Duration::from_secs(5),
            max_body_bytes_in_flight: 4 * 1024 * 1024,
        }
    }
}

/// A started webhook.
pub struct Running {
    /// Where the admission port listens.
    pub admission_addr: SocketAddr,
    /// Where the admin port listens.
    pub admin_addr: SocketAddr,
    /// The caches (for tests and diagnostics).
    pub store: Arc<Store>,
    stop: signal::Sender<bool>,
    draining: Arc<AtomicBool>,
    shutdown_delay: Duration,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Graceful shutdown, as on SIGTERM: `/readyz` turns 503 and responses carry `connection: close`; requests
    /// are still served for the shutdown delay (so endpoints drop this pod first); then the listener closes, idle
    /// connections are closed, in-flight requests finish (up to the drain timeout), and this returns.
    pub async fn shutdown(self) {
        self.draining.store(true, Ordering::Release);
        tracing::info!(
            delay_ms = u64::try_from(self.shutdown_delay.as_millis()).unwrap_or(u64::MAX),
            "not ready; serving until the shutdown delay ends"
        );
        tokio::time::sleep(self.shutdown_delay).await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Open admin connections at most: probes and scrapes need a few.
pub const ADMIN_MAX_CONNECTIONS: usize = 32;

/// On shutdown, how long admin requests (all quick) may take to finish.
const ADMIN_DRAIN: Duration = Duration::from_secs(2);

/// The admin port's limits: a few connections, and header-read and idle timeouts of at most 2 and 5 seconds (a
/// probe or a scrape sends its request at once).
fn admin_limits(settings: &Settings) -> conn::Limits {
    conn::Limits {
        max_connections: ADMIN_MAX_CONNECTIONS,
        header_read_timeout: settings.header_read_timeout.min(Duration::from_secs(2)),
        idle_timeout: settings.idle_timeout.min(Duration::from_secs(5)),
    }
}

fn load_mesh_files(paths: &[PathBuf]) -> Result<Store, Error> {
    let mut specs = Vec::new();
    for path in paths {
        let err = |message: String| Error::MeshInstallFile {
            path: path.clone(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let docs = mizzen::yaml::parse_documents(&text).map_err(|e| err(e.to_string()))?;
        let mut found = false;
        for doc in docs.into_iter().filter(|d| d["kind"] == "MeshInstall") {
            let mi: mizzen::MeshInstall = serde_json::from_value(doc).map_err(|e| err(e.to_string()))?;
            mizzen::revisions::check_version(&mi.spec.version).map_err(|e| err(format!("spec.version: {e}")))?;
            let name = mi.metadata.name.clone().unwrap_or_else(|| path.display().to_string());
            specs.push((name, mi.spec));
            found = true;
        }
        if !found {
            return Err(err("no MeshInstall document in the file".into()));
        }
    }
    Ok(Store::from_specs(specs))
}

async fn kube_client(kubeconfig: Option<&PathBuf>) -> Result<kube::Client, Error> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kube(format!("{}: {e}", path.display())))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kube(e.to_string()))?
        }
        None => kube::Config::infer().await.map_err(|e| Error::Kube(e.to_string()))?,
    };
    kube::Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Loads certificates, fills the caches (or starts the watches), binds both ports and starts serving.
pub async fn start(settings: Settings) -> Result<Running, Error> {
    let from_secret = match (&settings.tls_secret, &settings.tls_cert_file, &settings.tls_key_file) {
        (Some(secret), None, None) => match secret.split_once('/') {
            Some((ns, name)) if !ns.is_empty() && !name.is_empty() && settings.meshinstall.is_empty() => {
                Some((ns.to_owned(), name.to_owned()))
            }
            _ => return Err(Error::TlsSecret(secret.clone())),
        },
        (None, Some(_), Some(_)) => None,
        _ => return Err(Error::NoCertificate),
    };
    let certificate = match (&from_secret, &settings.tls_cert_file, &settings.tls_key_file) {
        (None, Some(cert), Some(key)) => tls::Reloading::new(cert, key)?,
        _ => tls::Reloading::empty(settings.tls_secret.as_deref().unwrap_or("Secret")),
    };
    let tls_config = Arc::new(certificate.server_config()?);

    let (store, events) = if settings.meshinstall.is_empty() {
        let client = kube_client(settings.kubeconfig.as_ref()).await?;
        let store = Arc::new(Store::default());
        watch::spawn(client.clone(), store.clone());
        match &from_secret {
            Some((ns, name)) => watch::spawn_certificate(client.clone(), ns, name, certificate.clone(), store.clone()),
            None => store.mark_synced(store::Cache::Certificate),
        }
        let reporter = Reporter {
            controller: "mizzen-webhook".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        (store, EventSink::spawn(client, reporter))
    } else {
        (Arc::new(load_mesh_files(&settings.meshinstall)?), EventSink::disabled())
    };

    let admission_listener = server::bind(settings.listen, "admission, --listen").await?;
    let admin_listener = server::bind(settings.admin_listen, "admin, --admin-listen").await?;
    let admission_addr = admission_listener.local_addr().map_err(|source| Error::Bind {
        what: "admission".into(),
        addr: settings.listen,
        source,
    })?;
    let admin_addr = admin_listener.local_addr().map_err(|source| Error::Bind {
        what: "admin".into(),
        addr: settings.admin_listen,
        source,
    })?;

    let draining = Arc::new(AtomicBool::new(false));
    // At least one largest review must fit, or it could never be read.
    let budget_kib =
        u32::try_from(settings.max_body_bytes_in_flight.max(server::MAX_BODY).div_ceil(1024)).unwrap_or(u32::MAX);
    let state = AppState {
        store: store.clone(),
        metrics: Arc::new(Metrics::default()),
        events,
        permits: Arc::new(Semaphore::new(settings.max_concurrency.max(1))),
        timeout: settings.request_timeout,
        draining: draining.clone(),
        body_budget: Arc::new(Semaphore::new(budget_kib as usize)),
        body_budget_kib: budget_kib,
        body_read_timeout: settings.body_read_timeout,
    };
    let limits = conn::Limits {
        max_connections: conn::effective_max_connections(settings.max_connections, conn::open_files_limit(), 64),
        header_read_timeout: settings.header_read_timeout,
        idle_timeout: settings.idle_timeout,
    };
    if limits.max_connections < settings.max_connections {
        tracing::warn!(
            requested = settings.max_connections,
            effective = limits.max_connections,
            "--max-connections lowered to fit the open-files limit"
        );
    }
    let (stop, stopped) = signal::channel(false);
    let reload = if from_secret.is_none() {
        tokio::spawn(certificate.clone().watch(settings.cert_reload_interval))
    } else {
        tokio::spawn(async {})
    };
    let mut reload_stop = stopped.clone();
    let reload_guard = tokio::spawn(async move {
        server::stopped(&mut reload_stop).await;
        reload.abort();
    });
    let tasks = vec![
        tokio::spawn(conn::serve_tls(
            admission_listener,
            tls_config,
            server::admission_router(state.clone()),
            limits,
            stopped.clone(),
            settings.drain_timeout,
        )),
        tokio::spawn(conn::serve_plain(
            admin_listener,
            server::admin_router(state),
            admin_limits(&settings),
            stopped,
            settings.drain_timeout.min(ADMIN_DRAIN),
        )),
        reload_guard,
    ];
    tracing::info!(%admission_addr, %admin_addr, "mizzen webhook serving");
    Ok(Running {
        admission_addr,
        admin_addr,
        store,
        stop,
        draining,
        shutdown_delay: settings.shutdown_delay,
        tasks,
    })
}
