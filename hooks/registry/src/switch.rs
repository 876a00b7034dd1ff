//! Safe mode switching: a state machine over `Direct`, `Proxy` and `Detached` (and
//! upstream changes inside Proxy). Pure: the hook reads the state, the node reports and
//! a check result, calls [`step`], and writes what comes back.
//!
//! Two things move, never together: the **registry** (what the static pods on the
//! masters run) and the **cluster** (whether the pull Secret names the embedded
//! registry, which nodes reach through the masters listed in their mirror
//! configuration). The mirror configuration goes out once every master runs the
//! registry and its checks passed; the cluster follows after the nodes had time to
//! apply it, and moves away before the registry is removed. See
//! `docs/mode-switching.md` for the transitions.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::settings::Mode;

/// Seconds the masters' registries stay after the cluster moved back to the upstream,
/// so pods still holding the embedded registry's image references keep pulling.
pub const CLEANUP_GRACE_SECS: i64 = 300;

/// Seconds the nodes get to apply the mirror configuration (bashible runs a changed
/// NodeGroupConfiguration within minutes) before the pull Secret names the embedded
/// registry: a pod rescheduled then must find its image through the masters.
pub const NODE_CONFIG_GRACE_SECS: i64 = 300;

/// The upstream a Proxy registry pulls through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTarget {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Repository path.
    pub path: String,
    /// Upstream user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Upstream password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Upstream CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Cache TTL.
    pub ttl: String,
}

/// What the masters' static pods run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryTarget {
    /// `Proxy` or `Detached`.
    pub mode: Mode,
    /// The upstream (Proxy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyTarget>,
    /// Masters that run a registry, in mirror order.
    pub nodes: Vec<String>,
    /// Hash of everything above: masters report which generation they run.
    pub generation: String,
}

impl RegistryTarget {
    /// A target with its generation computed. `key` is a secret of the module (the
    /// registries' shared `http.secret`): the generation covers the upstream password,
    /// so that a new password restarts the registries, and it is printed and stored in
    /// ConfigMaps, so it must not let anyone test guesses of that password offline. An
    /// HMAC under a key only the cluster's Secrets hold does both.
    pub fn new(mode: Mode, proxy: Option<ProxyTarget>, nodes: Vec<String>, key: &[u8]) -> Self {
        let mut t = RegistryTarget {
            mode,
            proxy,
            nodes,
            generation: String::new(),
        };
        let text = serde_json::to_string(&t).expect("serialisable");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        t.generation = mac.finalize().into_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        t
    }
}

/// Where nodes pull from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ClusterTarget {
    /// Straight from the upstream registry (no mirror configuration on nodes).
    #[default]
    Upstream,
    /// Through the masters' registries (containerd mirror configuration).
    Embedded,
}

/// A check's outcome for one registry generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRecord {
    /// `upstream` (Proxy) or `mirror` (Detached).
    pub what: String,
    /// The generation checked.
    pub generation: String,
    /// Passed.
    pub ok: bool,
    /// Failure kind, empty when ok.
    #[serde(default)]
    pub kind: String,
    /// What was found.
    pub message: String,
    /// When this outcome was first seen (unix seconds).
    pub since: i64,
}

/// A status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `ChecksPassed`, `NodeServicesReady`, `ClusterSwitched`, `CleanupDone`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True` or `False`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// When `status` last changed (unix seconds).
    pub last_transition_time: i64,
}

/// The switch's state, kept in the `registry-state` Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// What the masters run (`None`: no static pods).
    #[serde(default)]
    pub registry: Option<RegistryTarget>,
    /// Where nodes pull from.
    #[serde(default)]
    pub cluster: ClusterTarget,
    /// Masters listed in the nodes' mirror configuration, proven to serve.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// When the mirror configuration was first rendered (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors_since: Option<i64>,
    /// When the cluster last moved back to the upstream (unix seconds).
    #[serde(default)]
    pub switched_to_upstream_at: Option<i64>,
    /// The last check.
    #[serde(default)]
    pub check: Option<CheckRecord>,
    /// Conditions, by type.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

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
}

/// What the settings ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    /// The mode.
    pub mode: Mode,
    /// The registry for Proxy/Detached (`None` for Direct).
    pub registry: Option<RegistryTarget>,
}

