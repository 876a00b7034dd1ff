//! Unit tests of `switch`.
//!
//! Above 400 lines: one file for the state machine's scenarios, which share the
//! targets, node reports and fleets built at its top.

use super::*;
use crate::model::switch::ProxyTarget;

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
    use sha2::{Digest, Sha256};
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
        warm_list: None,
    }
}

fn direct() -> Desired {
    Desired {
        mode: Mode::Direct,
        registry: None,
        warm_list: None,
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
        warm: None,
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

fn h(mirrors: &[&str]) -> String {
    format!("h:{}", mirrors.join(","))
}

/// Nodes `n0..n{count}`: Ready unless listed in `not_ready`, acknowledging `hash`
/// unless listed in `lagging` (which acknowledge an old hash).
fn nodes(count: usize, hash: &str, lagging: &[usize], not_ready: &[usize]) -> Vec<NodeAck> {
    (0..count)
        .map(|i| NodeAck {
            name: format!("n{i:02}"),
            ready: !not_ready.contains(&i),
            hash: if lagging.contains(&i) {
                "h:old".into()
            } else {
                hash.into()
            },
            containerd: PREFLIGHT_OK.into(),
            ..Default::default()
        })
        .collect()
}

fn fleet_of(nodes: Vec<NodeAck>, restored: bool) -> Fleet {
    Fleet {
        nodes,
        timeout_secs: DEFAULT_ACK_TIMEOUT_SECS,
        deckhouse_restored: restored,
        config_hash: Box::new(|m: &[String]| format!("h:{}", m.join(","))),
    }
}

/// Three Ready nodes that acknowledged `hash`; Deckhouse restored.
fn fleet(hash: &str) -> Fleet {
    fleet_of(nodes(3, hash, &[], &[]), true)
}

fn cond<'a>(s: &'a State, type_: &str) -> &'a Condition {
    s.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn proxy_switches_only_after_check_rollout_and_every_ready_node_acknowledged() {
    let t = proxy("a");
    let d = wants(&t);
    let s0 = State::default();
    assert_eq!(
        check_needed(&s0, &d, &[], false),
        Some(CheckNeeded::Upstream(t.clone()))
    );
    let none = fleet("");
    let failed = step(s0.clone(), &d, &[], Some(check(&t, false)), &none, 10);
    assert_eq!(
        (failed.registry.clone(), failed.cluster),
        (None, ClusterTarget::Upstream)
    );
    let deployed = step(s0, &d, &[], Some(check(&t, true)), &none, 10);
    assert_eq!(deployed.registry.as_ref(), Some(&t));
    assert_eq!(
        deployed.cluster,
        ClusterTarget::Upstream,
        "no master serves it yet"
    );
    let configuring = step(deployed, &d, &serving(&t), None, &none, 20);
    assert_eq!(
        (configuring.cluster, configuring.mirrors.clone()),
        (ClusterTarget::Upstream, vec!["m1".to_string()]),
        "nodes get the mirror configuration before the pull Secret moves"
    );
    // One Ready node on an old hash: no switch, however long it takes.
    let lagging = fleet_of(nodes(3, &h(&["m1"]), &[1], &[]), true);
    let late = step(
        configuring.clone(),
        &d,
        &serving(&t),
        None,
        &lagging,
        100_000,
    );
    assert_eq!(late.cluster, ClusterTarget::Upstream);
    let c = cond(&late, "NodesAcknowledged");
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("False", "NodesNotAcknowledging")
    );
    assert!(c.message.contains("overdue 1: n01"), "{}", c.message);
    // Every Ready node acknowledged: the pull Secret moves at once.
    let acked = fleet(&h(&["m1"]));
    let switched = step(configuring, &d, &serving(&t), None, &acked, 21);
    assert_eq!(switched.cluster, ClusterTarget::Embedded);
    assert!(ready(&switched));
    assert_eq!(check_needed(&switched, &d, &serving(&t), false), None);
    assert_eq!(
        step(switched.clone(), &d, &serving(&t), None, &acked, 99),
        switched
    );
}

