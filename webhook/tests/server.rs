//! Tier 4: the webhook over real TLS on 127.0.0.1, serving from a MeshInstall file, driven with captured
//! AdmissionReview bodies (`tests/fixtures/`). Every returned patch is applied with json-patch and compared with
//! what `mizzen kube-inject` produces for the same pod.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use mizzen::inject::InjectionConfig;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const SAMPLE: &str = "../config/samples/meshinstall.yaml";

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mizzen-webhook-{tag}-{}-{:?}",
            std::process::id(),
            Instant::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA and a serving certificate for 127.0.0.1 written to `dir` as tls.crt / tls.key.
struct Pki {
    ca_pem: String,
    serving_pem: String,
}

fn issue(dir: &Path, common_name: &str) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "mizzen test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        serving_pem: cert.pem(),
    }
}

fn client_config(ca_pems: &[&str]) -> Arc<rustls::ClientConfig> {
    client_config_resuming(ca_pems, false)
}

/// A client that trusts `ca_pems`, and resumes sessions (as rustls clients do by default) if `resume`.
fn client_config_resuming(ca_pems: &[&str], resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        roots
            .add(CertificateDer::from_pem_slice(pem.as_bytes()).unwrap())
            .unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Every connection makes a full handshake, as the API server's webhook client does (the server does not resume
    // sessions either; `sessions_are_not_resumed_across_a_rotation` checks that with a client that tries).
    if !resume {
        config.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(config)
}

/// One keep-alive HTTPS connection; remembers the certificate the server presented.
struct Conn {
    sender: SendRequest<Full<Bytes>>,
    peer_cert: Vec<u8>,
}

async fn connect(addr: std::net::SocketAddr, config: Arc<rustls::ClientConfig>) -> Conn {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls = TlsConnector::from(config).connect(name, tcp).await.unwrap();
    let peer_cert = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    Conn { sender, peer_cert }
}

impl Conn {
    async fn send(&mut self, method: &str, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
        (status, body)
    }
}

struct Harness {
    _dir: TempDir,
    pki: Pki,
    running: mizzen_webhook::Running,
}

impl Harness {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tune: impl FnOnce(&mut mizzen_webhook::Settings)) -> Self {
        let dir = TempDir::new("srv");
        let pki = issue(&dir.0, "first");
        let settings = mizzen_webhook::Settings {
            listen: "127.0.0.1:0".parse().unwrap(),
            admin_listen: "127.0.0.1:0".parse().unwrap(),
            tls_cert_file: Some(dir.0.join("tls.crt")),
            tls_key_file: Some(dir.0.join("tls.key")),
            meshinstall: vec![PathBuf::from(SAMPLE)],
            cert_reload_interval: Duration::from_millis(100),
            drain_timeout: Duration::from_secs(5),
            shutdown_delay: Duration::ZERO,
            ..Default::default()
        };
        let mut settings = settings;
        tune(&mut settings);
        let running = mizzen_webhook::start(settings).await.unwrap();
        Self {
            _dir: dir,
            pki,
            running,
        }
    }

    async fn conn(&self) -> Conn {
        connect(self.running.admission_addr, client_config(&[&self.pki.ca_pem])).await
    }

    /// A TLS connection to write raw HTTP on.
    async fn raw(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.running.admission_addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
        TlsConnector::from(client_config(&[&self.pki.ca_pem]))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    async fn admin(&self, path: &str) -> (u16, String) {
        let tcp = TcpStream::connect(self.running.admin_addr).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
        tokio::spawn(connection);
        let request = hyper::Request::builder()
            .uri(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new("tests/fixtures").join(name)).unwrap()
}

fn config() -> InjectionConfig {
    let text = std::fs::read_to_string(SAMPLE).unwrap();
    let mi = mizzen::cli::mesh_install_from_yaml(SAMPLE, &text).unwrap();
    InjectionConfig::from_mesh_install(&mi.spec)
}

/// The pod `mizzen kube-inject` produces for the pod inside a review.
fn kube_inject(review: &[u8]) -> Value {
    let review: Value = serde_json::from_slice(review).unwrap();
    let pod = &review["request"]["object"];
    let yaml = mizzen::yaml::to_yaml(pod).unwrap();
    let out = mizzen::kubeinject::inject_stream(&mizzen::inject::Injector::compile(config()), &yaml).unwrap();
    mizzen::yaml::parse_documents(&out.text).unwrap().remove(0)
}

/// Sends a review and returns the response's `response` object.
async fn review(conn: &mut Conn, path: &str, body: Vec<u8>) -> Value {
    let (status, bytes) = conn.send("POST", path, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&bytes));
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["kind"], "AdmissionReview");
    body["response"].clone()
}

