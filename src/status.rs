//! MeshInstall status the Kubernetes way, as pure functions: readiness of a Deployment, and the next status from
//! the last one (conditions keep their `lastTransitionTime` unless their status flips).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde_json::Value;

use crate::api::{
    ComponentsStatus, DataPlaneStatus, MeshInstallSpec, MeshInstallStatus, MeshState, ReplicaStatus, RolloutMode,
};

/// Condition type: every desired object was applied.
pub const RECONCILED: &str = "Reconciled";
/// Condition type: every component rolled out and is available.
pub const READY: &str = "Ready";

/// Ready and desired replicas of a Deployment (as JSON). Replicas count as ready only once the Deployment's
/// controller has seen the current spec (`observedGeneration == generation`) and they run the current template and
/// are available. `availableReplicas` counts the old template's pods too, and while a rollout surges (istiod's and the
/// gateways' `maxSurge: 100%` make the new ReplicaSet full at once) every old pod may still be available: so the
/// pods of the old template (`replicas − updatedReplicas`) are taken to be among the available ones, as
/// `kubectl rollout status` waits for them to go before it says the rollout is done.
pub fn deployment_readiness(deployment: &Value) -> ReplicaStatus {
    let desired = deployment["spec"]["replicas"].as_i64().unwrap_or(1) as i32;
    let generation = deployment["metadata"]["generation"].as_i64();
    let observed = deployment["status"]["observedGeneration"].as_i64();
    let count = |field: &str| deployment["status"][field].as_i64().unwrap_or(0).max(0);
    let (replicas, updated, available) = (count("replicas"), count("updatedReplicas"), count("availableReplicas"));
    let old = (replicas - updated).max(0);
    let rolled_out = generation.is_some() && observed >= generation;
    ReplicaStatus {
        ready: if rolled_out {
            updated.min((available - old).max(0)) as i32
        } else {
            0
        },
        desired,
    }
}

/// What the last reconcile achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything applied.
    Applied,
    /// The spec cannot be rendered; the message names the field.
    InvalidSpec(String),
    /// Applying failed (the API server refused or was unreachable).
    Failed(String),
    /// Reconciliation is paused by annotation.
    Paused,
    /// Everything but the MutatingWebhookConfiguration is applied: it waits for a ready webhook pod, so pod
    /// creation in namespaces already labelled for injection is never refused by a webhook that is not there.
    WaitingForWebhook,
    /// Objects this MeshInstall renders belong to an older MeshInstall; the message names them. The rest was
    /// applied.
    Conflict(String),
}

