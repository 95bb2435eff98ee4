//! Benchmark: the webhook against an axum+rustls echo server that answers a precomputed response of the same size,
//! both driven over TLS keep-alive from 127.0.0.1 by the same load generator. Prints throughput, latency at a fixed
//! rate, the server-side time to inject a 64 KiB pod, and the webhook/echo ratio. Not a test: numbers, not verdicts.
//!
//! cargo run --release -p mizzen-webhook --bin mizzen-webhook-bench -- [--seconds 5] [--connections 8] [--rate 1000]
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsConnector;

#[derive(Parser, Debug)]
#[command(
    name = "mizzen-webhook-bench",
    about = "Webhook vs echo server over TLS keep-alive on 127.0.0.1"
)]
struct Args {
    /// Seconds of each throughput run and of each fixed-rate run.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Keep-alive connections of the throughput runs.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Requests per second of the latency runs.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// AdmissionReview body sent in the load runs.
    #[arg(long, default_value = "webhook/tests/fixtures/create-enabled-namespace.json")]
    body: PathBuf,
    /// The 64 KiB AdmissionReview whose server-side injection time is measured.
    #[arg(long, default_value = "webhook/tests/fixtures/pod-64k.json")]
    large_body: PathBuf,
    /// Only write a CA (ca.crt) and a serving certificate for 127.0.0.1 (tls.crt, tls.key) into DIR, then exit.
    #[arg(long, value_name = "DIR")]
    write_certs: Option<PathBuf>,
    /// Only loop the server-side work on --body for this many iterations (for profilers), then exit.
    #[arg(long, hide = true)]
    inject_only: Option<u32>,
    /// Only skip --body with serde_json this many times, building nothing, then exit (for profilers: the least a
    /// serde_json parse of the review costs).
    #[arg(long, hide = true)]
    skip_only: Option<u32>,
    /// Only send this many reviews, one at a time, to the server named by --server, then exit (for profilers:
    /// instructions per request of client and server together).
    #[arg(long, hide = true)]
    requests: Option<u64>,
    /// The server of --requests: webhook or echo.
    #[arg(long, hide = true, default_value = "webhook")]
    server: String,
    /// Only drive the webhook already listening at ADDR (trusting --ca) closed-loop with --body for --seconds over
    /// --connections, print its rate, then exit: load for measuring the real binary's memory.
    #[arg(long, value_name = "ADDR")]
    load: Option<SocketAddr>,
    /// The CA certificate of --load.
    #[arg(long, value_name = "FILE", requires = "load")]
    ca: Option<PathBuf>,
    /// MeshInstall the webhook serves.
    #[arg(long, default_value = "config/samples/meshinstall.yaml")]
    meshinstall: PathBuf,
}

struct Pki {
    dir: PathBuf,
    ca: String,
}

fn pki_in(dir: PathBuf) -> Result<Pki> {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    std::fs::create_dir_all(&dir)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "mizzen bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])?.signed_by(&key, &ca)?;
    std::fs::write(dir.join("tls.crt"), cert.pem())?;
    std::fs::write(dir.join("tls.key"), key.serialize_pem())?;
    std::fs::write(dir.join("ca.crt"), ca.pem())?;
    Ok(Pki { dir, ca: ca.pem() })
}

fn pki() -> Result<Pki> {
    pki_in(std::env::temp_dir().join(format!("mizzen-bench-{}", std::process::id())))
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

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Result<Sender> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let stream = TlsConnector::from(tls)
        .connect(ServerName::try_from("127.0.0.1")?, tcp)
        .await?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

async fn call(sender: &mut Sender, path: &str, body: &Bytes) -> Result<usize> {
    let request = hyper::Request::builder()
        .method("POST")
        .uri(path)
        .header("host", "127.0.0.1")
        .header("content-type", "application/json")
        .body(Full::new(body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    if !response.status().is_success() {
        return Err(anyhow!("HTTP {}", response.status()));
    }
    Ok(response.into_body().collect().await?.to_bytes().len())
}

/// Closed loop: every connection sends as fast as answers come back.
async fn throughput(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Bytes,
    connections: usize,
    secs: u64,
) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let mut sender = connect(addr, tls.clone()).await?;
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                call(&mut sender, "/inject", &body).await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let started = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// Open loop at a fixed rate; latency measured from each request's scheduled time (no coordinated omission).
async fn fixed_rate(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    body: Bytes,
    rate: u64,
    secs: u64,
) -> Result<Vec<Duration>> {
    let total = rate * secs;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    // Enough connections that a slow answer does not hold up the schedule.
    let pool_size = 32;
    let (tx, rx) = async_channel(pool_size * 4);
    let mut workers = Vec::new();
    for _ in 0..pool_size {
        let mut sender = connect(addr, tls.clone()).await?;
        let rx = rx.clone();
        let body = body.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Ok(dispatched) = rx.recv().await {
                call(&mut sender, "/inject", &body).await?;
                latencies.push(Instant::now().duration_since(dispatched));
            }
            Ok::<Vec<Duration>, anyhow::Error>(latencies)
        }));
    }
    drop(rx);
    // Requests are stamped when dispatched (not at their nominal slot, which would add the timer's 1 ms
    // granularity to every sample); a request waiting for a free connection still counts that wait.
    let start = Instant::now() + Duration::from_millis(20);
    for i in 0..total {
        let at = start + interval * u32::try_from(i).unwrap_or(u32::MAX);
        if at > Instant::now() {
            tokio::time::sleep_until(at.into()).await;
        }
        tx.send(Instant::now()).await.map_err(|_| anyhow!("workers stopped"))?;
    }
    drop(tx);
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await??);
    }
    all.sort();
    Ok(all)
}

