//! Revisions, revision tags and supported Istio versions: which MeshInstall serves which injection name
//! (`default`, a revision, a tag), decided the same way for the operator's rendering, the status and
//! `mizzenctl proxy-status`.
//!
//! The rules, as Istio's `istioctl tag` has them:
//! - a revision is served by the MeshInstall of that revision (the oldest, when two claim it);
//! - a tag is held by the oldest MeshInstall that lists it in `spec.revisionTags`; a younger one reports a conflict,
//!   and so does a tag that names an existing revision (namespaces labelled with it would be injected twice), except
//!   that a revision does not take a name an older MeshInstall holds as a tag today: that revision is the conflict,
//!   for as long as the tag is held (also by an install that is paused or whose spec does not render, which keeps
//!   its webhook configurations);
//! - the name `default` (namespaces labelled `istio-injection=enabled` or `istio.io/rev=default`) is held by the
//!   oldest MeshInstall that lists the tag `default`, else by the default revision (`spec.revision: ""`).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::ResourceExt;

use crate::api::{MeshInstall, MeshInstallSpec};

/// Istio minor releases this mizzen release installs and injects: the current one and the one before.
pub const SUPPORTED_MINORS: &[(u64, u64)] = &[(1, 27), (1, 28)];

/// The supported releases, as a user reads them (`1.27.x to 1.28.x`).
pub fn supported_range() -> String {
    let first = SUPPORTED_MINORS.first().copied().unwrap_or_default();
    let last = SUPPORTED_MINORS.last().copied().unwrap_or_default();
    format!("{}.{}.x to {}.{}.x", first.0, first.1, last.0, last.1)
}

/// Whether `version` (an image tag such as `1.28.1` or `1.28.1-distroless`) is a supported Istio release; the
/// error says what is supported.
pub fn check_version(version: &str) -> Result<(), String> {
    let release = version.split_once('-').map_or(version, |(release, _)| release);
    let mut parts = release.split('.');
    let number = |p: Option<&str>| {
        p.filter(|s| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
    };
    let parsed = match (
        number(parts.next()),
        number(parts.next()),
        number(parts.next()),
        parts.next(),
    ) {
        (Some(major), Some(minor), Some(_patch), None) => Some((major, minor)),
        _ => None,
    };
    match parsed {
        Some(minor) if SUPPORTED_MINORS.contains(&minor) => Ok(()),
        Some(_) => Err(format!(
            "Istio {version} is not supported by this mizzen release (supported: {})",
            supported_range()
        )),
        None => Err(format!(
            "{version:?} is not an Istio release tag such as 1.28.0 (supported: {})",
            supported_range()
        )),
    }
}

/// The spec the injector serves for a MeshInstall: the one the operator last applied ([`applied_spec`]), so that a
/// spec it refuses, fails to apply or does not reconcile (paused) reaches no new pod. Without one (before the first
/// apply, a spec too long to record, a status an older operator wrote): its own spec, or, while `spec.version` names
/// an unsupported release, the same with the version last rolled out (`status.version`); `None` when no supported
/// version was ever rolled out (the operator has changed nothing, so the webhook serves nothing for it either).
pub fn serving_spec(mi: &MeshInstall) -> Option<MeshInstallSpec> {
    if let Some(spec) = applied_spec(mi) {
        return Some(spec);
    }
    if check_version(&mi.spec.version).is_ok() {
        return Some(mi.spec.clone());
    }
    let applied = mi.status.as_ref()?.version.as_ref()?;
    check_version(applied).ok()?;
    let mut spec = mi.spec.clone();
    spec.version = applied.clone();
    Some(spec)
}

/// The spec the operator last applied (`status.appliedSpec`), when it can be trusted to be that: written by this
/// operator's last status write (an operator of an earlier release, after a downgrade, does not record it and may
/// have applied other specs since), readable by this release, of a supported version, with the spec's own
/// (immutable) revision and namespace, and injection settings the operator accepts. A status is written by whoever
/// may write `meshinstalls/status`; past these checks, that permission decides what is injected as the spec's does.
pub fn applied_spec(mi: &MeshInstall) -> Option<MeshInstallSpec> {
    let status = mi.status.as_ref()?;
    if !crate::status::wrote_last(status) || status.applied_generation.is_none() {
        return None;
    }
    let spec: MeshInstallSpec = serde_json::from_str(status.applied_spec.as_ref()?).ok()?;
    let trusted = spec.revision == mi.spec.revision
        && spec.namespace == mi.spec.namespace
        && check_version(&spec.version).is_ok()
        && crate::inject::validate::mesh_install(&spec).is_ok();
    trusted.then_some(spec)
}

/// The MeshInstall as the webhook serves it, for reports of what it injects: its spec replaced by [`serving_spec`]'s
/// (unchanged when it serves nothing).
pub fn as_served(mut mi: MeshInstall) -> MeshInstall {
    if let Some(spec) = serving_spec(&mi) {
        mi.spec = spec;
    }
    mi
}

/// What one MeshInstall holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holdings {
    /// The tags it holds, sorted; `default` included when it serves the default selectors (explicitly or as the
    /// default revision).
    pub tags: Vec<String>,
    /// A default revision whose `default` name was taken by an explicit `default` tag elsewhere: its own default
    /// webhooks step aside.
    pub default_elsewhere: bool,
    /// Its own revision is held by an older install (as a tag or revision): it renders no webhook configuration of
    /// its own revision.
    pub revision_blocked: bool,
    /// Tags it lists but does not hold, and its revision when blocked, each with the reason.
    pub conflicts: Vec<String>,
}

