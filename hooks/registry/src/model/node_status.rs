//! The node-status protocol: what a master's node hook (`node-files`) reports in its
//! ConfigMap `registry-node-<node>-status`, and what the module hook `registry-switch`
//! reads back. One typed struct on both sides; the ConfigMap's keys are spelled here
//! only.
//!
//! Reading is lenient, as a protocol between two versions of the module must be: a
//! missing key reads as empty, an unknown value as [`StaticPod::Absent`] /
//! [`RegistryHealth::Unknown`], and upstream state that is incomplete as none.
//!
//! Above 400 lines: the whole protocol (registry health, upstream state, warm-up of the
//! running and the next releases, the GC window, acknowledgements) is one set of keys
//! that both sides must read alike, so it stays in one file with its round-trip tests.

use std::collections::BTreeMap;

/// Whether the registry's static pod manifest is on the node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StaticPod {
    /// The manifest is written.
    Present,
    /// No manifest (or an unknown value).
    #[default]
    Absent,
}

impl StaticPod {
    /// The ConfigMap value.
    pub fn as_str(self) -> &'static str {
        match self {
            StaticPod::Present => "present",
            StaticPod::Absent => "absent",
        }
    }
}

/// Whether the node's registry answers `GET /v2/`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RegistryHealth {
    /// It answers (200 or 401).
    Ready,
    /// It does not answer.
    NotReady,
    /// The Secret names no address or CA to probe with (or an unknown value).
    #[default]
    Unknown,
    /// No registry on this node.
    Absent,
}

impl RegistryHealth {
    /// The ConfigMap value.
    pub fn as_str(self) -> &'static str {
        match self {
            RegistryHealth::Ready => "ready",
            RegistryHealth::NotReady => "not-ready",
            RegistryHealth::Unknown => "unknown",
            RegistryHealth::Absent => "absent",
        }
    }

    fn parse(text: &str) -> Self {
        [Self::Ready, Self::NotReady, Self::Absent]
            .into_iter()
            .find(|h| h.as_str() == text)
            .unwrap_or_default()
    }
}

/// What a Proxy master knows of its upstream, carried from run to run in its status
/// ConfigMap (`cache_only::decide` computes the next one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpstreamState {
    /// The last probe's outcome: the upstream answered `/v2/`.
    pub answers: bool,
    /// Since when (unix seconds) the probes have had this outcome.
    pub since: i64,
    /// The registry runs the cache-only variant.
    pub cache_only: bool,
    /// Since when (unix seconds) it does, or last did not.
    pub cache_only_since: i64,
}

/// A changed configuration this master holds back (rolling restarts): the masters
/// before it that do not yet run theirs, and since when (unix seconds) it waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rollout {
    /// The masters it waits for, in order.
    pub waiting_for: Vec<String>,
    /// Since when it waits (unix seconds); the bound counts from here.
    pub since: i64,
}

/// What a Proxy master's warm-up reports (its progress file, read by the node hook).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarmStatus {
    /// The hash of the list the counts are about (empty: no pass has ended yet).
    pub list_hash: String,
    /// Images of the list cached (manifests and blobs).
    pub cached: u64,
    /// Images of the list.
    pub wanted: u64,
    /// Bytes of the list's content in the cache.
    pub bytes: u64,
    /// The first images not cached.
    pub missing: Vec<String>,
    /// Of those, how many the upstream does not have.
    pub unavailable: u64,
    /// When the last pass ended (unix seconds; 0: none).
    pub at: i64,
    /// The next releases' warm-up (announced, not yet rolled out), oldest first.
    pub next: Vec<WarmNext>,
}

/// A next release's warm-up, as a master reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WarmNext {
    /// The release tag.
    pub version: String,
    /// Images of its list cached.
    pub cached: u64,
    /// Images of its list (its platform image alone while the list is not known).
    pub wanted: u64,
    /// Why its list is not known (`platform-image`, `digests-file`); empty once it is.
    pub problem: String,
}

impl WarmNext {
    /// Every image of the release is cached.
    pub fn complete(&self) -> bool {
        self.problem.is_empty() && self.wanted > 0 && self.cached == self.wanted
    }
}

impl WarmStatus {
    /// Every image of the list `hash` is cached.
    pub fn complete_for(&self, hash: &str) -> bool {
        !hash.is_empty() && self.list_hash == hash && self.wanted > 0 && self.cached == self.wanted
    }

