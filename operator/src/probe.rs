//! Evidence that a CA change may end: every endpoint of the webhook presents the current serving certificate.
//!
//! The TLS keeper drops the previous CA from the webhook configurations only once each ready endpoint of the
//! webhook Service (or the `--webhook-url`) answers a TLS handshake with the certificate now in the Secret. A webhook
//! pod that could not load it yet keeps the old CA trusted, so the API server's calls to it keep working.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, ListParams};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// How long one endpoint may take to connect and finish the handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Where the webhook answers.
#[derive(Debug, Clone)]
pub enum Webhook {
    /// The Service of the bundle: its ready endpoints, from its EndpointSlices.
    Service {
        /// Namespace.
        namespace: String,
        /// Service name.
        name: String,
    },
    /// An out-of-cluster webhook: `host:port` of `--webhook-url`.
    Url(String),
}

/// Accepts any certificate: the handshake is only there to see which one the endpoint presents (it is then
/// compared byte for byte with the expected one); nothing is sent over the connection.
#[derive(Debug)]
struct Observe(Arc<CryptoProvider>);

impl ServerCertVerifier for Observe {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The leaf certificate `address` (`host:port`) presents, if the handshake succeeds.
async fn presented(address: &str, server_name: &str) -> Result<Vec<u8>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Observe(provider)))
        .with_no_client_auth();
    let name = ServerName::try_from(server_name.to_owned()).map_err(|e| e.to_string())?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(address)
            .await
            .map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        tls.get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
            .ok_or_else(|| "no certificate presented".to_owned())
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, connect)
        .await
        .map_err(|_| format!("no TLS handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()))?
}

/// The ready `ip:port` endpoints of a Service (port named `https`, else the slice's first port).
async fn endpoints(client: &Client, namespace: &str, service: &str) -> Result<Vec<String>, String> {
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| format!("listing the EndpointSlices of {namespace}/{service}: {e}"))?;
    let mut out = Vec::new();
    for slice in slices {
        let ports = slice.ports.unwrap_or_default();
        let Some(port) = ports
            .iter()
            .find(|p| p.name.as_deref() == Some("https"))
            .or_else(|| ports.first())
            .and_then(|p| p.port)
        else {
            continue;
        };
        for endpoint in slice.endpoints {
            // Terminating or not yet ready endpoints get no admission calls.
            if endpoint.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                continue;
            }
            for address in endpoint.addresses {
                let host = if address.contains(':') {
                    format!("[{address}]")
                } else {
                    address
                };
                out.push(format!("{host}:{port}"));
            }
        }
    }
    Ok(out)
}

/// `Ok(())` when every endpoint of the webhook presents `certificate_pem`'s certificate; else what does not.
pub async fn every_endpoint_serves(client: &Client, webhook: &Webhook, certificate_pem: &str) -> Result<(), String> {
    let expected = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
        .map_err(|e| format!("the serving certificate: {e}"))?;
    let (addresses, server_name) = match webhook {
        Webhook::Service { namespace, name } => (
            endpoints(client, namespace, name).await?,
            format!("{name}.{namespace}.svc"),
        ),
        Webhook::Url(authority) => {
            let host = crate::tls::url_host(authority).unwrap_or_else(|| authority.clone());
            (vec![authority.clone()], host)
        }
    };
    // All at once: the keeper's pass waits for the slowest handshake only.
    let results = futures::future::join_all(addresses.iter().map(|a| presented(a, &server_name))).await;
    for (address, result) in addresses.iter().zip(results) {
        match result {
            Ok(der) if der == expected.as_ref() => {}
            Ok(_) => return Err(format!("{address} still presents another certificate")),
            Err(e) => return Err(format!("{address}: {e}")),
        }
    }
    Ok(())
}
