//! Robustness client for `hack/robustness.sh`: drives a running webhook (its PID given, on 127.0.0.1) with a
//! hostile-input corpus, slow and idle clients, 16 concurrent 3 MiB reviews (peak RSS read from /proc), and a
//! SIGTERM under ~500 req/s; prints the details, then ONE line of counts. Not a test: numbers, not verdicts.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Parser, Debug)]
#[command(
    name = "mizzen-webhook-robustness",
    about = "Hostile, slow and shutdown cases against a running webhook"
)]
struct Args {
    /// Admission address (HTTPS).
    #[arg(long)]
    addr: SocketAddr,
    /// Admin address (HTTP).
    #[arg(long)]
    admin: SocketAddr,
    /// CA certificate of the serving certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The webhook's process id (peak RSS, SIGTERM).
    #[arg(long)]
    pid: u32,
    /// Captured AdmissionReview bodies (the webhook's test fixtures).
    #[arg(long, default_value = "webhook/tests/fixtures")]
    fixtures: PathBuf,
    /// More bodies to replay, one file each (such as the admission_review fuzz corpus).
    #[arg(long)]
    corpus: Vec<PathBuf>,
    /// Request rate of the shutdown test.
    #[arg(long, default_value_t = 500)]
    rate: u64,
    /// Milliseconds between /readyz first answering 503 and the endpoint being dropped (new connections stop
    /// going to this server): the endpoints controller and kube-proxy are not instant.
    #[arg(long, default_value_t = 1000)]
    propagation_ms: u64,
    /// Seconds of load before SIGTERM.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// The webhook's log: lines with "panicked at" count as panics.
    #[arg(long)]
    log: Option<PathBuf>,
    /// A connection or request still unanswered after this many seconds counts as hung.
    #[arg(long, default_value_t = 20)]
    hang_secs: u64,
}

#[derive(Default)]
struct Counts {
    tried: AtomicU64,
    refused_with_message: AtomicU64,
    c4xx: AtomicU64,
    c5xx: AtomicU64,
    panics: AtomicU64,
    hung: AtomicU64,
    conn_errors: AtomicU64,
    failed_during_shutdown: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

struct Client {
    args: Args,
    tls: Arc<rustls::ClientConfig>,
    counts: Counts,
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// How one request ended.
enum Answer {
    Status(u16, Vec<u8>, bool),
    Broken(String),
    Hung,
}

impl Client {
    async fn tls_stream(&self) -> Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.args.addr).await?;
        tcp.set_nodelay(true)?;
        Ok(TlsConnector::from(self.tls.clone())
            .connect(ServerName::try_from("127.0.0.1")?, tcp)
            .await?)
    }

    async fn connect(&self) -> Result<Sender> {
        let stream = self.tls_stream().await?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        Ok(sender)
    }

    async fn send(&self, sender: &mut Sender, method: &str, path: &str, body: Bytes) -> Answer {
        let request = match hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))
        {
            Ok(r) => r,
            Err(e) => return Answer::Broken(e.to_string()),
        };
        let exchange = async {
            sender.ready().await?;
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let close = response
                .headers()
                .get("connection")
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
            let body = response.into_body().collect().await?.to_bytes().to_vec();
            Ok::<_, hyper::Error>((status, body, close))
        };
        match tokio::time::timeout(Duration::from_secs(self.args.hang_secs), exchange).await {
            Err(_) => Answer::Hung,
            Ok(Err(e)) => Answer::Broken(e.to_string()),
            Ok(Ok((status, body, close))) => Answer::Status(status, body, close),
        }
    }

    /// Counts one answer; returns whether the connection can be reused.
    fn classify(&self, what: &str, answer: &Answer) -> bool {
        let c = &self.counts;
        bump(&c.tried);
        match answer {
            Answer::Hung => {
                bump(&c.hung);
                println!("  HUNG: {what}");
                false
            }
            Answer::Broken(e) => {
                bump(&c.conn_errors);
                println!("  connection error: {what}: {e}");
                false
            }
            Answer::Status(status, body, close) => {
                let text = String::from_utf8_lossy(body);
                match status {
                    200 => {
                        let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                        let r = &v["response"];
                        if r["allowed"] == false && r["status"]["message"].as_str().is_some_and(|m| !m.is_empty()) {
                            bump(&c.refused_with_message);
                        }
                    }
                    400..=499 => {
                        bump(&c.c4xx);
                        if text.trim().is_empty() {
                            println!("  {status} without a message: {what}");
                        }
                    }
                    _ => {
                        bump(&c.c5xx);
                        if text.contains("internal error") {
                            bump(&c.panics);
                        }
                        println!("  {status}: {what}: {}", text.trim());
                    }
                }
                !close
            }
        }
    }
}

