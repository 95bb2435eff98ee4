//! A real API server for the operator's tests, from (first found):
//!
//! 1. `MIZZEN_TEST_KUBECONFIG`: a cluster you started (its garbage collector is assumed to run);
//! 2. `KUBEBUILDER_ASSETS`: controller-runtime's envtest binaries (`etcd`, `kube-apiserver`), started here on
//!    loopback with certificates made here; no controller-manager, so garbage-collection scenarios are skipped;
//! 3. the kit `KUBE_KIT` (default `../shared/kube`): `up` without a node (etcd, kube-apiserver,
//!    kube-controller-manager) in its own state directory and ports, left running for the next test run
//!    (`KUBE_STATE=${TMPDIR:-/tmp}/mizzen-kube-optest ../shared/kube/down` stops it).
//!
//! Without any of them the tests say they are skipped; with `CI` set that is a failure instead.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Method, Request};
use kube::Client;
use kube::client::{Body, ClientBuilder};
use tokio::sync::OnceCell;
use tower::util::MapRequestLayer;

/// A cluster to test against.
pub struct Cluster {
    /// Kubeconfig for it.
    pub kubeconfig: PathBuf,
    /// Whether a garbage collector runs (kube-controller-manager).
    pub has_gc: bool,
    /// What it is, for messages.
    pub source: String,
}

static CLUSTER: OnceCell<Option<Arc<Cluster>>> = OnceCell::const_new();
/// The kit's start lock (see `kit_up`), held for the life of the test binary.
static KIT_LOCK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
/// Held for the life of the test binary.
static RUN_LOCK: std::sync::OnceLock<std::fs::File> = std::sync::OnceLock::new();
/// envtest processes; kept for the life of the test binary.
static ENVTEST: Mutex<Vec<Child>> = Mutex::new(Vec::new());

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes a line to the process's standard error: libtest's capture (which `eprintln!` goes through, on the test's
/// thread and the threads it spawns) would hide it unless the test fails.
fn say(line: &str) {
    use std::io::Write;
    // One write, so that lines of processes running beside it (cargo-nextest's) do not interleave.
    let _ = std::io::stderr().lock().write_all(format!("{line}\n").as_bytes());
}

fn unavailable(reason: &str) -> Option<Cluster> {
    if std::env::var_os("CI").is_some() {
        panic!("no API server for the operator tests and CI is set: {reason}");
    }
    say(&format!("skipped: operator tests against a real API server ({reason})"));
    None
}

/// The cluster, started on first use; `None` (test skipped) when there is none.
pub async fn cluster() -> Option<Arc<Cluster>> {
    // The operator's logs, when asked for (`MIZZEN_TEST_LOG=debug`), to see why a scenario failed.
    if let Ok(filter) = std::env::var("MIZZEN_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
    CLUSTER
        .get_or_init(|| async {
            let cluster = find().await?;
            // One test binary at a time per API server: scenarios of two runs would share names.
            // Taken once: after a failed first try (a panic below leaves the cell empty for the next test to try
            // again), this process holds it already, and locking it through a second open file would wait forever.
            if RUN_LOCK.get().is_none() {
                let lock = cluster.kubeconfig.with_extension("mizzen-tests.lock");
                let held = tokio::task::spawn_blocking(move || lock_file(&lock))
                    .await
                    .expect("lock task")
                    .expect("locking the test API server");
                let _ = RUN_LOCK.set(held);
            }
            install_crd(&cluster).await;
            Some(Arc::new(cluster))
        })
        .await
        .clone()
}

/// The MeshInstall CRD, as `mizzenctl crd` generates it, applied; waits until the API server serves it.
async fn install_crd(cluster: &Cluster) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{Api, Patch, PatchParams};
    let client = cluster.client().await;
    eventually(Duration::from_secs(60), "the API server answers", || async {
        client.apiserver_version().await.ok().map(|_| ())
    })
    .await;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "meshinstalls.mizzen.io",
        &PatchParams::apply("mizzen-tests").force(),
        &Patch::Apply(&mizzen::crd::meshinstall_crd()),
    )
    .await
    .expect("applying the MeshInstall CRD");
    let meshes: Api<mizzen::MeshInstall> = Api::all(client);
    eventually(Duration::from_secs(30), "MeshInstalls are served", || async {
        meshes.list(&Default::default()).await.ok().map(|_| ())
    })
    .await;
}