#[test]
fn fifty_nodes_not_ready_and_old_hashes_only_the_rule_moves_the_pull_secret() {
    let t = proxy("a");
    let d = wants(&t);
    let hash = h(&["m1"]);
    let configuring = step(
        step(
            State::default(),
            &d,
            &[],
            Some(check(&t, true)),
            &fleet(""),
            1,
        ),
        &d,
        &serving(&t),
        None,
        &fleet(""),
        2,
    );
    assert_eq!(configuring.mirrors, vec!["m1".to_string()]);
    // n07 never acknowledges, n13 acknowledged an old hash, n20..n24 are NotReady
    // (and never acknowledge).
    let not_ready: Vec<usize> = (20..25).collect();
    let mut all = nodes(50, &hash, &[13], &not_ready);
    all[7].hash.clear();
    for i in &not_ready {
        all[*i].hash.clear();
    }
    let s = step(
        configuring.clone(),
        &d,
        &serving(&t),
        None,
        &fleet_of(all.clone(), true),
        3,
    );
    assert_eq!(s.cluster, ClusterTarget::Upstream);
    let c = cond(&s, "NodesAcknowledged");
    assert!(
        c.message.starts_with("43 of 45 Ready nodes acknowledged")
            && c.message.contains("waiting for 2: n07, n13")
            && c.message
                .contains("NotReady, not waited for: n20, n21, n22, n23, n24"),
        "{}",
        c.message
    );
    // n13 catches up, n07 goes NotReady: NotReady nodes do not block.
    all[13].hash = hash.clone();
    all[7].ready = false;
    let s = step(s, &d, &serving(&t), None, &fleet_of(all.clone(), true), 4);
    assert_eq!(s.cluster, ClusterTarget::Embedded, "{:?}", s.conditions);
    // Excluded nodes are neither waited for nor checked.
    let mut custom = nodes(50, &hash, &[], &[]);
    custom[3].custom_registry = true;
    custom[4].containerd = "v2-transfer".into();
    let blocked = step(
        configuring.clone(),
        &d,
        &serving(&t),
        None,
        &fleet_of(custom.clone(), true),
        5,
    );
    assert_eq!(
        (blocked.cluster, cond(&blocked, "Ready").reason.as_str()),
        (ClusterTarget::Upstream, "NodesPreflightFailed")
    );
    let p = cond(&blocked, "NodesPreflight");
    assert!(
        p.status == "False"
            && p.message
                .contains("n03 (custom-registry-label), n04 (v2-transfer)"),
        "{}",
        p.message
    );
    custom[3].excluded = true;
    custom[4].excluded = true;
    custom[4].hash.clear();
    custom[5].hash.clear();
    let s = step(
        configuring,
        &d,
        &serving(&t),
        None,
        &fleet_of(custom.clone(), true),
        6,
    );
    assert_eq!(
        s.cluster,
        ClusterTarget::Upstream,
        "n05 has not acknowledged"
    );
    let message = &cond(&s, "NodesAcknowledged").message;
    assert!(
        message.contains("waiting for 1: n05") && message.contains("excluded: n03, n04"),
        "{message}"
    );
    custom[5].hash = hash.clone();
    let s = step(s, &d, &serving(&t), None, &fleet_of(custom, true), 7);
    assert_eq!(
        s.cluster,
        ClusterTarget::Embedded,
        "the excluded n04 is not waited for"
    );
}

#[test]
fn proxy_to_detached_is_refused_while_nodes_use_the_cache() {
    let t = proxy("a");
    let d = wants(&t);
    let s = embedded(&d, &t);
    let detached = RegistryTarget::new(Mode::Detached, None, vec!["m1".into()], KEY);
    let dd = wants(&detached);
    let next = step(s.clone(), &dd, &serving(&t), None, &fleet(&h(&["m1"])), 3);
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
    let acked = fleet(&h(&["m1"]));
    let deployed = step(State::default(), &d, &[], None, &acked, 1);
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
        &acked,
        2,
    );
    assert_eq!(incomplete.cluster, ClusterTarget::Upstream);
    let done = step(
        deployed,
        &d,
        &serving(&t),
        Some(check(&t, true)),
        &fleet(""),
        2,
    );
    assert_eq!(
        (done.cluster, done.mirrors.len()),
        (ClusterTarget::Upstream, 1)
    );
    let done = step(done, &d, &serving(&t), None, &acked, 3);
    assert_eq!(done.cluster, ClusterTarget::Embedded);
}