impl Holdings {
    /// The tags to render webhook configurations for: those held, without the default revision's own `default`.
    pub fn rendered_tags(&self, spec: &MeshInstallSpec) -> Vec<String> {
        self.tags
            .iter()
            .filter(|t| !(spec.revision.is_empty() && t.as_str() == "default"))
            .cloned()
            .collect()
    }
}

fn older(a: &MeshInstall, b: &MeshInstall) -> std::cmp::Ordering {
    let key = |m: &MeshInstall| (m.metadata.creation_timestamp.as_ref().map(|t| t.0), m.name_any());
    key(a).cmp(&key(b))
}

/// Who holds what among `meshes`, by MeshInstall name, plus the index from each injection name (`default`, a
/// revision, a tag) to the MeshInstall serving it. Pass only MeshInstalls that can serve (not being deleted, not
/// paused, with a spec that renders): one that cannot must not take a name from one that serves it.
///
/// A revision is its install's own name and wins over a tag of that name (namespaces labelled with it would otherwise
/// be injected twice), except that an install never takes a name an older install holds as a tag today
/// (`status.revisionTags`): that install's revision is the conflict then, for as long as the tag is held. Among tags, the oldest install
/// listing one holds it. `default` goes to the oldest install listing the tag `default`, else to the default revision
/// (an explicit `default` tag takes it whatever their ages, as `istioctl tag set default` does).
pub fn assign<'a>(meshes: impl IntoIterator<Item = &'a MeshInstall>) -> Assignment {
    let meshes: Vec<&MeshInstall> = meshes.into_iter().collect();
    assign_among(meshes.iter().copied(), meshes.iter().copied())
}

