//! mizzen-operator: reconciles MeshInstall resources into istiod, gateways and the injection webhook.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use mizzen_operator::controller::{Options, Process, operate};

/// Reconciles MeshInstall resources into an Istio-compatible control plane.
#[derive(Parser, Debug)]
#[command(name = "mizzen-operator", version, about)]
struct Args {
    /// Kubeconfig for running outside the cluster; in-cluster configuration otherwise.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The operator's own namespace (webhook TLS Secrets, leader-election Lease).
    #[arg(long, env = "POD_NAMESPACE", default_value = "mizzen-system")]
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
    /// Leader-election identity; default: $POD_NAME, else the host name with a random suffix.
    #[arg(long)]
    identity: Option<String>,
    /// Reconcile only MeshInstalls matching this label selector.
    #[arg(long)]
    meshinstall_selector: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| path.display().to_string())?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let options = Options {
        namespace: args.namespace,
        webhook_url: args.webhook_url,
        webhook_tls_dir: args.webhook_tls_dir,
        identity: args.identity,
        meshinstall_selector: args.meshinstall_selector,
        fence: Default::default(),
    };
    let process = Process {
        admin_listen: args.admin_listen,
        timings: Default::default(),
    };
    operate(config, options, process).await?;
    tracing::info!("shut down");
    Ok(())
}
