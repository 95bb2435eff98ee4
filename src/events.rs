//! Kubernetes Events in series, as client-go's `events.k8s.io/v1` recorder keeps them: an event isomorphic to one
//! published in the last six minutes (same type, action, reason, note, reporter, regarding and related object) is
//! counted in that one's `series` instead of being published again; any other event is new.
//!
//! kube-runtime's `Recorder` (5.0.0) leaves the note out of that identity, so a warning whose note changed within
//! six minutes (a CA Secret broken another way, a pod refused for another annotation) only bumped the count of an
//! event still showing the old note: `kubectl describe` hid the new message. The bookkeeping is here; the operator
//! and the webhook send what [`Series::next`] says.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// How long an event stays the one its isomorphic successors count in (client-go's and kube-runtime's).
pub const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);

/// Events kept at most: a flood of distinct ones (many workloads) forgets the oldest rather than growing.
const KEPT: usize = 4096;

/// Who publishes.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `reportingController`, such as `mizzen.io/operator`.
    pub controller: String,
    /// `reportingInstance` (the pod's name); the controller's when none.
    pub instance: Option<String>,
}

/// What to say, about whom.
#[derive(Debug, Clone, PartialEq)]
pub struct Occurrence {
    /// `Warning` or anything else (`Normal`).
    pub warning: bool,
    /// Machine-readable, in CamelCase.
    pub reason: String,
    /// The human-readable message (cut to the API's limit of 1,024 bytes, at a character's end).
    pub note: String,
    /// What was done or failed, in CamelCase.
    pub action: String,
    /// The object the event is about.
    pub regarding: ObjectReference,
    /// A second object it concerns, if any.
    pub related: Option<ObjectReference>,
}

/// What to send to the API server for an occurrence.
#[derive(Debug, Clone, PartialEq)]
pub enum Publish {
    /// Create this new event (in its `metadata.namespace`).
    Create(Event),
    /// Merge-patch this event (by name, in its namespace): its series counts one more.
    Patch(Event),
}

impl Publish {
    /// The event to send.
    pub fn event(&self) -> &Event {
        match self {
            Publish::Create(e) | Publish::Patch(e) => e,
        }
    }
}

/// The recent events of one reporter, by identity.
#[derive(Debug)]
pub struct Series {
    reporter: Reporter,
    recent: HashMap<String, Event>,
}

impl Series {
    /// No events yet.
    pub fn new(reporter: Reporter) -> Self {
        Self {
            reporter,
            recent: HashMap::new(),
        }
    }

    /// What to send for `occurrence` at `now`; call [`Series::sent`] with it once the API server took it.
    pub fn next(&mut self, occurrence: &Occurrence, now: Timestamp) -> Publish {
        self.recent
            .retain(|_, e| last_seen(e).is_some_and(|t| t + SERIES_TTL > now));
        let note = cut(&occurrence.note).to_owned();
        match self.recent.get(&key(occurrence, &note)) {
            Some(event) => {
                let mut event = event.clone();
                let count = event.series.as_ref().map_or(2, |s| s.count + 1);
                event.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                });
                Publish::Patch(event)
            }
            None => Publish::Create(self.event(occurrence, note, now)),
        }
    }

    /// Records that `publish` for `occurrence` was sent.
    pub fn sent(&mut self, occurrence: &Occurrence, publish: Publish) {
        let event = match publish {
            Publish::Create(e) | Publish::Patch(e) => e,
        };
        let note = event.note.clone().unwrap_or_default();
        let key = key(occurrence, &note);
        if self.recent.len() >= KEPT && !self.recent.contains_key(&key) {
            let oldest = self
                .recent
                .iter()
                .min_by_key(|(_, e)| last_seen(e))
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                self.recent.remove(&oldest);
            }
        }
        self.recent.insert(key, event);
    }

    /// Forgets the event `occurrence` would be counted in (gone from the API server): the next one is new.
    pub fn forget(&mut self, occurrence: &Occurrence) {
        self.recent.remove(&key(occurrence, cut(&occurrence.note)));
    }

    fn event(&self, o: &Occurrence, note: String, now: Timestamp) -> Event {
        let owner = o
            .regarding
            .name
            .clone()
            .unwrap_or_else(|| self.reporter.controller.clone());
        Event {
            action: Some(o.action.clone()),
            reason: Some(o.reason.clone()),
            event_time: Some(MicroTime(now)),
            regarding: Some(o.regarding.clone()),
            related: o.related.clone(),
            note: Some(note),
            metadata: ObjectMeta {
                // Cluster-scoped objects' events go to `default`, as client-go puts them.
                namespace: Some(o.regarding.namespace.clone().unwrap_or_else(|| "default".to_owned())),
                name: Some(format!("{owner}.{:x}", now.as_nanosecond())),
                ..Default::default()
            },
            reporting_controller: Some(self.reporter.controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| self.reporter.controller.clone()),
            ),
            type_: Some(if o.warning { "Warning" } else { "Normal" }.to_owned()),
            ..Default::default()
        }
    }
}

/// The API server refuses a note of more than this many bytes.
const NOTE_BYTES: usize = 1024;

/// `note` cut to [`NOTE_BYTES`] at a character's end.
fn cut(note: &str) -> &str {
    let mut end = note.len().min(NOTE_BYTES);
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    &note[..end]
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    match &event.series {
        Some(series) => Some(series.last_observed_time.0),
        None => event.event_time.as_ref().map(|t| t.0),
    }
}

