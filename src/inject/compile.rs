//! The injection compiled once per configuration: an [`InjectionConfig`] with everything that does not depend on
//! the pod worked out ahead (the mesh's effective proxy configuration and its `PROXY_CONFIG` text, images, the
//! template pieces a pod without annotations gets), so that per pod only what depends on the pod is computed.
#![cfg_attr(not(test), deny(clippy::indexing_slicing))]

use std::cell::RefCell;
use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::json_text::{self, Known};
use crate::precoded::{Placed, Precoded};

use super::config::InjectionConfig;
use super::template::{self, EnvVar, Settings, Static};
use super::{PROXY_NAME, fragment, prometheus, proxy_config};

/// The name of the one stand-in that takes the place of all the compiled volumes in a pod's fragment (not a valid
/// volume name, and a pod that has a volume of this name anyway gets no stand-ins): one item to merge, carry and
/// drop instead of one per volume. Stage 5 writes the compiled volumes in its place, in order.
pub const COMPILED_VOLUMES: &str = "compiled volumes (mizzen)";

/// The compiled parts as JSON text, for stage 5 to write a pod's stand-ins with. Each text is kept with its base64
/// ([`Precoded`]), which the answer copies where the text was written into the patch.
#[derive(Debug)]
struct Text {
    /// Init containers by name.
    init_containers: Vec<(String, Precoded)>,
    /// The proxy up to its env list (`{"args":…,"env":[`).
    proxy_head: Precoded,
    /// The proxy's env in order: each run of fixed entries as one text (the entries joined by commas, written with
    /// one copy), and the per-pod variables between them.
    env: Vec<EnvText>,
    /// The proxy after its env list (`],"image":…}`).
    proxy_tail: Precoded,
    /// Volumes by name.
    volumes: Vec<(String, Precoded)>,
    /// The volumes' texts joined by commas: the items of a list that holds them all.
    volume_list: Precoded,
    /// The operations that add the volumes before a pod's own ([`super::patch::compiled_volume_ops`]).
    volume_ops: Precoded,
    /// Later stages only append to the env (no compiled entry has a name they replace).
    appendable: bool,
    /// `sidecar.istio.io/status` of a pod whose patch is written from the lists (see [`super::patch::Lists`]):
    /// the compiled items' names only, so the same for every such pod. [`Text::of`] leaves it empty and
    /// [`Compiled::render`], which alone makes a `Text`, sets it before any stand-ins use it.
    status: Known,
}

/// A part of the proxy's compiled env.
#[derive(Debug, PartialEq)]
enum EnvText {
    /// Fixed entries, one after another, as JSON text joined by commas (never empty).
    Fixed(Precoded),
    /// A per-pod variable: its index in the env (its entries are the pod's [`template::EnvHoles`]).
    Hole(usize),
}

impl Text {
    fn of(parts: &Static) -> Result<Self, serde_json::Error> {
        let named = |items: &[Value]| -> Result<Vec<(String, Precoded)>, serde_json::Error> {
            items
                .iter()
                .map(|i| {
                    let name = i.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
                    Ok((name, Precoded::new(serde_json::to_string(i)?)))
                })
                .collect()
        };
        // The proxy's members in key order, split where `env` goes.
        let (mut head, mut tail) = (String::from("{"), String::new());
        if let Some(proxy) = parts.proxy_container().as_object() {
            for (key, value) in proxy {
                let member = format!("{}:{}", serde_json::to_string(key)?, serde_json::to_string(value)?);
                if key.as_str() < "env" {
                    head.push_str(&member);
                    head.push(',');
                } else {
                    tail.push(',');
                    tail.push_str(&member);
                }
            }
        }
        head.push_str("\"env\":[");
        tail.insert(0, ']');
        tail.push('}');
        let mut env = Vec::new();
        let mut appendable = true;
        // The run of fixed entries being joined.
        let mut run: Option<String> = None;
        for (i, var) in parts.env().iter().enumerate() {
            match var {
                EnvVar::Fixed(v) => {
                    let name = v.get("name").and_then(Value::as_str);
                    appendable &= name != Some(prometheus::SCRAPE_CONFIG_ENV) && name != Some("ISTIO_KUBE_APP_PROBERS");
                    let entry = serde_json::to_string(v)?;
                    match &mut run {
                        Some(run) => {
                            run.push(',');
                            run.push_str(&entry);
                        }
                        None => run = Some(entry),
                    }
                }
                _ => {
                    env.extend(run.take().map(|run| EnvText::Fixed(Precoded::new(run))));
                    env.push(EnvText::Hole(i));
                }
            }
        }
        env.extend(run.map(|run| EnvText::Fixed(Precoded::new(run))));
        let volumes = named(parts.volumes())?;
        let texts = || volumes.iter().map(|(_, text)| text.text());
        let volume_list = Precoded::new(texts().collect::<Vec<_>>().join(","));
        let volume_ops = Precoded::new(super::patch::compiled_volume_ops(texts()));
        Ok(Self {
            init_containers: named(parts.init_containers())?,
            proxy_head: Precoded::new(head),
            env,
            proxy_tail: Precoded::new(tail),
            volumes,
            volume_list,
            volume_ops,
            appendable,
            status: Known::new(String::new()),
        })
    }
}

