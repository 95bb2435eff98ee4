//! The webhook's TLS, kept by one task (so two MeshInstalls can never mint two CAs):
//!
//! - Secret `mizzen-webhook-ca`: the CA (ten years) and its key. Only the operator reads it. A CA the operator
//!   minted (annotation [`MINTED`]) is replaced by a new one two years before it expires, as a deleted one is; of
//!   any other CA, the operator warns from 90 days before its expiry.
//! - Secret `mizzen-webhook-tls`: the serving certificate (one year, renewed 30 days before expiry), its key and
//!   the CA certificate. The webhook reads this one through the API and serves it as soon as it changes.
//!
//! Both are watched: a deleted or damaged Secret is rewritten at once. When the CA has to change (its Secret was
//! deleted, or a minted CA is renewed), the MutatingWebhookConfigurations trust the old and the new CA for a while: the new serving
//! certificate is written only once every configuration carries the new CA, and the old CA is dropped only after
//! webhook pods had time to pick up the new certificate. No admission call fails on the way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, date_time_ymd};
use serde_json::json;
use tokio::sync::watch;

use crate::cache::Caches;
use crate::kinds;
use crate::{Error, FIELD_MANAGER};

/// The Secret the webhook serves from: `tls.crt`, `tls.key`, `ca.crt`.
pub const SECRET: &str = "mizzen-webhook-tls";
/// The Secret with the CA: `ca.crt`, `ca.key` (and `previous.crt` during a CA change).
pub const CA_SECRET: &str = "mizzen-webhook-ca";
/// Annotation with the serving certificate's expiry (Unix seconds).
pub const NOT_AFTER: &str = "mizzen.io/not-after";
/// Annotation with the serving certificate's host names, comma-separated.
pub const HOSTS: &str = "mizzen.io/hosts";
/// Annotation on the CA Secret: until when (Unix seconds) the previous CA stays trusted.
pub const PREVIOUS_UNTIL: &str = "mizzen.io/previous-ca-until";
/// Annotation on the CA Secret when the operator minted the CA in it, which it then renews: the SHA-256 fingerprint
/// of that CA's certificate (hex), so that a CA put in its place later, keeping the annotation, is not taken for one.
pub const MINTED: &str = "mizzen.io/ca-minted";
const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(30 * 24);
/// How long before its expiry a CA the operator minted is replaced by a new one (a fifth of its ten years, as
/// istiod renews its own root): well before a serving certificate issued under it (one year) could outlive it.
const RENEW_CA_BEFORE: SignedDuration = SignedDuration::from_hours(2 * 365 * 24);
/// How long before its expiry a CA the operator did not mint is warned about (it is never replaced).
const WARN_CA_BEFORE: SignedDuration = SignedDuration::from_hours(90 * 24);
/// How long the previous CA stays in the caBundle at least after the new serving certificate was written; after
/// that, until every webhook endpoint presents the new certificate (see [`crate::probe`]).
const TRUST_PREVIOUS_FOR: SignedDuration = SignedDuration::from_secs(15);
/// How long the keeper looks for evidence that every webhook endpoint serves the new certificate before it drops
/// the previous CA anyway.
const GIVE_UP_PROBING: SignedDuration = SignedDuration::from_hours(1);
/// How long every webhook configuration must have trusted a new CA before the certificate it signs is served:
/// each API server reads webhook configurations through its own informer, which may lag the operator's.
const TRUST_SETTLE: std::time::Duration = std::time::Duration::from_secs(15);
const CA_NAME: &str = "mizzen webhook CA";
const LABELS: [(&str, &str); 2] = [
    ("app.kubernetes.io/managed-by", "mizzen"),
    ("app.kubernetes.io/name", "mizzen-webhook"),
];

fn certificate_error(what: &'static str) -> impl Fn(rcgen::Error) -> Error {
    move |source| Error::Certificate { what, source }
}

/// The CA bundle for the MutatingWebhookConfigurations, as the keeper publishes it.
#[derive(Clone)]
pub struct CaBundle(watch::Receiver<Option<String>>, watch::Receiver<Option<String>>);

impl CaBundle {
    /// A fixed bundle (tests, `mizzenctl render`).
    pub fn fixed(pem: &str) -> Self {
        Self(watch::channel(Some(pem.to_owned())).1, watch::channel(None).1)
    }

    /// The bundle, waiting for the keeper's first one.
    pub async fn wait(&self, timeout: Duration) -> Result<String, Error> {
        let mut rx = self.0.clone();
        match tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await {
            Ok(Ok(v)) => Ok(v.clone().unwrap_or_default()),
            // Why the keeper has none yet, when it failed (a CA Secret it cannot use says what to fix).
            _ => Err(Error::TlsNotReady(self.failure())),
        }
    }

    /// Why the keeper's last pass could not use the CA Secret, if it could not (the bundle published before stays in
    /// use meanwhile), or that the CA, someone's own, nears its end.
    pub fn failure(&self) -> Option<String> {
        self.1.borrow().clone()
    }

    /// Yields whenever the bundle changes, and whenever the keeper's failure does (it appears, changes or goes), so
    /// that every MeshInstall reports it at once.
    pub fn changes(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let each = |rx: watch::Receiver<Option<String>>| {
            futures::stream::unfold(rx, |mut rx| async move {
                rx.changed().await.ok()?;
                Some(((), rx))
            })
        };
        futures::stream::select(each(self.0.clone()), each(self.1.clone()))
    }
}

/// Certificates as PEM.
pub struct Bundle {
    /// CA certificate.
    pub ca_crt: String,
    /// CA private key.
    pub ca_key: String,
    /// Serving certificate.
    pub tls_crt: String,
    /// Serving key.
    pub tls_key: String,
    /// Serving certificate expiry, Unix seconds.
    pub not_after: i64,
}