fn apply(review_body: &[u8], response: &Value) -> Value {
    let review: Value = serde_json::from_slice(review_body).unwrap();
    let mut pod = review["request"]["object"].clone();
    if let Some(patch) = response["patch"].as_str() {
        assert_eq!(response["patchType"], "JSONPatch");
        use base64_decode::decode;
        let patch: json_patch::Patch = serde_json::from_slice(&decode(patch)).unwrap();
        json_patch::patch(&mut pod, &patch).unwrap();
    }
    pod
}

/// Minimal standard base64 decoder, so the tests need no extra crate.
mod base64_decode {
    pub fn decode(text: &str) -> Vec<u8> {
        let value = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let bytes: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, b) in chunk.iter().enumerate() {
                n |= value(*b) << (18 - 6 * i);
            }
            let full = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&full[..chunk.len().saturating_sub(1)]);
        }
        out
    }
}

#[tokio::test]
async fn injected_pods_match_kube_inject() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    for name in [
        "create-enabled-namespace.json",
        "create-enabled-namespace.compact.json",
        "create-enabled-namespace.apiserver.json",
        "pod-64k.json",
    ] {
        let body = fixture(name);
        let response = review(&mut conn, "/inject", body.clone()).await;
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response["uid"].as_str().unwrap().starts_with("a1b2c3d4-"), "{name}");
        let patched = apply(&body, &response);
        assert_eq!(patched, kube_inject(&body), "{name}: webhook and kube-inject disagree");
        assert!(
            response["auditAnnotations"]["injection"]
                .as_str()
                .unwrap()
                .starts_with("injected")
        );
    }
    h.running.shutdown().await;
}

#[tokio::test]
async fn skipped_pods_are_allowed_without_a_patch_and_say_why() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    for (name, why) in [
        ("annotation-inject-false.json", "annotation sidecar.istio.io/inject"),
        ("label-inject-false.json", "label sidecar.istio.io/inject"),
        ("host-network.json", "hostNetwork"),
        ("kube-system.json", "kube-system"),
    ] {
        let response = review(&mut conn, "/inject", fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}");
        assert!(response.get("patch").is_none_or(Value::is_null), "{name} got a patch");
        let audit = response["auditAnnotations"]["injection"].as_str().unwrap();
        assert!(audit.starts_with("skipped: ") && audit.contains(why), "{name}: {audit}");
    }
    h.running.shutdown().await;
}

#[tokio::test]
async fn already_injected_pods_come_back_unchanged() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let body = fixture("create-enabled-namespace.json");
    let first = review(&mut conn, "/inject", body.clone()).await;
    let injected = apply(&body, &first);
    let mut again: Value = serde_json::from_slice(&body).unwrap();
    again["request"]["object"] = injected.clone();
    let again = serde_json::to_vec(&again).unwrap();
    let second = review(&mut conn, "/inject", again.clone()).await;
    assert_eq!(second["allowed"], true);
    assert_eq!(apply(&again, &second), injected, "re-injection changed the pod");
    h.running.shutdown().await;
}

#[tokio::test]
async fn bad_annotations_are_refused_naming_the_annotation() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let response = review(&mut conn, "/inject", fixture("bad-traffic-annotation.json")).await;
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("traffic.sidecar.istio.io/includeOutboundIPRanges") && message.contains("includeIPRanges"),
        "{message}"
    );
    h.running.shutdown().await;
}