    /// Reads the state a node hook wrote; `None` when there is none or it is malformed.
    pub fn from_data(data: &BTreeMap<String, String>) -> Option<Self> {
        let int = |k: &str| data.get(k).and_then(|v| v.parse::<u64>().ok());
        let (cached, wanted) = data.get(WARM)?.split_once('/')?;
        Some(WarmStatus {
            list_hash: data.get(WARM_LIST_HASH)?.clone(),
            cached: cached.parse().ok()?,
            wanted: wanted.parse().ok()?,
            bytes: int(WARM_BYTES)?,
            missing: data
                .get(WARM_MISSING)
                .map(|m| {
                    m.split(' ')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default(),
            unavailable: int(WARM_UNAVAILABLE).unwrap_or(0),
            at: data.get(WARM_AT).and_then(|v| v.parse().ok()).unwrap_or(0),
            next: WarmNext::read_all(data),
        })
    }

    fn write(&self, data: &mut BTreeMap<String, String>) {
        data.insert(WARM.into(), format!("{}/{}", self.cached, self.wanted));
        data.insert(WARM_LIST_HASH.into(), self.list_hash.clone());
        data.insert(WARM_BYTES.into(), self.bytes.to_string());
        data.insert(WARM_MISSING.into(), self.missing.join(" "));
        data.insert(WARM_UNAVAILABLE.into(), self.unavailable.to_string());
        data.insert(WARM_AT.into(), self.at.to_string());
        if !self.next.is_empty() {
            let join = |f: &dyn Fn(&WarmNext) -> String| {
                self.next.iter().map(f).collect::<Vec<_>>().join(" ")
            };
            data.insert(WARM_NEXT_VERSION.into(), join(&|n| n.version.clone()));
            data.insert(
                WARM_NEXT.into(),
                join(&|n| format!("{}/{}", n.cached, n.wanted)),
            );
            let problems: Vec<String> = self
                .next
                .iter()
                .filter(|n| !n.problem.is_empty())
                .map(|n| format!("{}: {}", n.version, n.problem))
                .collect();
            data.insert(WARM_NEXT_PROBLEM.into(), problems.join(", "));
        }
    }
}

impl WarmNext {
    /// Reads what [`WarmStatus`] wrote (empty when absent or malformed).
    fn read_all(data: &BTreeMap<String, String>) -> Vec<Self> {
        let (Some(versions), Some(counts)) = (data.get(WARM_NEXT_VERSION), data.get(WARM_NEXT))
        else {
            return Vec::new();
        };
        let problems: BTreeMap<&str, &str> = data
            .get(WARM_NEXT_PROBLEM)
            .map(|p| p.split(", ").filter_map(|x| x.split_once(": ")).collect())
            .unwrap_or_default();
        let out: Option<Vec<WarmNext>> = versions
            .split(' ')
            .zip(counts.split(' '))
            .map(|(v, c)| {
                let (cached, wanted) = c.split_once('/')?;
                Some(WarmNext {
                    version: v.to_string(),
                    cached: cached.parse().ok()?,
                    wanted: wanted.parse().ok()?,
                    problem: problems.get(v).map(|p| p.to_string()).unwrap_or_default(),
                })
            })
            .collect();
        out.unwrap_or_default()
    }
}

/// A master's status ConfigMap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The master's name.
    pub node: String,
    /// The hash of the config Secret it applied (its `config-hash` annotation).
    pub applied_config_hash: String,
    /// The registry generation it applied (empty: none).
    pub applied_generation: String,
    /// Which `ro` password its registry accepts (empty: unknown).
    pub applied_ro_user: String,
    /// The garbage-collection window tag of the files its registry runs (empty: none;
    /// see [`crate::model::gc_window`]).
    pub applied_gc_window: String,
    /// Its static pod manifest.
    pub static_pod: StaticPod,
    /// Its registry's answer.
    pub registry: RegistryHealth,
    /// For humans: what the probe found.
    pub message: String,
    /// What it knows of its upstream (a Proxy registry only).
    pub upstream: Option<UpstreamState>,
    /// A changed configuration it holds back (none: it runs the latest).
    pub rollout: Option<Rollout>,
    /// Its warm-up's progress (a Proxy registry of a named release only).
    pub warm: Option<WarmStatus>,
}

// The ConfigMap's keys.
const NODE: &str = "node";
const APPLIED_CONFIG_HASH: &str = "appliedConfigHash";
const APPLIED_GENERATION: &str = "appliedGeneration";
const APPLIED_RO_USER: &str = "appliedRoUser";
const APPLIED_GC_WINDOW: &str = "appliedGcWindow";
const STATIC_POD: &str = "staticPod";
const REGISTRY: &str = "registry";
const MESSAGE: &str = "message";
const UPSTREAM: &str = "upstream";
const UPSTREAM_SINCE: &str = "upstreamSince";
const CACHE_ONLY: &str = "cacheOnly";
const CACHE_ONLY_SINCE: &str = "cacheOnlySince";
const ROLLOUT: &str = "rollout";
const ROLLOUT_PENDING_SINCE: &str = "pendingSince";
/// How [`ROLLOUT`] begins: `waiting for m1, m2`.
const WAITING_FOR: &str = "waiting for ";

impl Rollout {
    /// Reads what a previous run wrote; `None` when it waits for nothing or the record
    /// is incomplete.
    pub fn from_data(data: &BTreeMap<String, String>) -> Option<Self> {
        let names = data.get(ROLLOUT)?.strip_prefix(WAITING_FOR)?;
        Some(Rollout {
            waiting_for: names.split(", ").map(str::to_string).collect(),
            since: data.get(ROLLOUT_PENDING_SINCE)?.parse().ok()?,
        })
    }

