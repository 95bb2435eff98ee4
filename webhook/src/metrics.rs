//! Prometheus metrics of the webhook, in the text exposition format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Counters and the latency histogram.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<String, u64>>,
    injections: Mutex<BTreeMap<String, u64>>,
    skips: Mutex<BTreeMap<String, u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, label: &str) {
    let mut map = map.lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(label) {
        Some(n) => *n += 1,
        None => {
            map.insert(label.to_owned(), 1);
        }
    }
}

impl Metrics {
    /// Counts a request by its result (`injected`, `skipped`, `denied`, `ignored`, `bad_request`, …).
    pub fn request(&self, result: &str) {
        bump(&self.requests, result);
    }

    /// Counts an injection for a revision.
    pub fn injection(&self, revision: &str) {
        bump(&self.injections, revision);
    }

    /// Counts a skipped pod by reason.
    pub fn skip(&self, reason: &str) {
        bump(&self.skips, reason);
    }

    /// Counts a failure by reason (`invalid_pod`, `unknown_revision`, `bad_request`, `too_large`, `timeout`).
    pub fn failure(&self, reason: &str) {
        bump(&self.failures, reason);
    }

    /// Records how long a review took.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// The metrics in Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, label: &str, map: &Mutex<BTreeMap<String, u64>>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (value, n) in map.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
            }
        };
        counter(
            &mut out,
            "mizzen_webhook_requests_total",
            "Admission requests by result.",
            "result",
            &self.requests,
        );
        counter(
            &mut out,
            "mizzen_webhook_injections_total",
            "Pods injected, by revision.",
            "revision",
            &self.injections,
        );
        counter(
            &mut out,
            "mizzen_webhook_skips_total",
            "Pods not injected, by deciding rule.",
            "reason",
            &self.skips,
        );
        counter(
            &mut out,
            "mizzen_webhook_failures_total",
            "Requests refused or failed, by reason.",
            "reason",
            &self.failures,
        );
        let name = "mizzen_webhook_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to answer an admission request.\n# TYPE {name} histogram"
        );
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                self.buckets[i].load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(
            out,
            "{name}_sum {}",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(out, "{name}_count {count}");
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