#[tokio::test]
async fn unknown_revisions_get_a_status_error_for_the_failure_policy_to_decide() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    // Not a review of the pod but a failure of the webhook's: `failurePolicy` decides (an answer would override it).
    let (status, body) = conn
        .send("POST", "/inject/canary", fixture("create-enabled-namespace.json"))
        .await;
    let text = String::from_utf8_lossy(&body);
    assert_eq!(status, 500, "{text}");
    // A metav1.Status, which the API server's client decodes and whose message its error keeps.
    let status: Value = serde_json::from_slice(&body).expect("a JSON Status");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["code"], 500);
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("no MeshInstall serves injection revision \"canary\""),
        "{message}"
    );
    // What needs no injector is still answered: a review of another kind is allowed.
    let mut other: Value = serde_json::from_slice(&fixture("create-enabled-namespace.json")).unwrap();
    other["request"]["kind"] = serde_json::json!({"group": "", "version": "v1", "kind": "Secret"});
    let response = review(&mut conn, "/inject/canary", serde_json::to_vec(&other).unwrap()).await;
    assert_eq!(response["allowed"], true);
    h.running.shutdown().await;
}

#[tokio::test]
async fn bodies_that_are_not_reviews_get_400_and_other_paths_404() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let (status, body) = conn.send("POST", "/inject", fixture("malformed.json")).await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
    let (status, body) = conn.send("POST", "/inject", fixture("wrong-kind.json")).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("AdmissionReview"));
    let (status, _) = conn
        .send("POST", "/mutate", fixture("create-enabled-namespace.json"))
        .await;
    assert_eq!(status, 404);
    let (status, _) = conn.send("GET", "/inject", Vec::new()).await;
    assert_eq!(status, 405);
    h.running.shutdown().await;
}

#[tokio::test]
async fn oversized_bodies_get_413() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let mut big = b"{\"pad\":\"".to_vec();
    big.resize(3 * 1024 * 1024 + 10, b'x');
    big.extend_from_slice(b"\"}");
    let (status, _) = conn.send("POST", "/inject", big).await;
    assert_eq!(status, 413);
    h.running.shutdown().await;
}

#[tokio::test]
async fn admin_port_reports_health_and_metrics() {
    let h = Harness::start().await;
    assert_eq!(h.admin("/livez").await.0, 200);
    let (status, body) = h.admin("/readyz").await;
    assert_eq!(status, 200, "{body}");
    let mut conn = h.conn().await;
    review(&mut conn, "/inject", fixture("create-enabled-namespace.json")).await;
    review(&mut conn, "/inject", fixture("host-network.json")).await;
    let (status, metrics) = h.admin("/metrics").await;
    assert_eq!(status, 200);
    for want in [
        "mizzen_webhook_requests_total{result=\"injected\"} 1",
        "mizzen_webhook_injections_total{revision=\"default\"} 1",
        "mizzen_webhook_skips_total{reason=\"host_network\"} 1",
        "mizzen_webhook_request_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(want), "missing {want:?} in\n{metrics}");
    }
    h.running.shutdown().await;
}