/// What the hook must check before it can step further.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckNeeded {
    /// The upstream of this target (before any master switches to it).
    Upstream(RegistryTarget),
    /// The local mirror of this target (before nodes pull from it).
    Mirror(RegistryTarget),
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
    match target.mode {
        Mode::Proxy => {
            let pending = state.registry.as_ref() != Some(target);
            let passed = state
                .check
                .as_ref()
                .is_some_and(|c| c.generation == target.generation && c.ok);
            (pending && !passed || scheduled).then(|| CheckNeeded::Upstream(target.clone()))
        }
        Mode::Detached => {
            let deployed = state.registry.as_ref() == Some(target) && all_ready(target, nodes);
            let passed = state
                .check
                .as_ref()
                .is_some_and(|c| c.generation == target.generation && c.ok);
            (deployed && state.cluster == ClusterTarget::Upstream && !passed)
                .then(|| CheckNeeded::Mirror(target.clone()))
        }
        Mode::Direct => None,
    }
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
/// [`check_needed`] asked for (if it asked), `now` unix seconds.
pub fn step(
    mut s: State,
    desired: &Desired,
    nodes: &[NodeReport],
    check: Option<CheckRecord>,
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
        None => to_direct(&mut s, &mut conds, now),
        Some(target) => to_registry(&mut s, &mut conds, target, nodes, now),
    }
    s.conditions = conds.done();
    s
}

fn to_direct(s: &mut State, c: &mut Conds, now: i64) {
    c.set(
        "ChecksPassed",
        true,
        "NotNeeded",
        "mode Direct needs no check",
    );
    if s.cluster == ClusterTarget::Embedded {
        s.cluster = ClusterTarget::Upstream;
        s.switched_to_upstream_at = Some(now);
    }
    c.set(
        "ClusterSwitched",
        true,
        "Upstream",
        "nodes pull straight from the upstream registry",
    );
    if s.registry.is_some() {
        // Grace only when nodes did pull through the masters; otherwise remove now.
        let since = s
            .switched_to_upstream_at
            .unwrap_or(now - CLEANUP_GRACE_SECS);
        if now - since >= CLEANUP_GRACE_SECS {
            s.registry = None;
            s.switched_to_upstream_at = None;
            s.mirrors.clear();
            s.mirrors_since = None;
        } else {
            c.set(
                "CleanupDone",
                false,
                "GracePeriod",
                &format!("the masters' registries stay {}s more, until nodes dropped the mirror configuration", CLEANUP_GRACE_SECS - (now - since)),
            );
            c.set(
                "NodeServicesReady",
                true,
                "NotNeeded",
                "mode Direct runs no registry",
            );
            c.set(
                "Ready",
                false,
                "CleaningUp",
                "switched to Direct; removing the masters' registries after the grace period",
            );
            return;
        }
    }
    c.set(
        "CleanupDone",
        true,
        "Removed",
        "no registry runs on the masters",
    );
    c.set(
        "NodeServicesReady",
        true,
        "NotNeeded",
        "mode Direct runs no registry",
    );
    c.set("Ready", true, "Direct", "mode Direct");
}