/// A pod's fragment stand-ins for the compiled parts (see [`template::Static::stand_in_fragment`]), with what
/// stage 5 needs to write them: the compiled text and the pod's entries of the proxy's per-pod env variables.
pub struct StandIns<'c> {
    text: &'c Text,
    /// The entries of the per-pod variables as JSON text, by the index of their variable in the parts' env (what
    /// [`EnvText::Hole`] holds).
    holes: template::EnvHoles,
}

/// What [`StandIns::write`] did with an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Written {
    /// It was a stand-in: its compiled text was written.
    Yes,
    /// It is not a stand-in.
    NotAStandIn,
    /// It has a stand-in's name but is not one as made (a later stage changed it): no text can be written.
    Changed,
}

impl<'c> StandIns<'c> {
    /// `sidecar.istio.io/status` of a pod whose patch is written from the lists (see [`super::patch::Lists`]).
    pub fn lists_status(&self) -> &Known {
        &self.text.status
    }

    /// Whether `name` in `list` is a stand-in's.
    pub fn names(&self, list: &str, name: &str) -> bool {
        match list {
            "initContainers" => name == PROXY_NAME || self.text.init_containers.iter().any(|(n, _)| n == name),
            "containers" => name == PROXY_NAME,
            "volumes" => name == COMPILED_VOLUMES,
            _ => false,
        }
    }

    /// The compiled volumes' names, in order: what [`COMPILED_VOLUMES`] stands for.
    pub fn volume_names(&self) -> impl Iterator<Item = &str> {
        self.text.volumes.iter().map(|(name, _)| name.as_str())
    }

    /// The compiled volumes' texts, in order, when `item` of `list` is the [`COMPILED_VOLUMES`] stand-in as made.
    pub fn volume_block(&self, list: &str, item: &Value) -> Option<impl Iterator<Item = &'c Precoded> + use<'c>> {
        let map = item.as_object().filter(|m| list == "volumes" && m.len() == 1)?;
        let text: &'c Text = self.text;
        (map.get("name")?.as_str()? == COMPILED_VOLUMES).then(|| text.volumes.iter().map(|(_, text)| text))
    }

    /// The operations that add the compiled volumes before a pod's own, when `item` of `list` is the
    /// [`COMPILED_VOLUMES`] stand-in as made.
    pub fn volume_ops(&self, list: &str, item: &Value) -> Option<&'c Precoded> {
        let text: &'c Text = self.text;
        self.volume_block(list, item).map(|_| &text.volume_ops)
    }

    /// Writes the injected pod's `item` of `list` from the compiled text when it is a stand-in, noting in `placed`
    /// where each compiled text went in `out` (see [`place`]).
    pub fn write(&self, out: &mut Vec<u8>, placed: &mut Vec<Placed<'c>>, list: &str, item: &Value) -> Written {
        let text: &'c Text = self.text;
        let Some((name, map)) = item
            .as_object()
            .and_then(|m| Some((m.get("name")?.as_str()?, m)))
            .filter(|(name, _)| self.names(list, name))
        else {
            return Written::NotAStandIn;
        };
        if name == PROXY_NAME {
            let Some(appended) = map.get("env").and_then(Value::as_array).filter(|_| map.len() == 2) else {
                return Written::Changed;
            };
            place(out, placed, &text.proxy_head);
            let mut first = true;
            let mut sep = |out: &mut Vec<u8>| {
                if !std::mem::take(&mut first) {
                    out.push(b',');
                }
            };
            for part in &text.env {
                match part {
                    EnvText::Fixed(run) => {
                        sep(out);
                        place(out, placed, run);
                    }
                    EnvText::Hole(i) => {
                        for entry in self.holes.of(*i) {
                            sep(out);
                            out.extend_from_slice(entry);
                        }
                    }
                }
            }
            for v in appended {
                sep(out);
                json_text::write_value(out, v);
            }
            place(out, placed, &text.proxy_tail);
            return Written::Yes;
        }
        if map.len() != 1 {
            return Written::Changed;
        }
        if list == "volumes" {
            // The block of compiled volumes, written in place as the items of a list (see [`Self::volume_block`]
            // for the items written one by one).
            place(out, placed, &text.volume_list);
            return Written::Yes;
        }
        match text.init_containers.iter().find(|(n, _)| n == name) {
            Some((_, init)) => {
                place(out, placed, init);
                Written::Yes
            }
            None => Written::Changed,
        }
    }
}

