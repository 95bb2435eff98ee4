//! Validation of the annotations that shape traffic capture and resources, with errors that name the parameter and
//! the annotation.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::InjectError;
use super::annotations as ann;

fn invalid(annotation: &str, message: String) -> InjectError {
    InjectError::InvalidAnnotation {
        annotation: annotation.to_owned(),
        message,
    }
}

/// A comma-separated CIDR list, or `*` where allowed, or empty.
fn cidr_list(annotation: &str, param: &str, value: &str, star: bool) -> Result<(), InjectError> {
    if star && value.trim() == "*" {
        return Ok(());
    }
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (ip, prefix) = item.split_once('/').ok_or_else(|| {
            invalid(
                annotation,
                format!("{param} invalid: {item:?} is not a CIDR (expected a.b.c.d/n)"),
            )
        })?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| invalid(annotation, format!("{param} invalid: {item:?} has a bad IP address")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        match prefix.parse::<u8>() {
            Ok(p) if p <= max => {}
            _ => {
                return Err(invalid(
                    annotation,
                    format!("{param} invalid: {item:?} has a bad prefix length (0 to {max})"),
                ));
            }
        }
    }
    Ok(())
}

/// A comma-separated port list (1–65535), or `*` where allowed, or empty.
fn port_list(annotation: &str, param: &str, value: &str, star: bool) -> Result<(), InjectError> {
    if star && value.trim() == "*" {
        return Ok(());
    }
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match item.parse::<u32>() {
            Ok(p) if (1..=65535).contains(&p) => {}
            _ => {
                return Err(invalid(
                    annotation,
                    format!("{param} invalid: {item:?} is not a port number (1 to 65535)"),
                ));
            }
        }
    }
    Ok(())
}

/// Checks every validated annotation the pod sets.
pub fn annotations(annotations: &Map<String, Value>) -> Result<(), InjectError> {
    let get = |k: &str| annotations.get(k).and_then(Value::as_str);
    if let Some(v) = get(ann::INCLUDE_OUTBOUND_IP_RANGES) {
        cidr_list(ann::INCLUDE_OUTBOUND_IP_RANGES, "includeIPRanges", v, true)?;
    }
    if let Some(v) = get(ann::EXCLUDE_OUTBOUND_IP_RANGES) {
        cidr_list(ann::EXCLUDE_OUTBOUND_IP_RANGES, "excludeIPRanges", v, false)?;
    }
    if let Some(v) = get(ann::INCLUDE_INBOUND_PORTS) {
        port_list(ann::INCLUDE_INBOUND_PORTS, "includeInboundPorts", v, true)?;
    }
    if let Some(v) = get(ann::EXCLUDE_INBOUND_PORTS) {
        port_list(ann::EXCLUDE_INBOUND_PORTS, "excludeInboundPorts", v, false)?;
    }
    if let Some(v) = get(ann::INCLUDE_OUTBOUND_PORTS) {
        port_list(ann::INCLUDE_OUTBOUND_PORTS, "includeOutboundPorts", v, true)?;
    }
    if let Some(v) = get(ann::EXCLUDE_OUTBOUND_PORTS) {
        port_list(ann::EXCLUDE_OUTBOUND_PORTS, "excludeOutboundPorts", v, false)?;
    }
    if let Some(v) = get(ann::INTERCEPTION_MODE)
        && !matches!(v, "REDIRECT" | "TPROXY" | "NONE")
    {
        return Err(invalid(
            ann::INTERCEPTION_MODE,
            format!("interceptionMode invalid: {v:?} (expected REDIRECT, TPROXY or NONE)"),
        ));
    }
    if let Some(v) = get(ann::STATUS_PORT) {
        match v.trim().parse::<u32>() {
            Ok(p) if p <= 65535 => {}
            _ => {
                return Err(invalid(
                    ann::STATUS_PORT,
                    format!("statusPort invalid: {v:?} (0 to 65535)"),
                ));
            }
        }
    }
    for key in [
        ann::READINESS_INITIAL_DELAY,
        ann::READINESS_PERIOD,
        ann::READINESS_FAILURE_THRESHOLD,
    ] {
        if let Some(v) = get(key)
            && v.trim().parse::<u32>().is_err()
        {
            return Err(invalid(key, format!("{v:?} is not a non-negative integer")));
        }
    }
    for key in [
        ann::PROXY_CPU,
        ann::PROXY_MEMORY,
        ann::PROXY_CPU_LIMIT,
        ann::PROXY_MEMORY_LIMIT,
    ] {
        if let Some(v) = get(key) {
            crate::quantity::canonical(v).map_err(|e| invalid(key, e.to_string()))?;
        }
    }
    for key in [ann::USER_VOLUME, ann::USER_VOLUME_MOUNT] {
        if let Some(v) = get(key) {
            match serde_json::from_str::<Value>(v) {
                Ok(Value::Object(_)) => {}
                _ => return Err(invalid(key, "expected a JSON object of name to definition".into())),
            }
        }
    }
    for key in [ann::NATIVE_SIDECAR, ann::REWRITE_APP_HTTP_PROBERS] {
        if let Some(v) = get(key)
            && !matches!(v, "true" | "false")
        {
            return Err(invalid(key, format!("{v:?} (expected \"true\" or \"false\")")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(key: &str, value: &str) -> Result<(), InjectError> {
        let map = json!({ key: value });
        annotations(map.as_object().unwrap())
    }

    #[test]
    fn good_values_pass() {
        assert!(check(ann::INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8, 127.0.0.1/24").is_ok());
        assert!(check(ann::INCLUDE_OUTBOUND_IP_RANGES, "*").is_ok());
        assert!(check(ann::EXCLUDE_OUTBOUND_IP_RANGES, "").is_ok());
        assert!(check(ann::INCLUDE_INBOUND_PORTS, "*").is_ok());
        assert!(check(ann::EXCLUDE_OUTBOUND_PORTS, "7,8,9").is_ok());
        assert!(check(ann::PROXY_CPU, "100m").is_ok());
    }

    #[test]
    fn bad_values_name_parameter_and_annotation() {
        let err = check(ann::INCLUDE_OUTBOUND_IP_RANGES, "1.1.1.1")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("includeIPRanges invalid") && err.contains(ann::INCLUDE_OUTBOUND_IP_RANGES),
            "{err}"
        );
        let err = check(ann::EXCLUDE_INBOUND_PORTS, "*").unwrap_err().to_string();
        assert!(err.contains("excludeInboundPorts invalid"), "{err}");
        let err = check(ann::EXCLUDE_OUTBOUND_PORTS, "70000").unwrap_err().to_string();
        assert!(err.contains("excludeOutboundPorts invalid"), "{err}");
        let err = check(ann::INTERCEPTION_MODE, "MAGIC").unwrap_err().to_string();
        assert!(err.contains(ann::INTERCEPTION_MODE), "{err}");
        let err = check(ann::PROXY_MEMORY, "lots").unwrap_err().to_string();
        assert!(err.contains(ann::PROXY_MEMORY), "{err}");
    }
}
