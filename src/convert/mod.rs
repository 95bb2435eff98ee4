//! `mizzenctl convert`: the MeshInstall that means what an `istioctl install` command line, an `IstioOperator`
//! (`install.istio.io/v1alpha1`, profile included) or a Sail operator `Istio` (`sailoperator.io/v1`) means, and every
//! setting that has no MeshInstall equivalent, named.
//!
//! Inputs are merged as istioctl merges them (profile, then files in order, then `--set` flags in order) into one
//! IstioOperator `spec`, which [`mapping`] turns into a MeshInstall. Settings equal to what the MeshInstall does
//! anyway (Istio's defaults, empty values, components that are off) are not reported.

mod gateways;
pub mod istioctl;
mod mapping;
pub mod profiles;
pub mod tree;

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::api::{DEFAULT_ISTIO_VERSION, MeshInstall, MeshInstallSpec};
use crate::render::InvalidSpec;
pub use istioctl::{IstioctlCommand, parse_command};
use tree::{Path, Seg};

/// Why an input cannot be converted. Each names the file, flag or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A file is not valid YAML, or holds no resource or more than one.
    #[error("{source_name}: {message}")]
    ReadDocument {
        /// File name (`-` for standard input).
        source_name: String,
        /// What is wrong.
        message: String,
    },
    /// A file holds something other than an IstioOperator or a Sail Istio.
    #[error(
        "{source_name}: {kind} is not an IstioOperator (install.istio.io/v1alpha1) or a Sail Istio (sailoperator.io/v1)"
    )]
    WrongKind {
        /// File name.
        source_name: String,
        /// `apiVersion kind` of the document.
        kind: String,
    },
    /// Inputs that cannot be combined (a Sail Istio with IstioOperator files or `--set` flags).
    #[error("{0}")]
    MixedInputs(String),
    /// No file, flag or istioctl command line was given.
    #[error("nothing to convert: give -f FILE, --set PATH=VALUE or `-- istioctl install …`")]
    NoInput,
    /// A profile `mizzenctl convert` does not know.
    #[error("profile {profile:?} is not one mizzenctl convert knows (default, demo, minimal, empty)")]
    UnknownProfile {
        /// The profile asked for.
        profile: String,
    },
    /// A `--set` flag that is not `path=value` with a valid path, or that does not fit the tree.
    #[error("--set {flag:?}: {message}")]
    MalformedSet {
        /// The flag as given.
        flag: String,
        /// What is wrong.
        message: String,
    },
    /// An istioctl command line that is not an install.
    #[error("istioctl command line: {message}")]
    IstioctlArgs {
        /// What is wrong.
        message: String,
    },
    /// A setting whose value cannot be used (wrong type, out of range, refused by the MeshInstall schema).
    #[error("{setting}: {message}")]
    InvalidSetting {
        /// The setting, such as `values.gateways.istio-ingressgateway.type`.
        setting: String,
        /// What is wrong.
        message: String,
    },
    /// The MeshInstall built from the inputs does not render.
    #[error("the converted MeshInstall is invalid: {0}")]
    Render(#[from] InvalidSpec),
    /// The MeshInstall could not be printed.
    #[error("cannot print the MeshInstall: {0}")]
    Print(String),
}

/// One input file.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its name, for messages.
    pub name: String,
    /// Its text.
    pub text: String,
}