/// Appends a compiled text to `out`, noting where it went (when it keeps its base64: see [`Precoded::placeable`])
/// so that the answer copies its base64 ([`crate::precoded::encode_append`]).
pub(crate) fn place<'c>(out: &mut Vec<u8>, placed: &mut Vec<Placed<'c>>, text: &'c Precoded) {
    if text.placeable() {
        placed.push((out.len(), text));
    }
    out.extend_from_slice(text.text().as_bytes());
}

/// A built-in template's [`Static`] parts rendered for a pod without annotations, with what the rendering read.
#[derive(Debug)]
struct Compiled {
    parts: Static,
    /// Their text; `None` if it could not be written (the pods then get their items as values).
    text: Option<Text>,
    /// The annotations the rendering read: a pod with any of them gets parts of its own.
    reads: BTreeSet<&'static str>,
    interception_mode: String,
    native: bool,
    hold: bool,
}

impl Compiled {
    fn render(settings: Settings, render: fn(&Settings) -> Static) -> Self {
        let reads = RefCell::new(BTreeSet::new());
        let revision = settings.config.revision_label().to_owned();
        let (parts, interception_mode, native, hold) = {
            let settings = Settings {
                reads: Some(&reads),
                ..settings
            };
            (
                render(&settings),
                settings.interception_mode.to_owned(),
                settings.native,
                settings.hold,
            )
        };
        let mut text = Text::of(&parts).ok();
        if let Some(text) = &mut text {
            // The fragment of a pod that takes the lists: the stand-ins, with no volume of the pod's own (no
            // `istio-certs`), the proxy an init container when native (as `fragment::render` places it).
            let mut fragment = parts.stand_in_fragment(template::PodParts {
                labels: Vec::new(),
                annotations: Vec::new(),
                certs_volume: None,
            });
            if native {
                fragment.proxy_to_init_containers();
            }
            let stand_ins = StandIns {
                text,
                holes: template::EnvHoles::default(),
            };
            let status = super::merge::status(&fragment, &revision, Some(&stand_ins));
            text.status = Known::new(status);
        }
        Self {
            text,
            parts,
            reads: reads.into_inner(),
            interception_mode,
            native,
            hold,
        }
    }

    /// Whether the parts rendered for `settings` would be these: the same derived settings (in particular the
    /// mesh's own proxy configuration, `mesh_proxy_config`) and none of the annotations read.
    fn fits(&self, settings: &Settings, mesh_proxy_config: &Map<String, Value>) -> bool {
        std::ptr::eq(settings.proxy_config, mesh_proxy_config)
            && settings.reads.is_none()
            && settings.interception_mode == self.interception_mode
            && settings.native == self.native
            && settings.hold == self.hold
            && settings.openshift_uid.is_none()
            && settings.proxy_uid == fragment::DEFAULT_PROXY_ID
            && settings.proxy_gid == fragment::DEFAULT_PROXY_ID
            && !self.reads.iter().any(|k| settings.annotations.contains_key(*k))
    }
}

/// A compiled injection configuration. Build it once per configuration (the webhook keeps one per revision) and
/// inject any number of pods with it.
#[derive(Debug)]
pub struct Injector {
    config: InjectionConfig,
    /// Istio's ProxyConfig defaults, which `PROXY_CONFIG` is written relative to.
    proxy_defaults: Map<String, Value>,
    /// Defaults < the mesh's `defaultConfig`: the effective proxy configuration of a pod without
    /// `proxy.istio.io/config`.
    mesh_proxy_config: Map<String, Value>,
    /// `PROXY_CONFIG` of such a pod.
    mesh_proxy_config_json: String,
    /// The `sidecar` template's parts for a pod without annotations.
    sidecar: Compiled,
    /// The `gateway` template's parts for a pod without annotations.
    gateway: Compiled,
}