/// A minimal multi-consumer channel over tokio's mpsc (one receiver behind a mutex).
fn async_channel(capacity: usize) -> (tokio::sync::mpsc::Sender<Instant>, SharedRx) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, SharedRx(Arc::new(tokio::sync::Mutex::new(rx))))
}

#[derive(Clone)]
struct SharedRx(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<Instant>>>);

impl SharedRx {
    async fn recv(&self) -> Result<Instant, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

async fn start_echo(pki: &Pki, response: Bytes) -> Result<(SocketAddr, watch::Sender<bool>)> {
    let certificate = mizzen_webhook::tls::Reloading::new(&pki.dir.join("tls.crt"), &pki.dir.join("tls.key"))?;
    let tls = Arc::new(certificate.server_config()?);
    let router = Router::new().route(
        "/inject",
        post(move |_body: Bytes| {
            let response = response.clone();
            async move { ([("content-type", "application/json")], response) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let limits = mizzen_webhook::conn::Limits {
        max_connections: 512,
        header_read_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_secs(10),
    };
    tokio::spawn(mizzen_webhook::conn::serve_tls(
        listener,
        tls,
        router,
        limits,
        stopped,
        Duration::from_secs(1),
    ));
    Ok((addr, stop))
}

/// Mean time of each server-side step for one body: parse, respond (decide + inject + patch), serialise.
fn breakdown(config: &mizzen::inject::Injector, body: &[u8], runs: u32) -> Result<[Duration; 3]> {
    let mut t = [Duration::ZERO; 3];
    for _ in 0..runs {
        let a = Instant::now();
        let mut request = mizzen::admission::parse(body)?;
        let b = Instant::now();
        let (response, _) = mizzen::admission::respond(&mut request, Some(config), "default", None);
        let c = Instant::now();
        let _ = mizzen::admission::to_body(&response);
        let d = Instant::now();
        t[0] += b - a;
        t[1] += c - b;
        t[2] += d - c;
    }
    Ok(t.map(|x| x / runs))
}

/// Server-side work for one review: parse, decide, inject, answer.
fn inject_once(config: &mizzen::inject::Injector, body: &[u8]) -> Result<usize> {
    let mut request = mizzen::admission::parse(body)?;
    let (response, outcome) = mizzen::admission::respond(&mut request, Some(config), "default", None);
    if outcome.result() != "injected" {
        return Err(anyhow!("expected an injection, got {outcome:?}"));
    }
    Ok(mizzen::admission::to_body(&response).len())
}

/// Server-side injection times of a large review (500 runs after 50 to warm up), and its pod's size.
fn large_pod_times(config: &mizzen::inject::Injector, large: &[u8]) -> Result<(usize, Vec<Duration>)> {
    let pod_bytes = serde_json::from_slice::<serde_json::Value>(large)?["request"]["object"]
        .to_string()
        .len();
    for _ in 0..50 {
        inject_once(config, large)?;
    }
    let mut times = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        inject_once(config, large)?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((pod_bytes, times))
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let body = Bytes::from(std::fs::read(&args.body).with_context(|| args.body.display().to_string())?);
    let large = std::fs::read(&args.large_body).with_context(|| args.large_body.display().to_string())?;
    let mi_text = std::fs::read_to_string(&args.meshinstall)?;
    let mi = mizzen::cli::mesh_install_from_yaml(&args.meshinstall.display().to_string(), &mi_text)?;
    let config = mizzen::inject::Injector::compile(mizzen::inject::InjectionConfig::from_mesh_install(&mi.spec));

    if let Some(dir) = &args.write_certs {
        pki_in(dir.clone())?;
        return Ok(());
    }
    if let Some(addr) = args.load {
        let ca_file = args.ca.as_ref().ok_or_else(|| anyhow!("--load needs --ca"))?;
        let tls = client_config(&std::fs::read_to_string(ca_file).with_context(|| ca_file.display().to_string())?)?;
        let client = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let rps = client.block_on(throughput(addr, tls, body, args.connections, args.seconds))?;
        println!("{rps:.0} req/s");
        return Ok(());
    }
    if let Some(n) = args.skip_only {
        for _ in 0..n {
            serde_json::from_slice::<serde::de::IgnoredAny>(std::hint::black_box(&body))?;
        }
        return Ok(());
    }
    if let Some(n) = args.inject_only {
        for _ in 0..n {
            inject_once(&config, &body)?;
        }
        return Ok(());
    }

    // 1. Server-side injection time of the 64 KiB pod (same work as the handler, no network).
    let (pod_bytes, times) = if args.requests.is_none() {
        large_pod_times(&config, &large)?
    } else {
        (0, Vec::new())
    };

    // Servers on their own 2-thread runtime; the load generator on another.
    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let client = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let pki = pki()?;
    let response_len = inject_once(&config, &body)?;
    let echo_response = Bytes::from(vec![b' '; response_len]);
    let (webhook, (echo_addr, echo_stop)) = servers.block_on(async {
        let settings = mizzen_webhook::Settings {
            listen: "127.0.0.1:0".parse()?,
            admin_listen: "127.0.0.1:0".parse()?,
            tls_cert_file: Some(pki.dir.join("tls.crt")),
            tls_key_file: Some(pki.dir.join("tls.key")),
            meshinstall: vec![args.meshinstall.clone()],
            max_concurrency: 256,
            ..Default::default()
        };
        let webhook = mizzen_webhook::start(settings).await?;
        let echo = start_echo(&pki, echo_response).await?;
        Ok::<_, anyhow::Error>((webhook, echo))
    })?;
    let tls = client_config(&pki.ca)?;
    let webhook_addr = webhook.admission_addr;
    if let Some(n) = args.requests {
        let addr = if args.server == "echo" { echo_addr } else { webhook_addr };
        client.block_on(async {
            let mut sender = connect(addr, tls.clone()).await?;
            for _ in 0..n {
                call(&mut sender, "/inject", &body).await?;
            }
            Ok::<_, anyhow::Error>(())
        })?;
        servers.block_on(async {
            let _ = echo_stop.send(true);
            webhook.shutdown().await;
        });
        let _ = std::fs::remove_dir_all(&pki.dir);
        return Ok(());
    }

    let run = |addr: SocketAddr| -> Result<(f64, Vec<Duration>)> {
        client.block_on(async {
            // Warm-up.
            throughput(addr, tls.clone(), body.clone(), args.connections, 1).await?;
            let rps = throughput(addr, tls.clone(), body.clone(), args.connections, args.seconds).await?;
            let lat = fixed_rate(addr, tls.clone(), body.clone(), args.rate, args.seconds).await?;
            Ok((rps, lat))
        })
    };
    let (w_rps, w_lat) = run(webhook_addr)?;
    let (e_rps, e_lat) = run(echo_addr)?;

    println!(
        "mizzen webhook benchmark ({} cores, 127.0.0.1, TLS keep-alive)",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    println!(
        "request body {} bytes, response {} bytes; {} s per run, {} connections (throughput), {} req/s (latency)",
        body.len(),
        response_len,
        args.seconds,
        args.connections,
        args.rate
    );
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12}",
        "server", "req/s", "p50", "p99", "p99.9"
    );
    for (name, rps, lat) in [("webhook", w_rps, &w_lat), ("echo", e_rps, &e_lat)] {
        println!(
            "{:<10} {:>12.0} {:>12} {:>12} {:>12}",
            name,
            rps,
            ms(percentile(lat, 0.50)),
            ms(percentile(lat, 0.99)),
            ms(percentile(lat, 0.999))
        );
    }
    println!("throughput ratio webhook/echo: {:.2}", w_rps / e_rps);
    println!(
        "server-side injection of a {pod_bytes}-byte pod: p50 {}, p99 {}, max {} (500 runs)",
        ms(percentile(&times, 0.5)),
        ms(percentile(&times, 0.99)),
        ms(*times.last().unwrap_or(&Duration::ZERO))
    );
    for (name, b) in [("small", &body[..]), ("64 KiB", &large[..])] {
        let [p, r, w] = breakdown(&config, b, 200)?;
        println!(
            "server-side steps, {name} pod (mean of 200): parse {}, decide+inject+patch {}, serialise {}",
            ms(p),
            ms(r),
            ms(w)
        );
    }
    if let Some(kib) = rss_kib() {
        println!("bench process RSS (client + both servers): {} KiB", kib);
    }
    servers.block_on(async {
        let _ = echo_stop.send(true);
        webhook.shutdown().await;
    });
    let _ = std::fs::remove_dir_all(&pki.dir);
    Ok(())
}
