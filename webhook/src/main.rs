//! mizzen-webhook: the mutating admission webhook that injects the istio-proxy sidecar.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

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
    #[arg(long)]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key of the certificate; reloaded when the file changes.
    #[arg(long)]
    tls_key_file: Option<PathBuf>,
    /// Kubeconfig for running outside the cluster; in-cluster configuration otherwise.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Serve from MeshInstall files instead of watching the cluster (repeatable).
    #[arg(long)]
    meshinstall: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    tracing::info!(?args, "starting");
    anyhow::bail!("mizzen-webhook: the admission server is not implemented yet (tracked in the webhook issue)")
}