fn ca_params() -> Result<CertificateParams, Error> {
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(certificate_error("CA"))?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.not_after = date_time_ymd(
        i32::from(today.year() + 10),
        today.month() as u8,
        (today.day() as u8).min(28),
    );
    Ok(params)
}

/// A new CA: (certificate, key) as PEM.
pub fn new_ca() -> Result<(String, String), Error> {
    let key = KeyPair::generate().map_err(certificate_error("CA key"))?;
    let cert = ca_params()?.self_signed(&key).map_err(certificate_error("CA"))?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// The serving certificate's host names: the webhook Service's, plus the `--webhook-url` host.
pub fn hosts(namespace: &str, extra_host: Option<&str>) -> Vec<String> {
    let mut hosts = vec![
        "mizzen-webhook".to_owned(),
        format!("mizzen-webhook.{namespace}"),
        format!("mizzen-webhook.{namespace}.svc"),
        format!("mizzen-webhook.{namespace}.svc.cluster.local"),
    ];
    hosts.extend(extra_host.map(str::to_owned));
    hosts
}

/// Issues a serving certificate for `hosts`, signed by the given CA or a new one.
pub fn issue(namespace: &str, ca: Option<(&str, &str)>, hosts: Vec<String>) -> Result<Bundle, Error> {
    let (ca_crt, ca_key) = match ca {
        Some((crt, key)) => (crt.to_owned(), key.to_owned()),
        None => new_ca()?,
    };
    let ca_pair = KeyPair::from_pem(&ca_key).map_err(certificate_error("CA key"))?;
    // Signing needs the CA's name (as its certificate has it, also when the CA is someone's own) and key.
    let issuer = Issuer::from_ca_cert_pem(&ca_crt, ca_pair).map_err(certificate_error("CA certificate"))?;
    let mut params = CertificateParams::new(hosts).map_err(certificate_error("serving certificate"))?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("mizzen-webhook.{namespace}.svc"));
    let expiry = Timestamp::now() + SignedDuration::from_hours(365 * 24);
    let day = expiry.to_zoned(TimeZone::UTC).date();
    params.not_after = date_time_ymd(i32::from(day.year()), day.month() as u8, day.day() as u8);
    let key = KeyPair::generate().map_err(certificate_error("serving key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(certificate_error("serving certificate"))?;
    Ok(Bundle {
        ca_crt,
        ca_key,
        tls_crt: cert.pem(),
        tls_key: key.serialize_pem(),
        not_after: expiry.as_second(),
    })
}

/// The CA of a CA Secret the operator did not find in its cache, as (certificate, key) PEM; why it cannot sign
/// otherwise. A Secret with neither member has no CA (one is minted into it); one that has either must hold a
/// usable pair, since it may be someone's own CA, which is never replaced (the error says so: [`Error::UnusableCa`]).
fn usable_ca(secret: &Secret, namespace: &str, hosts: &[String]) -> Result<Option<(String, String)>, String> {
    match (decode(secret, "ca.crt"), decode(secret, "ca.key")) {
        (Some(crt), Some(key)) => {
            let pair = KeyPair::from_pem(&key).map_err(|e| {
                format!(
                    "ca.key is not a usable private key ({e}): it must be PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`; \
                     `openssl pkcs8 -topk8 -nocrypt -in ca.key` converts an RSA or EC key)"
                )
            })?;
            Issuer::from_ca_cert_pem(&crt, pair)
                .map_err(|e| format!("ca.crt is not a PEM certificate rcgen can read ({e})"))?;
            is_a_ca(&crt)?;
            // What counts is what clients check: a certificate issued with them is accepted by a client trusting
            // ca.crt (the key is the certificate's, its name written back as it reads).
            let trial = issue(namespace, Some((&crt, &key)), hosts.to_vec()).map_err(|e| e.to_string())?;
            // Every name the serving certificate carries (a CA's name constraints may allow some only).
            let check = |host: &String| chains_to(&crt, &trial.tls_crt, host);
            hosts.iter().try_for_each(check).map_err(|e| {
                format!(
                    "a certificate issued with ca.key is not accepted by a client trusting ca.crt ({e}): ca.key must \
                     be the key of ca.crt's first certificate, a CA's (basicConstraints CA:TRUE, keyCertSign), valid \
                     now, whose subject has one value per attribute type"
                )
            })?;
            Ok(Some((crt, key)))
        }
        (None, None) => Ok(None),
        (crt, _) => Err(format!(
            "has {} but not {}",
            if crt.is_some() { "ca.crt" } else { "ca.key" },
            if crt.is_some() { "ca.key" } else { "ca.crt" },
        )),
    }
}

/// Whether the first certificate of `ca_pem` (the one certificates are issued under) may sign serving certificates
/// as Go's verifier, the API server's, requires of a root, which rustls' asks nothing of: valid now; of version 1, or
/// with basic constraints saying CA; a key usage, if any, with keyCertSign; extended key usages, if any, allowing
/// server authentication.
fn is_a_ca(ca_pem: &str) -> Result<(), String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| format!("ca.crt: {e}"))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).map_err(|e| format!("ca.crt: {e}"))?;
    if !cert.validity().is_valid() {
        return Err(format!(
            "ca.crt's first certificate is not valid now (from {} to {})",
            cert.validity().not_before,
            cert.validity().not_after
        ));
    }
    let ca = cert.version().0 == 0
        || cert
            .basic_constraints()
            .map_err(|e| format!("ca.crt: {e}"))?
            .is_some_and(|b| b.value.ca);
    if !ca {
        return Err("ca.crt's first certificate is not a CA's (no basicConstraints CA:TRUE)".into());
    }
    let server_auth = cert
        .extended_key_usage()
        .map_err(|e| format!("ca.crt: {e}"))?
        .is_none_or(|k| k.value.any || k.value.server_auth);
    if !server_auth {
        return Err("ca.crt's first certificate's extended key usage does not allow server authentication".into());
    }
    let signs = cert
        .key_usage()
        .map_err(|e| format!("ca.crt: {e}"))?
        .is_none_or(|k| k.value.key_cert_sign());
    if !signs {
        return Err("ca.crt's first certificate's key usage lacks keyCertSign".into());
    }
    Ok(())
}

