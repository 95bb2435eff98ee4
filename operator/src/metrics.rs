//! The operator's metrics, exposed on the admin port's `/metrics` in the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Counters and timings of reconciles.
pub struct Metrics {
    registry: Registry,
    reconciles: Counter,
    errors: Counter,
    applied: Counter,
    pruned: Counter,
    duration: Histogram,
    leader: Gauge,
    api_requests: Family<Verb, Counter>,
}

/// The HTTP method of an API request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Verb {
    method: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mizzen_operator");
        let reconciles = Counter::default();
        let errors = Counter::default();
        let applied = Counter::default();
        let pruned = Counter::default();
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        let leader = Gauge::default();
        let api_requests = Family::<Verb, Counter>::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        registry.register("reconcile_errors", "Reconciles that failed", errors.clone());
        registry.register("objects_applied", "Objects created or changed", applied.clone());
        registry.register(
            "objects_pruned",
            "Objects deleted as no longer rendered",
            pruned.clone(),
        );
        registry.register("reconcile_duration_seconds", "Time per reconcile", duration.clone());
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        registry.register(
            "api_requests",
            "Requests sent to the API server, by method",
            api_requests.clone(),
        );
        Self {
            registry,
            reconciles,
            errors,
            applied,
            pruned,
            duration,
            leader,
            api_requests,
        }
    }
}

impl Metrics {
    /// Records one reconcile.
    pub fn observe_reconcile(&self, took: Duration, ok: bool) {
        self.reconciles.inc();
        if !ok {
            self.errors.inc();
        }
        self.duration.observe(took.as_secs_f64());
    }

    /// Reconciles run so far.
    pub fn reconciles(&self) -> u64 {
        self.reconciles.get()
    }

    /// Counts objects written.
    pub fn objects_applied(&self, n: usize) {
        self.applied.inc_by(n as u64);
    }

    /// Counts objects deleted.
    pub fn objects_pruned(&self, n: usize) {
        self.pruned.inc_by(n as u64);
    }

    /// Counts one request sent to the API server.
    pub fn api_request(&self, method: &str) {
        self.api_requests
            .get_or_create(&Verb {
                method: method.to_owned(),
            })
            .inc();
    }

    /// Whether this replica leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_every_series() {
        let m = Metrics::default();
        m.observe_reconcile(Duration::from_millis(3), false);
        m.objects_applied(4);
        m.api_request("GET");
        let text = m.render();
        for line in [
            "mizzen_operator_reconciles_total 1",
            "mizzen_operator_reconcile_errors_total 1",
            "mizzen_operator_objects_applied_total 4",
            "mizzen_operator_objects_pruned_total 0",
            "mizzen_operator_leader 0",
            "mizzen_operator_api_requests_total{method=\"GET\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        assert!(text.contains("mizzen_operator_reconcile_duration_seconds_count 1"));
    }
}