/// [`assign`], where a tag keeps a revision from taking its name while any of `holders` holds it, even one that
/// cannot serve (paused, or with a spec that does not render): such an install keeps its webhook configurations,
/// the tag's too, so a revision of that name would have its namespaces injected twice.
pub fn assign_among<'a>(
    meshes: impl IntoIterator<Item = &'a MeshInstall>,
    holders: impl IntoIterator<Item = &'a MeshInstall>,
) -> Assignment {
    let holders: Vec<&MeshInstall> = holders
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    let mut live: Vec<&MeshInstall> = meshes
        .into_iter()
        .filter(|m| m.metadata.deletion_timestamp.is_none())
        .collect();
    live.sort_by(|a, b| older(a, b));
    let mut holdings: BTreeMap<String, Holdings> = live.iter().map(|m| (m.name_any(), Holdings::default())).collect();
    // Name → holder.
    let mut revisions: BTreeMap<String, String> = BTreeMap::new();
    for mi in &live {
        if mi.spec.revision.is_empty() {
            continue;
        }
        let rev = &mi.spec.revision;
        // Held as a tag today by an older install: it keeps the tag for as long as it holds it, not only until this
        // install's first status (which a conflict writes too). A younger holder cannot have taken a name that was
        // an install's revision, so it lost the tag to a revision changed later.
        // A holder that cannot serve (not among `live`) keeps what it holds whatever its spec says now: it keeps
        // its webhook configurations until it serves again.
        let held_as_tag = holders.iter().find(|other| {
            other.name_any() != mi.name_any()
                && older(other, mi).is_lt()
                && (other.spec.revision_tags.contains(rev) || !live.iter().any(|m| m.name_any() == other.name_any()))
                && other.status.as_ref().is_some_and(|s| s.revision_tags.contains(rev))
        });
        let entry = holdings.entry(mi.name_any()).or_default();
        if let Some(holder) = held_as_tag {
            entry.revision_blocked = true;
            entry.conflicts.push(format!(
                "spec.revision: {rev} is a revision tag MeshInstall {} holds (namespaces labelled istio.io/rev={rev} would be injected twice)",
                holder.name_any()
            ));
        } else if let Some(holder) = revisions.get(rev) {
            entry.revision_blocked = true;
            entry.conflicts.push(format!(
                "spec.revision: {rev} is the revision of the older MeshInstall {holder} as well"
            ));
        } else {
            revisions.insert(rev.clone(), mi.name_any());
        }
    }
    let mut tags: BTreeMap<String, String> = BTreeMap::new();
    for mi in &live {
        let name = mi.name_any();
        let entry = holdings.entry(name.clone()).or_default();
        for (i, tag) in mi.spec.revision_tags.iter().enumerate() {
            if mi.spec.revision.is_empty() && tag == "default" {
                continue; // the default revision's own name
            }
            if let Some(owner) = revisions.get(tag) {
                entry.conflicts.push(format!(
                    "spec.revisionTags[{i}]: revision tag {tag} names the revision of MeshInstall {owner} (namespaces labelled istio.io/rev={tag} would be injected twice)"
                ));
            } else if let Some(holder) = tags.get(tag) {
                if *holder != name {
                    entry.conflicts.push(format!(
                        "spec.revisionTags[{i}]: revision tag {tag} is held by the older MeshInstall {holder}"
                    ));
                }
            } else {
                tags.insert(tag.clone(), name.clone());
                entry.tags.push(tag.clone());
            }
        }
    }
    // `default`: an explicit tag wins over the default revision.
    let default_revision = live.iter().find(|m| m.spec.revision.is_empty()).map(|m| m.name_any());
    match tags.get("default") {
        Some(_) => {
            for mi in live.iter().filter(|m| m.spec.revision.is_empty()) {
                holdings.entry(mi.name_any()).or_default().default_elsewhere = true;
            }
        }
        None => {
            if let Some(name) = &default_revision {
                holdings.entry(name.clone()).or_default().tags.push("default".into());
                tags.insert("default".into(), name.clone());
            }
        }
    }
    for h in holdings.values_mut() {
        h.tags.sort();
    }
    let mut serving = revisions;
    serving.extend(tags);
    Assignment { holdings, serving }
}

/// The outcome of [`assign`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// By MeshInstall name.
    pub holdings: BTreeMap<String, Holdings>,
    /// Injection name (`default`, a revision, a tag) → the MeshInstall serving it.
    pub serving: BTreeMap<String, String>,
}

impl Assignment {
    /// What a MeshInstall holds (nothing when unknown).
    pub fn of(&self, name: &str) -> Holdings {
        self.holdings.get(name).cloned().unwrap_or_default()
    }

    /// The MeshInstall whose webhook the API server sends a new pod with these labels to, in a namespace with these
    /// labels (the selectors of the webhook configurations mizzen renders), if any.
    pub fn injector_of(
        &self,
        namespace_labels: &BTreeMap<String, String>,
        pod_labels: &BTreeMap<String, String>,
    ) -> Option<&str> {
        match crate::inject::decision::webhook_route(namespace_labels, pod_labels) {
            crate::inject::Route::Sent(name, _) => self.serving.get(&name).map(String::as_str),
            crate::inject::Route::NotSent(_) => None,
        }
    }
}

