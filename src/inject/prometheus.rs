//! Metrics merging (`enablePrometheusMerge`), as Istio's injector does it: the pod's own `prometheus.io`
//! annotations (in any spelling Prometheus accepts, such as `prometheus.io.scrape`) and its
//! `prometheus.istio.io/scrape-targets` are handed to the agent in `ISTIO_PROMETHEUS_ANNOTATIONS`, and the
//! annotations are pointed at the agent's merged endpoint, so Prometheus scrapes the application's metrics and the
//! proxy's in one place.

use super::InjectError;
use super::annotations as ann;
use super::gojson;
use super::overlay::StringMap;

/// Env var of the proxy carrying the application's own scrape configuration.
pub const SCRAPE_CONFIG_ENV: &str = "ISTIO_PROMETHEUS_ANNOTATIONS";

/// Data-plane ports a scrape target must not point at, with the reason.
const RESERVED_PORTS: &[(&str, &str)] = &[
    ("15000", "Envoy admin"),
    ("15001", "outbound traffic capture"),
    ("15004", "pilot debug"),
    ("15006", "inbound traffic capture"),
    ("15008", "HBONE tunnel"),
    ("15020", "pilot-agent status / merged Prometheus"),
    ("15021", "Envoy health"),
    ("15053", "DNS proxy"),
    ("15090", "Envoy Prometheus (already merged)"),
];

/// Prometheus turns annotation names into label names by replacing every character outside `[a-zA-Z0-9_]` with
/// `_`, so `prometheus.io/scrape`, `prometheus.io.scrape` and `prometheus-io/scrape` mean the same.
#[cfg(test)]
fn sanitized(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' })
        .collect()
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Whether `key`, sanitized as Prometheus does (each character outside `[a-zA-Z0-9_]` becomes `_`), is `label`,
/// without building the sanitized name.
fn sanitizes_to(key: &str, label: &str) -> bool {
    let mut label = label.bytes();
    key.chars().all(|c| match label.next() {
        Some(l) if c.is_ascii_alphanumeric() || c == '_' => u32::from(c) == u32::from(l),
        Some(l) => l == b'_',
        None => false,
    }) && label.next().is_none()
}

fn find<'a>(annotations: &'a impl StringMap, label: &str) -> Option<&'a str> {
    annotations.find_str(|k| sanitizes_to(k, label))
}

/// Parses `prometheus.istio.io/scrape-targets`: `port:path` entries, an empty path meaning `/metrics`. Ports must
/// be numbers of the application's, not the data plane's or the agent's own status port.
fn scrape_targets(raw: &str, status_port: &str) -> Result<Vec<(String, String)>, InjectError> {
    let invalid = |message: String| InjectError::InvalidAnnotation {
        annotation: ann::PROMETHEUS_SCRAPE_TARGETS.into(),
        message,
    };
    let mut targets = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (port, path) = entry.split_once(':').unwrap_or((entry, ""));
        let (port, path) = (port.trim(), path.trim());
        if port.is_empty() {
            return Err(invalid(format!("empty port in scrape target {entry:?}")));
        }
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(invalid(format!(
                "port {port:?} of scrape target {entry:?} is not a port number"
            )));
        }
        if let Some((_, why)) = RESERVED_PORTS.iter().find(|(p, _)| *p == port) {
            return Err(invalid(format!("port {port} is reserved by Istio ({why})")));
        }
        if port == status_port {
            return Err(invalid(format!("port {port} is the agent's status port")));
        }
        let path = if path.is_empty() { "/metrics" } else { path };
        targets.push((port.to_owned(), path.to_owned()));
    }
    Ok(targets)
}

/// What merging does to a pod: the annotations to write (after removing every `prometheus.io` spelling and the
/// scrape targets) and the proxy's `ISTIO_PROMETHEUS_ANNOTATIONS` value, if the application had any.
#[derive(Debug, Clone, PartialEq)]
pub struct Merge {
    /// `ISTIO_PROMETHEUS_ANNOTATIONS`, when the pod had its own scrape settings.
    pub env: Option<String>,
}

