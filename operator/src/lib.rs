//! mizzen-operator: reconciles MeshInstall resources. Reconcile = render (pure, `mizzen::render`) → server-side
//! apply of what differs from the watch caches, with one field manager → prune the children this MeshInstall owns
//! and no longer renders → status. A reconcile with nothing to change makes no write call.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cache;
pub mod controller;
pub mod dataplane;
pub mod diff;
pub mod kinds;
pub mod leader;
pub mod metrics;
pub mod probe;
pub mod reconcile;
pub mod tls;

pub use controller::{Options, run};
pub use reconcile::Context;

/// The one field manager every apply uses.
pub const FIELD_MANAGER: &str = "mizzen-operator";
/// `"true"` on a MeshInstall stops reconciling it.
pub const PAUSED_ANNOTATION: &str = "mizzen.io/paused";
/// `"true"` on a MeshInstall lets it take over objects of its names that exist and are not mizzen's (an
/// installation by `istioctl install` or Helm); without it they are reported as conflicts and left alone.
pub const ADOPT_ANNOTATION: &str = "mizzen.io/adopt";
/// The label every object the operator writes carries; its watches select on it.
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=mizzen";

/// Why a reconcile (or the operator's start) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading an object failed.
    #[error("reading {kind} {name}: {source}")]
    Get {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Applying an object failed.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Deleting an object this MeshInstall no longer renders failed.
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        /// Kind.
        kind: &'static str,
        /// `namespace/name` or `name`.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// Writing the status failed.
    #[error("writing the status of MeshInstall {name}: {source}")]
    PatchStatus {
        /// MeshInstall name.
        name: String,
        /// Why.
        source: kube::Error,
    },
    /// A rendered object has a kind the operator does not manage (a bug in rendering).
    #[error("rendered {api_version} {kind} is not a kind the operator manages")]
    UnknownKind {
        /// `apiVersion`.
        api_version: String,
        /// `kind`.
        kind: String,
    },
    /// A rendered object could not be turned into an API object (a bug in rendering).
    #[error("rendered {kind} {name} is not a valid object: {source}")]
    Rendered {
        /// Kind.
        kind: &'static str,
        /// Name.
        name: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The built-in Istio CRDs could not be read (a bug in generation).
    #[error("built-in Istio CRDs: {0}")]
    IstioCrd(String),
    /// Issuing a certificate failed.
    #[error("issuing the webhook's {what}: {source}")]
    Certificate {
        /// Which certificate.
        what: &'static str,
        /// Why.
        source: rcgen::Error,
    },
    /// The CA Secret holds a CA that cannot sign (a key that is not PKCS#8, a certificate that does not parse): it is
    /// reported, never replaced, since it may be someone's own CA.
    #[error("Secret {secret}: {message}; the operator does not replace a CA it cannot use")]
    UnusableCa {
        /// `namespace/name`.
        secret: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// Writing the webhook's certificate files (`--webhook-tls-dir`) failed.
    #[error("writing {path}: {source}")]
    TlsDir {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The webhook certificate is not there yet (the TLS keeper has not written it).
    #[error("the webhook's CA is not available yet{}", .0.as_deref().map(|why| format!(": {why}")).unwrap_or_default())]
    TlsNotReady(Option<String>),
    /// The watch caches did not fill in time.
    #[error("the watch caches did not sync: {0}")]
    CacheSync(String),
    /// Leader election failed.
    #[error("leader election: {source}")]
    Lease {
        /// Why.
        source: kube::Error,
    },
    /// Several objects failed.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Many(Vec<Error>),
    /// No client could be built from the configuration.
    #[error("Kubernetes client: {source}")]
    Client {
        /// Why.
        source: kube::Error,
    },
    /// The controller stopped by itself (it should run until shutdown).
    #[error("the controller stopped; exiting so this replica restarts")]
    ControllerStopped,
    /// Another replica took the lease, or it could not be renewed in time.
    #[error("lost the leader Lease; exiting so this replica rejoins the election")]
    LeadershipLost,
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

impl Error {
    /// One error, or all of them.
    pub fn many(mut errors: Vec<Error>) -> Self {
        if errors.len() == 1
            && let Some(e) = errors.pop()
        {
            return e;
        }
        Error::Many(errors)
    }

    /// Errors that only a change (of the spec, of the code, of RBAC) can fix, as opposed to transient ones.
    pub fn is_persistent(&self) -> bool {
        let api = |e: &kube::Error| match e {
            kube::Error::Api(s) => matches!(s.code, 400 | 403 | 404 | 405 | 415 | 422),
            _ => false,
        };
        match self {
            Error::Get { source, .. }
            | Error::Apply { source, .. }
            | Error::Delete { source, .. }
            | Error::PatchStatus { source, .. }
            | Error::Lease { source } => api(source),
            Error::Many(errors) => errors.iter().all(Error::is_persistent),
            Error::UnknownKind { .. }
            | Error::Rendered { .. }
            | Error::Certificate { .. }
            | Error::UnusableCa { .. }
            | Error::IstioCrd(_) => true,
            Error::TlsDir { .. }
            | Error::TlsNotReady(_)
            | Error::CacheSync(_)
            | Error::LeadershipLost
            | Error::ControllerStopped
            | Error::Bind { .. }
            | Error::Client { .. } => false,
        }
    }
}