fn condition(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// Keeps the previous transition time when the condition's status did not flip.
fn carry_transition(previous: &[Condition], mut next: Condition) -> Condition {
    if let Some(old) = previous.iter().find(|c| c.type_ == next.type_)
        && old.status == next.status
    {
        next.last_transition_time = old.last_transition_time.clone();
    }
    next
}

/// The next status, from the last one and the readiness of each component (istiod, gateways, addons).
pub fn next(
    previous: Option<&MeshInstallStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    components: ComponentsStatus,
    now: &Time,
) -> MeshInstallStatus {
    let old_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let control_plane = components.control_plane.as_ref();
    let others = || {
        let gateways = components.gateways.iter().map(|g| (g.ready, g.desired));
        gateways.chain(components.addons.iter().map(|a| (a.ready, a.desired)))
    };
    let components_ready = control_plane.is_none_or(|c| c.ready >= c.desired) && others().all(|(r, d)| r >= d);
    let total = 1 + others().count();
    let ready_count = usize::from(control_plane.is_some_and(|c| c.ready >= c.desired && c.desired > 0))
        + others().filter(|(r, d)| r >= d).count();
    // The shared webhook in the cluster with no ready pod: pods of injected namespaces are refused or created
    // without a sidecar, whatever this MeshInstall's own components say.
    let webhook_down = components.webhook.as_ref().is_some_and(|w| w.ready == 0);
    let (reconciled, ready, state) = match outcome {
        Outcome::Applied => (
            condition(
                RECONCILED,
                true,
                "Applied",
                "every object is applied".into(),
                generation,
                now,
            ),
            match (components_ready, webhook_down) {
                (true, false) => condition(
                    READY,
                    true,
                    "RolledOut",
                    "every component is available".into(),
                    generation,
                    now,
                ),
                (true, true) => condition(
                    READY,
                    false,
                    "WebhookUnavailable",
                    "every component is available, but no mizzen-webhook pod is ready: pods of injected namespaces \
                     are refused (failurePolicy Fail) or created without a sidecar (Ignore); see the mizzen-webhook \
                     Deployment"
                        .into(),
                    generation,
                    now,
                ),
                (false, _) => condition(
                    READY,
                    false,
                    "RollingOut",
                    format!("{ready_count}/{total} components available"),
                    generation,
                    now,
                ),
            },
            if components_ready && !webhook_down {
                MeshState::Healthy
            } else {
                MeshState::Progressing
            },
        ),
        Outcome::InvalidSpec(message) => (
            condition(RECONCILED, false, "InvalidSpec", message.clone(), generation, now),
            condition(
                READY,
                false,
                "InvalidSpec",
                "the spec cannot be applied".into(),
                generation,
                now,
            ),
            MeshState::Error,
        ),
        Outcome::Failed(message) => (
            condition(RECONCILED, false, "ApplyFailed", message.clone(), generation, now),
            // Not ready whatever runs: what failed may be what makes the mesh work (the webhook configuration).
            condition(
                READY,
                false,
                "ApplyFailed",
                "the last apply failed; see Reconciled".into(),
                generation,
                now,
            ),
            MeshState::Error,
        ),
        Outcome::WaitingForWebhook => (
            condition(
                RECONCILED,
                true,
                "Applied",
                "every object is applied but the MutatingWebhookConfiguration, which waits for a ready webhook".into(),
                generation,
                now,
            ),
            condition(
                READY,
                false,
                "WebhookNotReady",
                "no mizzen-webhook pod is ready yet: the MutatingWebhookConfiguration is applied once one is".into(),
                generation,
                now,
            ),
            MeshState::Progressing,
        ),
        Outcome::Conflict(message) => (
            condition(RECONCILED, false, "Conflict", message.clone(), generation, now),
            condition(
                READY,
                false,
                "Conflict",
                "objects this MeshInstall renders belong to another one; see Reconciled".into(),
                generation,
                now,
            ),
            MeshState::Error,
        ),
        Outcome::Paused => (
            condition(
                RECONCILED,
                false,
                "Paused",
                "reconciliation is paused by the mizzen.io/paused annotation".into(),
                generation,
                now,
            ),
            condition(
                READY,
                components_ready,
                "Paused",
                "reconciliation is paused".into(),
                generation,
                now,
            ),
            MeshState::Paused,
        ),
    };
    MeshInstallStatus {
        observed_generation: generation,
        conditions: vec![
            carry_transition(old_conditions, reconciled),
            carry_transition(old_conditions, ready),
        ],
        components: Some(components),
        ready: Some(format!("{ready_count}/{total}")),
        state: Some(state),
        // Kept until the operator knows better (see `with_data_plane`, `with_rolled_out`).
        version: previous.and_then(|p| p.version.clone()),
        // Kept while this operator wrote the last status (see `MeshInstallStatus::applied_spec_observed_generation`).
        applied_spec: previous.filter(|p| wrote_last(p)).and_then(|p| p.applied_spec.clone()),
        applied_generation: previous.filter(|p| wrote_last(p)).and_then(|p| p.applied_generation),
        applied_spec_observed_generation: generation,
        revision_tags: previous.map(|p| p.revision_tags.clone()).unwrap_or_default(),
        proxies: previous.and_then(|p| p.proxies.clone()),
        data_plane: previous.and_then(|p| p.data_plane.clone()),
    }
}

/// A spec longer than this, as the status stores it (JSON text in a JSON string), is not recorded: the object would
/// hold it twice, and an object has a size limit (etcd's, about 1.5 MiB) past which every status write fails.
pub const APPLIED_SPEC_LIMIT: usize = 256 * 1024;

/// Whether the last status write was this operator's: `status.appliedSpec` is what it applied, not stale.
pub fn wrote_last(status: &MeshInstallStatus) -> bool {
    status.applied_spec_observed_generation.is_some()
        && status.applied_spec_observed_generation == status.observed_generation
}

/// `spec` as `status.appliedSpec` records it, or `None` when it is over [`APPLIED_SPEC_LIMIT`].
fn applied_text(spec: &MeshInstallSpec) -> Option<String> {
    let text = serde_json::to_string(spec).ok()?;
    // Stored as a JSON string, escaped (the API server also writes `<`, `>` and `&` as six-byte escapes).
    let stored = serde_json::to_string(&text).ok()?.len() + 5 * text.matches(['<', '>', '&']).count();
    (stored <= APPLIED_SPEC_LIMIT).then_some(text)
}

/// Records `spec`, of `generation`, as the spec last applied (`status.appliedSpec`, what the webhook injects with),
/// or nothing when it is too long ([`APPLIED_SPEC_LIMIT`]). JSON text, so that a status merge patch replaces it
/// whole (a merge of two objects could leave members of an older one in a newer one) and it reads back as written.
pub fn with_applied_spec(status: &mut MeshInstallStatus, spec: &MeshInstallSpec, generation: Option<i64>) {
    let text = applied_text(spec);
    status.applied_generation = text.as_ref().and(generation);
    status.applied_spec = text;
}

/// Whether the webhook serves `spec`, of `generation`, as `status` says: recorded as applied by this operator's last
/// write, or too long to record (it then serves the spec itself). Compared as text, which a float does not always
/// survive a round trip through.
pub fn serves(status: Option<&MeshInstallStatus>, spec: &MeshInstallSpec, generation: Option<i64>) -> bool {
    let Some(text) = applied_text(spec) else {
        return true;
    };
    status.is_some_and(|s| {
        wrote_last(s) && s.applied_generation == generation && s.applied_spec.as_deref() == Some(text.as_str())
    })
}

/// Condition type: every injected pod the install serves runs its proxy image and revision.
pub const PROXIES_UP_TO_DATE: &str = "ProxiesUpToDate";

/// Sets the data plane report, `PROXIES` and the `ProxiesUpToDate` condition; with no report (the pod caches are
/// not listed yet), keeps what the previous status said.
pub fn with_data_plane(
    mut status: MeshInstallStatus,
    previous: Option<&MeshInstallStatus>,
    report: Option<(DataPlaneStatus, RolloutMode)>,
    generation: Option<i64>,
    now: &Time,
) -> MeshInstallStatus {
    let old_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let Some((data_plane, mode)) = report else {
        if let Some(old) = old_conditions.iter().find(|c| c.type_ == PROXIES_UP_TO_DATE) {
            status.conditions.push(old.clone());
        }
        return status;
    };
    let outdated_pods = data_plane.total - data_plane.up_to_date;
    let workloads = data_plane.outdated_workloads;
    let plural = |n: i32, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    let (ok, reason, message) = if let Some(stalled) = &data_plane.stalled {
        (
            false,
            "RolloutStalled",
            format!(
                "the automatic rollout waits: {}/{}/{} {}",
                stalled.namespace,
                stalled.kind,
                stalled.name,
                stalled.message.as_deref().unwrap_or("did not become available")
            ),
        )
    } else if outdated_pods <= 0 {
        (
            true,
            "UpToDate",
            if data_plane.total == 0 {
                "no injected pods".to_owned()
            } else {
                format!(
                    "{} run this install's proxy",
                    plural(data_plane.total, "injected pod", "injected pods")
                )
            },
        )
    } else if !data_plane.restarting.is_empty() {
        let names: Vec<String> = data_plane
            .restarting
            .iter()
            .map(|r| format!("{}/{}/{}", r.namespace, r.kind, r.name))
            .collect();
        (
            false,
            "RollingOut",
            format!(
                "restarting {} ({} of {} outdated)",
                names.join(", "),
                plural(outdated_pods, "pod", "pods"),
                plural(workloads, "workload", "workloads")
            ),
        )
    } else {
        let hint = match mode {
            RolloutMode::Manual => {
                "restart them (kubectl rollout restart) or set spec.dataPlane.rollout: Automatic; mizzenctl proxy-status lists them"
            }
            RolloutMode::Automatic => {
                "the automatic rollout restarts the Deployments, StatefulSets and DaemonSets among them; mizzenctl proxy-status lists them"
            }
        };
        let held = match data_plane.held.len() {
            0 => String::new(),
            n => format!(
                " ({} held back; status.dataPlane.held says why)",
                plural(i32::try_from(n).unwrap_or(i32::MAX), "workload", "workloads")
            ),
        };
        (
            false,
            "Outdated",
            format!(
                "{} of {} run an older proxy: {hint}{held}",
                plural(outdated_pods, "pod", "pods"),
                plural(workloads, "workload", "workloads")
            ),
        )
    };
    status.proxies = Some(format!("{}/{}", data_plane.up_to_date, data_plane.total));
    status.data_plane = Some(data_plane);
    status.conditions.push(carry_transition(
        old_conditions,
        condition(PROXIES_UP_TO_DATE, ok, reason, message, generation, now),
    ));
    status
}

/// The JSON merge patch (RFC 7386) that turns `old` into `new`: changed and new keys as in `new`, keys `new` no
/// longer has as `null` (a merge patch of `new` alone would leave them in place), objects compared key by key, any
/// other value (lists included) replaced whole.
pub fn merge_patch(old: &Value, new: &Value) -> Value {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let mut patch = serde_json::Map::new();
            for (k, v) in n {
                match o.get(k) {
                    Some(ov) if ov == v => {}
                    Some(ov) => {
                        patch.insert(k.clone(), merge_patch(ov, v));
                    }
                    None => {
                        patch.insert(k.clone(), v.clone());
                    }
                }
            }
            for k in o.keys().filter(|k| !n.contains_key(*k)) {
                patch.insert(k.clone(), Value::Null);
            }
            Value::Object(patch)
        }
        _ => new.clone(),
    }
}

