//! Safe mode switching: a state machine over `Direct`, `Proxy` and `Detached` (and
//! upstream changes inside Proxy). Pure: the hook reads the state, the node reports and
//! a check result, calls [`step`], and writes what comes back.
//!
//! Two things move, never together: the **registry** (what the static pods on the
//! masters run) and the **cluster** (whether the pull Secret names the embedded
//! registry, which nodes reach through the masters listed in their mirror
//! configuration). The mirror configuration goes out once every master runs the
//! registry and its checks passed; the cluster follows once every Ready node
//! acknowledged it (see [`Fleet`]), and moves away before the registry is removed,
//! which happens once the nodes acknowledged a configuration without the masters.
//! See `docs/internal/mode-switching.md` for the transitions.
//!
//! Longer than 400 lines for a reason: [`step`] and its two branches (`to_direct`,
//! `to_registry`) are one state machine, and its transitions read best side by side
//! with the conditions they set. Its parts with a life of their own are beside it:
//! the check (`check`), the desired target (`desired`), the nodes (`fleet`) and the
//! pull Secret (`pull_secret`).

pub mod check;
pub mod desired;
pub mod fleet;
pub mod gc_window;
pub mod pull_secret;
pub mod release;

use fleet::first;
pub use fleet::{
    AckSummary, ConfigHash, Fleet, NodeAck, DEFAULT_ACK_TIMEOUT_SECS, NAMES_SHOWN, PREFLIGHT_OK,
    PREFLIGHT_VERDICTS,
};

use crate::model::node_status::{NodeStatus, RegistryHealth, StaticPod, WarmStatus};
use crate::model::settings::Mode;
use crate::model::switch::{
    CheckRecord, ClusterTarget, Condition, ConditionType, NodeConfig, Recheck, RegistryTarget,
    State,
};
use crate::module::EXCLUDE_LABEL;

/// What one master reported (its status ConfigMap).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    /// Master name.
    pub node: String,
    /// Its static pod manifest is on disk.
    pub static_pod: bool,
    /// Generation of the registry it applied (empty: none).
    pub generation: String,
    /// Its registry answered `/v2/`.
    pub ready: bool,
    /// Which `ro` password its registry accepts (`appliedRoUser`; empty: unknown).
    pub ro_user: String,
    /// Its message.
    pub message: String,
    /// Its warm-up's progress (a Proxy registry of a named release).
    pub warm: Option<WarmStatus>,
}

impl From<NodeStatus> for NodeReport {
    fn from(s: NodeStatus) -> Self {
        NodeReport {
            node: s.node,
            static_pod: s.static_pod == StaticPod::Present,
            generation: s.applied_generation,
            ready: s.registry == RegistryHealth::Ready,
            ro_user: s.applied_ro_user,
            message: s.message,
            warm: s.warm,
        }
    }
}

/// What the settings ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The mode.
    pub mode: Mode,
    /// The registry for Proxy/Detached (`None` for Direct).
    pub registry: Option<RegistryTarget>,
    /// The hash of the running release's wanted list (`warm::list`), which every
    /// master of a Proxy registry must report cached before the cluster is pointed at
    /// the masters (`None`: no release named, nothing to wait for).
    pub warm_list: Option<String>,
}

/// What the hook must check before it can step further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckNeeded {
    /// The upstream of this target (before any master switches to it).
    Upstream(RegistryTarget),
    /// The local mirror of this target (before nodes pull from it).
    Mirror(RegistryTarget),
    /// The S3 bucket of this target (before any master switches to it).
    Storage(RegistryTarget),
}

/// A recheck's outcome as a check record, when it is about the registry `state` runs and
/// says something the state does not know yet.
pub fn recheck_news(recheck: &Recheck, state: &State, now: i64) -> Option<CheckRecord> {
    let generation = &state.registry.as_ref()?.generation;
    let known = state.check.as_ref().is_some_and(|c| {
        (&c.generation, c.ok, &c.kind, &c.message)
            == (
                &recheck.generation,
                recheck.ok,
                &recheck.kind,
                &recheck.message,
            )
    });
    (&recheck.generation == generation && !known).then(|| CheckRecord {
        what: "upstream".into(),
        generation: recheck.generation.clone(),
        ok: recheck.ok,
        kind: recheck.kind.clone(),
        message: recheck.message.clone(),
        since: now,
    })
}