    fn write(&self, data: &mut BTreeMap<String, String>) {
        data.insert(
            ROLLOUT.into(),
            format!("{WAITING_FOR}{}", self.waiting_for.join(", ")),
        );
        data.insert(ROLLOUT_PENDING_SINCE.into(), self.since.to_string());
    }
}
const WARM: &str = "warm";
const WARM_LIST_HASH: &str = "warmListHash";
const WARM_BYTES: &str = "warmBytes";
const WARM_MISSING: &str = "warmMissing";
const WARM_UNAVAILABLE: &str = "warmUnavailable";
const WARM_AT: &str = "warmAt";
/// The next releases' versions, space-separated (`v1.67.0 v1.68.0`).
const WARM_NEXT_VERSION: &str = "warmNextVersion";
/// Their `<cached>/<wanted>`, space-separated, in the same order.
const WARM_NEXT: &str = "warmNext";
/// `version: problem` of those whose list is not known, comma-separated.
const WARM_NEXT_PROBLEM: &str = "warmNextProblem";

impl UpstreamState {
    /// Reads the state a previous run wrote; `None` when there is none (a first run, or
    /// a registry that was not a Proxy) or when it is incomplete.
    pub fn from_data(data: &BTreeMap<String, String>) -> Option<Self> {
        let int = |k: &str| data.get(k).and_then(|v| v.parse::<i64>().ok());
        Some(UpstreamState {
            answers: match data.get(UPSTREAM)?.as_str() {
                "answers" => true,
                "unreachable" => false,
                _ => return None,
            },
            since: int(UPSTREAM_SINCE)?,
            cache_only: data.get(CACHE_ONLY)? == "true",
            cache_only_since: int(CACHE_ONLY_SINCE)?,
        })
    }

    fn write(self, data: &mut BTreeMap<String, String>) {
        let answers = if self.answers {
            "answers"
        } else {
            "unreachable"
        };
        data.insert(UPSTREAM.into(), answers.into());
        data.insert(UPSTREAM_SINCE.into(), self.since.to_string());
        data.insert(CACHE_ONLY.into(), self.cache_only.to_string());
        data.insert(CACHE_ONLY_SINCE.into(), self.cache_only_since.to_string());
    }
}

impl NodeStatus {
    /// Reads a status ConfigMap's data (leniently: see the module's text).
    pub fn from_data(data: &BTreeMap<String, String>) -> Self {
        let text = |k: &str| data.get(k).cloned().unwrap_or_default();
        NodeStatus {
            node: text(NODE),
            applied_config_hash: text(APPLIED_CONFIG_HASH),
            applied_generation: text(APPLIED_GENERATION),
            applied_ro_user: text(APPLIED_RO_USER),
            applied_gc_window: text(APPLIED_GC_WINDOW),
            static_pod: if data.get(STATIC_POD).map(String::as_str) == Some("present") {
                StaticPod::Present
            } else {
                StaticPod::Absent
            },
            registry: RegistryHealth::parse(&text(REGISTRY)),
            message: text(MESSAGE),
            upstream: UpstreamState::from_data(data),
            rollout: Rollout::from_data(data),
            warm: WarmStatus::from_data(data),
        }
    }

