//! mizzen-operator: reconciles MeshInstall resources into istiod, gateways and the injection webhook.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Reconciles MeshInstall resources into an Istio-compatible control plane.
#[derive(Parser, Debug)]
#[command(name = "mizzen-operator", version, about)]
struct Args {
    /// Kubeconfig for running outside the cluster; in-cluster configuration otherwise.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// The operator's own namespace (webhook TLS Secret, leader-election Lease).
    #[arg(long, default_value = "mizzen-system")]
    namespace: String,
    /// Admin listener: /livez, /readyz, /metrics.
    #[arg(long, default_value = "0.0.0.0:9090")]
    admin_listen: SocketAddr,
    /// Point the MutatingWebhookConfiguration at this URL instead of the in-cluster Service.
    #[arg(long)]
    webhook_url: Option<String>,
    /// Also write the webhook's serving certificate and key here (for a webhook run outside the cluster).
    #[arg(long)]
    webhook_tls_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    tracing::info!(?args, "starting");
    anyhow::bail!("mizzen-operator: the reconcile loop is not implemented yet (tracked in the operator issue)")
}