/// Applies metrics merging to the pod's annotations (in place) when it is on for the pod: the mesh enables it,
/// `prometheus.istio.io/merge-metrics` does not turn it off, the pod's own scrape annotation is not false, and the
/// pod does not already point at the agent (`status_port`, "" or "0" when the agent serves no metrics).
pub fn apply(
    annotations: &mut impl StringMap,
    mesh_enabled: bool,
    status_port: &str,
) -> Result<Option<Merge>, InjectError> {
    let enabled = annotations
        .get_str(ann::PROMETHEUS_MERGE_METRICS)
        .and_then(parse_bool)
        .unwrap_or(mesh_enabled);
    let scrape = find(annotations, "prometheus_io_scrape")
        .and_then(parse_bool)
        .unwrap_or(true);
    if !enabled || !scrape || status_port.is_empty() || status_port == "0" {
        return Ok(None);
    }
    if find(annotations, "prometheus_io_port") == Some(status_port) {
        // Already pointing at the agent (re-injection, or the user chose it).
        return Ok(None);
    }
    let own = |label: &str| find(annotations, label).unwrap_or_default().to_owned();
    let (scrape, mut path, mut port) = (
        own("prometheus_io_scrape"),
        own("prometheus_io_path"),
        own("prometheus_io_port"),
    );
    let targets = match annotations.get_str(ann::PROMETHEUS_SCRAPE_TARGETS) {
        Some(raw) => scrape_targets(raw, status_port)?,
        None => Vec::new(),
    };
    if let Some((first_port, first_path)) = targets.first() {
        if port.is_empty() {
            port.clone_from(first_port);
        }
        if path.is_empty() {
            path.clone_from(first_path);
        }
    }
    let env = (!scrape.is_empty() || !path.is_empty() || !port.is_empty() || !targets.is_empty()).then(|| {
        // Go's json.Marshal of the agent's PrometheusScrapeConfiguration: fields in declaration order, Go's escapes.
        let mut text = format!(
            "{{\"scrape\":{},\"path\":{},\"port\":{}",
            gojson::string(&scrape),
            gojson::string(&path),
            gojson::string(&port)
        );
        if !targets.is_empty() {
            let list: Vec<String> = targets
                .iter()
                .map(|(port, path)| {
                    format!(
                        "{{\"port\":{},\"path\":{}}}",
                        gojson::string(port),
                        gojson::string(path)
                    )
                })
                .collect();
            text.push_str(&format!(",\"targets\":[{}]", list.join(",")));
        }
        text.push('}');
        text
    });
    annotations.remove_where(|k| {
        ["prometheus_io_scrape", "prometheus_io_port", "prometheus_io_path"]
            .iter()
            .any(|label| sanitizes_to(k, label))
            || k == ann::PROMETHEUS_SCRAPE_TARGETS
    });
    annotations.set(ann::PROMETHEUS_PORT, status_port.to_owned());
    annotations.set(ann::PROMETHEUS_PATH, "/stats/prometheus");
    annotations.set(ann::PROMETHEUS_SCRAPE, "true");
    Ok(Some(Merge { env }))
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, Value, json};

    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), json!(v))).collect()
    }

    #[test]
    fn sanitized_comparison_is_prometheus_sanitizing() {
        for key in [
            "prometheus.io/scrape",
            "prometheus_io_scrape",
            "prometheus-io.scrape",
            "prometheus.ió/scrape",
            "prometheus\u{e9}io_scrape",
            "prometheus_io_scrapes",
            "x",
        ] {
            assert_eq!(
                sanitizes_to(key, "prometheus_io_scrape"),
                sanitized(key) == "prometheus_io_scrape",
                "{key}"
            );
        }
    }

    #[test]
    fn the_scrape_configuration_has_gos_escapes() {
        // Istio's applyPrometheusMerge writes the configuration with json.Marshal.
        let mut a = annotations(&[("prometheus.io/port", "9090"), ("prometheus.io/path", "/m?a=1&b=<2>")]);
        let merge = apply(&mut a, true, "15020").unwrap().unwrap();
        assert_eq!(
            merge.env.as_deref(),
            Some(r#"{"scrape":"","path":"/m?a=1\u0026b=\u003c2\u003e","port":"9090"}"#)
        );
    }

    #[test]
    fn the_applications_own_port_and_path_are_handed_to_the_agent() {
        let mut a = annotations(&[("prometheus.io/port", "9090"), ("prometheus.io/path", "/metrics")]);
        let merge = apply(&mut a, true, "15020").unwrap().unwrap();
        assert_eq!(
            merge.env.as_deref(),
            Some(r#"{"scrape":"","path":"/metrics","port":"9090"}"#)
        );
        assert_eq!(
            a,
            annotations(&[
                ("prometheus.io/port", "15020"),
                ("prometheus.io/path", "/stats/prometheus"),
                ("prometheus.io/scrape", "true")
            ])
        );
    }

    #[test]
    fn no_own_settings_means_no_env_but_the_agent_is_scraped() {
        let mut a = Map::new();
        let merge = apply(&mut a, true, "15020").unwrap().unwrap();
        assert_eq!(merge.env, None);
        assert_eq!(a["prometheus.io/port"], "15020");
    }

    #[test]
    fn any_spelling_of_scrape_false_turns_merging_off() {
        for key in ["prometheus.io/scrape", "prometheus.io.scrape", "prometheus-io/scrape"] {
            let mut a = annotations(&[(key, "false")]);
            assert_eq!(apply(&mut a, true, "15020").unwrap(), None, "{key}");
            assert_eq!(a, annotations(&[(key, "false")]));
        }
    }

    #[test]
    fn other_spellings_are_replaced_by_the_agents_annotations() {
        let mut a = annotations(&[("prometheus.io.port", "8080"), ("prometheus.io.scrape", "true")]);
        let merge = apply(&mut a, true, "15020").unwrap().unwrap();
        assert_eq!(
            merge.env.as_deref(),
            Some(r#"{"scrape":"true","path":"","port":"8080"}"#)
        );
        assert!(!a.contains_key("prometheus.io.port") && !a.contains_key("prometheus.io.scrape"));
    }

    #[test]
    fn the_pod_or_the_mesh_can_turn_merging_off_and_reinjection_changes_nothing() {
        let mut a = annotations(&[("prometheus.io/port", "9090"), (ann::PROMETHEUS_MERGE_METRICS, "false")]);
        assert_eq!(apply(&mut a, true, "15020").unwrap(), None);
        let mut a = annotations(&[("prometheus.io/port", "9090")]);
        assert_eq!(apply(&mut a, false, "15020").unwrap(), None);
        let mut a = annotations(&[("prometheus.io/port", "15020")]);
        assert_eq!(apply(&mut a, true, "15020").unwrap(), None);
        let mut a = annotations(&[("prometheus.io/port", "9090")]);
        assert_eq!(apply(&mut a, true, "0").unwrap(), None);
    }

    #[test]
    fn scrape_targets_are_listed_and_reserved_ports_refused_by_name() {
        let mut a = annotations(&[(ann::PROMETHEUS_SCRAPE_TARGETS, "8080:/metrics, 9100")]);
        let merge = apply(&mut a, true, "15020").unwrap().unwrap();
        assert_eq!(
            merge.env.as_deref(),
            Some(
                r#"{"scrape":"","path":"/metrics","port":"8080","targets":[{"port":"8080","path":"/metrics"},{"port":"9100","path":"/metrics"}]}"#
            )
        );
        assert!(!a.contains_key(ann::PROMETHEUS_SCRAPE_TARGETS));
        for bad in ["15090:/stats", ":/metrics", "http:/x"] {
            let mut a = annotations(&[(ann::PROMETHEUS_SCRAPE_TARGETS, bad)]);
            let err = apply(&mut a, true, "15020").unwrap_err().to_string();
            assert!(err.contains(ann::PROMETHEUS_SCRAPE_TARGETS), "{err}");
        }
    }
}