/// Which check the next [`step`] needs, if any. `scheduled`: also re-check an
/// upstream already in use (the metric and alert follow it).
pub fn check_needed(
    state: &State,
    desired: &Desired,
    nodes: &[NodeReport],
    scheduled: bool,
) -> Option<CheckNeeded> {
    let target = desired.registry.as_ref()?;
    if state.registry.as_ref() != Some(target) {
        let (done, _) = progress(state.check.as_ref(), target);
        match checks_before(target).get(done) {
            Some(&STORAGE) => return Some(CheckNeeded::Storage(target.clone())),
            Some(_) => return Some(CheckNeeded::Upstream(target.clone())),
            None => {}
        }
    }
    match target.mode {
        Mode::Proxy => scheduled.then(|| CheckNeeded::Upstream(target.clone())),
        Mode::Detached => {
            let deployed = state.registry.as_ref() == Some(target) && all_ready(target, nodes);
            let passed = mirror_check(state.check.as_ref(), target).is_some_and(|c| c.ok);
            (deployed && state.cluster == ClusterTarget::Upstream && !passed)
                .then(|| CheckNeeded::Mirror(target.clone()))
        }
        Mode::Direct => None,
    }
}

/// [`CheckRecord::what`] of the storage check.
pub const STORAGE: &str = "storage";
/// [`CheckRecord::what`] of the upstream check.
pub const UPSTREAM: &str = "upstream";

/// The checks `target` passes before any master runs it, in order: the storage (on
/// S3), then the upstream (Proxy). Each runs only once the ones before it passed, so
/// a record of one (passed or not) says that those before it passed.
pub fn checks_before(target: &RegistryTarget) -> Vec<&'static str> {
    let mut out = Vec::new();
    if target.s3.is_some() {
        out.push(STORAGE);
    }
    if target.mode == Mode::Proxy {
        out.push(UPSTREAM);
    }
    out
}

/// How many of [`checks_before`] `target` passed by the record `check`, and the
/// record when it is the next one's failure.
fn progress<'a>(
    check: Option<&'a CheckRecord>,
    target: &RegistryTarget,
) -> (usize, Option<&'a CheckRecord>) {
    let Some(c) = check.filter(|c| c.generation == target.generation) else {
        return (0, None);
    };
    match checks_before(target).iter().position(|w| *w == c.what) {
        Some(i) if c.ok => (i + 1, None),
        Some(i) => (i, Some(c)),
        None => (0, None),
    }
}

/// The record of `target`'s mirror check, if it is the last check (any record of its
/// generation but the storage check's, which runs before the masters get it).
fn mirror_check<'a>(
    check: Option<&'a CheckRecord>,
    target: &RegistryTarget,
) -> Option<&'a CheckRecord> {
    check.filter(|c| c.generation == target.generation && c.what != STORAGE)
}

/// Every master of `target` runs its generation and answers.
pub fn all_ready(target: &RegistryTarget, nodes: &[NodeReport]) -> bool {
    target.nodes.iter().all(|n| {
        nodes
            .iter()
            .any(|r| &r.node == n && r.generation == target.generation && r.ready)
    })
}

fn waiting_for(target: &RegistryTarget, nodes: &[NodeReport]) -> String {
    let mut out = Vec::new();
    for n in &target.nodes {
        match nodes.iter().find(|r| &r.node == n) {
            None => out.push(format!("{n}: no report yet")),
            Some(r) if r.generation != target.generation => out.push(format!(
                "{n}: runs generation {:?}, not {}",
                r.generation, target.generation
            )),
            Some(r) if !r.ready => out.push(format!("{n}: not ready ({})", r.message)),
            Some(_) => {}
        }
    }
    out.join("; ")
}

