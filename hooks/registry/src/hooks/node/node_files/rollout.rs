//! Rolling restarts: a changed configuration reaches one master at a time.
//!
//! The chart renders every master's Secret from the current values at once, so the gate
//! is here, where the configuration is installed. Each Secret carries the annotation
//! [`ORDER_ANNOTATION`]: every master of the registry in order (the sorted
//! `internal.masters`), each with the config hash the chart rendered for it
//! (`m0=<sha256>,m1=<sha256>,…`). A master installs a changed configuration only when
//! every master before it reports, in its status ConfigMap, that configuration applied
//! and its registry ready on it ([`decide`]); else it keeps what it runs and reports
//! `rollout: waiting for …` and `pendingSince`.
//!
//! A master before it with no status ConfigMap has never run the node hook (nothing of it
//! serves) and is not waited for. One that never comes back does not block the others
//! for ever: each master it still waits for costs [`BOUND_SECS`] from `pendingSince`,
//! after which it installs anyway (a warning, and the wait in the metric
//! `d8_embedded_registry_rollout_wait_seconds`). Counting the bound per master not yet
//! there keeps two masters waiting on the same dead one from going at the same moment:
//! the later one also waits for the earlier one.
//!
//! Never gated: a first install (no manifest on the host yet), a removal, a master alone
//! (nothing before it), and a Proxy registry switching between proxying and cache-only
//! (node-local, `cache_only`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::node_status::RegistryHealth;
use crate::untrusted;

/// The Secret annotation that lists the masters in order with their config hashes.
pub const ORDER_ANNOTATION: &str = "embedded-registry.deckhouse.io/rollout-order";

/// How long (seconds) a master waits for each master before it that does not run its
/// new configuration, counted from `pendingSince`: 10 minutes.
pub const BOUND_SECS: i64 = 600;

/// The most masters [`ORDER_ANNOTATION`] may list.
pub const MAX_MASTERS: usize = 128;

/// A config hash as the chart writes it: a SHA-256, 64 lower-case hex digits.
fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The masters before `me` in [`ORDER_ANNOTATION`]'s `text`, each with the config hash
/// it should run. Empty text (a chart without rolling restarts) is an empty list. The
/// text comes from the cluster: each entry must be `<node>=<sha256>` with a DNS-1123
/// node name, no name twice, at most [`MAX_MASTERS`] entries, and `me` among them;
/// otherwise the error names the fault in one line, without quoting the text.
pub fn before(text: &str, me: &str) -> Result<Vec<(String, String)>, String> {
    if text.is_empty() {
        return Ok(Vec::new());
    }
    let refuse = |what: String| {
        Err(format!(
            "annotation {ORDER_ANNOTATION}: {what}; it must list the masters as \
             <node>=<sha256>,… as the chart renders it (re-render the module)"
        ))
    };
    let entries: Vec<&str> = text.split(',').collect();
    if entries.len() > MAX_MASTERS {
        return refuse(format!("more than {MAX_MASTERS} entries"));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    let mut found = false;
    for (i, entry) in entries.iter().enumerate() {
        let Some((name, hash)) = entry.split_once('=') else {
            return refuse(format!("entry {} has no '='", i + 1));
        };
        if let Err(e) = untrusted::node_name(name) {
            return refuse(format!("entry {}: {e}", i + 1));
        }
        if !is_hash(hash) {
            return refuse(format!(
                "entry {}: the hash is not 64 lower-case hex digits",
                i + 1
            ));
        }
        if !seen.insert(name) {
            return refuse(format!("entry {}: a node listed twice", i + 1));
        }
        if name == me {
            found = true;
        } else if !found {
            out.push((name.to_string(), hash.to_string()));
        }
    }
    if !found {
        return refuse("this node is not listed".to_string());
    }
    Ok(out)
}

/// What another master reports in its status ConfigMap, as far as the gate reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The config hash it applied.
    pub applied_config_hash: String,
    /// Its registry's answer on that configuration.
    pub registry: RegistryHealth,
}

/// Whether to install a changed configuration now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Install it. `overdue`: the masters not yet on their configuration that the bound
    /// let it pass (empty when none was waited for in vain).
    Install {
        /// Masters passed after the bound.
        overdue: Vec<String>,
    },
    /// Keep the running configuration; wait for these masters (in order), since `since`.
    Wait {
        /// The masters before this one not yet on their configuration.
        waiting_for: Vec<String>,
        /// Since when it waits (unix seconds).
        since: i64,
    },
}

