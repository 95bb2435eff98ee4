//! mizzen-webhook: the mutating admission webhook that injects the istio-proxy sidecar.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// Serves sidecar injection to the Kubernetes API server.
#[derive(Parser, Debug)]
#[command(name = "mizzen-webhook", version, about)]
struct Args {
    /// Admission listener (HTTPS only).
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Admin listener (plain HTTP): /livez, /readyz, /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// PEM certificate chain served on the admission port; reloaded when the file changes.
    #[arg(long, env = "MIZZEN_TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long, env = "MIZZEN_TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,
    /// Serve the certificate in this Secret (`namespace/name`, `tls.crt` and `tls.key`), read through the API and
    /// picked up as soon as it changes; instead of --tls-cert-file/--tls-key-file.
    #[arg(long, env = "MIZZEN_TLS_SECRET", conflicts_with_all = ["tls_cert_file", "tls_key_file"])]
    tls_secret: Option<String>,
    /// Kubeconfig for running outside the cluster; in-cluster configuration otherwise.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Serve from MeshInstall files instead of watching a cluster (repeatable).
    #[arg(long)]
    meshinstall: Vec<PathBuf>,
    /// Reviews processed at once at most.
    #[arg(long, default_value_t = 64)]
    max_concurrency: usize,
    /// Deadline of one review in milliseconds, queueing included; keep it below the webhook's timeoutSeconds.
    #[arg(long, default_value_t = 8000)]
    request_timeout_ms: u64,
    /// Open admission connections at most; lowered to fit the open-files limit. Further clients wait in the
    /// listen backlog.
    #[arg(long, default_value_t = 512)]
    max_connections: usize,
    /// A TLS handshake, or a request's headers once their first byte arrived, must complete within this (ms).
    #[arg(long, default_value_t = 5000)]
    header_read_timeout_ms: u64,
    /// Keep-alive connections with no request for this long are closed cleanly (ms). Above the API server's 90 s,
    /// so that it closes its idle connections first.
    #[arg(long, default_value_t = 120_000)]
    idle_timeout_ms: u64,
    /// A request body must arrive within this (ms); a slower one gets 408.
    #[arg(long, default_value_t = 5000)]
    body_read_timeout_ms: u64,
    /// Bytes of request bodies over 64 KiB held in memory at once across requests, each counted from its first
    /// byte; large reviews beyond it wait their turn (smaller ones are not counted).
    #[arg(long, default_value_t = 4 * 1024 * 1024)]
    max_body_bytes_in_flight: usize,
    /// After SIGTERM, keep serving this long while /readyz says 503, so endpoints drop the pod first (ms).
    #[arg(long, default_value_t = 5000)]
    shutdown_delay_ms: u64,
    /// Then, how long in-flight requests may take to finish before the process exits (ms).
    #[arg(long, default_value_t = 15000)]
    drain_timeout_ms: u64,
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> anyhow::Result<()> {
    // Two async workers for I/O; reviews run on a small blocking pool (each thread keeps its own allocator heap,
    // so the pool is bounded to keep memory flat).
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(8)
        .enable_all()
        .build()?
        .block_on(run())
}

async fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    // The image sets glibc's allocator tunables (webhook/Dockerfile); a log line shows what this process runs with.
    let tunables = std::env::var_os("GLIBC_TUNABLES");
    tracing::info!(
        "mizzen-webhook {} starting, GLIBC_TUNABLES={}",
        env!("CARGO_PKG_VERSION"),
        tunables.map_or("<unset>".into(), |t| format!("[{}]", t.to_string_lossy()))
    );
    let settings = mizzen_webhook::Settings {
        listen: args.listen,
        admin_listen: args.admin_listen,
        tls_cert_file: args.tls_cert_file,
        tls_key_file: args.tls_key_file,
        tls_secret: args.tls_secret,
        kubeconfig: args.kubeconfig,
        meshinstall: args.meshinstall,
        max_concurrency: args.max_concurrency,
        request_timeout: Duration::from_millis(args.request_timeout_ms),
        max_connections: args.max_connections,
        header_read_timeout: Duration::from_millis(args.header_read_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        body_read_timeout: Duration::from_millis(args.body_read_timeout_ms),
        max_body_bytes_in_flight: args.max_body_bytes_in_flight,
        shutdown_delay: Duration::from_millis(args.shutdown_delay_ms),
        drain_timeout: Duration::from_millis(args.drain_timeout_ms),
        ..Default::default()
    };
    let running = mizzen_webhook::start(settings).await?;
    shutdown_signal().await;
    tracing::info!("SIGTERM: shutting down");
    running.shutdown().await;
    Ok(())
}