/// The webhook configurations `holder` serves names through that another MeshInstall would take over in place if
/// `holder` were gone, each with that install's name: its heir. The operator gives the configuration an owner
/// reference to the heir besides its controller reference, so that deleting the holder does not delete the
/// configuration (the garbage collector deletes an object only once none of its owners is left), and the heir
/// rewrites it for itself when it sees the holder go. Without that reference the heir races the garbage collector,
/// and a pod created between the deletion and the heir's new configuration gets no sidecar.
///
/// `meshes` and `holders` as for [`assign_among`]; a name whose heir would serve it through another configuration
/// (a tag becoming a revision of that name) has no heir here: that configuration is new.
pub fn heirs<'a>(
    meshes: impl IntoIterator<Item = &'a MeshInstall>,
    holders: impl IntoIterator<Item = &'a MeshInstall>,
    holder: &MeshInstall,
) -> BTreeMap<String, String> {
    let meshes: Vec<&MeshInstall> = meshes.into_iter().collect();
    let holders: Vec<&MeshInstall> = holders.into_iter().collect();
    let name = holder.name_any();
    let now = assign_among(meshes.iter().copied(), holders.iter().copied());
    let others = |m: &&&MeshInstall| m.name_any() != name;
    let without = assign_among(
        meshes.iter().filter(others).copied(),
        holders.iter().filter(others).copied(),
    );
    let mut heirs = BTreeMap::new();
    for (served, _) in now.serving.iter().filter(|(_, by)| **by == name) {
        let Some(heir) = without
            .serving
            .get(served)
            .and_then(|h| meshes.iter().find(|m| m.name_any() == *h))
        else {
            continue;
        };
        let config = webhook_config_for(&holder.spec, served);
        if webhook_config_for(&heir.spec, served) == config {
            heirs.insert(config, heir.name_any());
        }
    }
    heirs
}

/// Where the API server sends new pods now, as an [`Assignment`] whose `holdings` have only their `tags` (the names
/// other than its own revision, `default` included, that each install's live configurations serve; the rest of what
/// each install holds is [`assign`]'s): each of mizzen's live webhook configurations (`configs`, their metadata), by
/// the name it serves, to the MeshInstall among `meshes` that controls it. This is who injects a pod
/// created now, which [`assign`] (who should hold each name) is not always: a paused holder keeps its
/// configurations, a new holder's configuration waits for its webhook, and one of a deleted install stays until its
/// successor takes it over. A name two live configurations of different installs serve (a tag becoming a revision
/// of that name, for a moment) is routed to neither: a pod would be injected twice.
pub fn routing<'a>(configs: impl IntoIterator<Item = &'a ObjectMeta>, meshes: &[&MeshInstall]) -> Assignment {
    let mut routes: BTreeMap<String, Option<String>> = BTreeMap::new();
    for config in configs {
        let Some(served) = webhook_config_serves(config.name.as_deref().unwrap_or_default()) else {
            continue;
        };
        let controller = config
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.as_str());
        let Some(mesh) = meshes
            .iter()
            .find(|m| controller.is_some() && m.metadata.uid.as_deref() == controller)
        else {
            continue;
        };
        let name = mesh.name_any();
        routes
            .entry(served)
            .and_modify(|r| {
                if r.as_ref() != Some(&name) {
                    *r = None;
                }
            })
            .or_insert(Some(name));
    }
    let serving: BTreeMap<String, String> = routes.into_iter().filter_map(|(n, r)| Some((n, r?))).collect();
    let holdings = meshes
        .iter()
        .map(|m| {
            let name = m.name_any();
            let own = m.spec.revision_label();
            let tags = serving
                .iter()
                .filter(|(served, by)| **by == name && (*served == "default" || *served != own))
                .map(|(served, _)| served.clone())
                .collect();
            (
                name,
                Holdings {
                    tags,
                    ..Holdings::default()
                },
            )
        })
        .collect();
    Assignment { holdings, serving }
}