/// The identity of an occurrence: every field of it but the time (the note as sent).
fn key(o: &Occurrence, note: &str) -> String {
    let reference = |r: &ObjectReference| {
        format!(
            "{:?}",
            (&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid, &r.field_path)
        )
    };
    format!(
        "{:?}",
        (
            o.warning,
            &o.reason,
            note,
            &o.action,
            reference(&o.regarding),
            o.related.as_ref().map(reference),
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn occurrence(note: &str) -> Occurrence {
        Occurrence {
            warning: true,
            reason: "WebhookCertificate".into(),
            note: note.into(),
            action: "Reconcile".into(),
            regarding: ObjectReference {
                api_version: Some("mizzen.io/v1alpha1".into()),
                kind: Some("MeshInstall".into()),
                name: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            related: None,
        }
    }

    fn series() -> Series {
        Series::new(Reporter {
            controller: "mizzen.io/operator".into(),
            instance: Some("pod-1".into()),
        })
    }

    #[test]
    fn a_repeat_counts_in_the_series_and_a_new_note_is_a_new_event() {
        let mut s = series();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let first = occurrence("ca.key is not a usable private key");
        let created = s.next(&first, t0);
        let Publish::Create(event) = &created else {
            panic!("not created: {created:?}");
        };
        assert_eq!(event.note.as_deref(), Some("ca.key is not a usable private key"));
        assert_eq!(event.type_.as_deref(), Some("Warning"));
        assert_eq!(event.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(event.reporting_instance.as_deref(), Some("pod-1"));
        let name = event.metadata.name.clone().unwrap();
        assert!(name.starts_with("default."), "{name}");
        s.sent(&first, created);

        let t1 = t0 + SignedDuration::from_secs(60);
        let again = s.next(&first, t1);
        let Publish::Patch(event) = &again else {
            panic!("a repeat is not counted: {again:?}");
        };
        assert_eq!(event.metadata.name.as_deref(), Some(name.as_str()));
        let series_of = |e: &Event| e.series.as_ref().map(|s| (s.count, s.last_observed_time.0));
        assert_eq!(series_of(event), Some((2, t1)));
        s.sent(&first, again);
        let Publish::Patch(event) = s.next(&first, t1 + SignedDuration::from_secs(1)) else {
            panic!("a third is not counted");
        };
        assert_eq!(event.series.map(|s| s.count), Some(3));

        // Another note within the six minutes: a new event with that note (kube-runtime's Recorder counted it in
        // the first one's series, which kept showing the old note).
        let second = occurrence("a certificate issued with ca.key is not accepted");
        let Publish::Create(event) = s.next(&second, t1) else {
            panic!("a new note is not a new event");
        };
        assert_eq!(
            event.note.as_deref(),
            Some("a certificate issued with ca.key is not accepted")
        );

        // Another object, reason or type: new too.
        let mut other = first.clone();
        other.regarding.uid = Some("u2".into());
        assert!(matches!(s.next(&other, t1), Publish::Create(_)));
        let mut other = first.clone();
        other.warning = false;
        assert!(matches!(s.next(&other, t1), Publish::Create(_)));

        // After six minutes without a repeat, the same occurrence is a new event; and so it is once forgotten.
        let t2 = t1 + SignedDuration::from_secs(1);
        assert!(matches!(s.next(&first, t2 + SERIES_TTL), Publish::Create(_)));
        let p = s.next(&first, t2);
        s.sent(&first, p);
        s.forget(&first);
        assert!(matches!(s.next(&first, t2), Publish::Create(_)));
    }

    #[test]
    fn unsent_events_are_not_counted_and_the_kept_ones_are_bounded() {
        let mut s = series();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let first = occurrence("x");
        let _ = s.next(&first, t0);
        // Not sent (the API server refused it): the next one is created again.
        assert!(matches!(s.next(&first, t0), Publish::Create(_)));
        for i in 0..KEPT + 10 {
            let o = occurrence(&format!("note {i}"));
            let p = s.next(&o, t0 + SignedDuration::from_millis(i as i64));
            s.sent(&o, p);
        }
        assert!(s.recent.len() <= KEPT, "{}", s.recent.len());
        // The newest are kept, the oldest forgotten.
        let newest = occurrence(&format!("note {}", KEPT + 9));
        assert!(matches!(
            s.next(&newest, t0 + SignedDuration::from_secs(5)),
            Publish::Patch(_)
        ));
        let oldest = occurrence("note 0");
        assert!(matches!(
            s.next(&oldest, t0 + SignedDuration::from_secs(5)),
            Publish::Create(_)
        ));
    }

    #[test]
    fn long_notes_are_cut_to_1024_bytes_at_a_characters_end_and_still_counted() {
        let mut s = series();
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        // Two-byte characters after one ASCII byte: byte 1024 falls inside a character.
        let long = occurrence(&format!("x{}", "é".repeat(1500)));
        let p = s.next(&long, t0);
        let note = p.event().note.clone().unwrap();
        assert_eq!(note.len(), 1023);
        assert!(long.note.starts_with(&note));
        s.sent(&long, p);
        assert!(matches!(s.next(&long, t0), Publish::Patch(_)));
        let ascii = occurrence(&"y".repeat(2000));
        assert_eq!(s.next(&ascii, t0).event().note.as_ref().map(String::len), Some(1024));
        let short = occurrence("short");
        assert_eq!(s.next(&short, t0).event().note.as_deref(), Some("short"));
    }
}