#[test]
fn direct_keeps_the_registry_while_one_ready_node_still_lists_the_masters() {
    let t = proxy("a");
    let d = wants(&t);
    let used = embedded(&d, &t);
    let direct = direct();
    let old = h(&["m1"]);
    let t0 = 1000;
    // Deckhouse has not rolled out the restored references yet.
    let s = step(
        used,
        &direct,
        &serving(&t),
        None,
        &fleet_of(nodes(3, &old, &[], &[]), false),
        t0,
    );
    assert_eq!(
        (s.cluster, s.registry.is_some(), s.mirrors.len()),
        (ClusterTarget::Upstream, true, 1),
        "the masters stay listed while pods may hold the embedded references"
    );
    assert_eq!(cond(&s, "CleanupDone").reason, "DeckhouseRollout");
    // Deckhouse restored: the masters leave the nodes' configuration; one Ready
    // node still lists them, so the registry stays.
    let s = step(
        s,
        &direct,
        &serving(&t),
        None,
        &fleet_of(nodes(3, &h(&[]), &[2], &[]), true),
        t0 + 1,
    );
    assert_eq!((s.registry.is_some(), s.mirrors.len()), (true, 0));
    let c = cond(&s, "CleanupDone");
    assert!(
        c.reason == "NodesConfiguring" && c.message.contains("n02"),
        "{}",
        c.message
    );
    let s = step(s, &direct, &serving(&t), None, &fleet(&h(&[])), t0 + 2);
    assert!(s.registry.is_none() && s.mirrors.is_empty() && ready(&s));
}

#[test]
fn direct_before_the_pull_secret_moved_removes_the_registry_at_once() {
    let t = proxy("a");
    let d = wants(&t);
    let none = fleet("");
    let configuring = step(
        step(State::default(), &d, &[], Some(check(&t, true)), &none, 1),
        &d,
        &serving(&t),
        None,
        &none,
        2,
    );
    assert_eq!(configuring.cluster, ClusterTarget::Upstream);
    let direct = direct();
    let s = step(
        configuring,
        &direct,
        &serving(&t),
        None,
        &fleet_of(vec![], false),
        3,
    );
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
    let next = step(
        s,
        &dm,
        &[],
        Some(check(&moved, true)),
        &fleet(&h(&["m1"])),
        1000,
    );
    assert_eq!(
        (next.cluster, next.mirrors.len()),
        (ClusterTarget::Upstream, 0),
        "never a pull Secret naming a registry no node can reach"
    );
    assert_eq!(next.registry.as_ref(), Some(&moved));
}

/// A Proxy state whose cluster pulls through the masters.
fn embedded(d: &Desired, t: &RegistryTarget) -> State {
    let acked = fleet(&h(&["m1"]));
    let s = step(State::default(), d, &[], Some(check(t, true)), &acked, 1);
    let s = step(s, d, &serving(t), None, &acked, 2);
    assert_eq!(s.cluster, ClusterTarget::Embedded);
    s
}

fn s3_target(bucket: &str, secret: &str) -> crate::model::switch::S3Target {
    crate::model::switch::S3Target {
        endpoint: "https://s3.example.com".into(),
        region: "garage".into(),
        bucket: bucket.into(),
        root_directory: "/er".into(),
        access_key: "GK1".into(),
        secret_key: secret.into(),
        ca: None,
        force_path_style: true,
    }
}

fn warm_report(t: &RegistryTarget, node: &str, list: &str, cached: u64) -> NodeReport {
    NodeReport {
        node: node.into(),
        warm: Some(WarmStatus {
            list_hash: list.into(),
            cached,
            wanted: 12,
            missing: if cached < 12 {
                vec!["@sha256:aaaa".into(), ":v1.2.3".into()]
            } else {
                vec![]
            },
            ..WarmStatus::default()
        }),
        ..serving(t).remove(0)
    }
}