impl Injector {
    /// Compiles a configuration.
    pub fn compile(config: InjectionConfig) -> Self {
        let proxy_defaults = proxy_config::defaults(&config.ca_address());
        let mesh_proxy_config = proxy_config::merge(&proxy_defaults, &config.mesh.default_config);
        let mesh_proxy_config_json = proxy_config::to_env_json(&mesh_proxy_config, &proxy_defaults);
        let no_annotations = Map::new();
        let settings = |native| Settings {
            config: &config,
            annotations: &no_annotations,
            reads: None,
            proxy_config: &mesh_proxy_config,
            proxy_config_json: &mesh_proxy_config_json,
            interception_mode: fragment::interception_mode(&no_annotations, &mesh_proxy_config),
            native,
            hold: fragment::hold(&config, &mesh_proxy_config),
            openshift_uid: None,
            proxy_uid: fragment::DEFAULT_PROXY_ID,
            proxy_gid: fragment::DEFAULT_PROXY_ID,
        };
        let sidecar = Compiled::render(settings(config.native_sidecars_by_default()), template::sidecar_static);
        let gateway = Compiled::render(settings(false), template::gateway_static);
        Self {
            config,
            proxy_defaults,
            mesh_proxy_config,
            mesh_proxy_config_json,
            sidecar,
            gateway,
        }
    }

    /// The configuration it was compiled from.
    pub fn config(&self) -> &InjectionConfig {
        &self.config
    }

    /// Istio's ProxyConfig defaults.
    pub fn proxy_defaults(&self) -> &Map<String, Value> {
        &self.proxy_defaults
    }

    /// The mesh's effective proxy configuration.
    pub fn mesh_proxy_config(&self) -> &Map<String, Value> {
        &self.mesh_proxy_config
    }

    /// `PROXY_CONFIG` of a pod without `proxy.istio.io/config`.
    pub fn mesh_proxy_config_json(&self) -> &str {
        &self.mesh_proxy_config_json
    }

    /// The built-in template's stand-in fragment for a pod whose patch can be written from the compiled text: its
    /// settings fit the compiled parts, and nothing the later stages do to a template's items beyond appending to
    /// the proxy's env can happen (`mergeable`: no earlier injection, no own declarations of template items, no
    /// user volumes, no TPROXY).
    pub fn stand_ins(
        &self,
        ctx: &template::Context,
        gateway: bool,
        mergeable: bool,
    ) -> Option<(template::Fragment, StandIns<'_>)> {
        let compiled = if gateway { &self.gateway } else { &self.sidecar };
        let text = compiled.text.as_ref().filter(|t| t.appendable)?;
        if !mergeable || ctx.interception_mode() == "TPROXY" || !compiled.fits(&ctx.settings, &self.mesh_proxy_config) {
            return None;
        }
        let pod_volumes = ctx.spec.get("volumes").and_then(Value::as_array);
        if pod_volumes.into_iter().flatten().any(|v| {
            let name = v.get("name").and_then(Value::as_str).unwrap_or_default();
            name == "istio-certs" || name == COMPILED_VOLUMES || text.volumes.iter().any(|(n, _)| n == name)
        }) {
            return None;
        }
        let pod = if gateway {
            template::gateway_pod_parts(ctx)
        } else {
            template::sidecar_pod_parts(ctx)
        };
        let fragment = compiled.parts.stand_in_fragment(pod);
        let holes = template::env_holes(ctx, compiled.parts.env());
        Some((fragment, StandIns { text, holes }))
    }

    /// The `sidecar` template's [`Static`] parts for a pod: the compiled ones when they fit, else its own.
    pub fn sidecar_parts(&self, settings: &Settings) -> Static {
        if self.sidecar.fits(settings, &self.mesh_proxy_config) {
            self.sidecar.parts.clone()
        } else {
            template::sidecar_static(settings)
        }
    }

    /// The `gateway` template's [`Static`] parts for a pod: the compiled ones when they fit, else its own.
    pub fn gateway_parts(&self, settings: &Settings) -> Static {
        if self.gateway.fits(settings, &self.mesh_proxy_config) {
            self.gateway.parts.clone()
        } else {
            template::gateway_static(settings)
        }
    }
}

