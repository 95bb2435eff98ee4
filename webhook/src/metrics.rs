//! The webhook's metrics, exposed on the admin port's `/metrics` in the OpenMetrics text format
//! (prometheus-client, as the operator's).

use std::borrow::Cow;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Label values: the fixed ones borrowed (no allocation per request), revisions owned.
type Value = Cow<'static, str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByResult {
    result: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByRevision {
    revision: Value,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByReason {
    reason: Value,
}

/// Counters and the latency histogram.
pub struct Metrics {
    registry: Registry,
    requests: Family<ByResult, Counter>,
    injections: Family<ByRevision, Counter>,
    skips: Family<ByReason, Counter>,
    failures: Family<ByReason, Counter>,
    duration: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("mizzen_webhook");
        let requests = Family::<ByResult, Counter>::default();
        let injections = Family::<ByRevision, Counter>::default();
        let skips = Family::<ByReason, Counter>::default();
        let failures = Family::<ByReason, Counter>::default();
        let duration = Histogram::new(BUCKETS);
        registry.register("requests", "Admission requests by result", requests.clone());
        registry.register("injections", "Pods injected, by revision", injections.clone());
        registry.register("skips", "Pods not injected, by deciding rule", skips.clone());
        registry.register("failures", "Requests refused or failed, by reason", failures.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer an admission request",
            duration.clone(),
        );
        Self {
            registry,
            requests,
            injections,
            skips,
            failures,
            duration,
        }
    }
}

impl Metrics {
    /// Counts a request by its result (`injected`, `skipped`, `denied`, `ignored`, `bad_request`, …).
    pub fn request(&self, result: &'static str) {
        self.requests
            .get_or_create(&ByResult {
                result: Cow::Borrowed(result),
            })
            .inc();
    }

    /// Counts an injection for a revision.
    pub fn injection(&self, revision: &str) {
        self.injections
            .get_or_create(&ByRevision {
                revision: Cow::Owned(revision.to_owned()),
            })
            .inc();
    }

    /// Counts a skipped pod by reason.
    pub fn skip(&self, reason: &'static str) {
        self.skips
            .get_or_create(&ByReason {
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    /// Counts a failure by reason (`invalid_pod`, `unknown_revision`, `bad_request`, `too_large`, `timeout`).
    pub fn failure(&self, reason: &'static str) {
        self.failures
            .get_or_create(&ByReason {
                reason: Cow::Borrowed(reason),
            })
            .inc();
    }

    /// Records how long a review took.
    pub fn observe(&self, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The metrics in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_a_cumulative_histogram() {
        let m = Metrics::default();
        m.request("injected");
        m.request("injected");
        m.skip("host_network");
        m.observe(Duration::from_micros(700));
        let text = m.render();
        assert!(
            text.contains("mizzen_webhook_requests_total{result=\"injected\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_skips_total{reason=\"host_network\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_request_duration_seconds_bucket{le=\"0.0005\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_request_duration_seconds_bucket{le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("mizzen_webhook_request_duration_seconds_count 1"),
            "{text}"
        );
    }
}