fn client_config(ca: &str) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca.as_bytes())?)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ))
}

/// The hostile-input corpus: reviews with wrong-shaped or out-of-range values, other kinds, broken bodies.
fn hostile_bodies(base: &Value) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    let mut push = |name: String, v: &Value| out.push((name, serde_json::to_vec(v).unwrap_or_default()));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = base.clone();
        f(&mut v);
        v
    };
    let annotations = [
        "sidecar.istio.io/userVolume",
        "sidecar.istio.io/userVolumeMount",
        "sidecar.istio.io/proxyCPU",
        "sidecar.istio.io/proxyMemory",
        "sidecar.istio.io/proxyCPULimit",
        "sidecar.istio.io/proxyMemoryLimit",
        "readiness.status.sidecar.istio.io/initialDelaySeconds",
        "readiness.status.sidecar.istio.io/periodSeconds",
        "readiness.status.sidecar.istio.io/failureThreshold",
        "status.sidecar.istio.io/port",
        "traffic.sidecar.istio.io/includeOutboundIPRanges",
        "traffic.sidecar.istio.io/excludeOutboundIPRanges",
        "traffic.sidecar.istio.io/includeInboundPorts",
        "traffic.sidecar.istio.io/excludeInboundPorts",
        "traffic.sidecar.istio.io/includeOutboundPorts",
        "traffic.sidecar.istio.io/excludeOutboundPorts",
        "sidecar.istio.io/interceptionMode",
        "sidecar.istio.io/enableCoreDump",
        "sidecar.istio.io/logLevel",
        "sidecar.istio.io/componentLogLevel",
        "sidecar.istio.io/agentLogLevel",
        "sidecar.istio.io/nativeSidecar",
        "sidecar.istio.io/rewriteAppHTTPProbers",
        "sidecar.istio.io/bootstrapOverride",
        "proxy.istio.io/config",
        "prometheus.istio.io/merge-metrics",
        "inject.istio.io/templates",
        "sidecar.istio.io/status",
        "proxy.istio.io/overrides",
    ];
    let values = [
        r#"{"x":1}"#,
        r#"{"name":1}"#,
        "[1]",
        "1",
        "-1",
        "-100m",
        "\"s\"",
        "1,2,,3",
        "99999999999",
        "2147483648",
        "True",
        "",
        "\u{0}",
        r#"{"v":{"mountPath":"/v"}}"#,
        "null",
    ];
    for key in annotations {
        for value in values {
            push(
                format!("annotation {key}={value:?}"),
                &with(&|v| v["request"]["object"]["metadata"]["annotations"][key] = json!(value)),
            );
        }
        for value in [json!(1), json!(true), json!([1]), json!({"a": 1}), Value::Null] {
            push(
                format!("annotation {key} of JSON {value}"),
                &with(&|v| v["request"]["object"]["metadata"]["annotations"][key] = value.clone()),
            );
        }
    }
    for (cpu, limit) in [("2", "1"), ("1Gi", "1Mi")] {
        push(
            format!("requests {cpu} above limits {limit}"),
            &with(&|v| {
                let a = &mut v["request"]["object"]["metadata"]["annotations"];
                let (r, l) = if cpu == "2" {
                    ("sidecar.istio.io/proxyCPU", "sidecar.istio.io/proxyCPULimit")
                } else {
                    ("sidecar.istio.io/proxyMemory", "sidecar.istio.io/proxyMemoryLimit")
                };
                a[r] = json!(cpu);
                a[l] = json!(limit);
            }),
        );
    }
    let wrong = [
        json!("x"),
        json!(1),
        json!([1]),
        json!(true),
        json!({"a": 1}),
        json!([{"a": 1}]),
    ];
    for field in ["labels", "annotations", "ownerReferences"] {
        for w in &wrong {
            push(
                format!("metadata.{field} = {w}"),
                &with(&|v| v["request"]["object"]["metadata"][field] = w.clone()),
            );
        }
    }
    for w in &wrong {
        push(
            format!("metadata = {w}"),
            &with(&|v| v["request"]["object"]["metadata"] = w.clone()),
        );
        push(
            format!("spec = {w}"),
            &with(&|v| v["request"]["object"]["spec"] = w.clone()),
        );
        push(format!("object = {w}"), &with(&|v| v["request"]["object"] = w.clone()));
        for field in [
            "containers",
            "initContainers",
            "volumes",
            "imagePullSecrets",
            "securityContext",
        ] {
            push(
                format!("spec.{field} = {w}"),
                &with(&|v| v["request"]["object"]["spec"][field] = w.clone()),
            );
        }
        for field in [
            "name",
            "ports",
            "env",
            "volumeMounts",
            "securityContext",
            "resources",
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ] {
            push(
                format!("containers[0].{field} = {w}"),
                &with(&|v| v["request"]["object"]["spec"]["containers"][0][field] = w.clone()),
            );
        }
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            for handler in ["httpGet", "tcpSocket", "grpc", "exec"] {
                push(
                    format!("containers[0].{probe}.{handler} = {w}"),
                    &with(&|v| v["request"]["object"]["spec"]["containers"][0][probe] = json!({ handler: w.clone() })),
                );
            }
        }
        for hook in ["postStart", "preStop"] {
            push(
                format!("containers[0].lifecycle.{hook}.httpGet = {w}"),
                &with(&|v| {
                    v["request"]["object"]["spec"]["containers"][0]["lifecycle"] =
                        json!({ hook: {"httpGet": w.clone()} })
                }),
            );
        }
        push(
            format!("an istio-proxy container with securityContext {w}"),
            &with(&|v| {
                v["request"]["object"]["spec"]["containers"] =
                    json!([{"name": "istio-proxy", "securityContext": w.clone()}]);
                v["request"]["object"]["metadata"]["annotations"]["sidecar.istio.io/interceptionMode"] =
                    json!("TPROXY");
            }),
        );
    }
    for (kind, group) in [
        ("Deployment", "apps"),
        ("Secret", ""),
        ("ConfigMap", ""),
        ("Pod", "example.com"),
    ] {
        push(
            format!("a review of {group}/{kind}"),
            &with(&|v| v["request"]["kind"] = json!({"group": group, "version": "v1", "kind": kind})),
        );
    }
    for sub in ["status", "exec", "binding", "ephemeralcontainers"] {
        push(
            format!("subresource {sub}"),
            &with(&|v| v["request"]["subResource"] = json!(sub)),
        );
    }
    for op in ["UPDATE", "DELETE", "CONNECT", "NOPE"] {
        push(
            format!("operation {op}"),
            &with(&|v| v["request"]["operation"] = json!(op)),
        );
    }
    for (name, f) in [
        (
            "no uid",
            &(|v: &mut Value| v["request"]["uid"] = Value::Null) as &dyn Fn(&mut Value),
        ),
        ("request null", &|v: &mut Value| v["request"] = Value::Null),
        ("request a string", &|v: &mut Value| v["request"] = json!("x")),
        ("kind missing", &|v: &mut Value| v["request"]["kind"] = Value::Null),
        ("wrong apiVersion", &|v: &mut Value| {
            v["apiVersion"] = json!("admission.k8s.io/v1beta1")
        }),
        ("object missing", &|v: &mut Value| v["request"]["object"] = Value::Null),
    ] {
        push(name.to_owned(), &with(f));
    }
    let mut raw: Vec<(String, Vec<u8>)> = vec![
        ("empty body".into(), Vec::new()),
        ("not JSON".into(), b"hello".to_vec()),
        (
            "truncated JSON".into(),
            serde_json::to_vec(base).unwrap_or_default()[..100].to_vec(),
        ),
        ("JSON null".into(), b"null".to_vec()),
        ("JSON array".into(), b"[1,2,3]".to_vec()),
        ("10,000-level nesting".into(), {
            let mut s = "[".repeat(10_000).into_bytes();
            s.extend("]".repeat(10_000).into_bytes());
            s
        }),
        (
            "invalid UTF-8".into(),
            vec![b'{', b'"', 0xff, 0xfe, b'"', b':', b'1', b'}'],
        ),
    ];
    out.append(&mut raw);
    out
}