#[test]
fn detached_on_s3_waits_for_the_storage_check_then_the_mirror_check() {
    let t = RegistryTarget::with_s3(
        Mode::Detached,
        None,
        Some(s3_target("b", "s")),
        vec!["m1".into()],
        KEY,
    );
    let d = wants(&t);
    let acked = fleet(&h(&["m1"]));
    assert_eq!(
        check_needed(&State::default(), &d, &[], false),
        Some(CheckNeeded::Storage(t.clone()))
    );
    let stored = |ok| CheckRecord {
        what: STORAGE.into(),
        ..check(&t, ok)
    };
    let refused = step(State::default(), &d, &[], Some(stored(false)), &acked, 1);
    assert_eq!(refused.registry, None, "a failed bucket is never deployed");
    let deployed = step(State::default(), &d, &[], Some(stored(true)), &acked, 1);
    assert_eq!(deployed.registry.as_ref(), Some(&t));
    // The storage check passing is not the mirror check: that one follows.
    assert_eq!(
        check_needed(&deployed, &d, &serving(&t), false),
        Some(CheckNeeded::Mirror(t.clone()))
    );
    let next = step(deployed, &d, &serving(&t), None, &acked, 2);
    assert_eq!(next.cluster, ClusterTarget::Upstream);
}

#[test]
fn detached_does_not_move_to_another_storage_while_nodes_pull_from_it() {
    let fs = RegistryTarget::new(Mode::Detached, None, vec!["m1".into()], KEY);
    let state = State {
        registry: Some(fs.clone()),
        cluster: ClusterTarget::Embedded,
        mirrors: vec!["m1".into()],
        ..State::default()
    };
    let on_s3 = |bucket: &str, secret: &str| {
        RegistryTarget::with_s3(
            Mode::Detached,
            None,
            Some(s3_target(bucket, secret)),
            vec!["m1".into()],
            KEY,
        )
    };
    let t = on_s3("b", "s");
    let next = step(
        state.clone(),
        &wants(&t),
        &serving(&fs),
        None,
        &fleet(""),
        1,
    );
    assert_eq!(next.registry.as_ref(), Some(&fs));
    assert!(next
        .conditions
        .iter()
        .any(|c| c.reason == "TransitionRefused"));
    // On S3 already: a new secret key for the same bucket goes through its check.
    let state = State {
        registry: Some(t.clone()),
        ..state
    };
    let rekeyed = on_s3("b", "s2");
    let ok = CheckRecord {
        what: STORAGE.into(),
        ..check(&rekeyed, true)
    };
    let next = step(
        state,
        &wants(&rekeyed),
        &serving(&t),
        Some(ok),
        &fleet(""),
        1,
    );
    assert_eq!(next.registry.as_ref(), Some(&rekeyed));
}

#[test]
fn detached_on_s3_in_ha_lists_every_master_in_the_nodes_mirror_configuration() {
    let masters = vec!["m1".to_string(), "m2".to_string(), "m3".to_string()];
    let t = RegistryTarget::with_s3(
        Mode::Detached,
        None,
        Some(s3_target("b", "s")),
        masters.clone(),
        KEY,
    );
    let d = wants(&t);
    let all_serving: Vec<NodeReport> = masters
        .iter()
        .map(|n| NodeReport {
            node: n.clone(),
            ..serving(&t)[0].clone()
        })
        .collect();
    let stored = CheckRecord {
        what: STORAGE.into(),
        ..check(&t, true)
    };
    let deployed = step(State::default(), &d, &[], Some(stored), &fleet(""), 1);
    assert_eq!(deployed.registry.as_ref(), Some(&t));
    // Two of three serve: no mirror check yet, no mirror configuration.
    assert_eq!(check_needed(&deployed, &d, &all_serving[..2], false), None);
    let mirror = CheckRecord {
        what: "mirror".into(),
        ..check(&t, true)
    };
    let acked = fleet(&h(&["m1", "m2", "m3"]));
    let listed = step(deployed, &d, &all_serving, Some(mirror), &acked, 2);
    assert_eq!(
        listed.mirrors, masters,
        "every master serves the same bucket"
    );
    let switched = step(listed, &d, &all_serving, None, &acked, 3);
    assert_eq!(
        (switched.cluster, switched.mirrors.len()),
        (ClusterTarget::Embedded, 3)
    );
}

