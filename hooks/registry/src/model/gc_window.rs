//! The garbage-collection window of a Detached registry on S3: its state (what the
//! `gc-window` module hook keeps in the ConfigMap `registry-gc-window` and gives the
//! chart as `internal.gcWindow`), the request the `rotate` node hook writes
//! (`registry-gc-request`), and the tag a master's config Secret carries and its node
//! hook reports back (`appliedGcWindow`). The transitions are in
//! the switch domain (`switch/gc_window.rs`); `docs/internal/rotation.md` describes the window.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where the window is.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Phase {
    /// No window: every master reads and writes.
    #[default]
    Idle,
    /// Every master's configuration is read-only; waiting until each one runs it.
    ReadOnly,
    /// Every master runs read-only; the collector restarts with its
    /// `garbage-collect` init container.
    Collect,
    /// Read-only is off again; waiting until the masters run read-write.
    Back,
}

impl Phase {
    /// Every phase, in order (the metric's label values).
    pub const ALL: [Phase; 4] = [Phase::Idle, Phase::ReadOnly, Phase::Collect, Phase::Back];

    /// The metric's `phase` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "Idle",
            Phase::ReadOnly => "ReadOnly",
            Phase::Collect => "Collect",
            Phase::Back => "Back",
        }
    }
}

/// How the last window ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Outcome {
    /// The collector ran garbage collection with every master read-only.
    Collected,
    /// The bound ran out before the collection finished: no collection (or one whose end
    /// was not seen); the next request opens a new window.
    TimedOut,
    /// The registry stopped being a Detached registry on S3 during the window.
    Abandoned,
}

/// The window's state (`internal.gcWindow`; `state.json` of `registry-gc-window`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcWindow {
    /// The phase.
    pub phase: Phase,
    /// The window's id: the id of the request that opened it (in `Idle`, the last
    /// window's; empty when none ever opened). A request with this id is served.
    #[serde(default)]
    pub id: String,
    /// The master that collects.
    #[serde(default)]
    pub collector: String,
    /// When the window opened (unix seconds; 0 in `Idle`).
    #[serde(default)]
    pub opened_at: i64,
    /// How the last window ended (absent before the first one ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

impl GcWindow {
    /// The tag master `node`'s config Secret carries for this state (annotation
    /// [`crate::module::GC_WINDOW_ANNOTATION`], rendered by the chart from the same
    /// values): `<id>/read-only` while its configuration is read-only, `<id>/collect`
    /// on the collector while it collects, empty otherwise.
    pub fn tag(&self, node: &str) -> String {
        match self.phase {
            Phase::ReadOnly => format!("{}/{READ_ONLY}", self.id),
            Phase::Collect if node == self.collector => format!("{}/{COLLECT}", self.id),
            Phase::Collect => format!("{}/{READ_ONLY}", self.id),
            Phase::Idle | Phase::Back => String::new(),
        }
    }
}

/// The tag's suffix while a master's configuration is read-only.
pub const READ_ONLY: &str = "read-only";
/// The tag's suffix on the collector while it collects.
pub const COLLECT: &str = "collect";

/// The key of the state in the ConfigMap `registry-gc-window`.
pub const STATE_KEY: &str = "state.json";

/// A request for a collection (ConfigMap `registry-gc-request`, written by the `rotate`
/// node hook after it deleted manifests on S3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// Its id (the rotation's time, unix seconds, as text): a new id asks for a new
    /// window, the same id again asks for nothing.
    pub id: String,
    /// The master that asked (it collects when it still runs a registry).
    pub node: String,
}

// The request ConfigMap's keys.
const REQUEST_ID: &str = "id";
const REQUEST_NODE: &str = "node";

/// The longest request id read (a unix time has 10 digits).
const MAX_ID_LEN: usize = 20;

impl Request {
    /// Reads the ConfigMap's data; `None` when it holds no usable request (an id that is
    /// not a number of at most 20 digits, or no node). Cluster data: nothing else of it
    /// is read.
    pub fn from_data(data: &BTreeMap<String, String>) -> Option<Self> {
        let id = data.get(REQUEST_ID)?.trim();
        let node = data.get(REQUEST_NODE)?.trim();
        let id_ok =
            !id.is_empty() && id.len() <= MAX_ID_LEN && id.bytes().all(|b| b.is_ascii_digit());
        (id_ok && crate::untrusted::node_name(node).is_ok()).then(|| Request {
            id: id.to_string(),
            node: node.to_string(),
        })
    }

    /// The ConfigMap's data.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (REQUEST_ID.to_string(), self.id.clone()),
            (REQUEST_NODE.to_string(), self.node.clone()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_phase_and_the_collector() {
        let mut w = GcWindow {
            phase: Phase::ReadOnly,
            id: "100".into(),
            collector: "m1".into(),
            opened_at: 100,
            outcome: None,
        };
        assert_eq!(w.tag("m2"), "100/read-only");
        w.phase = Phase::Collect;
        assert_eq!(w.tag("m1"), "100/collect");
        assert_eq!(w.tag("m2"), "100/read-only");
        w.phase = Phase::Back;
        assert_eq!(w.tag("m1"), "");
    }

    #[test]
    fn requests_round_trip_and_hostile_ones_read_as_none() {
        let r = Request {
            id: "1700000000".into(),
            node: "m1".into(),
        };
        assert_eq!(Request::from_data(&r.to_data()), Some(r));
        for (id, node) in [
            ("", "m1"),
            ("12a", "m1"),
            ("123456789012345678901", "m1"),
            ("1", ""),
            ("1", "M1/../x"),
        ] {
            let data = BTreeMap::from([
                ("id".to_string(), id.to_string()),
                ("node".to_string(), node.to_string()),
            ]);
            assert_eq!(Request::from_data(&data), None, "{id:?} {node:?}");
        }
        assert_eq!(Request::from_data(&BTreeMap::new()), None);
    }

    #[test]
    fn state_reads_back_and_idle_is_the_default() {
        let w = GcWindow {
            phase: Phase::Collect,
            id: "5".into(),
            collector: "m2".into(),
            opened_at: 5,
            outcome: Some(Outcome::TimedOut),
        };
        let text = serde_json::to_string(&w).unwrap();
        assert!(text.contains("\"openedAt\":5"), "{text}");
        assert_eq!(serde_json::from_str::<GcWindow>(&text).unwrap(), w);
        let idle: GcWindow = serde_json::from_str(r#"{"phase":"Idle"}"#).unwrap();
        assert_eq!(idle, GcWindow::default());
    }
}
