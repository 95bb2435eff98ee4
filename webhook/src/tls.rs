//! The serving certificate: loaded and checked before the port is bound, and reloaded when the files change so
//! rotated certificates are picked up without a restart. Established connections keep the certificate they
//! negotiated with; new handshakes get the new one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::ring::sign::any_supported_type;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The certificate file holds no PEM certificate.
    #[error("{path}: no PEM certificate found ({message})")]
    NoCertificate {
        /// The file.
        path: PathBuf,
        /// Parser detail.
        message: String,
    },
    /// The key file holds no usable PEM private key.
    #[error("{path}: no usable PEM private key ({message})")]
    BadKey {
        /// The file.
        path: PathBuf,
        /// Parser detail.
        message: String,
    },
    /// Key and certificate do not belong together.
    #[error("{key} does not match the certificate in {cert}: {message}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// Detail.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Checks a PEM certificate chain and its key; `cert_label` and `key_label` name where they came from.
pub fn parse(cert_pem: &[u8], key_pem: &[u8], cert_label: &Path, key_label: &Path) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::NoCertificate {
            path: cert_label.to_owned(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_label.to_owned(),
            message: "empty, or no CERTIFICATE block".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::BadKey {
        path: key_label.to_owned(),
        message: e.to_string(),
    })?;
    let signing_key = any_supported_type(&key).map_err(|e| TlsError::BadKey {
        path: key_label.to_owned(),
        message: e.to_string(),
    })?;
    let certified = CertifiedKey::new(certs, signing_key);
    certified.keys_match().map_err(|e| TlsError::Mismatch {
        cert: cert_label.to_owned(),
        key: key_label.to_owned(),
        message: e.to_string(),
    })?;
    Ok(certified)
}

/// Serves the current certificate to every handshake.
#[derive(Debug)]
pub struct Reloading {
    cert_path: PathBuf,
    key_path: PathBuf,
    /// None until a certificate arrived (when it comes from a Secret); handshakes fail until then.
    current: RwLock<Option<Arc<CertifiedKey>>>,
    /// The file contents last loaded; compared rather than timestamps, which copies can preserve.
    loaded: RwLock<(Vec<u8>, Vec<u8>)>,
}

impl Reloading {
    /// Loads the files; fails when they are missing or unusable. What is served is what is remembered as loaded:
    /// the files are read once, so a rotation landing meanwhile is seen as a change on the next check.
    pub fn new(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let key = parse(&cert_pem, &key_pem, cert_path, key_path)?;
        Ok(Arc::new(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Some(Arc::new(key))),
            loaded: RwLock::new((cert_pem, key_pem)),
        }))
    }

    /// No certificate yet: it arrives through [`Reloading::set_pem`] (from a Secret); handshakes fail until then.
    pub fn empty(source: &str) -> Arc<Self> {
        Arc::new(Self {
            cert_path: PathBuf::from(format!("{source} tls.crt")),
            key_path: PathBuf::from(format!("{source} tls.key")),
            current: RwLock::new(None),
            loaded: RwLock::new((Vec::new(), Vec::new())),
        })
    }

    /// Serves this certificate from the next handshake on, if it differs from the current one and is usable.
    pub fn set_pem(&self, cert_pem: &[u8], key_pem: &[u8]) -> Result<bool, TlsError> {
        let now = (cert_pem.to_vec(), key_pem.to_vec());
        if *self.loaded.read().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        let key = parse(cert_pem, key_pem, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(true)
    }

    /// Whether a certificate is loaded.
    pub fn is_loaded(&self) -> bool {
        self.current.read().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    /// Reloads the files if they changed. A bad new pair is reported and the old certificate kept.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let now = (read(&self.cert_path)?, read(&self.key_path)?);
        if *self.loaded.read().unwrap_or_else(|e| e.into_inner()) == now {
            return Ok(false);
        }
        // The bytes just compared, not a second read: what is served is what is remembered.
        let key = parse(&now.0, &now.1, &self.cert_path, &self.key_path)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(key));
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = now;
        Ok(true)
    }

    /// Watches the files, reloading on change, until the task is dropped.
    pub async fn watch(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            match self.reload_if_changed() {
                Ok(true) => tracing::info!(cert = %self.cert_path.display(), "reloaded the serving certificate"),
                Ok(false) => {}
                // Typically a half-written rotation; the next tick retries.
                Err(error) => tracing::warn!(%error, "new certificate files are not usable yet; keeping the old ones"),
            }
        }
    }

    /// A rustls server configuration (TLS 1.2 and 1.3, ring) serving this certificate, HTTP/1.1 only.
    ///
    /// Sessions are not resumed: every connection makes a full handshake with the certificate served at the time,
    /// so after a rotation no new connection is authenticated by the old certificate (a resumed session would be,
    /// and would report the old certificate). The API server's webhook client makes full handshakes anyway.
    pub fn server_config(self: &Arc<Self>) -> Result<rustls::ServerConfig, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        Ok(config)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