    /// The ConfigMap's data.
    pub fn to_data(&self) -> BTreeMap<String, String> {
        let mut data = BTreeMap::from([
            (NODE.to_string(), self.node.clone()),
            (
                APPLIED_CONFIG_HASH.to_string(),
                self.applied_config_hash.clone(),
            ),
            (
                APPLIED_GENERATION.to_string(),
                self.applied_generation.clone(),
            ),
            (APPLIED_RO_USER.to_string(), self.applied_ro_user.clone()),
            (STATIC_POD.to_string(), self.static_pod.as_str().to_string()),
            (REGISTRY.to_string(), self.registry.as_str().to_string()),
            (MESSAGE.to_string(), self.message.clone()),
        ]);
        if !self.applied_gc_window.is_empty() {
            data.insert(APPLIED_GC_WINDOW.into(), self.applied_gc_window.clone());
        }
        if let Some(u) = self.upstream {
            u.write(&mut data);
        }
        if let Some(r) = &self.rollout {
            r.write(&mut data);
        }
        if let Some(w) = &self.warm {
            w.write(&mut data);
        }
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(upstream: Option<UpstreamState>) -> NodeStatus {
        NodeStatus {
            node: "m1".into(),
            applied_config_hash: "h".into(),
            applied_generation: "g".into(),
            applied_ro_user: "r".into(),
            applied_gc_window: String::new(),
            static_pod: StaticPod::Present,
            registry: RegistryHealth::NotReady,
            message: "m".into(),
            upstream,
            rollout: None,
            warm: None,
        }
    }

    #[test]
    fn warm_round_trip_and_malformed_reads_as_none() {
        let w = WarmStatus {
            list_hash: "0123456789abcdef".into(),
            cached: 7,
            wanted: 12,
            bytes: 99,
            missing: vec!["@sha256:aa".into(), ":v1".into()],
            unavailable: 1,
            at: 5,
            next: vec![
                WarmNext {
                    version: "v1.3.0".into(),
                    cached: 4,
                    wanted: 4,
                    problem: String::new(),
                },
                WarmNext {
                    version: "v1.4.0".into(),
                    cached: 0,
                    wanted: 1,
                    problem: "platform-image".into(),
                },
            ],
        };
        let s = NodeStatus {
            warm: Some(w.clone()),
            ..status(None)
        };
        let data = s.to_data();
        assert_eq!(data["warm"], "7/12");
        assert_eq!(
            (
                data["warmNextVersion"].as_str(),
                data["warmNext"].as_str(),
                data["warmNextProblem"].as_str()
            ),
            ("v1.3.0 v1.4.0", "4/4 0/1", "v1.4.0: platform-image")
        );
        assert_eq!(NodeStatus::from_data(&data), s);
        assert!(w.next[0].complete() && !w.next[1].complete());
        assert!(!w.complete_for("0123456789abcdef"));
        let done = WarmStatus { cached: 12, ..w };
        assert!(done.complete_for("0123456789abcdef"));
        assert!(
            !done.complete_for("fedcba9876543210"),
            "a list that is not the current one"
        );
        assert!(!done.complete_for(""));
        let mut bad = data.clone();
        bad.insert("warm".into(), "7 of 12".into());
        assert_eq!(NodeStatus::from_data(&bad).warm, None);
    }

    #[test]
    fn round_trip_with_and_without_upstream_state() {
        let up = UpstreamState {
            answers: false,
            since: 5,
            cache_only: true,
            cache_only_since: 6,
        };
        let waiting = NodeStatus {
            rollout: Some(Rollout {
                waiting_for: vec!["m0".into(), "m2".into()],
                since: 7,
            }),
            ..status(None)
        };
        let windowed = NodeStatus {
            applied_gc_window: "17/read-only".into(),
            ..status(None)
        };
        assert_eq!(windowed.to_data()["appliedGcWindow"], "17/read-only");
        assert!(!status(None).to_data().contains_key("appliedGcWindow"));
        for s in [status(None), status(Some(up)), waiting.clone(), windowed] {
            assert_eq!(NodeStatus::from_data(&s.to_data()), s);
        }
        assert_eq!(waiting.to_data()["rollout"], "waiting for m0, m2");
        assert_eq!(waiting.to_data()["pendingSince"], "7");
        assert!(!status(None).to_data().contains_key("rollout"));
        let data = status(Some(up)).to_data();
        assert_eq!(data["staticPod"], "present");
        assert_eq!(data["registry"], "not-ready");
        assert_eq!(data["upstream"], "unreachable");
        assert_eq!(data["cacheOnly"], "true");
    }

    #[test]
    fn unknown_or_missing_values_read_as_the_safe_default() {
        let mut data = status(None).to_data();
        data.insert("staticPod".into(), "maybe".into());
        data.insert("registry".into(), "READY".into());
        data.insert("upstream".into(), "maybe".into());
        data.insert("upstreamSince".into(), "1".into());
        data.insert("cacheOnly".into(), "true".into());
        data.insert("cacheOnlySince".into(), "1".into());
        data.remove("appliedGeneration");
        let s = NodeStatus::from_data(&data);
        assert_eq!(s.static_pod, StaticPod::Absent);
        assert_eq!(s.registry, RegistryHealth::Unknown);
        assert_eq!(s.upstream, None);
        assert_eq!(s.applied_generation, "");
    }
}