/// A setting the MeshInstall cannot carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsupported {
    /// The setting's path relative to the resource's `spec`, in `--set` syntax.
    pub setting: String,
    /// Its value.
    pub value: Value,
    /// The profile it comes from, when the user did not write it.
    pub profile: Option<String>,
    /// Why it has no equivalent.
    pub reason: String,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = match &self.value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        write!(f, "{}={value}", self.setting)?;
        if let Some(p) = &self.profile {
            write!(f, " (profile {p})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A converted install: the MeshInstall and what it could not carry.
#[derive(Debug, Clone)]
pub struct Conversion {
    /// The MeshInstall.
    pub mesh_install: MeshInstall,
    /// Settings with no MeshInstall equivalent, in the order met.
    pub unsupported: Vec<Unsupported>,
}

/// Converts files (IstioOperators merged in order, or one Sail Istio) and istioctl `--set` flags.
pub fn convert(sources: &[Source], sets: &[String]) -> Result<Conversion, ConvertError> {
    if sources.is_empty() && sets.is_empty() {
        return Err(ConvertError::NoInput);
    }
    let mut operators = Vec::new();
    let mut sail = Vec::new();
    for source in sources {
        match read(source)? {
            Input::IstioOperator(doc) => operators.push((source.name.clone(), doc)),
            Input::Sail(doc) => sail.push((source.name.clone(), doc)),
        }
    }
    match sail.as_slice() {
        [] => from_istio_operator(operators, sets),
        [(name, doc)] if operators.is_empty() && sets.is_empty() => from_sail(name, doc),
        [(name, _)] if operators.is_empty() => Err(ConvertError::MixedInputs(format!(
            "{name}: --set flags apply to istioctl and IstioOperator inputs; put the setting in the Istio's spec.values"
        ))),
        [(name, _), ..] if sail.len() > 1 => Err(ConvertError::MixedInputs(format!(
            "{name}: one Sail Istio at a time (each is a MeshInstall of its own)"
        ))),
        [(name, _), ..] => Err(ConvertError::MixedInputs(format!(
            "{name}: a Sail Istio cannot be combined with IstioOperator files"
        ))),
    }
}

enum Input {
    IstioOperator(Value),
    Sail(Value),
}

fn read(source: &Source) -> Result<Input, ConvertError> {
    let bad = |message: String| ConvertError::ReadDocument {
        source_name: source.name.clone(),
        message,
    };
    let mut docs = crate::yaml::parse_documents(&source.text).map_err(|e| bad(e.to_string()))?;
    let doc = match docs.len() {
        0 => return Err(bad("no resource in the file".into())),
        1 => docs.remove(0),
        n => return Err(bad(format!("{n} resources in one file; give each its own -f"))),
    };
    let field = |name: &str| doc.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    let group = api_version.split('/').next().unwrap_or_default();
    if !doc.is_object() {
        return Err(bad(
            "not a Kubernetes resource (expected a map with apiVersion and kind)".into(),
        ));
    }
    match (group, kind.as_str()) {
        ("install.istio.io", "IstioOperator") => Ok(Input::IstioOperator(doc)),
        ("sailoperator.io", "Istio") => Ok(Input::Sail(doc)),
        _ => Err(ConvertError::WrongKind {
            source_name: source.name.clone(),
            kind: match (api_version.is_empty(), kind.is_empty()) {
                (_, true) => "a document without a kind".to_owned(),
                (true, false) => kind,
                (false, false) => format!("{api_version} {kind}"),
            },
        }),
    }
}

fn spec_of(name: &str, doc: &Value) -> Result<Value, ConvertError> {
    match doc.get("spec") {
        None | Some(Value::Null) => Ok(json!({})),
        Some(spec @ Value::Object(_)) => Ok(spec.clone()),
        Some(_) => Err(ConvertError::ReadDocument {
            source_name: name.to_owned(),
            message: "spec is not a map".into(),
        }),
    }
}

fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// istioctl's order: the profile, then every file, then every `--set`.
fn from_istio_operator(files: Vec<(String, Value)>, sets: &[String]) -> Result<Conversion, ConvertError> {
    let mut user = json!({});
    for (name, doc) in &files {
        tree::merge(&mut user, spec_of(name, doc)?);
    }
    let sets = sets
        .iter()
        .map(|flag| istioctl::parse_set(flag).map(|(path, value)| (flag, path, value)))
        .collect::<Result<Vec<_>, _>>()?;
    // The profile decides the base the flags' list selectors resolve against, so find it first.
    let profile_name = sets
        .iter()
        .rev()
        .find(|(_, path, _)| *path == Path::keys(&["profile"]))
        .map(|(_, _, v)| as_text(v))
        .or_else(|| user.get("profile").map(as_text))
        .unwrap_or_default();
    let profile = profiles::profile(&profile_name)?;
    for (flag, path, value) in sets {
        let malformed = |message: String| ConvertError::MalformedSet {
            flag: flag.clone(),
            message,
        };
        tree::seed_lists(&mut user, &profile, &path).map_err(malformed)?;
        tree::set(&mut user, &path, value).map_err(malformed)?;
    }
    let mut merged = profile;
    tree::merge(&mut merged, user.clone());
    let profile_name = if profile_name.is_empty() {
        "default".to_owned()
    } else {
        profile_name
    };
    let mut mapper = mapping::Mapper::new(&user, &profile_name);
    let mesh_install = mapper.mesh_install(merged, None)?;
    Ok(Conversion {
        mesh_install,
        unsupported: mapper.unsupported,
    })
}

/// A Sail `Istio`: its name and update strategy give the revision, `spec.version` the image tag, `spec.values` the
/// Helm values over the profile. Sail never installs gateways.
fn from_sail(name: &str, doc: &Value) -> Result<Conversion, ConvertError> {
    let mut spec = spec_of(name, doc)?;
    let user = json!({"values": spec.get("values").cloned().unwrap_or_else(|| json!({}))});
    let mut reports = Vec::new();
    let mut report = |setting: &str, value: Value, reason: &str| {
        reports.push(Unsupported {
            setting: setting.to_owned(),
            value,
            profile: None,
            reason: reason.to_owned(),
        })
    };
    let invalid = |setting: &str, message: String| ConvertError::InvalidSetting {
        setting: setting.to_owned(),
        message,
    };
    let profile_name = match tree::take(&mut spec, &["profile"]).map(|v| as_text(&v)) {
        None => "default".to_owned(),
        Some(p) if p.is_empty() => "default".to_owned(),
        Some(p) if p == "minimal" => return Err(ConvertError::UnknownProfile { profile: p }),
        Some(p) => p,
    };
    let sail_version = tree::take(&mut spec, &["version"]).map(|v| as_text(&v));
    let version = match &sail_version {
        None => DEFAULT_ISTIO_VERSION.to_owned(),
        Some(v) => {
            let bare = v.strip_prefix('v').unwrap_or(v);
            match bare.strip_suffix("-latest") {
                None => bare.to_owned(),
                Some(minor) if DEFAULT_ISTIO_VERSION.starts_with(&format!("{minor}.")) => {
                    report(
                        "version",
                        json!(v),
                        &format!(
                            "an alias Sail resolves to its newest {minor} release; pinned to {DEFAULT_ISTIO_VERSION}"
                        ),
                    );
                    DEFAULT_ISTIO_VERSION.to_owned()
                }
                Some(_) => {
                    return Err(invalid(
                        "version",
                        format!("{v:?} is an alias; give a release such as v{DEFAULT_ISTIO_VERSION}"),
                    ));
                }
            }
        }
    };
    let namespace = tree::take(&mut spec, &["namespace"])
        .map(|v| as_text(&v))
        .unwrap_or_else(|| crate::api::DEFAULT_NAMESPACE.to_owned());
    let mut strategy = tree::take(&mut spec, &["updateStrategy"]).unwrap_or_else(|| json!({}));
    let revision_based = match tree::take(&mut strategy, &["type"]).map(|v| as_text(&v)).as_deref() {
        None | Some("InPlace") => false,
        Some("RevisionBased") => {
            report(
                "updateStrategy.type",
                json!("RevisionBased"),
                "a MeshInstall is updated in place when spec.version changes; for a canary, add a second MeshInstall \
                 with its own spec.revision",
            );
            true
        }
        Some(other) => {
            return Err(invalid(
                "updateStrategy.type",
                format!("{other:?} is not InPlace or RevisionBased"),
            ));
        }
    };
    if let Value::Object(rest) = strategy {
        for (k, v) in rest {
            report(
                &format!("updateStrategy.{k}"),
                v,
                "MeshInstall keeps no inactive revisions to move or delete",
            );
        }
    }
    let object_name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .unwrap_or("default")
        .to_owned();
    let revision = if revision_based {
        format!(
            "{object_name}-{}",
            sail_version.unwrap_or_else(|| format!("v{version}")).replace('.', "-")
        )
    } else {
        object_name.clone()
    };
    let mut values = tree::take(&mut spec, &["values"]).unwrap_or_else(|| json!({}));
    // Sail sets these itself from the resource, whatever the values say.
    for keys in [&["revision"][..], &["defaultRevision"], &["global", "istioNamespace"]] {
        tree::take(&mut values, keys);
    }
    let profile = profiles::profile(&profile_name)?;
    let mut merged = json!({
        "components": {
            "base": {"enabled": true},
            "pilot": {"enabled": true},
            "ingressGateways": [],
            "egressGateways": [],
        },
        "values": profile.get("values").cloned().unwrap_or_else(|| json!({})),
        "tag": version,
        "revision": revision,
        "namespace": namespace,
    });
    tree::merge(&mut merged, json!({"values": values}));
    let mut mapper = mapping::Mapper::new(&user, &profile_name);
    mapper.unsupported = reports;
    if let Value::Object(rest) = spec {
        for (k, v) in rest {
            mapper.report(&Path(vec![Seg::Key(k)]), &v, "no MeshInstall equivalent");
        }
    }
    let mesh_install = mapper.mesh_install(merged, Some(object_name))?;
    Ok(Conversion {
        mesh_install,
        unsupported: mapper.unsupported,
    })
}

impl Conversion {
    /// The MeshInstall as YAML, leaving out what equals the MeshInstall's own defaults (version, hub and namespace
    /// are always written).
    pub fn to_yaml(&self) -> Result<String, ConvertError> {
        let mut doc = serde_json::to_value(&self.mesh_install).map_err(|e| ConvertError::Print(e.to_string()))?;
        if let Some(spec) = doc.get_mut("spec") {
            prune(spec)?;
        }
        if let Some(Value::Object(meta)) = doc.get_mut("metadata") {
            meta.retain(|_, v| !v.is_null());
        }
        crate::yaml::to_yaml(&Ordered(&doc)).map_err(|e| ConvertError::Print(e.to_string()))
    }
}

fn prune(spec: &mut Value) -> Result<(), ConvertError> {
    let defaults = serde_json::from_value::<MeshInstallSpec>(json!({}))
        .and_then(serde_json::to_value)
        .map_err(|e| ConvertError::Print(e.to_string()))?;
    let Value::Object(spec) = spec else {
        return Ok(());
    };
    if let Some(Value::Object(mesh)) = spec.get_mut("meshConfig") {
        mesh.retain(|k, v| !(k == "defaultConfig" && v.as_object().is_some_and(Map::is_empty)));
    }
    for key in [
        "meshConfig",
        "proxy",
        "injection",
        "controlPlane",
        "addons",
        "dataPlane",
    ] {
        if let (Some(Value::Object(ours)), Some(Value::Object(def))) = (spec.get_mut(key), defaults.get(key)) {
            ours.retain(|k, v| def.get(k) != Some(v));
        }
        if spec.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
            spec.remove(key);
        }
    }
    if spec.get("revision").and_then(Value::as_str) == Some("") {
        spec.remove("revision");
    }
    if let Some(Value::Array(gateways)) = spec.get_mut("gateways") {
        for g in gateways.iter_mut().filter_map(Value::as_object_mut) {
            if g.get("replicas") == Some(&json!(1)) {
                g.remove("replicas");
            }
        }
    }
    if spec
        .get("gateways")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        spec.remove("gateways");
    }
    Ok(())
}

