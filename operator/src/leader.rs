//! Leader election with a `coordination.k8s.io` Lease, with client-go's semantics:
//!
//! - another holder's lease counts as expired only when its record has not changed for `leaseDurationSeconds` as
//!   measured by this process's monotonic clock since it first saw that record (never by comparing the holder's
//!   `renewTime` with the local wall clock, which may be skewed);
//! - the leader stops when it has not renewed for `renew_deadline`, counted from the *start* of its last
//!   successful renewal, which is shorter than the lease duration: it has stopped before anyone else may acquire;
//! - on shutdown the leader releases the lease, so a successor takes over at once;
//! - the identity is the pod name (downward API), else the host name plus a random suffix.
//!
//! Maintained crates were considered: kube-leader-election supports kube 4 only, and kube-lease-manager judges
//! expiry from `renewTime` against the local clock and keeps reporting leadership while renewals fail.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::Error;

/// Until when this replica may still write as the leader: the start of its last successful renewal plus the
/// renew deadline. Writers check it right before each write, so a replica that was frozen (or lost its connection)
/// past the deadline writes nothing when it wakes, even before its renewal task notices.
#[derive(Debug, Default)]
pub struct Fence {
    until: std::sync::Mutex<Option<std::time::Instant>>,
}

impl Fence {
    fn set(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until.into_std());
    }

    /// Whether writes are still allowed (always, when no election guards them).
    pub fn allows_writes(&self) -> bool {
        self.until
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none_or(|until| std::time::Instant::now() < until)
    }
}

/// Timings, as client-go's defaults.
#[derive(Debug, Clone, Copy)]
pub struct Timings {
    /// How long a lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// The leader gives up when it could not renew for this long (less than `lease_duration`).
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// This replica's identity: `POD_NAME`, else the host name with a random suffix.
pub fn identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "mizzen-operator".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{host}_{:08x}", nanos ^ std::process::id().rotate_left(16))
}

/// One participant in the election for one Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    /// The other holder's record as last seen, and when this process first saw it.
    observed: Option<(Record, Instant)>,
    fence: std::sync::Arc<Fence>,
}

/// What identifies one renewal of a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<String>,
    resource_version: Option<String>,
}

/// Held while leading; `lost` resolves when leadership is lost.
pub struct Leadership {
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Elector>,
}

impl Leadership {
    /// Resolves when this replica must stop reconciling.
    pub async fn lost(&mut self) {
        let _ = self.lost.wait_for(|lost| *lost).await;
    }

    /// Stops renewing and releases the lease (when still held), so another replica takes over at once.
    pub async fn release(self) {
        let _ = self.stop.send(true);
        if let Ok(mut elector) = self.task.await {
            elector.release().await;
        }
    }
}

impl Elector {
    /// A participant for Lease `name` in the namespace of `api`.
    pub fn new(api: Api<Lease>, name: &str, identity: String, timings: Timings, fence: std::sync::Arc<Fence>) -> Self {
        Self {
            api,
            name: name.to_owned(),
            identity,
            timings,
            observed: None,
            fence,
        }
    }

    /// This participant's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Takes the lease (or renews it) if allowed; true when this replica holds it afterwards.
    async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let record = Record {
            holder: holder.clone(),
            renew_time: spec.renew_time.as_ref().map(|t| t.0.to_string()),
            resource_version: lease.metadata.resource_version.clone(),
        };
        if self.observed.as_ref().map(|(r, _)| r) != Some(&record) {
            self.observed = Some((record, Instant::now()));
        }
        let mine = holder.as_deref() == Some(self.identity.as_str());
        if !mine && holder.is_some() {
            let valid_for =
                Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(duration)).unwrap_or(0));
            let seen_since = self.observed.as_ref().map(|(_, at)| at.elapsed()).unwrap_or_default();
            if seen_since < valid_for {
                return Ok(false);
            }
        }
        let next = lease.spec.get_or_insert_with(LeaseSpec::default);
        if !mine {
            next.acquire_time = Some(now.clone());
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            tracing::info!(identity = %self.identity, previous = ?holder, "taking over the leader Lease");
        }
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(duration);
        next.renew_time = Some(now);
        // The resourceVersion in `lease` makes this a compare-and-swap: a racing replica gets 409.
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Waits until this replica leads, then keeps renewing in the background.
    pub async fn lead(mut self) -> Leadership {
        loop {
            let started = Instant::now();
            let attempt = tokio::time::timeout(self.timings.renew_deadline, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => {
                    self.fence.set(started + self.timings.renew_deadline);
                    tracing::info!(identity = %self.identity, lease = %self.name, "leading");
                    let (lost_tx, lost) = watch::channel(false);
                    let (stop, stop_rx) = watch::channel(false);
                    let task = tokio::spawn(self.renew(started, lost_tx, stop_rx));
                    return Leadership { lost, stop, task };
                }
                Ok(Ok(false)) => tracing::debug!(identity = %self.identity, "another replica leads; waiting"),
                Ok(Err(error)) => tracing::warn!(%error, "leader election failed; retrying"),
                Err(_) => tracing::warn!("leader election timed out; retrying"),
            }
            tokio::time::sleep(self.timings.retry_period).await;
        }
    }

    async fn renew(
        mut self,
        mut last_start: Instant,
        lost: watch::Sender<bool>,
        mut stop: watch::Receiver<bool>,
    ) -> Self {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.timings.retry_period) => {}
                _ = stop.wait_for(|s| *s) => return self,
            }
            let started = Instant::now();
            let deadline = last_start + self.timings.renew_deadline;
            match tokio::time::timeout_at(deadline, self.try_acquire_or_renew()).await {
                Ok(Ok(true)) => {
                    last_start = started;
                    self.fence.set(started + self.timings.renew_deadline);
                }
                Ok(Ok(false)) => {
                    tracing::error!(identity = %self.identity, "another replica holds the leader Lease");
                    let _ = lost.send(true);
                    return self;
                }
                Ok(Err(error)) => tracing::warn!(%error, "could not renew the leader Lease"),
                Err(_) => {}
            }
            if Instant::now() >= deadline {
                tracing::error!(identity = %self.identity, "could not renew the leader Lease before the deadline");
                let _ = lost.send(true);
                return self;
            }
        }
    }

    /// Gives the lease up if this replica still holds it.
    async fn release(&mut self) {
        let result = async {
            let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                return Ok(false);
            };
            let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
            if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
                return Ok(false);
            }
            let now = MicroTime(Timestamp::now());
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(now.clone());
            spec.acquire_time = Some(now);
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
                .map(|_| true)
        }
        .await;
        match result {
            Ok(true) => tracing::info!(identity = %self.identity, "released the leader Lease"),
            Ok(false) => {
                tracing::info!(identity = %self.identity, "the leader Lease was no longer held by this replica; nothing to release")
            }
            Err(source) => tracing::warn!(error = %Error::Lease { source }, "could not release the leader Lease"),
        }
    }
}