fn to_registry(
    s: &mut State,
    c: &mut Conds,
    target: &RegistryTarget,
    nodes: &[NodeReport],
    now: i64,
) {
    let passed = s
        .check
        .as_ref()
        .filter(|k| k.generation == target.generation)
        .map(|k| (k.ok, k.kind.clone(), k.message.clone()));
    let current = s.registry.clone();
    c.set("CleanupDone", true, "NotNeeded", "nothing to remove");

    // Detached over a Proxy cache the cluster uses would serve a partial mirror: the
    // safe way is through Direct, where the mirror is filled and checked first.
    if target.mode == Mode::Detached
        && s.cluster == ClusterTarget::Embedded
        && current.as_ref().is_some_and(|r| r.mode == Mode::Proxy)
    {
        c.set("Ready", false, "TransitionRefused", "Proxy to Detached directly is refused: the cache is not a full mirror; switch to Direct, push the mirror, then to Detached");
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
        if target.mode == Mode::Proxy {
            match &passed {
                Some((true, _, _)) => {}
                Some((false, kind, message)) => {
                    c.set("ChecksPassed", false, &reason(kind), message);
                    c.set(
                        "Ready",
                        false,
                        "UpstreamCheckFailed",
                        &format!("the cluster stays on its current registry: {message}"),
                    );
                    return;
                }
                None => {
                    c.set(
                        "ChecksPassed",
                        false,
                        "Pending",
                        "the upstream check has not run yet",
                    );
                    c.set(
                        "Ready",
                        false,
                        "UpstreamCheckPending",
                        "waiting for the upstream check",
                    );
                    return;
                }
            }
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
            "NodeServicesReady",
            false,
            "Rollout",
            &format!("waiting for the masters: {}", waiting_for(target, nodes)),
        );
    } else {
        c.set(
            "NodeServicesReady",
            true,
            "AllServing",
            &format!("every master runs generation {}", target.generation),
        );
    }
    match target.mode {
        Mode::Proxy => c.set(
            "ChecksPassed",
            true,
            "UpstreamUsable",
            passed
                .as_ref()
                .map(|p| p.2.as_str())
                .unwrap_or("the upstream check passed"),
        ),
        _ => match &passed {
            Some((true, _, m)) => c.set("ChecksPassed", true, "MirrorComplete", m),
            Some((false, kind, m)) => c.set("ChecksPassed", false, &reason(kind), m),
            None if s.cluster == ClusterTarget::Embedded => c.set(
                "ChecksPassed",
                true,
                "MirrorInUse",
                "the cluster already pulls from the mirror",
            ),
            None => c.set(
                "ChecksPassed",
                false,
                "Pending",
                "the mirror is checked once every master serves it",
            ),
        },
    }
    if !ready {
        let stays = match s.cluster {
            ClusterTarget::Embedded => "nodes keep pulling through the masters that serve",
            ClusterTarget::Upstream => "nodes keep pulling from the upstream",
        };
        c.set(
            "ClusterSwitched",
            s.cluster == ClusterTarget::Embedded,
            "Waiting",
            stays,
        );
        c.set(
            "Ready",
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
            "ClusterSwitched",
            false,
            "Waiting",
            "nodes keep pulling from the upstream until the mirror holds the running release",
        );
        c.set(
            "Ready",
            false,
            "MirrorIncomplete",
            "push the release into the mirror (d8 mirror push); the check repeats on every run",
        );
        return;
    }
    if s.mirrors.is_empty() || s.mirrors_since.is_none() {
        s.mirrors_since = Some(now);
    }
    s.mirrors = target.nodes.clone();
    if s.cluster == ClusterTarget::Upstream {
        let waited = now - s.mirrors_since.unwrap_or(now);
        if waited < NODE_CONFIG_GRACE_SECS {
            c.set(
                "ClusterSwitched",
                false,
                "NodesConfiguring",
                &format!(
                    "nodes receive the mirror configuration for {}; the pull Secret switches in {}s",
                    target.nodes.join(", "),
                    NODE_CONFIG_GRACE_SECS - waited
                ),
            );
            c.set(
                "Ready",
                false,
                "NodesConfiguring",
                "every master serves; waiting for the nodes to apply the mirror configuration",
            );
            return;
        }
    }
    s.cluster = ClusterTarget::Embedded;
    c.set(
        "ClusterSwitched",
        true,
        "Embedded",
        &format!("nodes pull through {}", target.nodes.join(", ")),
    );
    c.set(
        "Ready",
        true,
        &format!("{:?}", target.mode),
        &format!(
            "mode {:?}: every master serves generation {}",
            target.mode, target.generation
        ),
    );
}