/// One step of the state machine. `check` is the result of the check
/// [`check_needed`] asked for (if it asked), `fleet` the nodes' acknowledgements,
/// `now` unix seconds.
pub fn step(
    mut s: State,
    desired: &Desired,
    nodes: &[NodeReport],
    check: Option<CheckRecord>,
    fleet: &Fleet,
    now: i64,
) -> State {
    if let Some(mut c) = check {
        // Keep the first time this outcome was seen: a repeated check changes nothing.
        if let Some(old) = &s.check {
            if (&old.what, &old.generation, old.ok, &old.kind, &old.message)
                == (&c.what, &c.generation, c.ok, &c.kind, &c.message)
            {
                c.since = old.since;
            }
        }
        s.check = Some(c);
    }
    let mut conds = Conds::new(s.conditions.clone(), now);
    match &desired.registry {
        None => to_direct(&mut s, &mut conds, fleet, now),
        Some(target) => to_registry(
            &mut s,
            &mut conds,
            target,
            nodes,
            desired.warm_list.as_deref(),
            fleet,
            now,
        ),
    }
    let config = note_config(&mut s, fleet, now);
    let acks = fleet.summary(&config.hash);
    let waited = now - config.since;
    let overdue = !acks.laggards.is_empty() && waited >= fleet.timeout_secs;
    // The full count only while a step waits on the nodes: otherwise nodes coming and
    // going (autoscaling) would rewrite the state on every run.
    let waiting = conds.reason_of(ConditionType::ClusterSwitched) == Some("NodesConfiguring")
        || conds.reason_of(ConditionType::CleanupDone) == Some("NodesConfiguring");
    let message = if waiting {
        acks.describe(waited, overdue)
    } else if acks.laggards.is_empty() {
        format!(
            "no Ready node lacks configuration {}; no step waits on the nodes",
            acks.hash
        )
    } else {
        format!(
            "{} Ready node(s) have not acknowledged configuration {}: {}; no step waits on them now",
            acks.laggards.len(),
            acks.hash,
            first(&acks.laggards)
        )
    };
    conds.set(
        ConditionType::NodesAcknowledged,
        acks.laggards.is_empty(),
        if acks.laggards.is_empty() {
            "Acknowledged"
        } else if overdue && waiting {
            "NodesNotAcknowledging"
        } else {
            "Waiting"
        },
        &message,
    );
    if acks.preflight.is_empty() {
        conds.set(
            ConditionType::NodesPreflight,
            true,
            "Passed",
            "no node reports a containerd that does not read registry.d",
        );
    } else {
        conds.set(
            ConditionType::NodesPreflight,
            false,
            "ContainerdNotReadingRegistryD",
            &format!(
                "{} node(s) whose containerd does not read registry.d: {}; fix their containerd configuration or label them {EXCLUDE_LABEL}=true",
                acks.preflight.len(),
                first(&acks.preflight)
            ),
        );
    }
    s.conditions = conds.done();
    s
}

/// The configuration the nodes get now (its hash over the listed masters), recorded
/// with the time it was first rendered.
fn note_config(s: &mut State, fleet: &Fleet, now: i64) -> NodeConfig {
    let hash = (fleet.config_hash)(&s.mirrors);
    if s.node_config.as_ref().map(|c| &c.hash) != Some(&hash) {
        s.node_config = Some(NodeConfig { hash, since: now });
    }
    s.node_config.clone().unwrap_or_default()
}

fn to_direct(s: &mut State, c: &mut Conds, fleet: &Fleet, now: i64) {
    c.set(
        ConditionType::ChecksPassed,
        true,
        "NotNeeded",
        "mode Direct needs no check",
    );
    if s.cluster == ClusterTarget::Embedded {
        s.cluster = ClusterTarget::Upstream;
        s.switched_to_upstream_at = Some(now);
    }
    c.set(
        ConditionType::ClusterSwitched,
        true,
        "Upstream",
        "nodes pull straight from the upstream registry",
    );
    if s.registry.is_some() {
        // Nodes pulled through the masters: the masters stay listed until Deckhouse
        // runs with the restored references, and the registry until every Ready node
        // acknowledged the configuration without them. Otherwise remove it now.
        let used = s.switched_to_upstream_at.is_some();
        let wait = if used && !s.mirrors.is_empty() && !fleet.deckhouse_restored {
            Some((
                "DeckhouseRollout",
                "the masters stay in the nodes' mirror configuration until the pull Secret is seen restored and the Deckhouse Deployment runs with the restored references".to_string(),
            ))
        } else {
            s.mirrors.clear();
            let config = note_config(s, fleet, now);
            let acks = fleet.summary(&config.hash);
            (used && !acks.proven()).then(|| {
                (
                    "NodesConfiguring",
                    format!(
                        "the masters' registries stay until every Ready node dropped them: {}",
                        acks.describe(now - config.since, now - config.since >= fleet.timeout_secs)
                    ),
                )
            })
        };
        if let Some((reason, message)) = wait {
            c.set(ConditionType::CleanupDone, false, reason, &message);
            c.set(
                ConditionType::NodeServicesReady,
                true,
                "NotNeeded",
                "mode Direct runs no registry",
            );
            c.set(
                ConditionType::Ready,
                false,
                "CleaningUp",
                "switched to Direct; the masters' registries go once no node needs them",
            );
            return;
        }
        s.registry = None;
        s.switched_to_upstream_at = None;
        s.mirrors.clear();
        s.mirrors_since = None;
    }
    c.set(
        ConditionType::CleanupDone,
        true,
        "Removed",
        "no registry runs on the masters",
    );
    c.set(
        ConditionType::NodeServicesReady,
        true,
        "NotNeeded",
        "mode Direct runs no registry",
    );
    c.set(ConditionType::Ready, true, "Direct", "mode Direct");
}