/// Keys in the order a MeshInstall reads best; others follow alphabetically.
const KEY_ORDER: &[&str] = &[
    "apiVersion",
    "name",
    "kind",
    "metadata",
    "spec",
    "version",
    "hub",
    "namespace",
    "revision",
    "meshConfig",
    "proxy",
    "injection",
    "controlPlane",
    "gateways",
    "accessLogFile",
    "accessLogEncoding",
    "accessLogFormat",
    "replicas",
    "resources",
    "autoscale",
    "env",
    "service",
    "type",
    "ports",
    "port",
    "targetPort",
    "nodePort",
    "protocol",
    "requests",
    "limits",
    "min",
    "max",
];

/// A JSON value serialised with [`KEY_ORDER`].
struct Ordered<'a>(&'a Value);

impl Serialize for Ordered<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self.0 {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                let rank = |k: &str| KEY_ORDER.iter().position(|o| *o == k).unwrap_or(KEY_ORDER.len());
                entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
                let mut out = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    out.serialize_entry(k, &Ordered(v))?;
                }
                out.end()
            }
            Value::Array(items) => {
                let mut out = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    out.serialize_element(&Ordered(item))?;
                }
                out.end()
            }
            other => other.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sets(flags: &[&str]) -> Vec<String> {
        flags.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn trace_sampling_and_image_variants_become_istiod_env_and_the_tag() {
        let c = convert(
            &[],
            &sets(&[
                "values.pilot.traceSampling=0.5",
                "values.global.variant=distroless",
                "tag=1.28.1",
            ]),
        )
        .unwrap();
        assert_eq!(c.mesh_install.spec.control_plane.env["PILOT_TRACE_SAMPLING"], "0.5");
        assert_eq!(c.mesh_install.spec.version, "1.28.1-distroless");
        let c = convert(&[], &sets(&["values.pilot.traceSampling=1"])).unwrap();
        assert!(
            c.mesh_install.spec.control_plane.env.is_empty(),
            "1 is istiod's own default"
        );
    }

    #[test]
    fn values_win_over_the_top_level_fields_istioctl_copies_into_them() {
        let c = convert(
            &[],
            &sets(&[
                "hub=a.example/istio",
                "values.global.hub=b.example/istio",
                "namespace=mesh",
            ]),
        )
        .unwrap();
        assert_eq!(c.mesh_install.spec.hub, "b.example/istio");
        assert_eq!(c.mesh_install.spec.namespace, "mesh");
    }

    #[test]
    fn unsupported_lines_name_the_setting_value_origin_and_reason() {
        let line = Unsupported {
            setting: "components.pilot.enabled".into(),
            value: json!(false),
            profile: Some("empty".into()),
            reason: "MeshInstall always runs istiod".into(),
        };
        assert_eq!(
            line.to_string(),
            "components.pilot.enabled=false (profile empty): MeshInstall always runs istiod"
        );
    }

    #[test]
    fn printing_leaves_out_defaults_but_keeps_version_hub_and_namespace() {
        let c = convert(&[], &sets(&["profile=minimal", "values.pilot.autoscaleEnabled=false"])).unwrap();
        assert_eq!(
            c.to_yaml().unwrap(),
            "apiVersion: mizzen.io/v1alpha1\nkind: MeshInstall\nmetadata:\n  name: default\nspec:\n  version: \"1.28.0\"\n  \
             hub: docker.io/istio\n  namespace: istio-system\n"
        );
    }
}