/// A review of about `size` bytes: a pod with many env vars (a costly JSON tree) or one big annotation.
fn big_review(base: &Value, size: usize, env: bool) -> Vec<u8> {
    let mut v = base.clone();
    if env {
        let entry = json!({"name": "VARIABLE_000000", "value": "some value of moderate length"});
        let per = serde_json::to_vec(&entry).map(|b| b.len() + 1).unwrap_or(80);
        let n = size / per;
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"name": format!("VARIABLE_{i:06}"), "value": "some value of moderate length"}))
            .collect();
        v["request"]["object"]["spec"]["containers"][0]["env"] = Value::Array(list);
    } else {
        v["request"]["object"]["metadata"]["annotations"]["padding"] = json!("x".repeat(size));
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

async fn admin_status(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let tcp = TcpStream::connect(addr).await.ok()?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.ok()?;
        tokio::spawn(connection);
        let request = hyper::Request::get(path)
            .header("host", "127.0.0.1")
            .body(Full::new(Bytes::new()))
            .ok()?;
        Some(sender.send_request(request).await.ok()?.status().as_u16())
    };
    tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .ok()
        .flatten()
}

impl Client {
    async fn hostile(self: &Arc<Self>) -> Result<()> {
        let base: Value = serde_json::from_slice(&std::fs::read(
            self.args.fixtures.join("create-enabled-namespace.json"),
        )?)?;
        let mut bodies = hostile_bodies(&base);
        for entry in std::fs::read_dir(&self.args.fixtures)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                bodies.push((path.display().to_string(), std::fs::read(&path)?));
            }
        }
        for dir in &self.args.corpus {
            for entry in std::fs::read_dir(dir).with_context(|| dir.display().to_string())? {
                let path = entry?.path();
                bodies.push((path.display().to_string(), std::fs::read(&path)?));
            }
        }
        println!("hostile inputs: {} bodies", bodies.len());
        let before = get(&self.counts.tried);
        let queue = Arc::new(tokio::sync::Mutex::new(bodies));
        let mut workers = Vec::new();
        for _ in 0..4 {
            let me = self.clone();
            let queue = queue.clone();
            workers.push(tokio::spawn(async move {
                let mut sender: Option<Sender> = None;
                loop {
                    let Some((name, body)) = queue.lock().await.pop() else {
                        break;
                    };
                    if sender.is_none() {
                        sender = me.connect().await.ok();
                    }
                    let Some(s) = sender.as_mut() else {
                        bump(&me.counts.tried);
                        bump(&me.counts.conn_errors);
                        continue;
                    };
                    let answer = me.send(s, "POST", "/inject", Bytes::from(body)).await;
                    if !me.classify(&name, &answer) {
                        sender = None;
                    }
                }
            }));
        }
        for w in workers {
            w.await?;
        }
        let mut s = self.connect().await?;
        for (method, path) in [
            ("GET", "/inject"),
            ("POST", "/mutate"),
            ("PUT", "/inject/canary"),
            ("POST", "/inject/a/b"),
        ] {
            let answer = self.send(&mut s, method, path, Bytes::from_static(b"{}")).await;
            if !self.classify(&format!("{method} {path}"), &answer) {
                s = self.connect().await?;
            }
        }
        println!("hostile inputs: {} requests sent", get(&self.counts.tried) - before);
        Ok(())
    }

    /// Writes `head` (and nothing else, or `then` after it); the server must answer or close within the hang
    /// bound. Returns the response's status line, if any.
    async fn raw_case(&self, name: &str, head: &[u8], trickle: Option<Duration>, close_write: bool) -> Result<()> {
        bump(&self.counts.tried);
        let mut tls = self.tls_stream().await?;
        let started = Instant::now();
        let hang = Duration::from_secs(self.args.hang_secs);
        let writer = async {
            match trickle {
                Some(every) => {
                    for b in head {
                        if tls.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        let _ = tls.flush().await;
                        tokio::time::sleep(every).await;
                    }
                }
                None => {
                    let _ = tls.write_all(head).await;
                    let _ = tls.flush().await;
                }
            }
            if close_write {
                let _ = tls.shutdown().await;
            }
        };
        // A trickle stops when the server closes; bound the whole case.
        let _ = tokio::time::timeout(hang, writer).await;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        let closed = loop {
            let left = hang.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, tls.read(&mut buf)).await {
                Err(_) => break false,
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            }
        };
        let text = String::from_utf8_lossy(&out);
        let status = text.split_whitespace().nth(1).and_then(|s| s.parse::<u16>().ok());
        match status {
            Some(400..=499) => bump(&self.counts.c4xx),
            Some(s @ 500..=599) => {
                bump(&self.counts.c5xx);
                println!("  {s}: {name}");
            }
            _ => {}
        }
        if !closed {
            bump(&self.counts.hung);
        }
        println!(
            "  {name}: {} after {:.1} s{}",
            if closed {
                "closed by the server"
            } else {
                "STILL OPEN (hung)"
            },
            started.elapsed().as_secs_f64(),
            status.map(|s| format!(", answered {s}")).unwrap_or_default()
        );
        Ok(())
    }

    async fn slow(self: &Arc<Self>) -> Result<()> {
        println!("slow and idle clients:");
        let body = std::fs::read(self.args.fixtures.join("host-network.json"))?;
        let head = format!(
            "POST /inject HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let mut whole = head.clone().into_bytes();
        whole.extend_from_slice(&body);
        self.raw_case(
            "half-sent headers",
            b"POST /inject HTTP/1.1\r\nhost: x\r\n",
            None,
            false,
        )
        .await?;
        self.raw_case(
            "headers at 1 byte per second",
            head.as_bytes(),
            Some(Duration::from_secs(1)),
            false,
        )
        .await?;
        let mut partial = head.clone().into_bytes();
        partial.extend_from_slice(&body[..body.len() / 2]);
        self.raw_case("half a body, then silence", &partial, None, false)
            .await?;
        self.raw_case("half a body, then the client closes", &partial, None, true)
            .await?;
        self.raw_case(
            "Content-Length of 4,000,000 and no body",
            b"POST /inject HTTP/1.1\r\nhost: x\r\ncontent-length: 4000000\r\n\r\n",
            None,
            false,
        )
        .await?;
        self.raw_case("an idle keep-alive connection after one review", &whole, None, false)
            .await?;
        let mut over = format!(
            "POST /inject HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            3 * 1024 * 1024 + 1
        )
        .into_bytes();
        over.extend_from_slice(&body);
        over.resize(over.len() + 3 * 1024 * 1024 + 1 - body.len(), b' ');
        self.raw_case("a body of 3 MiB + 1 byte", &over, None, false).await?;
        self.raw_case("a TLS connection that never sends", b"", None, false)
            .await?;
        // A TCP connection that never starts TLS.
        bump(&self.counts.tried);
        let mut tcp = TcpStream::connect(self.args.addr).await?;
        let started = Instant::now();
        let mut buf = [0u8; 64];
        let closed = tokio::time::timeout(Duration::from_secs(self.args.hang_secs), tcp.read(&mut buf))
            .await
            .is_ok();
        if !closed {
            bump(&self.counts.hung);
        }
        println!(
            "  a TCP connection without a TLS handshake: {} after {:.1} s",
            if closed {
                "closed by the server"
            } else {
                "STILL OPEN (hung)"
            },
            started.elapsed().as_secs_f64()
        );
        // Many idle connections at once: the admin port keeps answering, and every one is closed.
        let n = 300;
        let rss_before = rss_kib(self.args.pid, "VmRSS:");
        let mut idle = Vec::new();
        for _ in 0..n {
            match tokio::time::timeout(Duration::from_secs(5), self.tls_stream()).await {
                Ok(Ok(s)) => idle.push(s),
                _ => break,
            }
        }
        let livez = admin_status(self.args.admin, "/livez").await;
        let rss_during = rss_kib(self.args.pid, "VmRSS:");
        let started = Instant::now();
        let mut open = 0;
        for mut s in idle.drain(..) {
            bump(&self.counts.tried);
            let left = Duration::from_secs(self.args.hang_secs).saturating_sub(started.elapsed());
            if tokio::time::timeout(left, s.read(&mut buf)).await.is_err() {
                open += 1;
                bump(&self.counts.hung);
            }
        }
        println!(
            "  {n} idle TLS connections: /livez answered {livez:?} while open; RSS {rss_before} -> {rss_during} KiB; \
             {} closed by the server within {:.1} s, {open} still open",
            n - open,
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    async fn memory(self: &Arc<Self>) -> Result<()> {
        let base: Value = serde_json::from_slice(&std::fs::read(
            self.args.fixtures.join("create-enabled-namespace.json"),
        )?)?;
        let size = 3 * 1024 * 1024 - 64 * 1024;
        for (shape, env) in [("one 3 MiB annotation", false), ("~40,000 env vars", true)] {
            // Reset the peak (VmHWM) so each shape is measured on its own.
            let _ = std::fs::write(format!("/proc/{}/clear_refs", self.args.pid), "5");
            let body = Bytes::from(big_review(&base, size, env));
            let mut workers = Vec::new();
            for _ in 0..16 {
                let me = self.clone();
                let body = body.clone();
                workers.push(tokio::spawn(async move {
                    let mut sender: Option<Sender> = None;
                    let mut ok = 0u32;
                    for _ in 0..4 {
                        if sender.is_none() {
                            sender = me.connect().await.ok();
                        }
                        let Some(s) = sender.as_mut() else { continue };
                        let answer = me.send(s, "POST", "/inject", body.clone()).await;
                        if let Answer::Status(200, ..) = answer {
                            ok += 1;
                        }
                        if !me.classify("a 3 MiB review", &answer) {
                            sender = None;
                        }
                    }
                    ok
                }));
            }
            let mut ok = 0;
            for w in workers {
                ok += w.await?;
            }
            println!(
                "memory: 16 connections x 4 reviews of {} bytes ({shape}): {ok} of 64 answered 200; peak RSS {} KiB (VmHWM)",
                body.len(),
                rss_kib(self.args.pid, "VmHWM:")
            );
        }
        Ok(())
    }

    /// Load at a fixed rate; SIGTERM; the endpoint is dropped when /readyz turns 503 (as the endpoints
    /// controller would): no new connections after that, existing ones used while the server keeps them.
    async fn shutdown(self: &Arc<Self>) -> Result<()> {
        let body = Bytes::from(std::fs::read(self.args.fixtures.join("create-enabled-namespace.json"))?);
        let removed = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let rerouted = Arc::new(AtomicU64::new(0));
        let after_term = Arc::new(AtomicU64::new(0));
        let termed = Arc::new(AtomicBool::new(false));
        let (tx, rx) = tokio::sync::mpsc::channel::<()>(4096);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let mut workers = Vec::new();
        for _ in 0..16 {
            let (me, body, rx) = (self.clone(), body.clone(), rx.clone());
            let (removed, sent, rerouted, after_term, termed) = (
                removed.clone(),
                sent.clone(),
                rerouted.clone(),
                after_term.clone(),
                termed.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut sender: Option<Sender> = None;
                while rx.lock().await.recv().await.is_some() {
                    if sender.as_ref().is_some_and(|s| s.is_closed()) {
                        sender = None;
                    }
                    if sender.is_none() {
                        if removed.load(Ordering::Acquire) {
                            // Another replica would take it.
                            rerouted.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        match me.connect().await {
                            Ok(s) => sender = Some(s),
                            Err(e) => {
                                bump(&me.counts.tried);
                                if termed.load(Ordering::Acquire) {
                                    bump(&me.counts.failed_during_shutdown);
                                } else {
                                    bump(&me.counts.conn_errors);
                                }
                                println!("  connect failed (endpoint not yet removed): {e}");
                                continue;
                            }
                        }
                    }
                    let Some(s) = sender.as_mut() else { continue };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if termed.load(Ordering::Acquire) {
                        after_term.fetch_add(1, Ordering::Relaxed);
                    }
                    let answer = me.send(s, "POST", "/inject", body.clone()).await;
                    let failed = !matches!(answer, Answer::Status(200, ..));
                    if failed && termed.load(Ordering::Acquire) {
                        bump(&me.counts.failed_during_shutdown);
                    }
                    if !me.classify("shutdown load", &answer) {
                        sender = None;
                    }
                }
            }));
        }
        let poller = {
            let (removed, stop, admin) = (removed.clone(), stop.clone(), self.args.admin);
            let propagation = Duration::from_millis(self.args.propagation_ms);
            tokio::spawn(async move {
                let mut unready_since: Option<Instant> = None;
                while !stop.load(Ordering::Acquire) {
                    if unready_since.is_none() && admin_status(admin, "/readyz").await != Some(200) {
                        unready_since = Some(Instant::now());
                    }
                    if unready_since.is_some_and(|t| t.elapsed() >= propagation) {
                        removed.store(true, Ordering::Release);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let interval = Duration::from_nanos(1_000_000_000 / self.args.rate.max(1));
        let start = Instant::now();
        let mut next = start;
        let mut term_at = None;
        let pid = self.args.pid;
        let alive = |pid: u32| std::path::Path::new(&format!("/proc/{pid}")).exists() && rss_kib(pid, "VmRSS:") > 0;
        let mut exited_after = None;
        while start.elapsed() < Duration::from_secs(self.args.warmup + 30) {
            if term_at.is_none() && start.elapsed() >= Duration::from_secs(self.args.warmup) {
                let status = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status()?;
                if !status.success() {
                    return Err(anyhow!("kill -TERM {pid} failed"));
                }
                termed.store(true, Ordering::Release);
                term_at = Some(Instant::now());
                println!(
                    "shutdown: SIGTERM sent after {} s of load at {} req/s",
                    self.args.warmup, self.args.rate
                );
            }
            if let Some(t) = term_at
                && !alive(pid)
            {
                exited_after = Some(t.elapsed());
                break;
            }
            let _ = tx.try_send(());
            next += interval;
            if next > Instant::now() {
                tokio::time::sleep_until(next.into()).await;
            }
        }
        drop(tx);
        stop.store(true, Ordering::Release);
        for w in workers {
            w.await?;
        }
        poller.await?;
        match exited_after {
            Some(d) => println!(
                "shutdown: {} requests sent to this server ({} after SIGTERM), {} to the other replica from {} ms \
                 after /readyz said 503; the process exited {:.1} s after SIGTERM",
                get(&sent),
                get(&after_term),
                get(&rerouted),
                self.args.propagation_ms,
                d.as_secs_f64()
            ),
            None => {
                bump(&self.counts.hung);
                println!("shutdown: the process did not exit within 30 s of SIGTERM (hung)");
            }
        }
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let tls = client_config(&std::fs::read_to_string(&args.ca)?)?;
    let client = Arc::new(Client {
        args,
        tls,
        counts: Counts::default(),
    });
    client.memory().await?;
    client.hostile().await?;
    client.slow().await?;
    client.shutdown().await?;
    let c = &client.counts;
    if let Some(log) = &client.args.log {
        let logged = std::fs::read_to_string(log)
            .map(|t| t.lines().filter(|l| l.contains("panicked at")).count() as u64)
            .unwrap_or(0);
        c.panics.fetch_max(logged, Ordering::Relaxed);
    }
    println!(
        "robustness: tried={} refused_with_message={} 4xx={} 5xx={} panics={} hung={} conn_errors={} failed_during_shutdown={}",
        get(&c.tried),
        get(&c.refused_with_message),
        get(&c.c4xx),
        get(&c.c5xx),
        get(&c.panics),
        get(&c.hung),
        get(&c.conn_errors),
        get(&c.failed_during_shutdown),
    );
    Ok(())
}