/// The SHA-256 fingerprint (lower-case hex) of the certificate in `ca_pem`; of their DER one after the other when
/// there are several (a certificate added to a minted CA's unmarks it). `None` without a certificate.
fn fingerprint(ca_pem: &str) -> Option<String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut any = false;
    for der in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        context.update(&der.ok()?);
        any = true;
    }
    any.then(|| context.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// Whether the CA Secret says its CA `ca_pem` is one the operator minted.
fn marked_minted(secret: &Secret, ca_pem: &str) -> bool {
    annotation(secret, MINTED).is_some_and(|m| Some(m) == fingerprint(ca_pem))
}

/// When the first certificate of `ca_pem` expires (Unix seconds), if it parses.
fn ca_not_after(ca_pem: &str) -> Option<i64> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// What the keeper does about the expiry (Unix seconds) of the CA it uses, as of `now`.
#[derive(Debug, PartialEq, Eq)]
enum CaEnd {
    /// Nothing yet.
    Far,
    /// Mint a new CA and move to it (a CA the operator minted).
    Renew,
    /// Warn: the CA is someone's own, which the operator never replaces.
    Warn(String),
}

fn ca_end(minted: bool, not_after: i64, now: i64, secret: &str) -> CaEnd {
    if minted {
        return if not_after - now < RENEW_CA_BEFORE.as_secs() {
            CaEnd::Renew
        } else {
            CaEnd::Far
        };
    }
    if not_after - now >= WARN_CA_BEFORE.as_secs() {
        return CaEnd::Far;
    }
    let when = Timestamp::from_second(not_after).map_or_else(|_| not_after.to_string(), |t| t.to_string());
    CaEnd::Warn(format!(
        "the CA in {secret} expires at {when}, after which the API server refuses the webhook's certificate and \
         every admission call to it fails; the operator renews only a CA it minted and marked (annotation {MINTED}; CAs minted before \
         December 2026 carry no mark): put a renewed CA into the Secret, or delete the Secret to have the operator mint one and move every webhook \
         configuration to it without a failed admission"
    ))
}

/// Whether a client trusting the certificates of `ca_pem` (as a webhook configuration's `caBundle`) accepts the
/// serving certificate `leaf_pem` for `host`, as of now.
pub fn chains_to(ca_pem: &str, leaf_pem: &str, host: &str) -> Result<(), String> {
    use rustls::client::danger::ServerCertVerifier as _;
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| e.to_string())?;
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], UnixTime::now())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn decode(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .filter(|s| !s.is_empty())
}

fn annotation(secret: &Secret, key: &str) -> Option<String> {
    secret.annotations().get(key).cloned()
}

/// Host of `--webhook-url`, for the certificate's names.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// PEM certificates in a bundle, one string each.
fn certificates(bundle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while let Some(start) = rest.find("-----BEGIN CERTIFICATE-----") {
        let tail = &rest[start..];
        let Some(end) = tail.find("-----END CERTIFICATE-----") else {
            break;
        };
        let end = end + "-----END CERTIFICATE-----".len();
        out.push(format!("{}\n", &tail[..end]));
        rest = &tail[end..];
    }
    out
}

/// Keeps the two Secrets right and publishes the CA bundle.
pub struct Keeper {
    client: Client,
    namespace: String,
    hosts: Vec<String>,
    tls_dir: Option<PathBuf>,
    caches: Caches,
    secrets: Store<Secret>,
    writer: Option<reflector::store::Writer<Secret>>,
    tx: watch::Sender<Option<String>>,
    /// Why the last pass could not use the CA Secret, if it could not, or that its CA nears its end: reconciles
    /// report it.
    failure: watch::Sender<Option<String>>,
    fence: std::sync::Arc<crate::leader::Fence>,
    /// Since when every webhook configuration has trusted this CA (PEM), as seen here.
    trusted_since: std::sync::Mutex<Option<(String, std::time::Instant)>>,
    /// Where the webhook answers: a CA change ends only once every endpoint serves the new certificate.
    webhook: crate::probe::Webhook,
}

/// What one pass did, for the caller's pacing.
#[derive(Debug, PartialEq, Eq)]
pub enum Pass {
    /// Everything is in place.
    Settled,
    /// A CA change is under way; look again soon.
    Transition,
}

impl Keeper {
    /// The keeper and the bundle it publishes (once `run` is polled).
    pub fn new(
        client: Client,
        namespace: &str,
        webhook_url: Option<&str>,
        tls_dir: Option<PathBuf>,
        caches: Caches,
    ) -> (Self, CaBundle) {
        let (tx, rx) = watch::channel(None);
        let (failure, failed) = watch::channel(None);
        let writer = reflector::store::Writer::<Secret>::default();
        let keeper = Self {
            client,
            namespace: namespace.to_owned(),
            hosts: hosts(namespace, webhook_url.and_then(url_host).as_deref()),
            tls_dir,
            caches,
            secrets: writer.as_reader(),
            writer: Some(writer),
            tx,
            failure,
            fence: std::sync::Arc::default(),
            trusted_since: std::sync::Mutex::default(),
            webhook: match webhook_url.and_then(crate::reconcile::url_authority) {
                Some(authority) => crate::probe::Webhook::Url(authority),
                None => crate::probe::Webhook::Service {
                    namespace: namespace.to_owned(),
                    name: mizzen::render::WEBHOOK_SERVICE.to_owned(),
                },
            },
        };
        (keeper, CaBundle(rx, failed))
    }