/// What master `node` reports of its warm-up, if it reports one.
fn warm_of<'a>(nodes: &'a [NodeReport], node: &str) -> Option<&'a WarmStatus> {
    nodes
        .iter()
        .find(|r| r.node == node)
        .and_then(|r| r.warm.as_ref())
}

/// The masters of `target` whose cache does not hold every image of list `hash`, each
/// with what it reported, for a condition's message.
pub fn cold_masters(target: &RegistryTarget, nodes: &[NodeReport], hash: &str) -> Vec<String> {
    target
        .nodes
        .iter()
        .filter_map(|n| match warm_of(nodes, n) {
            Some(w) if w.complete_for(hash) => None,
            None => Some(format!("{n}: no warm-up report yet")),
            Some(w) if w.list_hash != hash => Some(format!(
                "{n}: has not finished a pass over list {hash} yet{}",
                if w.list_hash.is_empty() {
                    String::new()
                } else {
                    format!(" (last: list {})", w.list_hash)
                }
            )),
            Some(w) => Some(format!(
                "{n}: {}/{} cached{}, missing {}",
                w.cached,
                w.wanted,
                if w.unavailable > 0 {
                    format!(", {} unknown to the upstream", w.unavailable)
                } else {
                    String::new()
                },
                w.missing.join(", ")
            )),
        })
        .collect()
}

