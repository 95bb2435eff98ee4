//! An `istioctl install …` command line, read the way istioctl reads it: its `-f` files, its `--set` flags (values
//! typed as istioctl types them) and `--revision`. Flags that only steer istioctl itself (`-y`, `--verify`,
//! `--context`, …) say nothing about the mesh and are accepted and ignored.

use serde_json::Value;

use super::ConvertError;
use super::tree::Path;

/// What an istioctl command line asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IstioctlCommand {
    /// `-f` / `--filename` files, in order (`-` is standard input).
    pub files: Vec<String>,
    /// `--set` / `-s` flags, in order (`--revision r` becomes `revision=r`, `--manifests d` `installPackagePath=d`).
    pub sets: Vec<String>,
}

/// Subcommands that install (or print) a control plane from IstioOperator inputs.
const SUBCOMMANDS: &[&[&str]] = &[
    &["install"],
    &["upgrade"],
    &["manifest", "generate"],
    &["manifest", "install"],
];

/// istioctl flags that take a value and do not describe the mesh.
const IGNORED_WITH_VALUE: &[&str] = &[
    "--readiness-timeout",
    "--context",
    "--kubeconfig",
    "-c",
    "--istioNamespace",
    "-i",
    "--vklog",
];

/// istioctl boolean flags that do not describe the mesh.
const IGNORED_BOOLEANS: &[&str] = &["-y", "--skip-confirmation", "--force", "--verify", "--dry-run"];

/// Parses `istioctl install --set … -f …` (the leading `istioctl` is optional, and may be a path to it).
pub fn parse_command(args: &[String]) -> Result<IstioctlCommand, ConvertError> {
    let err = |message: String| ConvertError::IstioctlArgs { message };
    let mut rest = args;
    if let Some(first) = rest.first()
        && std::path::Path::new(first)
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("istioctl"))
    {
        rest = &rest[1..];
    }
    let sub = SUBCOMMANDS
        .iter()
        .find(|s| rest.len() >= s.len() && rest[..s.len()].iter().zip(s.iter()).all(|(a, b)| a == b))
        .ok_or_else(|| {
            err(format!(
                "expected `istioctl install` (or upgrade, manifest generate, manifest install), got {:?}",
                rest.iter().take(2).cloned().collect::<Vec<_>>().join(" ")
            ))
        })?;
    let mut command = IstioctlCommand::default();
    let mut i = sub.len();
    while i < rest.len() {
        let arg = rest[i].as_str();
        i += 1;
        let (flag, inline) = split_flag(arg);
        let mut value = || -> Result<String, ConvertError> {
            if let Some(v) = inline {
                return Ok(v.to_owned());
            }
            let v = rest.get(i).ok_or_else(|| err(format!("{flag} needs a value")))?;
            i += 1;
            Ok(v.clone())
        };
        match flag {
            "--set" | "-s" => command.sets.push(value()?),
            "--filename" | "-f" => command.files.extend(
                value()?
                    .split(',')
                    .map(str::trim)
                    .filter(|f| !f.is_empty())
                    .map(str::to_owned),
            ),
            "--revision" | "-r" => command.sets.push(format!("revision={}", value()?)),
            "--manifests" | "-d" => command.sets.push(format!("installPackagePath={}", value()?)),
            f if IGNORED_WITH_VALUE.contains(&f) => {
                value()?;
            }
            f if IGNORED_BOOLEANS.contains(&f) => {
                if let Some(v) = inline
                    && !matches!(v, "true" | "false")
                {
                    return Err(err(format!("{f}: expected true or false, got {v:?}")));
                }
            }
            _ if !arg.starts_with('-') => {
                return Err(err(format!("unexpected argument {arg:?}")));
            }
            _ => {
                return Err(err(format!(
                    "unknown flag {flag} (mizzenctl convert reads --set, -f and --revision)"
                )));
            }
        }
    }
    Ok(command)
}

/// `--set=a=b` → (`--set`, `a=b`); `-sa=b` → (`-s`, `a=b`); `-s=a=b` → (`-s`, `a=b`) as pflag reads them.
fn split_flag(arg: &str) -> (&str, Option<&str>) {
    if let Some(long) = arg.strip_prefix("--") {
        return match long.split_once('=') {
            Some((name, v)) => (&arg[..2 + name.len()], Some(v)),
            None => (arg, None),
        };
    }
    let short_end = arg.char_indices().nth(2).map(|(i, _)| i);
    if let (true, Some(end)) = (arg.starts_with('-'), short_end) {
        let rest = &arg[end..];
        return (&arg[..end], Some(rest.strip_prefix('=').unwrap_or(rest)));
    }
    (arg, None)
}