#[tokio::test]
async fn rotated_certificates_are_served_without_a_restart() {
    let h = Harness::start().await;
    let mut old_conn = h.conn().await;
    assert_eq!(
        old_conn.peer_cert,
        CertificateDer::from_pem_slice(h.pki.serving_pem.as_bytes())
            .unwrap()
            .to_vec()
    );

    // Rotate: a new CA and certificate written over the same files.
    let rotated = issue(&h._dir.0, "second");
    let want = CertificateDer::from_pem_slice(rotated.serving_pem.as_bytes())
        .unwrap()
        .to_vec();
    let clients = client_config(&[&h.pki.ca_pem, &rotated.ca_pem]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let conn = connect(h.running.admission_addr, clients.clone()).await;
        if conn.peer_cert == want {
            break;
        }
        assert!(Instant::now() < deadline, "the rotated certificate was not picked up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The connection opened before the rotation keeps working.
    let response = review(&mut old_conn, "/inject", fixture("create-enabled-namespace.json")).await;
    assert_eq!(response["allowed"], true);
    h.running.shutdown().await;
}

#[tokio::test]
async fn sessions_are_not_resumed_across_a_rotation() {
    // A slow reload: the rotation is picked up at a known later tick, after a client that resumes sessions has
    // connected, been answered (reading any session ticket the server sent) and disconnected.
    let h = Harness::start_with(|s| s.cert_reload_interval = Duration::from_secs(3)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rotated = issue(&h._dir.0, "second");
    let want = CertificateDer::from_pem_slice(rotated.serving_pem.as_bytes())
        .unwrap()
        .to_vec();
    let resuming = client_config_resuming(&[&h.pki.ca_pem, &rotated.ca_pem], true);
    let mut before = connect(h.running.admission_addr, resuming.clone()).await;
    assert_ne!(
        before.peer_cert, want,
        "the rotation was picked up before the next tick"
    );
    let response = review(&mut before, "/inject", fixture("create-enabled-namespace.json")).await;
    assert_eq!(response["allowed"], true);
    drop(before);
    // A resumed session would report the old certificate on every later connection of this client.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let conn = connect(h.running.admission_addr, resuming.clone()).await;
        if conn.peer_cert == want {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "connections after the rotation still showed the old certificate"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.running.shutdown().await;
}

#[tokio::test]
async fn missing_or_bad_certificates_fail_at_startup_with_the_file_name() {
    let dir = TempDir::new("bad");
    let settings = |cert: &str, key: &str| mizzen_webhook::Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        tls_cert_file: Some(dir.0.join(cert)),
        tls_key_file: Some(dir.0.join(key)),
        meshinstall: vec![PathBuf::from(SAMPLE)],
        ..Default::default()
    };
    let err = mizzen_webhook::start(settings("nope.crt", "nope.key"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nope.crt"), "{err}");
    std::fs::write(dir.0.join("garbage.crt"), "not a certificate").unwrap();
    std::fs::write(dir.0.join("garbage.key"), "not a key").unwrap();
    let err = mizzen_webhook::start(settings("garbage.crt", "garbage.key"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("garbage.crt"), "{err}");
    // A key that does not belong to the certificate.
    issue(&dir.0, "one");
    std::fs::rename(dir.0.join("tls.crt"), dir.0.join("one.crt")).unwrap();
    issue(&dir.0, "two");
    let err = mizzen_webhook::start(settings("one.crt", "tls.key"))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("does not match"), "{err}");
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let body = fixture("pod-64k.json");
    let request = tokio::spawn(async move { review(&mut conn, "/inject", body).await });
    tokio::time::sleep(Duration::from_millis(1)).await;
    h.running.shutdown().await;
    let response = request.await.unwrap();
    assert_eq!(response["allowed"], true);
}

/// Reads until the server closes the connection (or `within` passes); returns what was read and whether it closed.
async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, within: Duration) -> (String, bool) {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

fn quick_limits(s: &mut mizzen_webhook::Settings) {
    s.header_read_timeout = Duration::from_millis(500);
    s.idle_timeout = Duration::from_millis(700);
    s.body_read_timeout = Duration::from_millis(500);
}

#[tokio::test]
async fn a_content_length_over_the_limit_gets_413_before_any_body() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start().await;
    let mut tls = h.raw().await;
    tls.write_all(
        b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 4000000\r\n\r\n",
    )
    .await
    .unwrap();
    let (text, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("over the limit of 3145728 bytes"), "{text}");
    assert!(closed, "the connection with an unread body is closed");
    h.running.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_16_kib_gets_431_and_the_connection_is_closed() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start().await;
    let mut tls = h.raw().await;
    // A header that never ends: the server stops reading at the limit rather than buffering what comes.
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\nx-a: ")
        .await
        .unwrap();
    let filler = vec![b'a'; 4096];
    for _ in 0..(mizzen_webhook::conn::MAX_HEAD / filler.len() + 2) {
        if tls.write_all(&filler).await.is_err() {
            break;
        }
    }
    let (text, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");
    assert!(closed, "the connection with an oversized head is closed");
    // A head of 12 KiB is read.
    let mut tls = h.raw().await;
    let body = fixture("host-network.json");
    let head = format!(
        "POST /inject HTTP/1.1\r\nhost: x\r\nx-b: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        "b".repeat(12 * 1024),
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.write_all(&body).await.unwrap();
    let (text, _) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    h.running.shutdown().await;
}

#[tokio::test]
async fn bodies_shorter_than_declared_or_too_slow_get_a_clean_4xx() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start_with(quick_limits).await;
    // Declared 100 bytes, sent 10, then the client closes its side.
    let mut tls = h.raw().await;
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"apiVersi")
        .await
        .unwrap();
    tls.shutdown().await.unwrap();
    let (text, _) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("ended after 10 of its 100 declared bytes"), "{text}");
    // Declared 100 bytes, sent 10, then nothing: the body deadline answers 408.
    let mut tls = h.raw().await;
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"apiVersi")
        .await
        .unwrap();
    let started = Instant::now();
    let (text, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        closed && started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    h.running.shutdown().await;
}

#[tokio::test]
async fn a_review_is_not_worked_on_past_the_api_servers_timeout() {
    use tokio::io::AsyncWriteExt as _;
    // Body read timeout 5 s, request deadline 8 s: the API server's `?timeout=1s` (the configuration's
    // timeoutSeconds) ends the wait for the body after one second instead.
    let h = Harness::start().await;
    let mut tls = h.raw().await;
    tls.write_all(b"POST /inject?timeout=1s HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{\"apiVersi")
        .await
        .unwrap();
    let started = Instant::now();
    let (text, _) = read_until_closed(&mut tls, Duration::from_secs(4)).await;
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(
        started.elapsed() < Duration::from_millis(3_500),
        "answered after {:?}",
        started.elapsed()
    );
    // A review sent whole is answered as ever under the parameter.
    let mut conn = h.conn().await;
    let response = review(
        &mut conn,
        "/inject?timeout=10s",
        fixture("create-enabled-namespace.json"),
    )
    .await;
    assert_eq!(response["allowed"], true);
    h.running.shutdown().await;
}

#[tokio::test]
async fn stalled_headers_and_idle_keep_alive_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start_with(quick_limits).await;
    // Half-sent headers.
    let mut tls = h.raw().await;
    tls.write_all(b"POST /inject HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    let (text, closed) = read_until_closed(&mut tls, Duration::from_secs(3)).await;
    assert!(closed && text.is_empty(), "{closed} {text}");
    // An idle keep-alive connection after one request: closed cleanly (a TLS close_notify, read as EOF).
    let mut tls = h.raw().await;
    let body = fixture("host-network.json");
    tls.write_all(
        format!(
            "POST /inject HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    tls.write_all(&body).await.unwrap();
    let started = Instant::now();
    let (text, closed) = read_until_closed(&mut tls, Duration::from_secs(4)).await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed, "idle connection still open after {:?}", started.elapsed());
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "closed too early: {:?}",
        started.elapsed()
    );
    h.running.shutdown().await;
}

#[tokio::test]
async fn reviews_of_other_kinds_and_subresources_are_allowed_without_a_patch() {
    let h = Harness::start().await;
    let mut conn = h.conn().await;
    let base: Value = serde_json::from_slice(&fixture("create-enabled-namespace.json")).unwrap();
    for (kind, sub) in [
        (
            serde_json::json!({"group": "apps", "version": "v1", "kind": "Deployment"}),
            None,
        ),
        (
            serde_json::json!({"group": "", "version": "v1", "kind": "Secret"}),
            None,
        ),
        (
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            Some("status"),
        ),
        (
            serde_json::json!({"group": "", "version": "v1", "kind": "Pod"}),
            Some("exec"),
        ),
    ] {
        let mut review_body = base.clone();
        review_body["request"]["kind"] = kind.clone();
        if let Some(sub) = sub {
            review_body["request"]["subResource"] = serde_json::json!(sub);
        }
        let response = review(&mut conn, "/inject", serde_json::to_vec(&review_body).unwrap()).await;
        assert_eq!(response["allowed"], true, "{kind} {sub:?}");
        assert!(
            response.get("patch").is_none_or(Value::is_null),
            "{kind} {sub:?} got a patch"
        );
    }
    h.running.shutdown().await;
}

#[tokio::test]
async fn on_shutdown_the_webhook_turns_unready_but_serves_through_the_delay() {
    // The delay leaves room for the readiness check and the review below on a loaded machine.
    let h = Harness::start_with(|s| s.shutdown_delay = Duration::from_secs(3)).await;
    let mut conn = h.conn().await;
    let admission = h.running.admission_addr;
    let admin = h.running.admin_addr;
    let shutdown = tokio::spawn(h.running.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Not ready any more ...
    let tcp = TcpStream::connect(admin).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.unwrap();
    tokio::spawn(connection);
    let readyz = hyper::Request::get("/readyz")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(sender.send_request(readyz).await.unwrap().status(), 503);
    // ... but still serving, and telling the client to move on.
    let request = hyper::Request::post("/inject")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(fixture("host-network.json"))))
        .unwrap();
    conn.sender.ready().await.unwrap();
    let response = conn.sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["connection"], "close");
    shutdown.await.unwrap();
    assert!(
        TcpStream::connect(admission).await.is_err(),
        "still accepting after the delay"
    );
}

/// A TLS connection that sent a request's headers, declaring a body of `length` bytes, and none of the body.
async fn stalled_body(h: &Harness, length: usize) -> tokio_rustls::client::TlsStream<TcpStream> {
    use tokio::io::AsyncWriteExt as _;
    let mut tls = h.raw().await;
    let head = format!(
        "POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {length}\r\n\r\n"
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    tls
}

#[tokio::test]
async fn declared_but_unsent_bodies_do_not_hold_up_other_reviews() {
    let h = Harness::start().await;
    // Large bodies declared and never sent (they held the whole body budget), and more small ones than there are
    // concurrency permits (they held every permit): reviews sent after them must still be answered.
    let mut stalled = Vec::new();
    for _ in 0..4 {
        stalled.push(stalled_body(&h, 3_000_000).await);
    }
    for _ in 0..70 {
        stalled.push(stalled_body(&h, 4_000).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut conn = h.conn().await;
    for name in ["create-enabled-namespace.json", "pod-64k.json", "host-network.json"] {
        let started = Instant::now();
        let response = review(&mut conn, "/inject", fixture(name)).await;
        assert_eq!(response["allowed"], true, "{name}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{name} waited {:?}",
            started.elapsed()
        );
    }
    drop(stalled);
    h.running.shutdown().await;
}

#[tokio::test]
async fn large_reviews_sent_at_once_take_turns_and_all_succeed() {
    // Each about 2.5 MB: two do not fit in the 4 MiB body budget together, so they are read one after another.
    let mut review_body: Value = serde_json::from_slice(&fixture("create-enabled-namespace.json")).unwrap();
    review_body["request"]["object"]["metadata"]["annotations"]["padding"] = Value::String("x".repeat(2_500_000));
    let body = serde_json::to_vec(&review_body).unwrap();
    // They are read and answered one at a time, on the test's one thread, in a debug build: the last one's request
    // timeout (8 s by default, from its headers) would measure the machine, not the turn-taking.
    let h = Harness::start_with(|s| s.request_timeout = Duration::from_secs(60)).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let mut conn = h.conn().await;
        let body = body.clone();
        tasks.push(tokio::spawn(async move { review(&mut conn, "/inject", body).await }));
    }
    for task in tasks {
        let answered = tokio::time::timeout(Duration::from_secs(90), task)
            .await
            .expect("a large review was not answered within 90 s: the reviews did not take turns");
        assert_eq!(answered.unwrap()["allowed"], true);
    }
    h.running.shutdown().await;
}

/// Opens `n` plain TCP connections to `addr` that send nothing.
async fn idle_connections(addr: std::net::SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(TcpStream::connect(addr).await.unwrap());
    }
    out
}

#[tokio::test]
async fn idle_and_half_sent_admin_connections_neither_stop_livez_nor_block_shutdown() {
    use tokio::io::AsyncWriteExt as _;
    let h = Harness::start().await;
    let mut idle = idle_connections(h.running.admin_addr, 100).await;
    // A request's headers half sent: the admin server waited on it for ever at shutdown.
    let mut half = TcpStream::connect(h.running.admin_addr).await.unwrap();
    half.write_all(b"GET /livez HTTP/1.1\r\nhost: x\r\n").await.unwrap();
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _) = tokio::time::timeout(Duration::from_secs(4), h.admin("/livez"))
            .await
            .expect("/livez did not answer");
        assert_eq!(status, 200);
        assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    }
    // Reopened idle connections, as a client keeping them would.
    idle.extend(idle_connections(h.running.admin_addr, 50).await);
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), h.running.shutdown())
        .await
        .expect("shutdown waited on the admin connections");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    drop((idle, half));
}
