//! Tier 3: leader election between real `mizzen-operator` processes against a real API server. A killed leader is
//! replaced once its lease expires (not before); a leader stopped with SIGTERM releases the lease and is replaced
//! at once; a leader frozen past its renew deadline (SIGSTOP) is replaced, and when it resumes it writes nothing
//! and exits; at no moment do two replicas lead (judged from their own logs and the Lease), and each replica's
//! reconciles of a real MeshInstall lie within its own leadership (no two reconcile at once).

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};
use serde_json::json;

/// A running operator process and its log lines with the time each arrived.
struct Replica {
    name: &'static str,
    child: Child,
    lines: Arc<Mutex<Vec<(Instant, String)>>>,
}

impl Replica {
    fn start(cluster: &support::Cluster, namespace: &str, name: &'static str) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mizzen-operator"))
            .args(["--kubeconfig", &cluster.kubeconfig.display().to_string()])
            .args([
                "--namespace",
                namespace,
                "--admin-listen",
                "127.0.0.1:0",
                "--identity",
                name,
            ])
            // One MeshInstall of its own to reconcile; every reconcile is logged, to see who reconciles when.
            .args(["--meshinstall-selector", "mizzen.io/test=sc-leader"])
            .args(["--webhook-url", "https://127.0.0.1:9/inject"])
            .env("RUST_LOG", "info,mizzen_operator::reconcile=debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the operator binary starts");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let lines = lines.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push((Instant::now(), line));
                }
            });
        }
        Self { name, child, lines }
    }

    /// When the replica first logged a line containing `text`.
    fn logged(&self, text: &str) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.contains(text))
            .map(|(t, _)| *t)
    }

    /// The last line the replica logged containing `text`.
    fn last_line(&self, text: &str) -> Option<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, l)| l.contains(text))
            .map(|(_, l)| l.clone())
    }

    /// When the replica first logged a line containing `text` at or after `since`.
    fn logged_since(&self, text: &str, since: Instant) -> Option<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .find(|(t, l)| *t >= since && l.contains(text))
            .map(|(t, _)| *t)
    }

    async fn wait_for(&self, text: &str, timeout: Duration) -> Instant {
        let name = self.name;
        support::eventually(timeout, &format!("replica {name} logs {text:?}"), || async {
            self.logged(text)
        })
        .await
    }

    /// When the replica started reconciles (the reconciler's own log line).
    fn reconciles(&self) -> Vec<Instant> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, l)| l.contains(RECONCILE))
            .map(|(t, _)| *t)
            .collect()
    }

    fn dump(&self) -> String {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .map(|(_, l)| format!("  {}: {l}", self.name))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LEADING: &str = " leading";
/// The reconciler's debug line at the start of every reconcile of the test's MeshInstall.
const RECONCILE: &str = "reconcile meshinstall=sc-leader";

#[tokio::test]
async fn a_killed_leader_is_replaced_after_its_lease_a_stopped_one_at_once_and_a_frozen_one_stands_down() {
    let Some(cluster) = support::cluster().await else {
        return;
    };
    let namespace = "sc-leader-op";
    let namespaces: Api<Namespace> = Api::all(cluster.client().await);
    let _ = namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": namespace}})).unwrap(),
        )
        .await;

    // The MeshInstall the replicas reconcile (one at a time, which is what is checked at the end).
    let meshes: Api<mizzen::MeshInstall> = Api::all(cluster.client().await);
    let _ = meshes.delete("sc-leader", &Default::default()).await;
    support::eventually(Duration::from_secs(60), "no leftover MeshInstall", || async {
        meshes.get_opt("sc-leader").await.ok()?.is_none().then_some(())
    })
    .await;
    let mi = json!({
        "apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
        "metadata": {"name": "sc-leader", "labels": {"mizzen.io/test": "sc-leader"}},
        "spec": {"version": "1.28.0", "namespace": "sc-leader-mesh", "revision": "sc-leader",
                 "controlPlane": {"replicas": 0}},
    });
    meshes
        .create(&PostParams::default(), &serde_json::from_value(mi).unwrap())
        .await
        .expect("the MeshInstall");

    let a = Replica::start(&cluster, namespace, "replica-a");
    let a_leads = a.wait_for(LEADING, Duration::from_secs(60)).await;
    let b = Replica::start(&cluster, namespace, "replica-b");
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert!(b.logged(LEADING).is_none(), "two leaders:\n{}\n{}", a.dump(), b.dump());

    // SIGKILL: no release; B may take over only once A's last renewal is a lease duration (15 s) old.
    let mut a = a;
    let killed = Instant::now();
    a.child.kill().unwrap();
    let b_leads = b.wait_for(LEADING, Duration::from_secs(30)).await;
    let takeover = b_leads.duration_since(killed);
    eprintln!(
        "leader election: A held the lease {:.1} s, then was killed; B took over {:.1} s later (lease 15 s, renewals every 2 s)",
        a_leads.elapsed().as_secs_f64() - killed.elapsed().as_secs_f64(),
        takeover.as_secs_f64()
    );
    assert!(
        takeover >= Duration::from_secs(12) && takeover <= Duration::from_secs(25),
        "takeover after {takeover:?}:\n{}",
        b.dump()
    );

    // SIGTERM: B stops reconciling, releases the lease, and C leads at once.
    let c = Replica::start(&cluster, namespace, "replica-c");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(c.logged(LEADING).is_none(), "two leaders:\n{}\n{}", b.dump(), c.dump());
    let terminated = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &b.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let c_leads = c.wait_for(LEADING, Duration::from_secs(20)).await;
    let released = b.wait_for("released the leader Lease", Duration::from_secs(5)).await;
    eprintln!(
        "leader election: B stopped with SIGTERM; released after {:.1} s; C led {:.1} s after the signal",
        released.duration_since(terminated).as_secs_f64(),
        c_leads.duration_since(terminated).as_secs_f64()
    );
    // C took over a Lease without a holder, that is, after B's release; shown by C's own log line rather than by
    // comparing when two processes' lines were read.
    let took_over = c
        .last_line("taking over the leader Lease")
        .unwrap_or_else(|| panic!("C leads but never logged taking over the Lease:\n{}", c.dump()));
    assert!(
        took_over.contains("previous=None"),
        "C led before B released (its takeover: {took_over:?}):\n{}\n{}",
        b.dump(),
        c.dump()
    );
    assert!(
        c_leads.duration_since(terminated) < Duration::from_secs(6),
        "C took {:?} after B's release",
        c_leads.duration_since(terminated)
    );
    let mut b = b;
    let exited = b.child.wait().unwrap();
    assert!(exited.success(), "B exits cleanly on SIGTERM: {exited}\n{}", b.dump());

    // SIGSTOP: C is frozen (a long GC pause, a stalled node). D takes over once the lease expires; when C resumes,
    // its renew deadline has passed, so it must stand down without touching the Lease again.
    let d = Replica::start(&cluster, namespace, "replica-d");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(d.logged(LEADING).is_none(), "two leaders:\n{}\n{}", c.dump(), d.dump());
    let signal = |sig: &str, pid: u32| {
        let status = Command::new("kill").args([sig, &pid.to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig} {pid}");
    };
    let frozen = Instant::now();
    signal("-STOP", c.child.id());
    let d_leads = d.wait_for(LEADING, Duration::from_secs(30)).await;
    let resumed = Instant::now();
    signal("-CONT", c.child.id());
    let stood_down = c
        .wait_for(
            "could not renew the leader Lease before the deadline",
            Duration::from_secs(10),
        )
        .await;
    let mut c = c;
    let exited = support::eventually(Duration::from_secs(15), "C exits", || {
        let status = c.child.try_wait().ok().flatten();
        async move { status }
    })
    .await;
    eprintln!(
        "leader election: C frozen with SIGSTOP; D led {:.1} s later; C resumed and stood down {:.1} s after SIGCONT",
        d_leads.duration_since(frozen).as_secs_f64(),
        stood_down.duration_since(resumed).as_secs_f64()
    );
    assert!(
        !exited.success(),
        "a replica that lost the lease exits with an error (to restart and rejoin)"
    );
    assert!(
        c.logged_since("taking over", frozen).is_none()
            && c.logged_since("released the leader Lease", frozen).is_none(),
        "C wrote the Lease after it was frozen:\n{}",
        c.dump()
    );
    // Log evidence that no two replicas reconciled at once: each one's reconciles lie within its own leadership,
    // and every leader reconciled.
    let (d_reconciles, d) = {
        // D reconciles at least once after taking over (the data-plane watches wake every MeshInstall at start).
        let _ = support::eventually(Duration::from_secs(30), "D reconciles", || async {
            (!d.reconciles().is_empty()).then_some(())
        })
        .await;
        (d.reconciles(), d)
    };
    let within = |who: &Replica, from: Instant, to: Option<Instant>| {
        let all = who.reconciles();
        assert!(!all.is_empty(), "{} never reconciled:\n{}", who.name, who.dump());
        for t in all {
            assert!(
                t >= from && to.is_none_or(|to| t <= to),
                "{} reconciled outside its leadership:\n{}",
                who.name,
                who.dump()
            );
        }
    };
    // A killed and C frozen may have logged a reconcile just as the signal came: each one's bound is its
    // successor's takeover, which is what must never overlap. B's release follows its last reconcile in its own log.
    within(&a, a_leads, Some(b_leads));
    within(&b, b_leads, Some(released));
    within(&c, c_leads, Some(d_leads));
    assert!(
        d_reconciles.iter().all(|t| *t >= d_leads),
        "D reconciled before it led:\n{}",
        d.dump()
    );
    eprintln!(
        "leader election: reconciles per replica A {}, B {}, C {}, D {}, each within its own leadership",
        a.reconciles().len(),
        b.reconciles().len(),
        c.reconciles().len(),
        d_reconciles.len()
    );
    let _ = meshes.delete("sc-leader", &Default::default()).await;
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(cluster.client().await, namespace);
    let lease = leases.get("mizzen-operator").await.unwrap();
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-d"),
        "D still holds the Lease:\n{}",
        d.dump()
    );
}