/// What the masters of `target` report of the next releases (announced, not yet rolled
/// out: `warm::next`), for `CacheWarm`'s message: `; next release v1.67.0: cached on
/// every master` or the masters not there yet. Empty when none reports one. It never
/// changes the condition's status: the running release is what the switch waits for.
pub fn next_release_note(target: &RegistryTarget, nodes: &[NodeReport]) -> String {
    let reports: Vec<(&String, &[crate::model::node_status::WarmNext])> = target
        .nodes
        .iter()
        .map(|n| {
            let next = warm_of(nodes, n)
                .map(|w| w.next.as_slice())
                .unwrap_or_default();
            (n, next)
        })
        .collect();
    let versions: std::collections::BTreeSet<&str> = reports
        .iter()
        .flat_map(|(_, next)| next.iter().map(|x| x.version.as_str()))
        .collect();
    let mut out = String::new();
    for v in versions {
        let behind: Vec<String> = reports
            .iter()
            .filter_map(|(n, next)| match next.iter().find(|x| x.version == v) {
                Some(x) if x.complete() => None,
                Some(x) if !x.problem.is_empty() => Some(format!("{n}: {}", x.problem)),
                Some(x) => Some(format!("{n}: {}/{}", x.cached, x.wanted)),
                None => Some(format!("{n}: no report")),
            })
            .collect();
        if behind.is_empty() {
            out.push_str(&format!("; next release {v}: cached on every master"));
        } else {
            out.push_str(&format!(
                "; next release {v}: not yet cached on {}",
                behind
                    .iter()
                    .take(NAMES_SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    out
}

/// The masters the nodes' mirror list names once every master of `target` serves: all of
/// them, except, in Proxy with a release named, a master not listed yet whose cache does
/// not hold the running release (a master joining a switched cluster, or one replaced):
/// it enters once its warm-up completes, so a cold cache never sits in the list while the
/// upstream may be down. A master already listed stays while it warms a new release's
/// list (it still serves the old one). Before the first switch every master is warm here
/// (`cache_warm` holds the switch until then), so this narrows only a switched cluster.
fn mirrors_for(
    s: &State,
    target: &RegistryTarget,
    nodes: &[NodeReport],
    warm_list: Option<&str>,
) -> Vec<String> {
    let warm = |n: &String| match (target.mode, warm_list) {
        (Mode::Proxy, Some(hash)) => warm_of(nodes, n).is_some_and(|w| w.complete_for(hash)),
        _ => true,
    };
    target
        .nodes
        .iter()
        .filter(|n| s.mirrors.contains(n) || warm(n))
        .cloned()
        .collect()
}

/// Sets `CacheWarm` for a Proxy target; `false` when the cluster must not be pointed
/// at the masters yet (it pulls from the upstream and a master is cold).
fn cache_warm(
    s: &State,
    c: &mut Conds,
    target: &RegistryTarget,
    nodes: &[NodeReport],
    warm_list: Option<&str>,
) -> bool {
    if target.mode != Mode::Proxy {
        return true;
    }
    let Some(hash) = warm_list else {
        c.set(
            ConditionType::CacheWarm,
            true,
            "NoRelease",
            "no release is named (global.deckhouseVersion): there is no image list to warm",
        );
        return true;
    };
    let cold = cold_masters(target, nodes, hash);
    let next = next_release_note(target, nodes);
    if cold.is_empty() {
        c.set(
            ConditionType::CacheWarm,
            true,
            "Warm",
            &format!("every master caches every image of the running release (list {hash}){next}"),
        );
        return true;
    }
    let stays = match s.cluster {
        ClusterTarget::Upstream => "nodes keep pulling from the upstream until every master caches the release",
        ClusterTarget::Embedded => "nodes keep pulling through the masters, which fetch what they lack while the upstream answers; a master not yet in the nodes' mirror list enters it once its cache is warm",
    };
    c.set(
        ConditionType::CacheWarm,
        false,
        "Warming",
        &format!(
            "{} of {} master(s) do not cache every image of the running release yet: {}; {stays}{next}",
            cold.len(),
            target.nodes.len(),
            cold.iter()
                .take(NAMES_SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
                + &if cold.len() > NAMES_SHOWN {
                    format!(" and {} more", cold.len() - NAMES_SHOWN)
                } else {
                    String::new()
                }
        ),
    );
    s.cluster == ClusterTarget::Embedded
}

fn to_registry(
    s: &mut State,
    c: &mut Conds,
    target: &RegistryTarget,
    nodes: &[NodeReport],
    warm_list: Option<&str>,
    fleet: &Fleet,
    now: i64,
) {
    // The last check about this target but the storage check: the upstream check
    // (Proxy), the mirror check (Detached).
    let passed = s
        .check
        .as_ref()
        .filter(|k| k.generation == target.generation)
        .filter(|k| k.what != STORAGE)
        .map(|k| (k.ok, k.kind.clone(), k.message.clone()));
    let current = s.registry.clone();
    c.set(
        ConditionType::CleanupDone,
        true,
        "NotNeeded",
        "nothing to remove",
    );

    // Detached over a Proxy cache the cluster uses would serve a partial mirror: the
    // safe way is through Direct, where the mirror is filled and checked first.
    if target.mode == Mode::Detached
        && s.cluster == ClusterTarget::Embedded
        && current.as_ref().is_some_and(|r| r.mode == Mode::Proxy)
    {
        c.set(ConditionType::Ready, false, "TransitionRefused", "Proxy to Detached directly is refused: the cache is not a full mirror; switch to Direct, push the mirror, then to Detached");
        return;
    }

    // Detached's data is where its storage is: moving it (Fs to S3, another bucket or
    // root) while nodes pull from the mirror would serve them an empty one, since
    // nothing is migrated. The safe way is through Direct, as above.
    let place = |r: &RegistryTarget| {
        r.s3.as_ref()
            .map(|b| b.place())
            .map(|(e, b, r)| (e.to_string(), b.to_string(), r.to_string()))
    };
    if target.mode == Mode::Detached
        && s.cluster == ClusterTarget::Embedded
        && current
            .as_ref()
            .is_some_and(|r| r.mode == Mode::Detached && place(r) != place(target))
    {
        c.set(ConditionType::Ready, false, "TransitionRefused", "moving Detached to another storage (Fs to S3, another bucket or rootDirectory) while nodes pull from the mirror is refused: the data is not migrated; switch to Direct, then to Detached on the new storage and push the mirror");
        return;
    }

    // Nodes must always have a master to pull from while the pull Secret names the
    // embedded registry: a target that keeps none of the listed masters (they are no
    // longer masters) sends the cluster back to the upstream first.
    if current.as_ref() != Some(target)
        && s.cluster == ClusterTarget::Embedded
        && !s.mirrors.iter().any(|m| target.nodes.contains(m))
    {
        s.cluster = ClusterTarget::Upstream;
        s.mirrors.clear();
        s.mirrors_since = None;
    }

    if current.as_ref() != Some(target) {
        let (done, failed) = progress(s.check.as_ref(), target);
        if let Some(what) = checks_before(target).get(done) {
            let name = if *what == STORAGE {
                "Storage"
            } else {
                "Upstream"
            };
            match failed {
                Some(f) => {
                    c.set(
                        ConditionType::ChecksPassed,
                        false,
                        reason(&f.kind),
                        &f.message,
                    );
                    c.set(
                        ConditionType::Ready,
                        false,
                        &format!("{name}CheckFailed"),
                        &format!("the cluster stays on its current registry: {}", f.message),
                    );
                }
                None => {
                    c.set(
                        ConditionType::ChecksPassed,
                        false,
                        "Pending",
                        &format!("the {what} check has not run yet"),
                    );
                    c.set(
                        ConditionType::Ready,
                        false,
                        &format!("{name}CheckPending"),
                        &format!("waiting for the {what} check"),
                    );
                }
            }
            return;
        }
        s.registry = Some(target.clone());
        s.switched_to_upstream_at = None;
    }
    // Mirrors the nodes use: drop masters leaving the target at once, add the others
    // only once they serve this generation.
    s.mirrors.retain(|m| target.nodes.contains(m));
    let ready = all_ready(target, nodes);
    if !ready {
        c.set(
            ConditionType::NodeServicesReady,
            false,
            "Rollout",
            &format!("waiting for the masters: {}", waiting_for(target, nodes)),
        );
    } else {
        c.set(
            ConditionType::NodeServicesReady,
            true,
            "AllServing",
            &format!("every master runs generation {}", target.generation),
        );
    }
    match target.mode {
        Mode::Proxy => c.set(
            ConditionType::ChecksPassed,
            true,
            "UpstreamUsable",
            passed
                .as_ref()
                .map(|p| p.2.as_str())
                .unwrap_or("the upstream check passed"),
        ),
        _ => match &passed {
            Some((true, _, m)) => c.set(ConditionType::ChecksPassed, true, "MirrorComplete", m),
            Some((false, kind, m)) => c.set(ConditionType::ChecksPassed, false, reason(kind), m),
            None if s.cluster == ClusterTarget::Embedded => c.set(
                ConditionType::ChecksPassed,
                true,
                "MirrorInUse",
                "the cluster already pulls from the mirror",
            ),
            None => c.set(
                ConditionType::ChecksPassed,
                false,
                "Pending",
                "the mirror is checked once every master serves it",
            ),
        },
    }
    let warm = cache_warm(s, c, target, nodes, warm_list);
    if !ready {
        let stays = match s.cluster {
            ClusterTarget::Embedded => "nodes keep pulling through the masters that serve",
            ClusterTarget::Upstream => "nodes keep pulling from the upstream",
        };
        c.set(
            ConditionType::ClusterSwitched,
            s.cluster == ClusterTarget::Embedded,
            "Waiting",
            stays,
        );
        c.set(
            ConditionType::Ready,
            false,
            "Rollout",
            "the masters are applying the new registry",
        );
        return;
    }
    let mirror_ok = target.mode == Mode::Proxy
        || s.cluster == ClusterTarget::Embedded
        || matches!(passed, Some((true, _, _)));
    if !mirror_ok {
        c.set(
            ConditionType::ClusterSwitched,
            false,
            "Waiting",
            "nodes keep pulling from the upstream until the mirror holds the running release",
        );
        c.set(
            ConditionType::Ready,
            false,
            "MirrorIncomplete",
            "push the release into the mirror (d8 mirror push); the check repeats on every run",
        );
        return;
    }
    if !warm {
        c.set(
            ConditionType::ClusterSwitched,
            false,
            "CacheWarming",
            "nodes keep pulling from the upstream until every master caches the running release (see CacheWarm)",
        );
        c.set(
            ConditionType::Ready,
            false,
            "CacheWarming",
            "every master serves; waiting for their caches to hold every image of the running release",
        );
        return;
    }
    if s.cluster == ClusterTarget::Upstream {
        // Preflight: nodes whose containerd would not read the mirror configuration
        // stop the switch before its first step.
        let pre = fleet.summary("");
        if !pre.preflight.is_empty() {
            c.set(
                ConditionType::ClusterSwitched,
                false,
                "NodesPreflight",
                "nodes keep pulling from the upstream: some nodes' containerd does not read registry.d (see NodesPreflight)",
            );
            c.set(
                ConditionType::Ready,
                false,
                "NodesPreflightFailed",
                "fix the listed nodes' containerd configuration, or exclude them",
            );
            return;
        }
    }
    if s.mirrors.is_empty() || s.mirrors_since.is_none() {
        s.mirrors_since = Some(now);
    }
    s.mirrors = mirrors_for(s, target, nodes, warm_list);
    if s.cluster == ClusterTarget::Upstream {
        let config = note_config(s, fleet, now);
        let acks = fleet.summary(&config.hash);
        if !acks.proven() {
            let waited = now - config.since;
            c.set(
                ConditionType::ClusterSwitched,
                false,
                "NodesConfiguring",
                &format!(
                    "nodes receive the mirror configuration for {}; the pull Secret switches once every Ready node acknowledged it: {}",
                    target.nodes.join(", "),
                    acks.describe(waited, waited >= fleet.timeout_secs)
                ),
            );
            c.set(
                ConditionType::Ready,
                false,
                "NodesConfiguring",
                "every master serves; waiting for the nodes to acknowledge the mirror configuration",
            );
            return;
        }
    }
    s.cluster = ClusterTarget::Embedded;
    c.set(
        ConditionType::ClusterSwitched,
        true,
        "Embedded",
        &format!("nodes pull through {}", target.nodes.join(", ")),
    );
    c.set(
        ConditionType::Ready,
        true,
        &format!("{:?}", target.mode),
        &format!(
            "mode {:?}: every master serves generation {}",
            target.mode, target.generation
        ),
    );
}

/// The `ChecksPassed` reason of a failed check record's kind: the failure kind's own
/// ([`crate::distribution::Kind::reason`]); `CheckPending` while the check waits for
/// its inputs, `CheckFailed` for a kind this version does not know (an older state).
fn reason(kind: &str) -> &'static str {
    if let Some(k) = crate::distribution::Kind::from_name(kind) {
        return k.reason();
    }
    match crate::storage::Kind::from_name(kind) {
        Some(k) => k.reason(),
        None if kind == "pending" => "CheckPending",
        None => "CheckFailed",
    }
}

/// Conditions with transition times kept while the status is unchanged.
struct Conds {
    old: Vec<Condition>,
    new: Vec<Condition>,
    now: i64,
}

impl Conds {
    fn new(old: Vec<Condition>, now: i64) -> Self {
        Conds {
            old,
            new: Vec::new(),
            now,
        }
    }

    fn set(&mut self, type_: ConditionType, ok: bool, reason: &str, message: &str) {
        let status = if ok { "True" } else { "False" }.to_string();
        self.new.retain(|c| c.type_ != type_);
        let since = self
            .old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time)
            .unwrap_or(self.now);
        self.new.push(Condition {
            type_,
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: since,
        });
    }

    fn reason_of(&self, type_: ConditionType) -> Option<&str> {
        self.new
            .iter()
            .find(|c| c.type_ == type_)
            .map(|c| c.reason.as_str())
    }

    fn done(mut self) -> Vec<Condition> {
        self.new.sort_by_key(|c| c.type_);
        self.new
    }
}

#[cfg(test)]
mod tests;