#[test]
fn proxy_points_nodes_at_the_masters_only_once_every_master_caches_the_release() {
    let mut t = proxy("a");
    t.nodes = vec!["m1".into(), "m2".into()];
    let d = Desired {
        warm_list: Some("1111222233334444".into()),
        ..wants(&t)
    };
    let acked = fleet(&h(&["m1", "m2"]));
    let deployed = step(State::default(), &d, &[], Some(check(&t, true)), &acked, 10);
    // Both serve; m1 is warm, m2 has 7 of 12, and m3's report would not count.
    let half = vec![
        warm_report(&t, "m1", "1111222233334444", 12),
        warm_report(&t, "m2", "1111222233334444", 7),
    ];
    let cold = step(deployed.clone(), &d, &half, None, &acked, 20);
    assert_eq!(cold.cluster, ClusterTarget::Upstream);
    assert!(
        cold.mirrors.is_empty(),
        "no node is told about the masters yet"
    );
    let c = cond(&cold, "CacheWarm");
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "Warming"));
    assert!(
        c.message
            .contains("m2: 7/12 cached, missing @sha256:aaaa, :v1.2.3")
            && !c.message.contains("m1"),
        "{}",
        c.message
    );
    assert_eq!(cond(&cold, "Ready").reason, "CacheWarming");
    assert_eq!(cond(&cold, "ClusterSwitched").reason, "CacheWarming");
    // A master warm for another list (the previous release) is not warm.
    let stale = vec![
        warm_report(&t, "m1", "1111222233334444", 12),
        warm_report(&t, "m2", "9999888877776666", 12),
    ];
    let s = step(deployed.clone(), &d, &stale, None, &acked, 20);
    assert!(cond(&s, "CacheWarm")
        .message
        .contains("m2: has not finished a pass over list 1111222233334444"));
    assert_eq!(s.cluster, ClusterTarget::Upstream);
    // No report at all.
    let s = step(deployed.clone(), &d, &serving(&t), None, &acked, 20);
    assert!(cond(&s, "CacheWarm")
        .message
        .contains("m1: no warm-up report yet"));
    // Both warm: the switch goes on as before (mirrors, then the pull Secret).
    let warm = vec![
        warm_report(&t, "m1", "1111222233334444", 12),
        warm_report(&t, "m2", "1111222233334444", 12),
    ];
    let switched = step(cold, &d, &warm, None, &acked, 30);
    assert_eq!(switched.cluster, ClusterTarget::Embedded);
    assert_eq!(cond(&switched, "CacheWarm").status, "True");
    assert!(ready(&switched));
    // A next release reported: named in the message, never holding the switch.
    let with_next = |r: &NodeReport, cached: u64, problem: &str| {
        let mut r = r.clone();
        if let Some(w) = r.warm.as_mut() {
            w.next = vec![crate::model::node_status::WarmNext {
                version: "v1.3.0".into(),
                cached,
                wanted: 9,
                problem: problem.into(),
            }];
        }
        r
    };
    let behind = vec![
        with_next(&warm[0], 9, ""),
        with_next(&warm[1], 0, "platform-image"),
    ];
    let s = step(switched.clone(), &d, &behind, None, &acked, 31);
    let c = cond(&s, "CacheWarm");
    assert_eq!(c.status, "True", "a next release never holds the switch");
    assert!(
        c.message
            .ends_with("; next release v1.3.0: not yet cached on m2: platform-image"),
        "{}",
        c.message
    );
    let ready_next = vec![with_next(&warm[0], 9, ""), with_next(&warm[1], 9, "")];
    let s = step(switched.clone(), &d, &ready_next, None, &acked, 32);
    assert!(cond(&s, "CacheWarm")
        .message
        .ends_with("; next release v1.3.0: cached on every master"));
    // A new release while switched: CacheWarm goes False, the cluster stays on the
    // masters (they proxy what they lack while the new list warms).
    let next = Desired {
        warm_list: Some("5555666677778888".into()),
        ..d.clone()
    };
    let s = step(switched.clone(), &next, &warm, None, &acked, 40);
    assert_eq!(s.cluster, ClusterTarget::Embedded);
    assert_eq!(cond(&s, "CacheWarm").status, "False");
    assert!(ready(&s));
    // No release named: nothing to wait for.
    let none = Desired {
        warm_list: None,
        ..d
    };
    let s = step(deployed, &none, &warm, None, &acked, 20);
    assert_eq!(cond(&s, "CacheWarm").reason, "NoRelease");
    assert_eq!(s.mirrors, vec!["m1".to_string(), "m2".to_string()]);
}