/// The gate. `before`: the masters before this one with the hash each should run
/// ([`before`]); `peers`: their status by node name (a master without a status
/// ConfigMap is absent); `pending_since`: when this master began waiting (a previous
/// run's `pendingSince`), `None` when it was not waiting; `now` in unix seconds.
///
/// A master is there when it applied its hash and its registry is ready on it. The
/// change goes when every master before it that has a status is there, or when it has
/// waited [`BOUND_SECS`] for each one that is not.
pub fn decide(
    before: &[(String, String)],
    peers: &BTreeMap<String, Peer>,
    pending_since: Option<i64>,
    now: i64,
) -> Decision {
    let waiting_for: Vec<String> = before
        .iter()
        .filter(|(name, hash)| {
            peers.get(name).is_some_and(|p| {
                !(p.applied_config_hash == *hash && p.registry == RegistryHealth::Ready)
            })
        })
        .map(|(name, _)| name.clone())
        .collect();
    if waiting_for.is_empty() {
        return Decision::Install {
            overdue: Vec::new(),
        };
    }
    let since = pending_since.unwrap_or(now).min(now);
    if now - since >= BOUND_SECS * waiting_for.len() as i64 {
        return Decision::Install {
            overdue: waiting_for,
        };
    }
    Decision::Wait { waiting_for, since }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(c: char) -> String {
        c.to_string().repeat(64)
    }

    fn order(names: &[&str]) -> String {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| format!("{n}={}", h(char::from(b'a' + i as u8))))
            .collect::<Vec<_>>()
            .join(",")
    }

    #[test]
    fn before_lists_the_masters_ahead_in_order() {
        let text = order(&["m0", "m1", "m2"]);
        assert_eq!(before(&text, "m0").unwrap(), vec![]);
        assert_eq!(
            before(&text, "m2").unwrap(),
            vec![("m0".to_string(), h('a')), ("m1".to_string(), h('b'))]
        );
        assert_eq!(before("", "m2").unwrap(), vec![]);
    }

    #[test]
    fn a_hostile_order_is_refused_in_one_line_without_its_text() {
        let long = (0..=MAX_MASTERS)
            .map(|i| format!("m{i}={}", h('a')))
            .collect::<Vec<_>>()
            .join(",");
        let cases = [
            (format!("m0={},m1", h('a')), "no '='"),
            (format!("M0;rm -rf /={},m1={}", h('a'), h('b')), "DNS-1123"),
            (format!("m0=ABC,m1={}", h('b')), "64 lower-case hex"),
            (
                format!("m0={},m0={},m1={}", h('a'), h('a'), h('b')),
                "twice",
            ),
            (format!("m0={}", h('a')), "not listed"),
            (long, "more than 128"),
        ];
        for (text, why) in cases {
            let e = before(&text, "m1").unwrap_err();
            assert!(e.contains(ORDER_ANNOTATION) && e.contains(why), "{e}");
            assert!(!e.contains("rm -rf") && !e.contains('\n'), "{e}");
        }
    }

    fn peer(hash: &str, registry: RegistryHealth) -> Peer {
        Peer {
            applied_config_hash: hash.into(),
            registry,
        }
    }

    #[test]
    fn the_bound_counts_once_per_master_not_there() {
        let ahead = vec![("m0".to_string(), h('a')), ("m1".to_string(), h('b'))];
        let mut peers = BTreeMap::from([
            ("m0".to_string(), peer(&h('0'), RegistryHealth::Ready)),
            ("m1".to_string(), peer(&h('1'), RegistryHealth::Ready)),
        ]);
        let wait = decide(&ahead, &peers, None, 1000);
        assert_eq!(
            wait,
            Decision::Wait {
                waiting_for: vec!["m0".into(), "m1".into()],
                since: 1000
            }
        );
        // Two masters not there: twice the bound.
        let later = decide(&ahead, &peers, Some(1000), 1000 + BOUND_SECS);
        assert!(matches!(later, Decision::Wait { .. }), "{later:?}");
        assert_eq!(
            decide(&ahead, &peers, Some(1000), 1000 + 2 * BOUND_SECS),
            Decision::Install {
                overdue: vec!["m0".into(), "m1".into()]
            }
        );
        // m1 there (m0 dead): one bound.
        peers.insert("m1".into(), peer(&h('b'), RegistryHealth::Ready));
        assert_eq!(
            decide(&ahead, &peers, Some(1000), 1000 + BOUND_SECS),
            Decision::Install {
                overdue: vec!["m0".into()]
            }
        );
        // Applied but not ready yet (restarting) is not there.
        peers.insert("m0".into(), peer(&h('a'), RegistryHealth::NotReady));
        assert!(matches!(
            decide(&ahead, &peers, Some(1000), 1001),
            Decision::Wait { .. }
        ));
        peers.insert("m0".into(), peer(&h('a'), RegistryHealth::Ready));
        assert_eq!(
            decide(&ahead, &peers, Some(1000), 1001),
            Decision::Install { overdue: vec![] }
        );
        // A master without a status has never run: not waited for.
        assert_eq!(
            decide(&ahead, &BTreeMap::new(), None, 1),
            Decision::Install { overdue: vec![] }
        );
    }
}