fn reason(kind: &str) -> String {
    let mut out = String::from("Check");
    for part in kind.split('-') {
        let mut ch = part.chars();
        if let Some(f) = ch.next() {
            out.push(f.to_ascii_uppercase());
            out.extend(ch);
        }
    }
    out
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

    fn set(&mut self, type_: &str, ok: bool, reason: &str, message: &str) {
        let status = if ok { "True" } else { "False" }.to_string();
        self.new.retain(|c| c.type_ != type_);
        let since = self
            .old
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time)
            .unwrap_or(self.now);
        self.new.push(Condition {
            type_: type_.into(),
            status,
            reason: reason.into(),
            message: message.into(),
            last_transition_time: since,
        });
    }

    fn done(mut self) -> Vec<Condition> {
        const ORDER: [&str; 5] = [
            "Ready",
            "ChecksPassed",
            "NodeServicesReady",
            "ClusterSwitched",
            "CleanupDone",
        ];
        self.new.sort_by_key(|c| {
            ORDER
                .iter()
                .position(|o| *o == c.type_)
                .unwrap_or(ORDER.len())
        });
        self.new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"a secret of the module";

    #[test]
    fn the_generation_follows_the_password_but_cannot_be_recomputed_without_the_key() {
        let with_password = |pw: &str, key: &[u8]| {
            let mut p = proxy("u.example").proxy;
            if let Some(p) = p.as_mut() {
                p.user = Some("u".into());
                p.password = Some(pw.into());
            }
            RegistryTarget::new(Mode::Proxy, p, vec!["m1".into()], key).generation
        };
        let a = with_password("hunter2", KEY);
        assert_eq!(a.len(), 16);
        assert_eq!(a, with_password("hunter2", KEY), "deterministic");
        assert_ne!(
            a,
            with_password("hunter3", KEY),
            "a new password is a new generation"
        );
        assert_ne!(a, with_password("hunter2", b"another key"), "keyed");
        // The unkeyed digest of the same JSON, as generations were once computed: an
        // oracle for password guesses. It must not match.
        let t = RegistryTarget {
            generation: String::new(),
            ..proxy("u.example")
        };
        let mut p = t.proxy.clone().unwrap();
        p.user = Some("u".into());
        p.password = Some("hunter2".into());
        let plain = serde_json::to_string(&RegistryTarget {
            proxy: Some(p),
            ..t
        })
        .unwrap();
        use sha2::Digest;
        let unkeyed: String = Sha256::digest(plain.as_bytes())[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_ne!(a, unkeyed);
    }

    fn proxy(host: &str) -> RegistryTarget {
        RegistryTarget::new(
            Mode::Proxy,
            Some(ProxyTarget {
                scheme: "https".into(),
                host: host.into(),
                path: "/p".into(),
                user: None,
                password: None,
                ca: None,
                ttl: "168h".into(),
            }),
            vec!["m1".into()],
            KEY,
        )
    }

    /// What the settings ask for when they ask for `t`.
    fn wants(t: &RegistryTarget) -> Desired {
        Desired {
            mode: t.mode,
            registry: Some(t.clone()),
        }
    }

    fn direct() -> Desired {
        Desired {
            mode: Mode::Direct,
            registry: None,
        }
    }

    fn serving(t: &RegistryTarget) -> Vec<NodeReport> {
        vec![NodeReport {
            node: "m1".into(),
            static_pod: true,
            generation: t.generation.clone(),
            ready: true,
            ro_user: String::new(),
            message: String::new(),
        }]
    }

    fn check(t: &RegistryTarget, ok: bool) -> CheckRecord {
        CheckRecord {
            what: "upstream".into(),
            generation: t.generation.clone(),
            ok,
            kind: if ok { "" } else { "connect" }.into(),
            message: "m".into(),
            since: 1,
        }
    }

    fn ready(s: &State) -> bool {
        s.conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
    }

    #[test]
    fn proxy_switches_only_after_check_and_rollout_and_steps_are_idempotent() {
        let t = proxy("a");
        let d = wants(&t);
        let s0 = State::default();
        assert_eq!(
            check_needed(&s0, &d, &[], false),
            Some(CheckNeeded::Upstream(t.clone()))
        );
        let failed = step(s0.clone(), &d, &[], Some(check(&t, false)), 10);
        assert_eq!(
            (failed.registry.clone(), failed.cluster),
            (None, ClusterTarget::Upstream)
        );
        let deployed = step(s0, &d, &[], Some(check(&t, true)), 10);
        assert_eq!(deployed.registry.as_ref(), Some(&t));
        assert_eq!(
            deployed.cluster,
            ClusterTarget::Upstream,
            "no master serves it yet"
        );
        let configuring = step(deployed, &d, &serving(&t), None, 20);
        assert_eq!(
            (configuring.cluster, configuring.mirrors.clone()),
            (ClusterTarget::Upstream, vec!["m1".to_string()]),
            "nodes get the mirror configuration before the pull Secret moves"
        );
        let early = step(
            configuring.clone(),
            &d,
            &serving(&t),
            None,
            20 + NODE_CONFIG_GRACE_SECS - 1,
        );
        assert_eq!(early.cluster, ClusterTarget::Upstream);
        let switched = step(
            configuring,
            &d,
            &serving(&t),
            None,
            20 + NODE_CONFIG_GRACE_SECS,
        );
        assert_eq!(switched.cluster, ClusterTarget::Embedded);
        assert!(ready(&switched));
        assert_eq!(check_needed(&switched, &d, &serving(&t), false), None);
        assert_eq!(step(switched.clone(), &d, &serving(&t), None, 99), switched);
    }

    #[test]
    fn proxy_to_detached_is_refused_while_nodes_use_the_cache() {
        let t = proxy("a");
        let d = wants(&t);
        let s = embedded(&d, &t);
        let detached = RegistryTarget::new(Mode::Detached, None, vec!["m1".into()], KEY);
        let dd = wants(&detached);
        let next = step(s.clone(), &dd, &serving(&t), None, 3);
        assert_eq!(next.registry, s.registry);
        assert!(next
            .conditions
            .iter()
            .any(|c| c.reason == "TransitionRefused"));
    }

    #[test]
    fn detached_moves_nodes_only_after_the_mirror_check() {
        let t = RegistryTarget::new(Mode::Detached, None, vec!["m1".into()], KEY);
        let d = wants(&t);
        let deployed = step(State::default(), &d, &[], None, 1);
        assert_eq!(
            deployed.registry.as_ref(),
            Some(&t),
            "deployed before any check"
        );
        assert_eq!(
            check_needed(&deployed, &d, &serving(&t), false),
            Some(CheckNeeded::Mirror(t.clone()))
        );
        let incomplete = step(
            deployed.clone(),
            &d,
            &serving(&t),
            Some(check(&t, false)),
            2,
        );
        assert_eq!(incomplete.cluster, ClusterTarget::Upstream);
        let done = step(deployed, &d, &serving(&t), Some(check(&t, true)), 2);
        assert_eq!(
            (done.cluster, done.mirrors.len()),
            (ClusterTarget::Upstream, 1)
        );
        let done = step(done, &d, &serving(&t), None, 2 + NODE_CONFIG_GRACE_SECS);
        assert_eq!(done.cluster, ClusterTarget::Embedded);
    }

    #[test]
    fn direct_waits_a_grace_period_only_after_nodes_used_the_mirror() {
        let t = proxy("a");
        let d = wants(&t);
        let used = embedded(&d, &t);
        let direct = direct();
        let t0 = 1000;
        let s = step(used, &direct, &serving(&t), None, t0);
        assert_eq!(
            (s.cluster, s.registry.is_some(), s.mirrors.len()),
            (ClusterTarget::Upstream, true, 1),
            "the masters stay listed while pods may hold the embedded references"
        );
        let s = step(s, &direct, &serving(&t), None, t0 + CLEANUP_GRACE_SECS);
        assert!(s.registry.is_none() && s.mirrors.is_empty() && ready(&s));
    }

    #[test]
    fn direct_before_the_pull_secret_moved_removes_the_registry_at_once() {
        let t = proxy("a");
        let d = wants(&t);
        let configuring = step(
            step(State::default(), &d, &[], Some(check(&t, true)), 1),
            &d,
            &serving(&t),
            None,
            2,
        );
        assert_eq!(configuring.cluster, ClusterTarget::Upstream);
        let direct = direct();
        let s = step(configuring, &direct, &serving(&t), None, 3);
        assert!(s.registry.is_none() && s.mirrors.is_empty() && ready(&s));
    }

    #[test]
    fn a_target_without_any_listed_master_sends_the_cluster_back_first() {
        let t = proxy("a");
        let d = wants(&t);
        let s = embedded(&d, &t);
        // m1 is no longer a master: the registry moves to m2.
        let moved = RegistryTarget::new(Mode::Proxy, t.proxy.clone(), vec!["m2".into()], KEY);
        let dm = wants(&moved);
        let next = step(s, &dm, &[], Some(check(&moved, true)), 1000);
        assert_eq!(
            (next.cluster, next.mirrors.len()),
            (ClusterTarget::Upstream, 0),
            "never a pull Secret naming a registry no node can reach"
        );
        assert_eq!(next.registry.as_ref(), Some(&moved));
    }

    /// A Proxy state whose cluster pulls through the masters.
    fn embedded(d: &Desired, t: &RegistryTarget) -> State {
        let s = step(State::default(), d, &[], Some(check(t, true)), 1);
        let s = step(s, d, &serving(t), None, 2);
        let s = step(s, d, &serving(t), None, 2 + NODE_CONFIG_GRACE_SECS);
        assert_eq!(s.cluster, ClusterTarget::Embedded);
        s
    }
}