#[test]
fn a_master_joining_a_switched_proxy_enters_the_mirror_list_only_once_warm() {
    const LIST: &str = "1111222233334444";
    let mut t = proxy("a");
    t.nodes = vec!["m1".into(), "m2".into()];
    let d = Desired {
        warm_list: Some(LIST.into()),
        ..wants(&t)
    };
    let acked = fleet(&h(&["m1", "m2"]));
    let deployed = step(State::default(), &d, &[], Some(check(&t, true)), &acked, 10);
    let warm2 = vec![
        warm_report(&t, "m1", LIST, 12),
        warm_report(&t, "m2", LIST, 12),
    ];
    let switched = step(deployed, &d, &warm2, None, &acked, 20);
    assert_eq!(switched.cluster, ClusterTarget::Embedded);
    // m3 joins (HA grows): a new generation, checked and rolled out while the nodes
    // keep pulling through m1 and m2.
    let t3 = RegistryTarget::new(
        Mode::Proxy,
        t.proxy.clone(),
        vec!["m1".into(), "m2".into(), "m3".into()],
        KEY,
    );
    assert_ne!(t3.generation, t.generation);
    let d3 = Desired {
        warm_list: Some(LIST.into()),
        ..wants(&t3)
    };
    let on = |node: &str, cached: u64| warm_report(&t3, node, LIST, cached);
    let checked = step(switched, &d3, &[], Some(check(&t3, true)), &acked, 30);
    assert_eq!(checked.registry.as_ref(), Some(&t3));
    // Every master serves the new generation; m3's cache holds 3 of 12.
    let cold = step(
        checked,
        &d3,
        &[on("m1", 12), on("m2", 12), on("m3", 3)],
        None,
        &acked,
        40,
    );
    assert_eq!(cold.cluster, ClusterTarget::Embedded);
    assert_eq!(
        cold.mirrors,
        vec!["m1".to_string(), "m2".to_string()],
        "a cold master is not listed"
    );
    assert_eq!(cond(&cold, "CacheWarm").status, "False");
    // Running it again on the same input changes nothing.
    let again = step(
        cold.clone(),
        &d3,
        &[on("m1", 12), on("m2", 12), on("m3", 3)],
        None,
        &acked,
        40,
    );
    assert_eq!(again.mirrors, cold.mirrors);
    // Warm: m3 is listed, after the others (the target's order).
    let warm = step(
        cold,
        &d3,
        &[on("m1", 12), on("m2", 12), on("m3", 12)],
        None,
        &acked,
        50,
    );
    assert_eq!(
        warm.mirrors,
        vec!["m1".to_string(), "m2".to_string(), "m3".to_string()]
    );
    // A new release: every master is cold for the new list, none leaves the list.
    let d4 = Desired {
        warm_list: Some("5555666677778888".into()),
        ..d3
    };
    let s = step(
        warm,
        &d4,
        &[on("m1", 12), on("m2", 12), on("m3", 12)],
        None,
        &acked,
        60,
    );
    assert_eq!(s.mirrors.len(), 3);
}
