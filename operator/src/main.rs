//! mizzen-operator: reconciles MeshInstall resources into istiod, gateways and the injection webhook.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{Controller, watcher};
use mizzen::MeshInstall;
use mizzen_operator::{Context, Options, error_policy, reconcile};

/// Reconciles MeshInstall resources into an Istio-compatible control plane.
#[derive(Parser, Debug)]
#[command(name = "mizzen-operator", version, about)]
struct Args {
    /// Kubeconfig for running outside the cluster; in-cluster configuration otherwise.
    #[arg(long)]
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

const LEASE: &str = "mizzen-operator";
const LEASE_SECONDS: i32 = 15;

async fn client(kubeconfig: Option<&PathBuf>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| path.display().to_string())?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Tries once to become (or stay) the leader; true when this process holds the Lease.
async fn try_lead(api: &Api<Lease>, identity: &str) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let mut lease = match api.get_opt(LEASE).await? {
        Some(l) => l,
        None => {
            let mut l = Lease::default();
            l.metadata.name = Some(LEASE.into());
            return match api
                .create(&PostParams::default(), &with_holder(l, identity, now, true))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        }
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref();
    let expired = spec.renew_time.as_ref().is_none_or(|t| {
        t.0.as_second() + i64::from(spec.lease_duration_seconds.unwrap_or(LEASE_SECONDS)) < now.as_second()
    });
    if holder != Some(identity) && !expired {
        return Ok(false);
    }
    let taking_over = holder != Some(identity);
    lease = with_holder(lease, identity, now, taking_over);
    match api.replace(LEASE, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

fn with_holder(mut lease: Lease, identity: &str, now: Timestamp, acquired: bool) -> Lease {
    let spec = lease.spec.get_or_insert_with(Default::default);
    spec.holder_identity = Some(identity.into());
    spec.lease_duration_seconds = Some(LEASE_SECONDS);
    spec.renew_time = Some(MicroTime(now));
    if acquired {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    lease
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    let client = client(args.kubeconfig.as_ref()).await?;
    let ctx = Arc::new(Context::new(
        client.clone(),
        Options {
            namespace: args.namespace.clone(),
            webhook_url: args.webhook_url.clone(),
            webhook_tls_dir: args.webhook_tls_dir.clone(),
        },
    ));

    let ready = Arc::new(AtomicBool::new(false));
    let (metrics, ready_flag) = (ctx.metrics.clone(), ready.clone());
    let admin = Router::new()
        .route("/livez", get(|| async { "ok\n" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready_flag.load(Ordering::Acquire);
                async move {
                    if ready {
                        (StatusCode::OK, "ok\n")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
                    }
                }
            }),
        )
        .route("/metrics", get(move || async move { metrics.render() }));
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot listen on {} (--admin-listen)", args.admin_listen))?;
    tokio::spawn(async move { axum::serve(listener, admin).await });

    // Leader election: only the Lease holder reconciles; a replica that loses the Lease exits and restarts.
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("mizzen-operator-{}", std::process::id()));
    let leases: Api<Lease> = Api::namespaced(client.clone(), &args.namespace);
    ready.store(true, Ordering::Release);
    loop {
        match try_lead(&leases, &identity).await {
            Ok(true) => break,
            Ok(false) => tracing::info!(%identity, "another replica leads; waiting"),
            Err(error) => tracing::warn!(%error, "leader election failed; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    tracing::info!(%identity, "leading");
    let renew_leases = leases.clone();
    let renew_identity = identity.clone();
    tokio::spawn(async move {
        let mut failures = 0;
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            match try_lead(&renew_leases, &renew_identity).await {
                Ok(true) => failures = 0,
                Ok(false) => {
                    tracing::error!("lost the leader Lease; exiting so another replica takes over");
                    std::process::exit(1);
                }
                Err(error) => {
                    failures += 1;
                    tracing::warn!(%error, "could not renew the leader Lease");
                    if failures * 5 >= LEASE_SECONDS {
                        tracing::error!("leader Lease expired; exiting");
                        std::process::exit(1);
                    }
                }
            }
        }
    });

    let all = |c: &Client| c.clone();
    Controller::new(Api::<MeshInstall>::all(all(&client)), watcher::Config::default())
        .owns(Api::<Deployment>::all(all(&client)), watcher::Config::default())
        .owns(Api::<Service>::all(all(&client)), watcher::Config::default())
        .owns(Api::<ConfigMap>::all(all(&client)), watcher::Config::default())
        .owns(Api::<ServiceAccount>::all(all(&client)), watcher::Config::default())
        .owns(Api::<Role>::all(all(&client)), watcher::Config::default())
        .owns(Api::<RoleBinding>::all(all(&client)), watcher::Config::default())
        .owns(Api::<ClusterRole>::all(all(&client)), watcher::Config::default())
        .owns(Api::<ClusterRoleBinding>::all(all(&client)), watcher::Config::default())
        .owns(
            Api::<HorizontalPodAutoscaler>::all(all(&client)),
            watcher::Config::default(),
        )
        .owns(
            Api::<PodDisruptionBudget>::all(all(&client)),
            watcher::Config::default(),
        )
        .owns(
            Api::<MutatingWebhookConfiguration>::all(all(&client)),
            watcher::Config::default(),
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => tracing::debug!(meshinstall = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
        .await;
    tracing::info!("shut down");
    Ok(())
}
