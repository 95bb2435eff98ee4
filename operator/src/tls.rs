//! The webhook's TLS: a CA (ten years) and a serving certificate (one year) in Secret `mizzen-webhook-tls`, renewed
//! 30 days before expiry. The CA key is kept so renewals keep the same CA, and the MutatingWebhookConfiguration's
//! `caBundle` does not change under the API server's feet.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use kube::api::{Api, Patch, PatchParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, date_time_ymd};
use serde_json::json;

use crate::{Context, Error, FIELD_MANAGER};

/// The Secret holding `ca.crt`, `ca.key`, `tls.crt`, `tls.key`.
pub const SECRET: &str = "mizzen-webhook-tls";
/// Annotation with the serving certificate's expiry (Unix seconds).
pub const NOT_AFTER: &str = "mizzen.io/not-after";
const RENEW_BEFORE: SignedDuration = SignedDuration::from_hours(30 * 24);
const CA_NAME: &str = "mizzen webhook CA";

fn tls_error(e: impl std::fmt::Display) -> Error {
    Error::Tls(e.to_string())
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

fn ca_params(years: i16) -> Result<CertificateParams, Error> {
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.distinguished_name.push(DnType::CommonName, CA_NAME);
    params.not_after = date_time_ymd(
        i32::from(today.year() + years),
        today.month() as u8,
        (today.day() as u8).min(28),
    );
    Ok(params)
}

/// Issues a serving certificate for the webhook Service (and `extra_host`), signed by the given CA or a new one.
pub fn issue(namespace: &str, ca: Option<(&str, &str)>, extra_host: Option<&str>) -> Result<Bundle, Error> {
    let (ca_crt, ca_key) = match ca {
        Some((crt, key)) => (crt.to_owned(), KeyPair::from_pem(key).map_err(tls_error)?),
        None => {
            let key = KeyPair::generate().map_err(tls_error)?;
            let cert = ca_params(10)?.self_signed(&key).map_err(tls_error)?;
            (cert.pem(), key)
        }
    };
    let ca_key_pem = ca_key.serialize_pem();
    // Signing needs the CA's name and key; rebuilding the parameters keeps renewals under the same CA.
    let issuer = Issuer::new(ca_params(10)?, ca_key);
    let mut hosts = vec![
        "mizzen-webhook".to_owned(),
        format!("mizzen-webhook.{namespace}"),
        format!("mizzen-webhook.{namespace}.svc"),
        format!("mizzen-webhook.{namespace}.svc.cluster.local"),
    ];
    if let Some(h) = extra_host {
        hosts.push(h.to_owned());
    }
    let mut params = CertificateParams::new(hosts).map_err(tls_error)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("mizzen-webhook.{namespace}.svc"));
    let now = Timestamp::now();
    let expiry = now + SignedDuration::from_hours(365 * 24);
    let day = expiry.to_zoned(TimeZone::UTC).date();
    params.not_after = date_time_ymd(i32::from(day.year()), day.month() as u8, day.day() as u8);
    let key = KeyPair::generate().map_err(tls_error)?;
    let cert = params.signed_by(&key, &issuer).map_err(tls_error)?;
    Ok(Bundle {
        ca_crt,
        ca_key: ca_key_pem,
        tls_crt: cert.pem(),
        tls_key: key.serialize_pem(),
        not_after: expiry.as_second(),
    })
}

fn decode(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Host of `--webhook-url`, for the certificate's names.
fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let authority = rest.split('/').next()?;
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next()?
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    (!host.is_empty()).then(|| host.to_owned())
}

/// Makes sure a valid certificate exists; returns the CA PEM for the `caBundle`.
pub async fn ensure(ctx: &Context) -> Result<String, Error> {
    let ns = &ctx.options.namespace;
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let current = api.get_opt(SECRET).await.map_err(|source| Error::Get {
        kind: "Secret".into(),
        name: SECRET.into(),
        source,
    })?;
    let extra_host = ctx.options.webhook_url.as_deref().and_then(url_host);
    let fresh_until = (Timestamp::now() + RENEW_BEFORE).as_second();
    if let Some(secret) = &current
        && let (Some(ca), Some(_), Some(crt), Some(key)) = (
            decode(secret, "ca.crt"),
            decode(secret, "ca.key"),
            decode(secret, "tls.crt"),
            decode(secret, "tls.key"),
        )
        && secret
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(NOT_AFTER))
            .and_then(|v| v.parse::<i64>().ok())
            .is_some_and(|t| t > fresh_until)
    {
        write_dir(ctx, &ca, &crt, &key)?;
        return Ok(ca);
    }
    let ca = current
        .as_ref()
        .and_then(|s| Some((decode(s, "ca.crt")?, decode(s, "ca.key")?)));
    let bundle = issue(
        ns,
        ca.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        extra_host.as_deref(),
    )?;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let data: BTreeMap<&str, String> = [
        ("ca.crt", b64(&bundle.ca_crt)),
        ("ca.key", b64(&bundle.ca_key)),
        ("tls.crt", b64(&bundle.tls_crt)),
        ("tls.key", b64(&bundle.tls_key)),
    ]
    .into_iter()
    .collect();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": SECRET,
            "namespace": ns,
            "labels": {"app.kubernetes.io/managed-by": "mizzen", "app.kubernetes.io/name": "mizzen-webhook"},
            "annotations": {NOT_AFTER: bundle.not_after.to_string()},
        },
        "type": "kubernetes.io/tls",
        "data": data,
    });
    api.patch(
        SECRET,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .map_err(|source| Error::Apply {
        kind: "Secret".into(),
        name: SECRET.into(),
        source,
    })?;
    tracing::info!(secret = SECRET, namespace = %ns, not_after = bundle.not_after, "issued the webhook's serving certificate");
    write_dir(ctx, &bundle.ca_crt, &bundle.tls_crt, &bundle.tls_key)?;
    Ok(bundle.ca_crt)
}

/// With `--webhook-tls-dir`, keeps `ca.crt`, `tls.crt`, `tls.key` there for a webhook run outside the cluster.
fn write_dir(ctx: &Context, ca: &str, crt: &str, key: &str) -> Result<(), Error> {
    let Some(dir) = &ctx.options.webhook_tls_dir else {
        return Ok(());
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::Tls(format!("{}: {e}", dir.display())))?;
    for (name, content) in [("ca.crt", ca), ("tls.crt", crt), ("tls.key", key)] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(content) {
            std::fs::write(&path, content).map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewals_keep_the_ca() {
        let first = issue("mizzen-system", None, Some("127.0.0.1")).unwrap();
        let second = issue("mizzen-system", Some((&first.ca_crt, &first.ca_key)), None).unwrap();
        assert_eq!(first.ca_crt, second.ca_crt);
        assert_ne!(first.tls_crt, second.tls_crt);
        assert!(second.not_after > Timestamp::now().as_second() + 300 * 24 * 3600);
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
}