/// Adds to `into` the keys (recursively, in objects) that only `from` has, with `from`'s values: the union of what
/// two versions of an object hold, as the base of a [`merge_patch`] that must remove what either had.
pub fn add_missing_keys(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(i), Value::Object(f)) => {
            for (k, v) in f {
                match i.get_mut(k) {
                    Some(existing) => add_missing_keys(existing, v),
                    None => {
                        i.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (into @ Value::Null, from) => *into = from.clone(),
        _ => {}
    }
}

/// Whether two statuses differ in anything but timestamps (then a write is needed).
pub fn differs(old: Option<&MeshInstallStatus>, new: &MeshInstallStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &MeshInstallStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(old) != strip(new)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::api::{AddonStatus, GatewayStatus, WebhookStatus};

    #[test]
    fn the_applied_spec_is_recorded_whole_up_to_a_limit() {
        let spec = |v: Value| serde_json::from_value::<MeshInstallSpec>(v).unwrap();
        let mut status = MeshInstallStatus::default();
        // A float whose text may not read back as the same number: compared as text.
        let first = spec(
            json!({"addons": {"jaeger": {"enabled": true, "sampling": 0.30000000000000004}},
                                "meshConfig": {"x": null, "ratio": 2.2250738585072014e-308}}),
        );
        with_applied_spec(&mut status, &first, Some(3));
        let text = status.applied_spec.clone().unwrap();
        assert_eq!(text, serde_json::to_string(&first).unwrap());
        assert_eq!(status.applied_generation, Some(3));
        assert!(!serves(Some(&status), &first, Some(3)), "not this operator's write yet");
        status.observed_generation = Some(3);
        status.applied_spec_observed_generation = Some(3);
        assert!(serves(Some(&status), &first, Some(3)));
        assert!(!serves(Some(&status), &first, Some(4)), "a later generation");
        let second = spec(json!({"addons": {"jaeger": {"enabled": true, "sampling": 2.5}}}));
        assert!(!serves(Some(&status), &second, Some(3)));
        // Too long to keep twice: nothing recorded, generation included, and served as it is.
        let mut big = first.clone();
        big.injection
            .templates
            .insert("big".into(), "<".repeat(APPLIED_SPEC_LIMIT / 6));
        with_applied_spec(&mut status, &big, Some(4));
        assert_eq!(
            (status.applied_spec.as_deref(), status.applied_generation),
            (None, None)
        );
        assert!(serves(Some(&status), &big, Some(4)));
        assert!(serves(None, &big, Some(4)));
    }

    #[test]
    fn the_applied_spec_is_carried_only_from_this_operators_own_writes() {
        let spec = serde_json::from_value::<MeshInstallSpec>(json!({})).unwrap();
        let mut mine = MeshInstallStatus::default();
        with_applied_spec(&mut mine, &spec, Some(2));
        mine.observed_generation = Some(2);
        mine.applied_spec_observed_generation = Some(2);
        let next = |previous: &MeshInstallStatus| {
            let outcome = Outcome::InvalidSpec("no".into());
            super::next(Some(previous), Some(3), &outcome, ComponentsStatus::default(), &at(0))
        };
        let kept = next(&mine);
        assert_eq!(
            (kept.applied_generation, kept.applied_spec_observed_generation),
            (Some(2), Some(3))
        );
        assert_eq!(kept.applied_spec, mine.applied_spec);
        // Another writer since (observedGeneration moved, the marker did not): dropped.
        let mut theirs = mine.clone();
        theirs.observed_generation = Some(3);
        let dropped = next(&theirs);
        assert_eq!((dropped.applied_spec, dropped.applied_generation), (None, None));
        assert_eq!(dropped.applied_spec_observed_generation, Some(3));
    }

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn a_deployment_counts_only_once_its_controller_saw_the_current_spec() {
        let d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
                       "status": {"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2}});
        assert_eq!(deployment_readiness(&d), ReplicaStatus { ready: 0, desired: 2 });
        let d = json!({"metadata": {"generation": 3}, "spec": {"replicas": 2},
                       "status": {"observedGeneration": 3, "updatedReplicas": 1, "availableReplicas": 2}});
        assert_eq!(deployment_readiness(&d), ReplicaStatus { ready: 1, desired: 2 });
    }

    #[test]
    fn during_a_surge_the_old_templates_available_pods_do_not_count() {
        let status = |replicas: i64, updated: i64, available: i64| {
            json!({"metadata": {"generation": 4}, "spec": {"replicas": 2},
                   "status": {"observedGeneration": 4, "replicas": replicas, "updatedReplicas": updated,
                              "availableReplicas": available}})
        };
        // (replicas, updated, available) → ready of 2.
        for (replicas, updated, available, ready, case) in [
            (
                4,
                2,
                2,
                0,
                "maxSurge 100%: the new ReplicaSet is full at once while both old pods still serve",
            ),
            (4, 2, 3, 1, "one new pod available"),
            (4, 2, 4, 2, "both new pods available, the old ones not gone yet"),
            (2, 2, 2, 2, "rolled out"),
            (
                3,
                2,
                2,
                1,
                "an old pod terminating and no longer counted, one new pod not yet available",
            ),
        ] {
            assert_eq!(
                deployment_readiness(&status(replicas, updated, available)),
                ReplicaStatus { ready, desired: 2 },
                "{case}"
            );
        }
    }

    #[test]
    fn progressing_then_healthy_and_transition_time_moves_only_on_flips() {
        let cp = |ready| ComponentsStatus {
            control_plane: Some(ReplicaStatus { ready, desired: 1 }),
            ..Default::default()
        };
        let s1 = next(None, Some(1), &Outcome::Applied, cp(0), &at(100));
        assert_eq!(s1.state, Some(MeshState::Progressing));
        assert_eq!(s1.ready.as_deref(), Some("0/1"));
        let s2 = next(Some(&s1), Some(1), &Outcome::Applied, cp(0), &at(200));
        assert!(!differs(Some(&s1), &s2), "nothing but time changed: no write");
        assert_eq!(s2.conditions[1].last_transition_time, at(100));
        let s3 = next(Some(&s2), Some(1), &Outcome::Applied, cp(1), &at(300));
        assert_eq!(s3.state, Some(MeshState::Healthy));
        assert_eq!(
            s3.conditions[0].last_transition_time,
            at(100),
            "Reconciled did not flip"
        );
        assert_eq!(s3.conditions[1].last_transition_time, at(300), "Ready flipped");
        assert!(differs(Some(&s2), &s3));
    }

    /// The shared webhook with no ready pod makes a rolled-out MeshInstall not Ready (its pods would be refused or
    /// left without a sidecar), without counting in READY; outside the cluster (no webhook status) nothing changes.
    #[test]
    fn a_webhook_with_no_ready_pod_is_not_ready_but_not_counted() {
        let with = |webhook: Option<WebhookStatus>| ComponentsStatus {
            control_plane: Some(ReplicaStatus { ready: 1, desired: 1 }),
            webhook,
            ..Default::default()
        };
        let down = next(
            None,
            Some(1),
            &Outcome::Applied,
            with(Some(WebhookStatus { ready: 0, desired: 2 })),
            &at(100),
        );
        assert_eq!(down.state, Some(MeshState::Progressing));
        assert_eq!(down.ready.as_deref(), Some("1/1"));
        assert_eq!(down.conditions[0].status, "True", "applied");
        assert_eq!(
            (down.conditions[1].status.as_str(), down.conditions[1].reason.as_str()),
            ("False", "WebhookUnavailable")
        );
        for webhook in [Some(WebhookStatus { ready: 1, desired: 2 }), None] {
            let up = next(Some(&down), Some(1), &Outcome::Applied, with(webhook), &at(200));
            assert_eq!(up.state, Some(MeshState::Healthy));
            assert_eq!(
                (up.conditions[1].status.as_str(), up.conditions[1].reason.as_str()),
                ("True", "RolledOut")
            );
        }
        // A component still rolling out says so first.
        let rolling = ComponentsStatus {
            control_plane: Some(ReplicaStatus { ready: 0, desired: 1 }),
            webhook: Some(WebhookStatus { ready: 0, desired: 2 }),
            ..Default::default()
        };
        let s = next(None, Some(1), &Outcome::Applied, rolling, &at(100));
        assert_eq!(s.conditions[1].reason, "RollingOut");
    }

    #[test]
    fn addons_count_in_ready_like_gateways() {
        let components = |prometheus: i32| ComponentsStatus {
            control_plane: Some(ReplicaStatus { ready: 1, desired: 1 }),
            gateways: vec![GatewayStatus {
                name: "istio-ingressgateway".into(),
                ready: 1,
                desired: 1,
            }],
            addons: vec![
                AddonStatus {
                    name: "prometheus".into(),
                    ready: prometheus,
                    desired: 1,
                },
                AddonStatus {
                    name: "jaeger".into(),
                    ready: 1,
                    desired: 1,
                },
            ],
            webhook: None,
        };
        let s = next(None, Some(1), &Outcome::Applied, components(0), &at(1));
        assert_eq!(s.ready.as_deref(), Some("3/4"));
        assert_eq!(s.state, Some(MeshState::Progressing));
        assert_eq!(s.conditions[1].message, "3/4 components available");
        assert_eq!(s.components.as_ref().unwrap().addons[0].name, "prometheus");
        let s = next(Some(&s), Some(1), &Outcome::Applied, components(1), &at(2));
        assert_eq!(s.ready.as_deref(), Some("4/4"));
        assert_eq!(s.state, Some(MeshState::Healthy));
        assert_eq!(s.conditions[1].reason, "RolledOut");
    }

    #[test]
    fn the_data_plane_condition_says_what_to_do() {
        let base = next(None, Some(1), &Outcome::Applied, ComponentsStatus::default(), &at(1));
        let dp = |up, total, workloads| DataPlaneStatus {
            up_to_date: up,
            total,
            outdated_workloads: workloads,
            ..Default::default()
        };
        let s = with_data_plane(
            base.clone(),
            None,
            Some((dp(0, 2, 1), RolloutMode::Manual)),
            Some(1),
            &at(1),
        );
        assert_eq!(s.proxies.as_deref(), Some("0/2"));
        let c = s.conditions.iter().find(|c| c.type_ == PROXIES_UP_TO_DATE).unwrap();
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Outdated"));
        assert!(
            c.message.starts_with("2 pods of 1 workload run an older proxy"),
            "{}",
            c.message
        );
        let s2 = with_data_plane(
            base.clone(),
            Some(&s),
            Some((dp(2, 2, 0), RolloutMode::Manual)),
            Some(1),
            &at(9),
        );
        let c = s2.conditions.iter().find(|c| c.type_ == PROXIES_UP_TO_DATE).unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.last_transition_time.clone()),
            ("True", "UpToDate", at(9))
        );
        // No report yet: the previous condition and numbers stay.
        let s3 = with_data_plane(
            next(
                Some(&s2),
                Some(1),
                &Outcome::Applied,
                ComponentsStatus::default(),
                &at(20),
            ),
            Some(&s2),
            None,
            Some(1),
            &at(20),
        );
        assert!(!differs(Some(&s2), &s3));
        let mut stalled = dp(1, 2, 1);
        stalled.stalled = Some(crate::api::WorkloadRestart {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
            restarted_at: "2026-01-01T00:00:00Z".into(),
            message: Some("was not available within 600 s".into()),
        });
        let s4 = with_data_plane(
            base,
            Some(&s2),
            Some((stalled, RolloutMode::Automatic)),
            Some(1),
            &at(30),
        );
        let c = s4.conditions.iter().find(|c| c.type_ == PROXIES_UP_TO_DATE).unwrap();
        assert_eq!(c.reason, "RolloutStalled");
        assert!(
            c.message.contains("shop/Deployment/web was not available within 600 s"),
            "{}",
            c.message
        );
    }

    #[test]
    fn merge_patches_remove_what_the_new_status_no_longer_has() {
        let old = json!({"proxies": "0/2", "revisionTags": ["prod"], "dataPlane": {"total": 2, "stalled": {"name": "web"}, "outdated": [1, 2]}});
        let new = json!({"proxies": "2/2", "dataPlane": {"total": 2, "outdated": [1]}});
        let patch = merge_patch(&old, &new);
        assert_eq!(
            patch,
            json!({"proxies": "2/2", "revisionTags": null, "dataPlane": {"stalled": null, "outdated": [1]}})
        );
        // Applying it (RFC 7386) gives the new status.
        let mut applied = old.clone();
        json_patch::merge(&mut applied, &patch);
        assert_eq!(applied, new);
        // A stale base misses what the last write added: the union of both removes it too.
        let mut stale = json!({"proxies": "0/2", "dataPlane": {"total": 2}});
        add_missing_keys(&mut stale, &old);
        assert!(
            merge_patch(&stale, &new)["dataPlane"]
                .as_object()
                .unwrap()
                .contains_key("stalled")
        );
        assert_eq!(merge_patch(&stale, &new)["dataPlane"]["stalled"], Value::Null);
    }

    #[test]
    fn invalid_specs_say_which_field() {
        let s = next(
            None,
            Some(4),
            &Outcome::InvalidSpec("spec.gateways[0].name: taken".into()),
            ComponentsStatus::default(),
            &at(1),
        );
        assert_eq!(s.state, Some(MeshState::Error));
        assert_eq!(s.conditions[0].reason, "InvalidSpec");
        assert!(s.conditions[0].message.contains("spec.gateways[0].name"));
        assert_eq!(s.observed_generation, Some(4));
    }

    #[test]
    fn a_failed_apply_is_not_ready_even_with_every_component_up() {
        // The webhook configuration may be what failed: `kubectl wait --for=condition=Ready` must not pass.
        let components = ComponentsStatus {
            control_plane: Some(ReplicaStatus { ready: 1, desired: 1 }),
            ..Default::default()
        };
        let s = next(
            None,
            Some(2),
            &Outcome::Failed("applying MutatingWebhookConfiguration x: forbidden".into()),
            components,
            &at(1),
        );
        assert_eq!(s.conditions[0].status, "False");
        assert_eq!(s.conditions[1].type_, "Ready");
        assert_eq!(s.conditions[1].status, "False");
        assert_eq!(s.conditions[1].reason, "ApplyFailed");
        assert_eq!(s.state, Some(MeshState::Error));
    }
}