/// The injection name (`default`, a revision, a tag) a webhook configuration of mizzen's serves, from its name.
pub fn webhook_config_serves(config_name: &str) -> Option<String> {
    if config_name == "mizzen-sidecar-injector" {
        return Some("default".into());
    }
    config_name
        .strip_prefix("mizzen-sidecar-injector-")
        .or_else(|| config_name.strip_prefix("mizzen-revision-tag-"))
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// The webhook configuration through which `spec`'s install serves an injection name it holds.
///
/// `default` is always `mizzen-sidecar-injector`, whoever holds it, so it changes hands in place (the default
/// revision's own configuration is the `default` one).
pub fn webhook_config_for(spec: &MeshInstallSpec, name: &str) -> String {
    if name == "default" {
        "mizzen-sidecar-injector".into()
    } else if name == spec.revision {
        format!("mizzen-sidecar-injector-{name}")
    } else {
        format!("mizzen-revision-tag-{name}")
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use serde_json::json;

    use super::*;

    fn mi(name: &str, age: i64, spec: serde_json::Value) -> MeshInstall {
        let mut m = MeshInstall::new(name, serde_json::from_value(spec).unwrap());
        m.metadata.creation_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(1000 - age).unwrap()));
        m
    }

    #[test]
    fn supported_versions_are_the_current_and_previous_minor() {
        for ok in ["1.28.0", "1.28.1", "1.27.3", "1.28.0-distroless", "1.27.10-debug"] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
        let err = check_version("1.26.4").unwrap_err();
        assert!(err.contains("1.26.4") && err.contains("1.27.x to 1.28.x"), "{err}");
        for bad in ["latest", "1.28", "v1.28.0", "1.28.x", "", "1.28.0.1", "1.99999999999.0"] {
            assert!(check_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_unsupported_version_keeps_serving_the_one_rolled_out() {
        let mut m = mi("default", 1, json!({"version": "1.29.0"}));
        assert_eq!(serving_spec(&m), None, "never rolled out: nothing to serve");
        m.status = Some(serde_json::from_value(json!({"version": "1.28.0"})).unwrap());
        assert_eq!(serving_spec(&m).unwrap().version, "1.28.0");
        m.spec.version = "1.28.1".into();
        assert_eq!(serving_spec(&m).unwrap().version, "1.28.1");
    }

    #[test]
    fn the_spec_last_applied_is_served_until_the_next_apply() {
        let mut m = mi("default", 1, json!({"proxy": {"logLevel": "debug"}}));
        assert_eq!(
            serving_spec(&m).unwrap(),
            m.spec,
            "nothing applied yet: the spec itself"
        );
        let applied = mi("default", 1, json!({"proxy": {"logLevel": "info"}})).spec;
        // A status with the spec applied at generation 2, written last at `observed` by this operator (`marker`
        // the same) or by one that does not record it (an earlier marker).
        let status = |observed: i64, marker: i64| {
            serde_json::from_value::<crate::api::MeshInstallStatus>(json!({
                "appliedSpec": serde_json::to_string(&applied).unwrap(),
                "appliedGeneration": 2,
                "appliedSpecObservedGeneration": marker,
                "observedGeneration": observed,
                "version": "1.28.0",
            }))
            .unwrap()
        };
        m.status = Some(status(2, 2));
        assert_eq!(serving_spec(&m).unwrap(), applied);
        // A spec the operator refused, or has not applied (paused), at a later generation: not served.
        m.status = Some(status(3, 3));
        assert_eq!(serving_spec(&m).unwrap(), applied);
        m.spec.version = "1.29.0".into();
        assert_eq!(serving_spec(&m).unwrap(), applied);
        m.spec.version = "1.28.1".into();
        // Written since by an operator that does not record it (after a downgrade), whatever it said: the spec, as
        // before this field.
        for observed in [3, 4] {
            m.status = Some(status(observed, 2));
            assert_eq!(serving_spec(&m).unwrap(), m.spec);
        }
        // A recorded spec this release cannot trust: as without one.
        let recorded = |m: &mut MeshInstall, text: String| {
            let mut s = status(3, 3);
            s.applied_spec = Some(text);
            m.status = Some(s);
        };
        let bad = [
            "{\"version\": 7}".to_owned(),
            "not json".to_owned(),
            serde_json::to_string(&json!({"version": "1.30.0"})).unwrap(),
            serde_json::to_string(&json!({"revision": "canary"})).unwrap(),
            serde_json::to_string(&json!({"namespace": "elsewhere"})).unwrap(),
            serde_json::to_string(&json!({"proxy": {"componentLogLevel": "misc:loud"}})).unwrap(),
        ];
        for text in bad {
            recorded(&mut m, text.clone());
            assert_eq!(serving_spec(&m).unwrap(), m.spec, "{text}");
        }
        recorded(
            &mut m,
            serde_json::to_string(&json!({"proxy": {"componentLogLevel": "upstream:debug"}})).unwrap(),
        );
        let served = serving_spec(&m).unwrap();
        assert_eq!(served.proxy.component_log_level, "upstream:debug");
        assert_ne!(served.proxy.log_level, m.spec.proxy.log_level);
    }

    #[test]
    fn the_default_revision_holds_default_unless_a_tag_takes_it() {
        let default = mi("default", 10, json!({}));
        let canary = mi("canary", 1, json!({"revision": "canary"}));
        let a = assign([&default, &canary]);
        assert_eq!(a.of("default").tags, vec!["default"]);
        assert_eq!(a.serving["default"], "default");
        assert_eq!(a.serving["canary"], "canary");
        let canary = mi(
            "canary",
            1,
            json!({"revision": "canary", "revisionTags": ["default", "prod"]}),
        );
        let a = assign([&default, &canary]);
        assert_eq!(a.of("canary").tags, vec!["default", "prod"]);
        assert!(a.of("default").tags.is_empty());
        assert!(a.of("default").default_elsewhere);
        assert_eq!(
            a.serving["default"], "canary",
            "the younger explicit tag wins over the implicit default"
        );
        assert_eq!(a.of("canary").rendered_tags(&canary.spec), vec!["default", "prod"]);
    }

    #[test]
    fn a_tag_goes_to_the_oldest_and_never_shadows_a_revision() {
        let old = mi("old", 10, json!({"revision": "a", "revisionTags": ["prod", "b"]}));
        let young = mi("young", 1, json!({"revision": "b", "revisionTags": ["prod"]}));
        let a = assign([&young, &old]);
        assert_eq!(a.of("old").tags, vec!["prod"]);
        assert_eq!(a.serving["prod"], "old");
        assert_eq!(a.serving["b"], "young");
        assert!(
            a.of("old").conflicts[0]
                .contains("spec.revisionTags[1]: revision tag b names the revision of MeshInstall young"),
            "{a:?}"
        );
        assert!(
            a.of("young").conflicts[0]
                .contains("spec.revisionTags[0]: revision tag prod is held by the older MeshInstall old")
        );
    }

    #[test]
    fn a_new_install_never_takes_a_name_held_as_a_tag_today() {
        let mut holder = mi("holder", 10, json!({"revision": "a", "revisionTags": ["prod"]}));
        holder.status =
            Some(serde_json::from_value(json!({"observedGeneration": 1, "revisionTags": ["prod"]})).unwrap());
        let newcomer = mi("newcomer", 1, json!({"revision": "prod"}));
        let a = assign([&holder, &newcomer]);
        assert_eq!(a.serving["prod"], "holder", "the tag keeps its namespaces");
        let n = a.of("newcomer");
        assert!(n.revision_blocked);
        assert!(
            n.conflicts[0].contains("spec.revision: prod is a revision tag MeshInstall holder holds"),
            "{n:?}"
        );
        // Not only until the newcomer's first status, which the conflict writes: while the tag is held.
        let mut reported = newcomer.clone();
        reported.status = Some(serde_json::from_value(json!({"observedGeneration": 1})).unwrap());
        let a = assign([&holder, &reported]);
        assert_eq!(a.serving["prod"], "holder");
        assert!(a.of("newcomer").revision_blocked);
        // A tag added after the revision was served is never held: the revision wins.
        let mut later = holder.clone();
        later.status = Some(serde_json::from_value(json!({"observedGeneration": 2, "revisionTags": []})).unwrap());
        let a = assign([&later, &reported]);
        assert_eq!(a.serving["prod"], "newcomer");
        assert!(a.of("holder").conflicts[0].contains("names the revision of MeshInstall newcomer"));
        // A holder that cannot serve (paused) keeps its configurations, the tag's too: the name stays blocked.
        let mut paused = holder.clone();
        paused
            .metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert("mizzen.io/paused".into(), "true".into());
        let a = assign_among([&reported], [&paused, &reported]);
        assert!(a.of("newcomer").revision_blocked);
        assert!(!a.serving.contains_key("prod"));
        // Even when its spec no longer lists the tag: its configuration stays until it serves again.
        paused.spec.revision_tags.clear();
        let a = assign_among([&reported], [&paused, &reported]);
        assert!(a.of("newcomer").revision_blocked);
        // A younger install holding the tag loses it to a revision changed later.
        let mut young_holder = mi("young", 0, json!({"revision": "b", "revisionTags": ["prod"]}));
        young_holder.status =
            Some(serde_json::from_value(json!({"observedGeneration": 1, "revisionTags": ["prod"]})).unwrap());
        let a = assign([&young_holder, &reported]);
        assert_eq!(a.serving["prod"], "newcomer");
        assert!(!a.of("newcomer").revision_blocked);
    }

    #[test]
    fn webhook_configurations_name_what_they_serve() {
        let default: MeshInstallSpec = serde_json::from_value(json!({})).unwrap();
        let canary: MeshInstallSpec = serde_json::from_value(json!({"revision": "canary"})).unwrap();
        for (spec, name) in [
            (&default, "default"),
            (&default, "prod"),
            (&canary, "canary"),
            (&canary, "default"),
        ] {
            let config = webhook_config_for(spec, name);
            assert_eq!(webhook_config_serves(&config).as_deref(), Some(name), "{config}");
        }
        assert_eq!(
            webhook_config_for(&canary, "default"),
            "mizzen-sidecar-injector",
            "default moves in place"
        );
        assert_eq!(webhook_config_serves("istio-sidecar-injector"), None);
    }

    #[test]
    fn the_next_holder_of_a_name_is_the_heir_of_its_configuration() {
        let old = mi("old", 10, json!({"revisionTags": ["prod", "qa"]}));
        let canary = mi("canary", 5, json!({"revision": "canary", "revisionTags": ["prod"]}));
        let young = mi("young", 1, json!({"revision": "young", "revisionTags": ["qa", "prod"]}));
        let all = [&old, &canary, &young];
        let heirs = heirs(all, all, &old);
        // `default` has no heir (no other default revision, no `default` tag); each tag goes to the next oldest
        // listing it, through the same configuration.
        assert_eq!(
            heirs,
            BTreeMap::from([
                ("mizzen-revision-tag-prod".to_owned(), "canary".to_owned()),
                ("mizzen-revision-tag-qa".to_owned(), "young".to_owned()),
            ])
        );
        // An install that holds nothing is nobody's holder; the canary's revision has no heir.
        assert!(super::heirs(all, all, &young).is_empty());
        assert!(super::heirs(all, all, &canary).is_empty());
        // One that cannot serve (paused, invalid: not among `meshes`) is no heir.
        let serving = [&old, &young];
        assert_eq!(
            super::heirs(serving, all, &old)
                .get("mizzen-revision-tag-prod")
                .map(String::as_str),
            Some("young")
        );
    }

    #[test]
    fn default_and_revisions_pass_in_place_only() {
        // A second default revision takes `default` (and the default revision's configuration) when the first goes.
        let first = mi("first", 10, json!({}));
        let second = mi("second", 1, json!({}));
        let all = [&first, &second];
        assert_eq!(
            heirs(all, all, &first),
            BTreeMap::from([("mizzen-sidecar-injector".to_owned(), "second".to_owned())])
        );
        // An explicit `default` tag held by a canary passes to the default revision, in place.
        let canary = mi("canary", 10, json!({"revision": "canary", "revisionTags": ["default"]}));
        let stable = mi("stable", 1, json!({}));
        let all = [&canary, &stable];
        assert_eq!(
            heirs(all, all, &canary),
            BTreeMap::from([("mizzen-sidecar-injector".to_owned(), "stable".to_owned())])
        );
        // A tag whose next holder is a revision of that name: the revision's configuration is another one.
        let tagged = mi("tagged", 10, json!({"revision": "a", "revisionTags": ["b"]}));
        let b = mi("b", 1, json!({"revision": "b"}));
        let mut held = tagged.clone();
        held.status = Some(serde_json::from_value(json!({"revisionTags": ["b"]})).unwrap());
        let all = [&held, &b];
        assert_eq!(assign(all).serving["b"], "tagged");
        assert!(heirs(all, all, &held).is_empty());
    }

    #[test]
    fn pods_are_routed_by_the_live_webhook_configurations() {
        let mut paused = mi("paused", 10, json!({"revision": "a", "revisionTags": ["prod"]}));
        paused.metadata.uid = Some("uid-paused".into());
        let mut young = mi("young", 1, json!({"revision": "b", "revisionTags": ["prod"]}));
        young.metadata.uid = Some("uid-young".into());
        // A configuration's metadata: its name, and its owners' UIDs, the controller's first.
        let config = |name: &str, controller: Option<&str>, others: &[&str]| -> ObjectMeta {
            let owner = |uid: &str, controller: bool| {
                serde_json::from_value(json!({"apiVersion": "mizzen.io/v1alpha1", "kind": "MeshInstall",
                    "name": "x", "uid": uid, "controller": controller}))
                .unwrap()
            };
            ObjectMeta {
                name: Some(name.into()),
                owner_references: Some(
                    controller
                        .map(|c| owner(c, true))
                        .into_iter()
                        .chain(others.iter().map(|o| owner(o, false)))
                        .collect(),
                ),
                ..ObjectMeta::default()
            }
        };
        let configs = [
            config("mizzen-revision-tag-prod", Some("uid-paused"), &["uid-young"]),
            config("mizzen-sidecar-injector-a", Some("uid-paused"), &[]),
            config("mizzen-sidecar-injector-b", Some("uid-young"), &[]),
            // Of an install that is gone, of none (only an heir's reference is left), and not mizzen's.
            config("mizzen-revision-tag-qa", Some("uid-gone"), &[]),
            config("mizzen-revision-tag-dev", None, &["uid-young"]),
            config("istio-sidecar-injector", Some("uid-young"), &[]),
        ];
        let routing = routing(&configs, &[&paused, &young]);
        assert_eq!(
            routing.serving,
            BTreeMap::from([
                ("a".to_owned(), "paused".to_owned()),
                ("b".to_owned(), "young".to_owned()),
                ("prod".to_owned(), "paused".to_owned()),
            ])
        );
        let labels = BTreeMap::from([("istio.io/rev".to_owned(), "prod".to_owned())]);
        assert_eq!(routing.injector_of(&labels, &BTreeMap::new()), Some("paused"));
        // The tags each install's live configurations serve, not its own revision (mizzenctl proxy-status's TAGS).
        assert_eq!(routing.of("paused").tags, ["prod"]);
        assert!(routing.of("young").tags.is_empty());
        // `default` is a tag also of the default revision, whose own configuration serves it.
        let mut default = mi("default", 20, json!({"revisionTags": ["qa"]}));
        default.metadata.uid = Some("uid-default".into());
        let configs = [
            config("mizzen-sidecar-injector", Some("uid-default"), &[]),
            config("mizzen-revision-tag-qa", Some("uid-default"), &[]),
        ];
        assert_eq!(
            super::routing(&configs, &[&default]).of("default").tags,
            ["default", "qa"]
        );
        // A name two installs' configurations serve goes to neither.
        let configs = [
            config("mizzen-revision-tag-b", Some("uid-paused"), &[]),
            config("mizzen-sidecar-injector-b", Some("uid-young"), &[]),
        ];
        let both = super::routing(&configs, &[&paused, &young]);
        assert!(both.serving.is_empty(), "{:?}", both.serving);
    }

    #[test]
    fn a_deleted_install_holds_nothing() {
        let mut old = mi("old", 10, json!({"revision": "a", "revisionTags": ["prod"]}));
        let young = mi("young", 1, json!({"revision": "b", "revisionTags": ["prod"]}));
        old.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::from_second(5).unwrap()));
        let a = assign([&old, &young]);
        assert_eq!(a.serving["prod"], "young");
        assert!(!a.holdings.contains_key("old"));
    }

    #[test]
    fn new_pods_go_to_the_holder_of_the_name_their_labels_select() {
        let default = mi("default", 10, json!({"revisionTags": ["prod"]}));
        let canary = mi("canary", 1, json!({"revision": "canary"}));
        let a = assign([&default, &canary]);
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
        };
        let none = BTreeMap::new();
        assert_eq!(
            a.injector_of(&labels(&[("istio-injection", "enabled")]), &none),
            Some("default")
        );
        assert_eq!(a.injector_of(&labels(&[("istio-injection", "disabled")]), &none), None);
        assert_eq!(
            a.injector_of(&labels(&[("istio.io/rev", "prod")]), &none),
            Some("default")
        );
        assert_eq!(
            a.injector_of(&labels(&[("istio.io/rev", "canary")]), &none),
            Some("canary")
        );
        assert_eq!(a.injector_of(&labels(&[("istio.io/rev", "gone")]), &none), None);
        assert_eq!(a.injector_of(&none, &none), None);
        // Pods that opt in themselves in an unlabelled namespace.
        assert_eq!(
            a.injector_of(&none, &labels(&[("istio.io/rev", "canary")])),
            Some("canary")
        );
        assert_eq!(
            a.injector_of(&none, &labels(&[("sidecar.istio.io/inject", "true")])),
            Some("default")
        );
        // The namespace's label wins over the pod's.
        assert_eq!(
            a.injector_of(
                &labels(&[("istio-injection", "enabled")]),
                &labels(&[("istio.io/rev", "canary")])
            ),
            Some("default")
        );
    }
}