/// Paths whose `--set` values stay strings (istioctl's list: image tags and proxy metadata).
const ALWAYS_STRING: &[&str] = &[
    "tag",
    "values.global.tag",
    "compatibilityVersion",
    "values.compatibilityVersion",
    "meshConfig.defaultConfig.proxyMetadata.",
    "values.meshConfig.defaultConfig.proxyMetadata.",
];

/// Splits a `--set path=value` flag and types the value as istioctl does: integer, then float, then boolean
/// (`true`, `False`, `t`, …), else a string in which `\,` stands for `,`.
pub fn parse_set(flag: &str) -> Result<(Path, Value), ConvertError> {
    let malformed = |message: String| ConvertError::MalformedSet {
        flag: flag.to_owned(),
        message,
    };
    let (path, raw) = flag
        .split_once('=')
        .ok_or_else(|| malformed("expected path=value, such as values.global.proxy.logLevel=debug".into()))?;
    let (path, raw) = (path.trim(), raw.trim());
    let parsed = Path::parse(path).map_err(malformed)?;
    let value = if ALWAYS_STRING
        .iter()
        .any(|p| path == *p || (p.ends_with('.') && path.starts_with(p)))
    {
        Value::String(raw.to_owned())
    } else {
        typed(raw)
    };
    Ok((parsed, value))
}

fn typed(raw: &str) -> Value {
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    if let Ok(f) = raw.parse::<f64>()
        && let Some(n) = serde_json::Number::from_f64(f)
    {
        return Value::Number(n);
    }
    match raw {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Value::Bool(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Value::Bool(false),
        _ => Value::String(raw.replace("\\,", ",")),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn istioctl_flags_in_every_spelling_are_read_in_order() {
        let cmd = parse_command(&args(
            "/usr/local/bin/istioctl install -y --set a=1 -s b=2 --set=c=3 -sd=4 -s=e=5 -f x.yaml --filename=y.yaml,z.yaml \
             -r canary --verify --context kind --readiness-timeout 5m",
        ))
        .unwrap();
        assert_eq!(cmd.sets, ["a=1", "b=2", "c=3", "d=4", "e=5", "revision=canary"]);
        assert_eq!(cmd.files, ["x.yaml", "y.yaml", "z.yaml"]);
        assert_eq!(
            parse_command(&args("manifest generate --set profile=demo"))
                .unwrap()
                .sets,
            ["profile=demo"]
        );
    }

    #[test]
    fn other_commands_and_unknown_flags_are_refused_by_name() {
        let err = parse_command(&args("istioctl analyze")).unwrap_err().to_string();
        assert!(
            err.contains("expected `istioctl install`") && err.contains("analyze"),
            "{err}"
        );
        let err = parse_command(&args("istioctl install --sett a=b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown flag --sett"), "{err}");
        let err = parse_command(&args("istioctl install --set")).unwrap_err().to_string();
        assert!(err.contains("--set needs a value"), "{err}");
        let err = parse_command(&args("istioctl install stray")).unwrap_err().to_string();
        assert!(err.contains("unexpected argument \"stray\""), "{err}");
        let err = parse_command(&args("istioctl install -éx")).unwrap_err().to_string();
        assert!(err.contains("unknown flag -é"), "{err}");
    }

    #[test]
    fn set_values_are_typed_as_istioctl_types_them() {
        let value = |flag: &str| parse_set(flag).unwrap().1;
        assert_eq!(value("values.pilot.replicaCount=2"), json!(2));
        assert_eq!(value("values.pilot.traceSampling=0.5"), json!(0.5));
        assert_eq!(value("values.global.proxy.privileged=True"), json!(true));
        assert_eq!(value("meshConfig.accessLogFile=/dev/stdout"), json!("/dev/stdout"));
        assert_eq!(
            value(r"values.global.proxy.excludeIPRanges=10.0.0.0/8\,172.16.0.0/12"),
            json!("10.0.0.0/8,172.16.0.0/12")
        );
        assert_eq!(value("tag=1.28"), json!("1.28"));
        assert_eq!(
            value("meshConfig.defaultConfig.proxyMetadata.ISTIO_META_DNS_CAPTURE=true"),
            json!("true")
        );
        assert_eq!(value("values.global.proxy.logLevel="), json!(""));
    }

    #[test]
    fn malformed_set_flags_are_refused_with_the_flag() {
        let err = parse_set("values.global.proxy.logLevel").unwrap_err().to_string();
        assert!(
            err.contains("values.global.proxy.logLevel") && err.contains("expected path=value"),
            "{err}"
        );
        let err = parse_set("=debug").unwrap_err().to_string();
        assert!(err.contains("empty path"), "{err}");
        let err = parse_set("components.ingressGateways[name].enabled=true")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a list selector"), "{err}");
    }
}