impl From<InjectionConfig> for Injector {
    fn from(config: InjectionConfig) -> Self {
        Self::compile(config)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// Every annotation `annotations.rs` names, read from its source so that a new one is covered too.
    fn every_annotation() -> Vec<String> {
        include_str!("annotations.rs")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pub const "))
            .filter_map(|l| l.split_once("= \"").map(|(_, v)| v.trim_end_matches("\";").to_owned()))
            .collect()
    }

    fn configs() -> Vec<InjectionConfig> {
        crate::test_support::configs_with(&[
            ("components.cni.enabled", "true"),
            ("values.global.mountMtlsCerts", "true"),
            ("values.global.proxy.holdApplicationUntilProxyStarts", "true"),
            ("env.ENABLE_NATIVE_SIDECARS", "false"),
            ("meshConfig.defaultConfig.interceptionMode", "TPROXY"),
            ("meshConfig.defaultConfig.proxyMetadata.FOO", "bar"),
            ("values.global.proxy.enableCoreDump", "true"),
            ("values.global.network", "net1"),
        ])
    }

    /// Values that make each annotation differ from its default (and some that are plain text).
    fn values() -> [&'static str; 6] {
        ["true", "false", "7", "TPROXY", "NONE", "10.0.0.0/8"]
    }

    #[test]
    fn compiled_parts_are_what_the_pod_would_render() {
        for config in configs() {
            let injector = Injector::compile(config);
            let mut cases = vec![Map::new()];
            for key in every_annotation().into_iter().chain(["team".to_owned()]) {
                for value in values() {
                    let mut a = Map::new();
                    a.insert(key.clone(), json!(value));
                    cases.push(a);
                }
            }
            for annotations in &cases {
                let settings = Settings {
                    config: injector.config(),
                    annotations,
                    reads: None,
                    proxy_config: injector.mesh_proxy_config(),
                    proxy_config_json: injector.mesh_proxy_config_json(),
                    interception_mode: fragment::interception_mode(annotations, injector.mesh_proxy_config()),
                    native: injector.sidecar.native,
                    hold: injector.sidecar.hold,
                    openshift_uid: None,
                    proxy_uid: fragment::DEFAULT_PROXY_ID,
                    proxy_gid: fragment::DEFAULT_PROXY_ID,
                };
                assert_eq!(
                    injector.sidecar_parts(&settings),
                    template::sidecar_static(&settings),
                    "{annotations:?}"
                );
                let settings = Settings {
                    native: false,
                    ..settings
                };
                assert_eq!(
                    injector.gateway_parts(&settings),
                    template::gateway_static(&settings),
                    "{annotations:?}"
                );
            }
        }
    }

    #[test]
    fn the_compiled_env_is_its_fixed_entries_in_runs_and_the_per_pod_variables_between() {
        for config in configs() {
            let injector = Injector::compile(config);
            for compiled in [&injector.sidecar, &injector.gateway] {
                let text = compiled.text.as_ref().expect("the built-in parts are written");
                let env = compiled.parts.env();
                // Walks the env with the parts: a run, read back as JSON, is the fixed entries up to the next
                // per-pod variable; a hole is that variable, by its index in the env.
                let mut at = 0;
                for part in &text.env {
                    match part {
                        EnvText::Fixed(run) => {
                            let entries: Vec<Value> = serde_json::from_str(&format!("[{}]", run.text())).unwrap();
                            let fixed: Vec<&Value> = env[at..]
                                .iter()
                                .map_while(|v| match v {
                                    EnvVar::Fixed(v) => Some(v),
                                    _ => None,
                                })
                                .collect();
                            assert_eq!(
                                entries.iter().collect::<Vec<_>>(),
                                fixed,
                                "a run is all the entries to a hole"
                            );
                            at += fixed.len();
                        }
                        EnvText::Hole(i) => {
                            assert_eq!(*i, at);
                            assert!(!matches!(env[at], EnvVar::Fixed(_)));
                            at += 1;
                        }
                    }
                }
                assert_eq!(at, env.len(), "every variable has its part");
                assert!(text.env.iter().any(|p| matches!(p, EnvText::Hole(_))));
            }
        }
    }

    #[test]
    fn a_pod_without_annotations_gets_the_compiled_parts() {
        let injector = Injector::compile(InjectionConfig::default());
        let none = Map::new();
        let mut team = Map::new();
        team.insert("team".into(), json!("a"));
        let mut level = Map::new();
        level.insert("sidecar.istio.io/logLevel".into(), json!("debug"));
        let fits = |annotations: &Map<String, Value>| {
            injector.sidecar.fits(
                &Settings {
                    config: injector.config(),
                    annotations,
                    reads: None,
                    proxy_config: injector.mesh_proxy_config(),
                    proxy_config_json: injector.mesh_proxy_config_json(),
                    interception_mode: "REDIRECT",
                    native: injector.sidecar.native,
                    hold: injector.sidecar.hold,
                    openshift_uid: None,
                    proxy_uid: fragment::DEFAULT_PROXY_ID,
                    proxy_gid: fragment::DEFAULT_PROXY_ID,
                },
                injector.mesh_proxy_config(),
            )
        };
        assert!(fits(&none) && fits(&team));
        assert!(!fits(&level), "logLevel changes the proxy's args");
        assert!(injector.sidecar.reads.contains("sidecar.istio.io/proxyImage"));
    }
}