async fn find() -> Option<Cluster> {
    if let Some(path) = std::env::var_os("MIZZEN_TEST_KUBECONFIG") {
        return Some(Cluster {
            kubeconfig: path.into(),
            has_gc: true,
            source: "MIZZEN_TEST_KUBECONFIG".into(),
        });
    }
    if let Some(assets) = std::env::var_os("KUBEBUILDER_ASSETS") {
        return match tokio::task::spawn_blocking(move || envtest(Path::new(&assets))).await {
            Ok(Ok(c)) => Some(c),
            Ok(Err(e)) => unavailable(&format!("KUBEBUILDER_ASSETS: {e}")),
            Err(e) => unavailable(&e.to_string()),
        };
    }
    // A relative KUBE_KIT is taken from the workspace root, as the README and CI write it (cargo runs
    // these tests from `operator/`).
    let kit = std::env::var_os("KUBE_KIT")
        .map(PathBuf::from)
        .map(|p| if p.is_relative() { workspace_root().join(p) } else { p })
        .unwrap_or_else(|| workspace_root().join("../shared/kube"));
    if !kit.join("up").exists() {
        return unavailable(&format!(
            "no kit at {} (KUBE_KIT), no KUBEBUILDER_ASSETS, no MIZZEN_TEST_KUBECONFIG",
            kit.display()
        ));
    }
    match tokio::task::spawn_blocking(move || kit_up(&kit)).await {
        Ok(Ok(c)) => Some(c),
        Ok(Err(e)) => unavailable(&e),
        Err(e) => unavailable(&e.to_string()),
    }
}

/// Opens and locks `path` (an advisory lock held as long as the file stays open), saying so when another process
/// holds it, so a wait is never silent.
fn lock_file(path: &Path) -> std::io::Result<std::fs::File> {
    let file = std::fs::File::create(path)?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => say(&format!(
            "waiting for {}: another test process holds it",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => return Err(e),
    }
    file.lock()?;
    Ok(file)
}

/// `up` (no node) with its own state and ports, so it can run beside the end-to-end cluster.
fn kit_up(kit: &Path) -> Result<Cluster, String> {
    // As the shell's `${TMPDIR:-/tmp}` (`.ci/run`, the README): an empty value counts as unset.
    let tmp = std::env::var_os("TMPDIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| "/tmp".into());
    // A relative one is the repository root's (cargo runs the tests from `operator/`; `.ci/run` from the root).
    let state = std::env::var_os("MIZZEN_TEST_KUBE_STATE")
        .filter(|v| !v.is_empty())
        .map(|v| workspace_root().join(v))
        .unwrap_or_else(|| tmp.join("mizzen-kube-optest"));
    let kit_cmd = |script: &str| {
        let mut cmd = Command::new(kit.join(script));
        cmd.env("KUBE_STATE", &state)
            .env("KUBE_APISERVER_PORT", "26443")
            .env("KUBE_ETCD_PORT", "22379")
            .env("KUBE_ETCD_PEER_PORT", "22380")
            .env("KUBE_KCM_PORT", "20257")
            .stderr(Stdio::inherit());
        cmd
    };
    // The kit's `up` and `down` take no lock: two test processes (cargo-nextest runs one per test) starting the same
    // state at once both start etcd and kube-apiserver, the second fails on the ports and overwrites the first's pid
    // files, and a `down` after a failed `up` stops what another process is testing against. A process holds this
    // lock (beside the state directory, which `down --purge` removes) from before its `up` until it exits, so no
    // other starts or stops the control plane meanwhile; `cluster` then takes the per-binary lock as for any cluster.
    if let Some(parent) = state.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    // Taken once per process, as `RUN_LOCK` is (a second open file of this process would wait for the first).
    let starting = match KIT_LOCK.get() {
        Some(_) => None,
        None => {
            let mut lock = state.clone().into_os_string();
            lock.push(".up.lock");
            let lock = PathBuf::from(lock);
            Some(lock_file(&lock).map_err(|e| format!("locking {}: {e}", lock.display()))?)
        }
    };
    let up = || kit_cmd("up").output().map_err(|e| format!("{}/up: {e}", kit.display()));
    // A state directory left by a hard stop has once kept a component from starting: `down` and try again
    // with the same state, then from a fresh one (`down --purge`).
    let mut out = up()?;
    for down_args in [&[][..], &["--purge"][..]] {
        if out.status.success() {
            break;
        }
        say(&format!(
            "{}/up failed ({}); running down {} and trying again",
            kit.display(),
            out.status,
            down_args.join(" ")
        ));
        let _ = kit_cmd("down").args(down_args).stdout(Stdio::null()).status();
        out = up()?;
    }
    if !out.status.success() {
        return Err(format!("{}/up failed three times ({})", kit.display(), out.status));
    }
    if let Some(starting) = starting {
        let _ = KIT_LOCK.set(starting);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let kubeconfig = stdout
        .trim()
        .strip_prefix("export KUBECONFIG=")
        .ok_or_else(|| format!("unexpected output of up: {stdout}"))?;
    Ok(Cluster {
        kubeconfig: kubeconfig.into(),
        has_gc: true,
        source: format!("kit {} (state {})", kit.display(), state.display()),
    })
}

/// etcd and kube-apiserver from envtest's binaries, with a CA, a serving certificate and an admin client
/// certificate made here.
fn envtest(assets: &Path) -> Result<Cluster, String> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let dir = std::env::temp_dir().join(format!("mizzen-envtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = KeyPair::generate().map_err(e)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "mizzen-envtest-ca");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let issuer = Issuer::new(ca, ca_key);
    let serving_key = KeyPair::generate().map_err(e)?;
    let serving = CertificateParams::new(vec!["127.0.0.1".into(), "localhost".into()])
        .map_err(e)?
        .signed_by(&serving_key, &issuer)
        .map_err(e)?;
    let admin_key = KeyPair::generate().map_err(e)?;
    let mut admin = CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    admin.distinguished_name.push(DnType::CommonName, "admin");
    admin
        .distinguished_name
        .push(DnType::OrganizationName, "system:masters");
    let admin = admin.signed_by(&admin_key, &issuer).map_err(e)?;
    let sa_key = KeyPair::generate().map_err(e)?;
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).map_err(|e| format!("{name}: {e}"));
    write("ca.crt", ca_cert.pem())?;
    write("serving.crt", serving.pem())?;
    write("serving.key", serving_key.serialize_pem())?;
    write("sa.key", sa_key.serialize_pem())?;
    write("sa.pub", sa_key.public_key_pem())?;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| e.to_string())
    };
    let (etcd_port, peer_port, api_port) = (free_port()?, free_port()?, free_port()?);
    let spawn = |bin: &str, args: Vec<String>| {
        Command::new(assets.join(bin))
            .args(args)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.join(format!("{bin}.log")))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .map_err(|e| format!("{}: {e}", assets.join(bin).display()))
    };
    let etcd = spawn(
        "etcd",
        vec![
            format!("--data-dir={}", dir.join("etcd").display()),
            format!("--listen-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--advertise-client-urls=http://127.0.0.1:{etcd_port}"),
            format!("--listen-peer-urls=http://127.0.0.1:{peer_port}"),
            "--unsafe-no-fsync=true".into(),
        ],
    )?;
    ENVTEST.lock().unwrap_or_else(|e| e.into_inner()).push(etcd);
    let p = |name: &str| dir.join(name).display().to_string();
    let apiserver = spawn(
        "kube-apiserver",
        vec![
            format!("--etcd-servers=http://127.0.0.1:{etcd_port}"),
            "--bind-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--tls-cert-file={}", p("serving.crt")),
            format!("--tls-private-key-file={}", p("serving.key")),
            format!("--client-ca-file={}", p("ca.crt")),
            format!("--service-account-key-file={}", p("sa.pub")),
            format!("--service-account-signing-key-file={}", p("sa.key")),
            "--service-account-issuer=https://kubernetes.default.svc".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
        ],
    )?;
    let children: Vec<String> = {
        let mut all = ENVTEST.lock().unwrap_or_else(|e| e.into_inner());
        all.push(apiserver);
        all.iter().map(|c| c.id().to_string()).collect()
    };
    // Statics are never dropped: a watchdog stops etcd and the API server when this test process ends.
    let _ = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
            std::process::id(),
            children.join(" ")
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let b64 = |s: String| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let kubeconfig = dir.join("kubeconfig");
    write(
        "kubeconfig",
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: envtest\n  cluster:\n    server: https://127.0.0.1:{api_port}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: envtest\n  context: {{cluster: envtest, user: admin}}\ncurrent-context: envtest\n",
            b64(ca_cert.pem()),
            b64(admin.pem()),
            b64(admin_key.serialize_pem())
        ),
    )?;
    Ok(Cluster {
        kubeconfig,
        has_gc: false,
        source: format!("envtest binaries in {}", assets.display()),
    })
}