    /// Writes only while leader election allows them (see [`crate::leader::Fence`]).
    pub fn fenced(mut self, fence: std::sync::Arc<crate::leader::Fence>) -> Self {
        self.fence = fence;
        self
    }

    fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.secrets.get(&ObjectRef::new(name).within(&self.namespace))
    }

    /// Keeps the Secrets until the task is dropped: after every change of them and at least once a minute.
    pub async fn run(mut self) {
        let Some(writer) = self.writer.take() else { return };
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let config = watcher::Config::default().labels("app.kubernetes.io/name=mizzen-webhook");
        let mut changes = watcher::watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .touched_objects()
            .boxed();
        loop {
            tokio::select! {
                _ = self.secrets.wait_until_ready() => break,
                _ = changes.next() => {}
            }
        }
        tracing::debug!("webhook TLS Secrets listed");
        // The webhook configurations must be known before a CA decision (they say which CAs are trusted).
        if let Err(error) = self.caches.wait_ready(Duration::from_secs(300)).await {
            tracing::warn!(%error, "webhook configurations not listed; deciding on the TLS Secrets alone");
        }
        loop {
            tracing::debug!("checking the webhook's CA and certificate");
            let result = self.pass().await;
            // Only what the user must fix is reported on the MeshInstalls, not a passing API error.
            // Receivers are woken only by a change, not by every pass; a pass that failed otherwise (an API error)
            // says nothing of the CA Secret, so the last word on it stands.
            let failure = match &result {
                Err(error @ Error::UnusableCa { .. }) => Some(Some(error.to_string())),
                Err(_) => None,
                Ok((_, warning)) => Some(warning.clone()),
            };
            if let Some(failure) = failure {
                self.failure.send_if_modified(|f| {
                    let changed = *f != failure;
                    *f = failure;
                    changed
                });
            }
            let wait = match result {
                Ok((Pass::Settled, _)) => Duration::from_secs(60),
                Ok((Pass::Transition, _)) => Duration::from_secs(1),
                Err(error) => {
                    tracing::warn!(%error, "keeping the webhook certificate failed; retrying");
                    Duration::from_secs(5)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = changes.next() => {
                    // Let a burst of changes (our own two writes) settle into the cache.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    while let Some(Some(_)) = futures::FutureExt::now_or_never(changes.next()) {}
                }
            }
        }
    }

    /// Applies the Secret `name`; with `resource_version`, only over that version of it (else a conflict).
    async fn write(
        &self,
        name: &str,
        data: BTreeMap<&str, &str>,
        annotations: BTreeMap<&str, String>,
        resource_version: Option<&str>,
    ) -> Result<(), Error> {
        if !self.fence.allows_writes() {
            return Err(Error::LeadershipLost);
        }
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let data: BTreeMap<&str, String> = data.into_iter().map(|(k, v)| (k, b64(v))).collect();
        let mut secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": name,
                "namespace": self.namespace,
                "labels": BTreeMap::from(LABELS),
                "annotations": annotations,
            },
            "type": if name == SECRET { "kubernetes.io/tls" } else { "Opaque" },
            "data": data,
        });
        if let Some(version) = resource_version {
            secret["metadata"]["resourceVersion"] = json!(version);
        }
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .patch(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&secret))
            .await
            .map_err(|source| Error::Apply {
                kind: "Secret",
                name: format!("{}/{name}", self.namespace),
                source,
            })?;
        Ok(())
    }

    /// The version of the API server's CA Secret if it still holds `ca_pem`, marked minted, with no CA change
    /// recorded.
    async fn live_ca_unchanged(&self, ca_pem: &str) -> Result<Option<String>, Error> {
        Ok(self.live_ca_secret().await?.and_then(|s| {
            let unchanged = decode(&s, "ca.crt").as_deref() == Some(ca_pem)
                && marked_minted(&s, ca_pem)
                && decode(&s, "previous.crt").is_none();
            s.metadata.resource_version.filter(|_| unchanged)
        }))
    }

    /// The CA Secret as the API server has it, rather than the cache.
    async fn live_ca_secret(&self) -> Result<Option<Secret>, Error> {
        Api::<Secret>::namespaced(self.client.clone(), &self.namespace)
            .get_opt(CA_SECRET)
            .await
            .map_err(|source| Error::Get {
                kind: "Secret",
                name: format!("{}/{CA_SECRET}", self.namespace),
                source,
            })
    }

    /// CA bundles of the MutatingWebhookConfigurations the operator manages.
    fn published_bundles(&self) -> Vec<String> {
        let Some(kind) = kinds::lookup("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration") else {
            return Vec::new();
        };
        let b64 = base64::engine::general_purpose::STANDARD;
        self.caches
            .list(kind)
            .iter()
            .flat_map(|mwc| {
                mwc.data["webhooks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    // This operator's webhook only (its Service, or a URL: with `--webhook-url`, that URL's
                    // host and port), not another operator's.
                    .filter(|w| {
                        let client = &w["clientConfig"];
                        let url = client["url"].as_str();
                        client["service"]["namespace"].as_str() == Some(self.namespace.as_str())
                            || match &self.webhook {
                                crate::probe::Webhook::Url(ours) => {
                                    url.and_then(crate::reconcile::url_authority).as_deref() == Some(ours.as_str())
                                }
                                crate::probe::Webhook::Service { .. } => url.is_some(),
                            }
                    })
                    .filter_map(|w| w["clientConfig"]["caBundle"].as_str())
                    .filter_map(|b| b64.decode(b).ok())
                    .filter_map(|b| String::from_utf8(b).ok())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One pass: CA, then the serving certificate, then the end of a CA transition.
    ///
    /// A transition starts whenever the serving certificate is not signed by the current CA (the CA Secret was
    /// deleted, replaced by someone's own CA, or a minted CA renewed): the CAs trusted so far are kept as `previous.crt` and published
    /// with the new one; the new serving certificate is written only once every webhook configuration trusts the
    /// new CA; from then on the old ones stay trusted for [`TRUST_PREVIOUS_FOR`] (webhook pods load the new
    /// certificate from the API within seconds). Each step is recorded in the Secrets, so a restart at any point
    /// resumes it.
    ///
    /// Returns, with the pass, a warning about the CA for the MeshInstalls, if any (someone's own CA near its end).
    pub async fn pass(&self) -> Result<(Pass, Option<String>), Error> {
        let now = Timestamp::now().as_second();
        let ca_secret = self.secret(CA_SECRET);
        let tls_secret = self.secret(SECRET);
        let served_ca = tls_secret.as_deref().and_then(|s| decode(s, "ca.crt"));
        let unusable = |message| Error::UnusableCa {
            secret: format!("{}/{CA_SECRET}", self.namespace),
            message,
        };
        let cached_ca = ca_secret
            .as_deref()
            .map(|s| usable_ca(s, &self.namespace, &self.hosts))
            .transpose()
            .map_err(unusable)?
            .flatten();
        let mut ca_secret = ca_secret;
        // Whether the operator minted the CA: just now, or as the CA Secret records it of its CA.
        let mut minted_now = false;
        let (mut ca_crt, mut ca_key) = match cached_ca {
            Some(pair) => pair,
            None => {
                // The cache may not hold the last write yet (a slow or reconnecting watch), or the Secret lacks the
                // label the watch selects (made by hand): a CA minted now, or an older one taken, would replace it.
                // Ask the API server first, and use what it has.
                let live = self.live_ca_secret().await?;
                let found = match &live {
                    Some(secret) => usable_ca(secret, &self.namespace, &self.hosts).map_err(unusable)?,
                    None => None,
                };
                // Before the CA had its own Secret, it lived in the serving Secret: keep it.
                let legacy = || {
                    tls_secret
                        .as_deref()
                        .and_then(|s| Some((decode(s, "ca.crt")?, decode(s, "ca.key")?)))
                        .filter(|(_, key)| KeyPair::from_pem(key).is_ok())
                };
                match (found, live) {
                    (Some(pair), live) => {
                        tracing::debug!(secret = CA_SECRET, "the CA is not in the cache; using the API server's");
                        ca_secret = live.map(Arc::new);
                        pair
                    }
                    (None, _) => match legacy() {
                        Some(pair) => pair,
                        None => {
                            tracing::info!(secret = CA_SECRET, "minting a new webhook CA");
                            minted_now = true;
                            new_ca()?
                        }
                    },
                }
            }
        };
        let mut minted = minted_now || ca_secret.as_deref().is_some_and(|s| marked_minted(s, &ca_crt));
        let recorded_previous = ca_secret.as_deref().and_then(|s| decode(s, "previous.crt"));
        // A CA near its end: one the operator minted is replaced by a new one (once no CA change is under way), which
        // the configurations move to as from a deleted one; of someone's own, the user is warned.
        let mut warning = None;
        // The version of the CA Secret a renewal was decided on: its first write goes over that version only.
        let mut renewing_over = None;
        let settled = recorded_previous.is_none() && served_ca.as_deref() == Some(ca_crt.as_str());
        let secret_name = format!("{}/{CA_SECRET}", self.namespace);
        match ca_not_after(&ca_crt).map(|end| (end, ca_end(minted, end, now, &secret_name))) {
            // Decided on the API server's copy, not only the cache's, which may lag (a CA replaced a moment ago
            // by the user or by an earlier pass must not be written over).
            Some((end, CaEnd::Renew)) if settled => match self.live_ca_unchanged(&ca_crt).await? {
                Some(version) => {
                    tracing::info!(
                        secret = CA_SECRET,
                        not_after = end,
                        "the webhook CA nears its end; minting its successor"
                    );
                    (ca_crt, ca_key) = new_ca()?;
                    minted = true;
                    renewing_over = Some(version);
                }
                None => tracing::debug!("the CA Secret changed since the cache saw it; renewal decided next pass"),
            },
            Some((_, CaEnd::Warn(message))) => warning = Some(message),
            _ => {}
        }
        let mut previous = recorded_previous.clone();
        let mut until = ca_secret
            .as_deref()
            .and_then(|s| annotation(s, PREVIOUS_UNTIL))
            .and_then(|v| v.parse::<i64>().ok());
        let serving_under_current = served_ca.as_deref() == Some(ca_crt.as_str());
        if !serving_under_current && previous.is_none() {
            // What the webhook may still serve was signed by a CA the configurations trust now: keep trusting it.
            let mut old: Vec<String> = self.published_bundles().iter().flat_map(|b| certificates(b)).collect();
            old.extend(served_ca.iter().flat_map(|b| certificates(b)));
            old.retain(|c| c.trim() != ca_crt.trim());
            old.sort();
            old.dedup();
            if !old.is_empty() {
                previous = Some(old.concat());
                until = Some(0);
            }
        }
        // Record the CA (and the transition) before anything depends on it.
        let recorded_until = ca_secret.as_deref().and_then(|s| annotation(s, PREVIOUS_UNTIL));
        let recorded_ca = ca_secret.as_deref().and_then(|s| decode(s, "ca.crt"));
        let recorded_minted = ca_secret.as_deref().is_some_and(|s| marked_minted(s, &ca_crt));
        if recorded_ca.as_deref() != Some(ca_crt.as_str())
            || recorded_previous != previous
            || recorded_until != until.map(|u| u.to_string())
            || recorded_minted != minted
        {
            self.write_ca(
                &ca_crt,
                &ca_key,
                minted,
                previous.as_deref(),
                until,
                renewing_over.as_deref(),
            )
            .await?;
        }
        let bundle = match &previous {
            Some(p) => format!("{ca_crt}{p}"),
            None => ca_crt.clone(),
        };
        self.tx.send_if_modified(|current| {
            let changed = current.as_deref() != Some(bundle.as_str());
            if changed {
                *current = Some(bundle.clone());
            }
            changed
        });

        // The serving certificate.
        let fresh_until = (Timestamp::now() + RENEW_BEFORE).as_second();
        let wanted_hosts = self.hosts.join(",");
        let serving = tls_secret.as_deref().and_then(|s| {
            let ok = serving_under_current
                && decode(s, "ca.key").is_none()
                && annotation(s, HOSTS).as_deref() == Some(wanted_hosts.as_str())
                && annotation(s, NOT_AFTER)
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|t| t > fresh_until);
            Some((decode(s, "tls.crt")?, decode(s, "tls.key")?)).filter(|_| ok)
        });
        let (crt, key) = match serving {
            Some(pair) => pair,
            None => {
                let published = self.published_bundles();
                // With no webhook configuration yet (a first install), nobody calls the webhook: no wait.
                if !serving_under_current && !published.is_empty() {
                    let mut since = self.trusted_since.lock().unwrap_or_else(|e| e.into_inner());
                    if published.iter().any(|b| !b.contains(ca_crt.trim())) {
                        // Not every configuration trusts the new CA yet: the reconciles are applying it.
                        *since = None;
                        return Ok((Pass::Transition, warning));
                    }
                    // Every configuration trusts it here; give every API server's informer time to see it too.
                    match since.as_ref() {
                        Some((ca, at)) if *ca == ca_crt && at.elapsed() >= TRUST_SETTLE => {}
                        Some((ca, _)) if *ca == ca_crt => return Ok((Pass::Transition, warning)),
                        _ => {
                            *since = Some((ca_crt.clone(), std::time::Instant::now()));
                            return Ok((Pass::Transition, warning));
                        }
                    }
                }
                let issued = issue(&self.namespace, Some((&ca_crt, &ca_key)), self.hosts.clone())?;
                self.write(
                    SECRET,
                    BTreeMap::from([
                        ("ca.crt", ca_crt.as_str()),
                        ("tls.crt", issued.tls_crt.as_str()),
                        ("tls.key", issued.tls_key.as_str()),
                    ]),
                    BTreeMap::from([(NOT_AFTER, issued.not_after.to_string()), (HOSTS, wanted_hosts)]),
                    None,
                )
                .await?;
                tracing::info!(secret = SECRET, namespace = %self.namespace, not_after = issued.not_after, "issued the webhook's serving certificate");
                (issued.tls_crt, issued.tls_key)
            }
        };
        self.write_dir(&ca_crt, &crt, &key)?;
        // The new certificate is out: start the clock on the previous CAs (also after a restart in between), and
        // drop them when it has run.
        let mut pass = Pass::Settled;
        match (previous.as_deref(), until) {
            (Some(p), Some(0) | None) => {
                let deadline = (Timestamp::now() + TRUST_PREVIOUS_FOR).as_second();
                self.write_ca(&ca_crt, &ca_key, minted, Some(p), Some(deadline), None)
                    .await?;
                pass = Pass::Transition;
            }
            (Some(_), Some(u)) if u > now => pass = Pass::Transition,
            (Some(_), Some(u)) => match crate::probe::every_endpoint_serves(&self.client, &self.webhook, &crt).await {
                Ok(()) => {
                    self.write_ca(&ca_crt, &ca_key, minted, None, None, None).await?;
                    tracing::info!(
                        "every webhook endpoint serves the new certificate: the previous CA is no longer trusted"
                    );
                }
                // An endpoint the operator cannot reach (a NetworkPolicy, say) must not keep a retired CA trusted
                // for ever: after an hour without evidence, it goes anyway, with a warning.
                Err(waiting) if now - u > GIVE_UP_PROBING.as_secs() => {
                    tracing::warn!(%waiting, "no evidence after an hour that every webhook endpoint serves the new certificate; no longer trusting the previous CA");
                    self.write_ca(&ca_crt, &ca_key, minted, None, None, None).await?;
                }
                Err(waiting) => {
                    tracing::debug!(%waiting, "keeping the previous webhook CA trusted until every webhook endpoint serves the new certificate");
                    pass = Pass::Transition;
                }
            },
            (None, _) => {}
        }
        Ok((pass, warning))
    }

    async fn write_ca(
        &self,
        crt: &str,
        key: &str,
        minted: bool,
        previous: Option<&str>,
        until: Option<i64>,
        over_version: Option<&str>,
    ) -> Result<(), Error> {
        let mut data = BTreeMap::from([("ca.crt", crt), ("ca.key", key)]);
        let mut annotations = BTreeMap::new();
        if let Some(mark) = fingerprint(crt).filter(|_| minted) {
            annotations.insert(MINTED, mark);
        }
        if let Some(p) = previous {
            data.insert("previous.crt", p);
            annotations.insert(PREVIOUS_UNTIL, until.unwrap_or(0).to_string());
        }
        self.write(CA_SECRET, data, annotations, over_version).await
    }

    /// With `--webhook-tls-dir`, keeps `ca.crt`, `tls.crt`, `tls.key` there for a webhook run outside the cluster.
    fn write_dir(&self, ca: &str, crt: &str, key: &str) -> Result<(), Error> {
        let Some(dir) = &self.tls_dir else {
            return Ok(());
        };
        std::fs::create_dir_all(dir).map_err(|source| Error::TlsDir {
            path: dir.clone(),
            source,
        })?;
        for (name, content) in [("ca.crt", ca), ("tls.crt", crt), ("tls.key", key)] {
            let path = dir.join(name);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
                std::fs::write(&path, content).map_err(|source| Error::TlsDir { path, source })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_of_the_keeper_wakes_the_reconciles_like_a_new_bundle() {
        use futures::StreamExt;
        let (bundle_tx, bundle_rx) = watch::channel(None);
        let (failure_tx, failure_rx) = watch::channel(None);
        let bundle = CaBundle(bundle_rx, failure_rx);
        let changes = bundle.changes();
        let woken = |changes: &mut (dyn futures::Stream<Item = ()> + Unpin)| {
            futures::FutureExt::now_or_never(changes.next()).is_some()
        };
        let mut changes = std::pin::pin!(changes);
        assert!(!woken(&mut changes), "nothing changed yet");
        failure_tx.send_replace(Some("ca.key is not a usable private key".into()));
        assert!(woken(&mut changes), "a failure that appears");
        assert_eq!(bundle.failure().as_deref(), Some("ca.key is not a usable private key"));
        failure_tx.send_replace(None);
        assert!(woken(&mut changes), "a failure that goes");
        bundle_tx.send_replace(Some("PEM".into()));
        assert!(woken(&mut changes), "a new bundle");
        assert!(!woken(&mut changes));
    }

    #[test]
    fn a_minted_ca_is_renewed_two_years_before_its_end_and_an_own_one_warned_about_90_days_before() {
        let day = 24 * 3600;
        let now = 1_800_000_000;
        let secret = "mizzen-system/mizzen-webhook-ca";
        assert_eq!(ca_end(true, now + 731 * day, now, secret), CaEnd::Far);
        assert_eq!(ca_end(true, now + 729 * day, now, secret), CaEnd::Renew);
        assert_eq!(ca_end(true, now - day, now, secret), CaEnd::Renew);
        assert_eq!(ca_end(false, now + 729 * day, now, secret), CaEnd::Far);
        assert_eq!(ca_end(false, now + 91 * day, now, secret), CaEnd::Far);
        let CaEnd::Warn(message) = ca_end(false, now + 89 * day, now, secret) else {
            panic!("no warning 89 days before the end");
        };
        assert!(message.contains(secret), "{message}");
        assert!(message.contains("2027-04-14T08:00:00Z"), "{message}");
        // A CA minted now lasts ten years: nothing to do about it for eight.
        let (crt, _) = new_ca().unwrap();
        let end = ca_not_after(&crt).expect("the minted CA's expiry");
        let years = (end - Timestamp::now().as_second()) as f64 / (365.25 * day as f64);
        assert!((9.9..10.1).contains(&years), "{years} years");
        assert_eq!(ca_end(true, end, Timestamp::now().as_second(), secret), CaEnd::Far);
        assert_eq!(ca_not_after("not a certificate"), None);
    }

    #[test]
    fn a_ca_is_marked_minted_by_its_own_fingerprint_only() {
        let (crt, _) = new_ca().unwrap();
        let (other, _) = new_ca().unwrap();
        let secret = |mark: Option<String>| {
            let mut s = Secret::default();
            if let Some(mark) = mark {
                s.metadata.annotations = Some(BTreeMap::from([(MINTED.to_owned(), mark)]));
            }
            s
        };
        let mark = fingerprint(&crt).unwrap();
        assert_eq!(mark.len(), 64);
        assert!(marked_minted(&secret(Some(mark.clone())), &crt));
        // A CA put in its place that keeps the annotation, an old-style mark, or none: not minted.
        assert!(!marked_minted(&secret(Some(mark)), &other));
        assert!(!marked_minted(&secret(Some("true".into())), &crt));
        assert!(!marked_minted(&secret(None), &crt));
        assert_eq!(fingerprint("no certificate"), None);
        // A certificate added to the minted one: no longer the CA the mark names.
        let mark = fingerprint(&crt).unwrap();
        assert!(!marked_minted(&secret(Some(mark)), &format!("{crt}{other}")));
    }

    #[test]
    fn renewals_keep_the_ca() {
        let first = issue("mizzen-system", None, hosts("mizzen-system", Some("127.0.0.1"))).unwrap();
        let second = issue(
            "mizzen-system",
            Some((&first.ca_crt, &first.ca_key)),
            hosts("mizzen-system", None),
        )
        .unwrap();
        assert_eq!(first.ca_crt, second.ca_crt);
        assert_ne!(first.tls_crt, second.tls_crt);
        assert!(second.not_after > Timestamp::now().as_second() + 300 * 24 * 3600);
    }

    /// Whether a client trusting only `ca_pem` accepts `bundle`'s serving certificate for the Service's name.
    fn accepted(ca_pem: &str, bundle: &Bundle) -> Result<(), String> {
        chains_to(ca_pem, &bundle.tls_crt, "mizzen-webhook.mizzen-system.svc")
    }

    /// A CA whose subject repeats an attribute type (`/DC=example/DC=corp/CN=Corp Issuing CA`, as Active Directory
    /// CAs name themselves), which rcgen cannot write back as it reads: made with `openssl req -x509 -newkey ec
    /// -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 36500 -subj ... -addext basicConstraints=critical,CA:TRUE
    /// -addext keyUsage=critical,keyCertSign,cRLSign`.
    const DC_CA_CRT: &str = include_str!("testdata/dc-ca.crt");
    const DC_CA_KEY: &str = include_str!("testdata/dc-ca.key");

    #[test]
    fn certificates_chain_to_the_ca_that_signed_them_whatever_its_name() {
        let own = issue("mizzen-system", None, hosts("mizzen-system", None)).unwrap();
        accepted(&own.ca_crt, &own).unwrap();
        // Someone's own CA, named otherwise than mizzen's: the issuer is its subject, or clients find no parent.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::OrganizationName, "Example Corp");
        params
            .distinguished_name
            .push(DnType::CommonName, "Example Corp Root CA");
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        let (ca_crt, ca_key) = (ca.pem(), key.serialize_pem());
        let theirs = issue("mizzen-system", Some((&ca_crt, &ca_key)), hosts("mizzen-system", None)).unwrap();
        assert_eq!(theirs.ca_crt, ca_crt);
        accepted(&ca_crt, &theirs).unwrap();
        assert!(
            accepted(&own.ca_crt, &theirs).is_err(),
            "another CA's certificate is not accepted"
        );
    }

    #[test]
    fn a_ca_secret_that_cannot_sign_is_reported_and_never_replaced() {
        let usable_ca_here = |s: &Secret| usable_ca(s, "mizzen-system", &hosts("mizzen-system", Some("127.0.0.1")));
        let secret = |members: &[(&str, &str)]| Secret {
            data: Some(
                members
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        let (crt, key) = new_ca().unwrap();
        assert_eq!(
            usable_ca_here(&secret(&[("ca.crt", &crt), ("ca.key", &key)])),
            Ok(Some((crt.clone(), key.clone())))
        );
        assert_eq!(usable_ca_here(&secret(&[])), Ok(None), "no CA: one is minted");
        assert_eq!(usable_ca_here(&Secret::default()), Ok(None));
        // An EC key in SEC1 form (`openssl ecparam -genkey`), which the signer cannot read.
        let sec1 = include_str!("testdata/sec1-ec.key");
        let err = usable_ca_here(&secret(&[("ca.crt", &crt), ("ca.key", sec1)])).unwrap_err();
        assert!(err.contains("PKCS#8") && err.contains("openssl pkcs8 -topk8"), "{err}");
        let err = usable_ca_here(&secret(&[("ca.crt", "junk"), ("ca.key", &key)])).unwrap_err();
        assert!(err.contains("ca.crt is not a PEM certificate rcgen can read"), "{err}");
        // A CA that signs certificates clients do not accept: a subject rcgen writes back otherwise; the key of
        // another CA; a certificate that is not a CA's.
        let err = usable_ca_here(&secret(&[("ca.crt", DC_CA_CRT), ("ca.key", DC_CA_KEY)])).unwrap_err();
        assert!(err.contains("not accepted by a client trusting ca.crt"), "{err}");
        let (_, other_key) = new_ca().unwrap();
        let err = usable_ca_here(&secret(&[("ca.crt", &crt), ("ca.key", &other_key)])).unwrap_err();
        assert!(err.contains("not accepted by a client trusting ca.crt"), "{err}");
        let leaf = issue("mizzen-system", Some((&crt, &key)), hosts("mizzen-system", None)).unwrap();
        let err = usable_ca_here(&secret(&[("ca.crt", &leaf.tls_crt), ("ca.key", &leaf.tls_key)])).unwrap_err();
        assert!(err.contains("not a CA's"), "{err}");
        // Roots Go refuses and rustls would not: expired, or for client authentication only.
        let own_ca = |expired: bool, client_only: bool| {
            let mut params = ca_params().unwrap();
            if expired {
                params.not_after = date_time_ymd(2020, 1, 1);
            }
            if client_only {
                params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
            }
            let key = KeyPair::generate().unwrap();
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        let (old_crt, old_key) = own_ca(true, false);
        let err = usable_ca_here(&secret(&[("ca.crt", &old_crt), ("ca.key", &old_key)])).unwrap_err();
        assert!(err.contains("not valid now"), "{err}");
        let (client_crt, client_key) = own_ca(false, true);
        let err = usable_ca_here(&secret(&[("ca.crt", &client_crt), ("ca.key", &client_key)])).unwrap_err();
        assert!(err.contains("does not allow server authentication"), "{err}");
        let err = usable_ca_here(&secret(&[("ca.crt", &crt)])).unwrap_err();
        assert!(err.contains("has ca.crt but not ca.key"), "{err}");
        let err = usable_ca_here(&secret(&[("ca.key", &key)])).unwrap_err();
        assert!(err.contains("has ca.key but not ca.crt"), "{err}");
    }

    #[test]
    fn webhook_url_hosts() {
        assert_eq!(url_host("https://127.0.0.1:8443/inject").as_deref(), Some("127.0.0.1"));
        assert_eq!(
            url_host("https://host.docker.internal/inject").as_deref(),
            Some("host.docker.internal")
        );
        assert_eq!(url_host("https://[::1]:8443/inject").as_deref(), Some("::1"));
    }

    #[test]
    fn bundles_split_into_certificates() {
        let (a, _) = new_ca().unwrap();
        let (b, _) = new_ca().unwrap();
        let both = format!("{a}{b}");
        assert_eq!(certificates(&both), vec![a.clone(), b]);
        assert_eq!(certificates("junk"), Vec::<String>::new());
    }
}