/// Requests a client sent, as `METHOD path`.
#[derive(Clone, Default)]
pub struct Requests(Arc<Mutex<Vec<(Method, String)>>>);

impl Requests {
    /// Writes (anything but GET/LIST/WATCH) sent since the last call, without Events.
    pub fn take_writes(&self) -> Vec<String> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.drain(..)
            .filter(|(m, path)| *m != Method::GET && !path.contains("/events"))
            .map(|(m, p)| format!("{m} {p}"))
            .collect()
    }

    /// Every request since the last call, Events included.
    pub fn take_all(&self) -> Vec<String> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        all.drain(..).map(|(m, p)| format!("{m} {p}")).collect()
    }
}

impl Cluster {
    /// A client for the cluster.
    pub async fn client(&self) -> Client {
        self.counting_client().await.0
    }

    /// A client that records every request it sends.
    pub async fn counting_client(&self) -> (Client, Requests) {
        let kc = kube::config::Kubeconfig::read_from(&self.kubeconfig).expect("kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("kubeconfig works");
        let requests = Requests::default();
        let record = requests.clone();
        let layer = MapRequestLayer::new(move |req: Request<Body>| {
            let path = req.uri().path().to_owned();
            record
                .0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((req.method().clone(), path));
            req
        });
        let client = ClientBuilder::try_from(config)
            .expect("client")
            .with_layer(&layer)
            .build();
        (client, requests)
    }

    /// Runs kubectl against the cluster; returns stdout, panics with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        let out = Command::new(std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".into()))
            .env("KUBECONFIG", &self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Polls `check` every 200 ms until it returns `Some` or `timeout` passes (then panics with `what`).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Labels as a map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}
