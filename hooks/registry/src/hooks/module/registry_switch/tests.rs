//! Unit tests of the `registry-switch` hook. Every snapshot is built from cluster
//! objects written as a cluster holds them (YAML, Secrets' data in base64) through the
//! hook's own bindings: its kinds, namespace, name and label selectors and jqFilters,
//! run by the real `jq` ([`HookTest::cluster_state`]).
//!
//! Above 400 lines: one file for the hook's scenarios, which share the YAML builders
//! and the offline checker below; split by scenario they would share them through a
//! module of their own for no gain.

use hook_sdk::testing::{HookTest, TestError, TestOutput};
use serde_json::{json, Value};

use crate::module::{
    node_status_config_map, ACK_ANNOTATION, CONTAINERD_ANNOTATION, CUSTOM_REGISTRY_LABEL,
    NAMESPACE, PULL_SECRET, ROLE_LABEL, SAVED_PULL_SECRET, STATE_SECRET,
};
use crate::secrets::b64;

/// A YAML double-quoted scalar (JSON's string quoting is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

/// The lines of a YAML block mapping of `pairs` at `indent` spaces, each value written
/// by `value`; none when `pairs` is empty (the field is then null, as `kubectl` omits it).
fn lines(indent: usize, pairs: &[(&str, &str)], value: impl Fn(&str) -> String) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{:indent$}{k}: {}\n", "", value(v)))
        .collect()
}

/// A Secret of `namespace` holding `data` (base64, as in a cluster).
fn secret_in(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{heritage: deckhouse}}\ntype: Opaque\ndata:\n{}",
        lines(2, data, b64)
    )
}

/// A Secret of the module's namespace.
fn secret(name: &str, data: &[(&str, &str)]) -> String {
    secret_in(NAMESPACE, name, data)
}

/// A ConfigMap of `namespace` with `labels` and plain `data`.
fn config_map(
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) -> String {
    format!(
        "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels:\n{}data:\n{}",
        lines(4, labels, q),
        lines(2, data, q)
    )
}

/// A master's status report, as its node hook writes it (the label the binding selects).
fn node_status(node: &str, data: &[(&str, &str)]) -> String {
    config_map(
        NAMESPACE,
        &node_status_config_map(node),
        &[(ROLE_LABEL, "node-status")],
        data,
    )
}

/// A Node as the API server returns it: Ready or not, with `annotations` next to one
/// the switch does not read and a heartbeat the jqFilter drops.
fn node(name: &str, ready: bool, annotations: &[(&str, &str)]) -> String {
    format!(
        "---\napiVersion: v1\nkind: Node\nmetadata:\n  name: {}\n  labels:\n    {CUSTOM_REGISTRY_LABEL}: default\n  annotations:\n    node.alpha.kubernetes.io/ttl: \"0\"\n{}status:\n  conditions:\n  - {{type: MemoryPressure, status: \"False\"}}\n  - {{type: Ready, status: \"{}\", lastHeartbeatTime: \"2026-01-01T00:00:00Z\"}}\n",
        q(name),
        lines(4, annotations, q),
        if ready { "True" } else { "False" },
    )
}

/// The module's values in `mode`, with `internal` as given.
fn values(mode: &str, internal: Value) -> Value {
    json!({"global": {}, "embeddedRegistry": {"mode": mode, "internal": internal}})
}

/// A run of the hook (with the [`Offline`] checker) at `lifecycle`, over `objects`.
fn run_at(lifecycle: &str, values: Value, objects: &[String]) -> Result<TestOutput, TestError> {
    HookTest::new()
        .values(values)
        .lifecycle(lifecycle)
        .cluster_state(&objects.concat())
        .run(&offline_hook())
}

/// The checker of these tests: no I/O, every registry refuses connections (as an
/// address nothing listens on does). The real one is proven end to end.
struct Offline;

impl crate::upstream::Checker for Offline {
    fn check(&self, spec: &crate::upstream::Spec) -> crate::upstream::Report {
        use crate::distribution::{Failure, Kind};
        crate::upstream::Report {
            ok: false,
            registry: format!("{}://{}", spec.scheme, spec.host),
            auth: String::new(),
            failure: Some(Failure::new(
                Kind::Connect,
                format!("{}://{}/v2/: cannot connect (fake)", spec.scheme, spec.host),
            )),
            images: vec![],
            requests: 0,
            token_requests: 0,
            elapsed_ms: 0,
        }
    }
}

/// A storage checker for targets without S3: asked anyway, it fails the test.
pub(super) struct NoStorage;

impl crate::storage::Checker for NoStorage {
    fn check(&self, spec: &crate::storage::Spec) -> crate::storage::Report {
        panic!("no storage check expected (asked for {})", spec.s3.endpoint)
    }
}

fn handle_offline(input: &mut hook_sdk::HookInput) -> anyhow::Result<()> {
    super::handle_with(input, &Offline, &NoStorage)
}

/// The hook with the [`Offline`] checker.
fn offline_hook() -> hook_sdk::Hook {
    hook_sdk::Hook::new(super::hook().config, handle_offline)
}

/// The jqFilter is a literal jq program: it must name the module's own labels and
/// annotations, not a stale spelling of them.
#[test]
fn node_filter_names_the_modules_labels_and_annotations() {
    use crate::module::*;
    for name in [
        ACK_ANNOTATION,
        CONTAINERD_ANNOTATION,
        CUSTOM_REGISTRY_LABEL,
        EXCLUDE_LABEL,
    ] {
        assert!(
            super::NODE_FILTER.contains(&format!("[\"{name}\"]")),
            "{name}"
        );
    }
}

/// Direct mode, with the pull Secret as `pull`, the saved copy as `saved`, and
/// `others` in the cluster too.
fn direct_with(
    pull: &[(&str, &str)],
    saved: Option<&[(&str, &str)]>,
    others: &[String],
) -> Result<TestOutput, TestError> {
    let mut objects = vec![secret(PULL_SECRET, pull)];
    objects.extend(saved.map(|d| secret(SAVED_PULL_SECRET, d)));
    objects.extend_from_slice(others);
    run_at("beforeHelm", values("Direct", json!({})), &objects)
}

/// Direct mode, with the pull Secret as `pull` and the saved copy as `saved`.
fn direct(pull: &[(&str, &str)], saved: Option<&[(&str, &str)]>) -> Result<TestOutput, TestError> {
    direct_with(pull, saved, &[])
}

const OURS: &[(&str, &str)] = &[
    ("address", "embedded-registry.d8-system.svc:5001"),
    ("path", "/deckhouse/ee"),
];
const UPSTREAM: &[(&str, &str)] = &[
    ("address", "registry.example.com"),
    ("path", "/deckhouse/ee"),
];

#[test]
fn back_on_the_upstream_the_saved_pull_secret_returns_then_its_copy_goes() {
    let out = direct(OURS, Some(UPSTREAM)).unwrap();
    let pull: Vec<_> = out
        .objects
        .iter()
        .filter(|o| o.name == "deckhouse-registry")
        .collect();
    assert_eq!(pull.len(), 1);
    assert_eq!(
        pull[0].operation,
        hook_sdk::objects::Operation::MergePatch,
        "Deckhouse's Secret: its data only"
    );
    assert_eq!(
        pull[0].merge_patch.as_ref().unwrap(),
        &json!({"data": {"address": b64("registry.example.com")}})
    );
    let again = direct(UPSTREAM, Some(UPSTREAM)).unwrap();
    assert!(again
        .objects
        .iter()
        .any(|o| o.name == "registry-upstream-pull"
            && o.operation == hook_sdk::objects::Operation::Delete));
    let settled = direct(UPSTREAM, None).unwrap();
    assert!(!settled
        .objects
        .iter()
        .any(|o| o.name.contains("upstream-pull") || o.name == "deckhouse-registry"));
}

#[test]
fn disabling_the_module_gives_the_pull_secret_back_to_the_upstream() {
    let run = |pull: &[(&str, &str)]| {
        let objects = [
            secret(PULL_SECRET, pull),
            secret(SAVED_PULL_SECRET, UPSTREAM),
        ];
        run_at("afterDeleteHelm", values("Proxy", json!({})), &objects).unwrap()
    };
    let out = run(OURS);
    assert_eq!(out.objects.len(), 1);
    assert_eq!(out.objects[0].name, "deckhouse-registry");
    assert_eq!(
        out.objects[0].merge_patch.as_ref().unwrap()["data"]["address"],
        json!(b64("registry.example.com"))
    );
    assert_eq!(
        out.values["embeddedRegistry"]["internal"],
        json!({}),
        "no step taken"
    );
    assert!(run(UPSTREAM).objects.is_empty(), "nothing to give back");
}

#[test]
fn one_registry_stays_on_its_master_when_a_master_sorting_first_joins() {
    use crate::model::values::Master;
    let m = |n: &str| Master {
        name: n.into(),
        internal_ip: "10.0.0.1".into(),
    };
    let desired = |masters: &[Master], before| {
        crate::switch::desired::desired(
            crate::model::settings::Mode::Detached,
            None,
            None,
            masters,
            false,
            before,
            Some("k"),
        )
        .unwrap()
        .registry
        .unwrap()
    };
    let before = desired(&[m("m2")], None);
    let masters = [m("m1"), m("m2")];
    let after = desired(&masters, Some(&before));
    assert_eq!(
        after.nodes,
        vec!["m2".to_string()],
        "the mirror's content is on m2"
    );
    let gone = desired(&masters[..1], Some(&before));
    assert_eq!(gone.nodes, vec!["m1".to_string()]);
}

/// A state that says the nodes pull through the masters (m1).
fn embedded_state() -> crate::model::switch::State {
    crate::model::switch::State {
        cluster: crate::model::switch::ClusterTarget::Embedded,
        mirrors: vec!["m1".into()],
        ..Default::default()
    }
}

#[test]
fn a_state_written_before_the_pull_secret_was_managed_waits_for_the_nodes_again() {
    // The Secrets as the hook's binding gives them, decoded as the handler reads them.
    let probe = hook_sdk::Hook::new(super::hook().config, |input| {
        let secrets = crate::secrets::by_name(input, "secrets")?;
        let seen = super::pull::pull_secret_seen(embedded_state(), &secrets);
        input.values.set("probe.seen", &seen)?;
        Ok(())
    });
    let out = HookTest::new()
        .values(json!({"probe": {}}))
        .lifecycle("beforeHelm")
        .cluster_state(&secret(PULL_SECRET, UPSTREAM))
        .run(&probe)
        .unwrap();
    let seen: crate::model::switch::State =
        serde_json::from_value(out.values["probe"]["seen"].clone()).unwrap();
    assert_eq!(seen.cluster, crate::model::switch::ClusterTarget::Upstream);
    assert_eq!(
        seen.mirrors,
        embedded_state().mirrors,
        "the masters stay listed"
    );
}

#[test]
fn the_recheck_reports_a_changed_upstream_outcome_through_the_values() {
    // An upstream nothing listens on (the fake checker answers so for every host).
    let port = 9;
    let target = crate::model::switch::RegistryTarget::new(
        crate::model::settings::Mode::Proxy,
        Some(crate::model::switch::ProxyTarget {
            scheme: "http".into(),
            host: format!("127.0.0.1:{port}"),
            path: "/p".into(),
            user: None,
            password: None,
            ca: None,
            ttl: "1h".into(),
        }),
        vec!["m1".into()],
        b"k",
    );
    let values = |recheck: Option<serde_json::Value>| {
        let mut sw =
            json!({"registry": target, "cluster": "Embedded", "mirrors": [], "manager": true});
        if let Some(r) = recheck {
            sw["recheck"] = r;
        }
        json!({"global": {}, "embeddedRegistry": {"mode": "Proxy", "internal": {"switch": sw}}})
    };
    let run = |v: serde_json::Value| {
        HookTest::new()
            .values(v)
            .schedule("recheck")
            .run(&offline_hook())
            .unwrap()
    };
    let out = run(values(None));
    let recheck = out.values["embeddedRegistry"]["internal"]["switch"]["recheck"].clone();
    assert_eq!(
        (
            recheck["ok"].clone(),
            recheck["kind"].clone(),
            recheck["generation"].clone()
        ),
        (json!(false), json!("connect"), json!(target.generation))
    );
    assert!(out
        .metrics
        .iter()
        .any(|m| m.name == "d8_embedded_registry_check_ok"));
    assert!(out.objects.is_empty(), "no state without its snapshot");
    let again = run(values(Some(recheck.clone())));
    assert!(
        again.values_patch.is_empty(),
        "an unchanged outcome does not rerun the module"
    );

    // The next beforeHelm takes the outcome in once.
    let r: crate::model::switch::Recheck = serde_json::from_value(recheck).unwrap();
    let state = crate::model::switch::State {
        registry: Some(target.clone()),
        ..Default::default()
    };
    let news = crate::switch::recheck_news(&r, &state, 7).unwrap();
    assert_eq!((news.ok, news.since), (false, 7));
    let known = crate::model::switch::State {
        check: Some(news),
        ..state
    };
    assert!(crate::switch::recheck_news(&r, &known, 8).is_none());
}

/// A rotated `ro` user: the pull Secret keeps the previous password beside the new one
/// until every mirror reports the user's revision (`revision` of `registry-user-ro`,
/// what the chart's `ro-user` annotation carries), never a digest of the password or
/// its bcrypt hash.
#[test]
fn the_previous_ro_password_goes_once_every_mirror_reports_the_users_revision() {
    use crate::switch::pull_secret::{Action, Embedded};
    const REVISION: &str = "0123456789abcdef";
    let probe = hook_sdk::Hook::new(super::hook().config, |input| {
        let secrets = crate::secrets::by_name(input, "secrets")?;
        let reported: String = input.values.get_as("probe.reported")?.unwrap_or_default();
        let target = crate::model::switch::RegistryTarget::new(
            crate::model::settings::Mode::Detached,
            None,
            vec!["m1".into()],
            b"k",
        );
        let report = crate::switch::NodeReport {
            node: "m1".into(),
            static_pod: true,
            generation: target.generation.clone(),
            ready: true,
            ro_user: reported,
            message: String::new(),
            warm: None,
        };
        let next = crate::model::switch::State {
            registry: Some(target),
            ..embedded_state()
        };
        let actions = super::pull::pull_secret_actions(input, &next, &secrets, &[report])?;
        let entries = actions.iter().find_map(|a| match a {
            Action::Write(d) => serde_json::from_str::<Value>(&d[".dockerconfigjson"])
                .ok()
                .map(|c| c["auths"].as_object().map_or(0, |a| a.len())),
            _ => None,
        });
        input.values.set("probe.entries", &entries)?;
        Ok(())
    });
    let upstream: std::collections::BTreeMap<String, String> = UPSTREAM
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let old = Embedded {
        path: "/deckhouse/ee".into(),
        ca: "CA".into(),
        user: "ro".into(),
        password: "old-password".into(),
        previous: None,
    }
    .data(&upstream);
    let old: Vec<(&str, &str)> = old.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let cluster = [
        secret(PULL_SECRET, &old),
        secret(SAVED_PULL_SECRET, UPSTREAM),
        secret(
            "registry-user-ro",
            &[
                ("name", "ro"),
                ("password", "new-password"),
                ("passwordHash", "$2a$10$x"),
                ("revision", REVISION),
            ],
        ),
    ]
    .concat();
    let entries = |reported: &str| {
        let out = HookTest::new()
            .values(json!({"probe": {"reported": reported},
                           "embeddedRegistry": {"internal": {"pki": {"caBundle": "CA"}}}}))
            .lifecycle("beforeHelm")
            .cluster_state(&cluster)
            .run(&probe)
            .unwrap();
        out.values["probe"]["entries"].clone()
    };
    assert_eq!(
        entries("fedcba9876543210"),
        json!(2),
        "m1 runs the old user"
    );
    assert_eq!(entries(""), json!(2), "m1 has not reported");
    assert_eq!(
        entries(REVISION),
        json!(1),
        "m1 runs the new user: one entry"
    );
}

#[test]
fn a_pull_secret_without_its_saved_copy_stops_the_run_before_any_write() {
    let err = direct(OURS, None).unwrap_err();
    let text = format!("{err:#}");
    assert!(text.contains("registry-upstream-pull is missing"), "{text}");
}

/// Node `n{i:02}`, acknowledging `ack` (with a containerd verdict) when given.
fn numbered_node(i: usize, ready: bool, ack: Option<&str>) -> String {
    let annotations: Vec<(&str, &str)> = ack
        .map(|h| vec![(ACK_ANNOTATION, h), (CONTAINERD_ANNOTATION, "registry.d")])
        .unwrap_or_default();
    node(&format!("n{i:02}"), ready, &annotations)
}

/// 50 Nodes through the binding's own jqFilter (the real jq, as the runner runs it),
/// then a beforeHelm run of a Detached switch whose master serves and whose mirror
/// check passed: the pull Secret moves only when every Ready node acknowledged.
#[test]
fn fifty_nodes_the_pull_secret_moves_only_when_every_ready_node_acknowledged() {
    use crate::model::values::Master;
    let target = crate::model::switch::RegistryTarget::new(
        crate::model::settings::Mode::Detached,
        None,
        vec!["m1".into()],
        b"k",
    );
    let m1 = Master {
        name: "m1".into(),
        internal_ip: "127.0.0.11".into(),
    };
    let hash = crate::switch::desired::node_config_hash(
        "embedded-registry.d8-system.svc:5001",
        std::slice::from_ref(&m1),
        "CA\n",
    );
    let state = crate::model::switch::State {
        registry: Some(target.clone()),
        mirrors: vec!["m1".into()],
        check: Some(crate::model::switch::CheckRecord {
            what: "mirror".into(),
            generation: target.generation.clone(),
            ok: true,
            kind: String::new(),
            message: "complete".into(),
            since: 1,
        }),
        node_config: Some(crate::model::switch::NodeConfig {
            hash: hash.clone(),
            since: 1000,
        }),
        ..Default::default()
    };
    let state_text = serde_json::to_string(&state).unwrap();
    let cluster = vec![
        secret(PULL_SECRET, UPSTREAM),
        secret(STATE_SECRET, &[("state.json", &state_text)]),
        secret(
            "registry-user-ro",
            &[("name", "ro"), ("password", "pw"), ("passwordHash", "x")],
        ),
        node_status(
            "m1",
            &[
                ("node", "m1"),
                ("staticPod", "present"),
                ("appliedGeneration", &target.generation),
                ("registry", "ready"),
            ],
        ),
    ];
    let run = |nodes: &[String]| {
        let values = json!({"global": {}, "embeddedRegistry": {
            "mode": "Detached", "detached": {},
            "internal": {"masters": [m1], "highAvailability": false,
                         "pki": {"caBundle": "CA", "httpSecret": "k"}}}});
        let objects = [cluster.as_slice(), nodes].concat();
        crate::clock::with_now(1000 + 60, || {
            run_at("beforeHelm", values, &objects).unwrap()
        })
    };
    let metric = |out: &TestOutput, state: &str| {
        out.metrics
            .iter()
            .rev()
            .find(|m| {
                m.name == "d8_embedded_registry_nodes"
                    && m.labels.get("state").map(String::as_str) == Some(state)
            })
            .and_then(|m| m.value)
            .unwrap()
    };
    let moved = |out: &TestOutput| {
        out.objects.iter().any(|o| {
            o.name == PULL_SECRET
                && o.merge_patch.as_ref().is_some_and(|p| {
                    p["data"]["address"] == json!(b64("embedded-registry.d8-system.svc:5001"))
                })
        })
    };
    // n07 never acknowledges, n13 acknowledged an old hash, n20..n24 are NotReady.
    let mut nodes: Vec<_> = (0..50)
        .map(|i| {
            let ack = match i {
                7 => None,
                13 => Some("00000000000000aa"),
                20..=24 => None,
                _ => Some(hash.as_str()),
            };
            numbered_node(i, !(20..=24).contains(&i), ack)
        })
        .collect();
    let out = run(&nodes);
    assert!(!moved(&out), "a Ready node has not acknowledged");
    assert_eq!(
        [
            metric(&out, "total"),
            metric(&out, "ready"),
            metric(&out, "acknowledged"),
            metric(&out, "waiting"),
            metric(&out, "not_ready"),
        ],
        [50.0, 45.0, 43.0, 2.0, 5.0]
    );
    let wait = out
        .metrics
        .iter()
        .find(|m| m.name == "d8_embedded_registry_nodes_wait_seconds")
        .and_then(|m| m.value);
    assert_eq!(wait, Some(60.0));
    // Every Ready node acknowledged (the NotReady ones still have not): it moves at
    // once, with no timer.
    nodes[7] = numbered_node(7, true, Some(&hash));
    nodes[13] = numbered_node(13, true, Some(&hash));
    let out = run(&nodes);
    assert!(moved(&out), "{:?}", out.objects);
    assert_eq!(
        out.values["embeddedRegistry"]["internal"]["switch"]["nodeConfigHash"],
        json!(hash)
    );
}

#[test]
fn hostile_node_data_counts_as_no_acknowledgement() {
    let objects = [
        secret(PULL_SECRET, UPSTREAM),
        node("Bad Name\n", true, &[(ACK_ANNOTATION, "x")]),
        node(
            "n1",
            true,
            &[
                (ACK_ANNOTATION, "$(reboot)"),
                (CONTAINERD_ANNOTATION, "ok; rm -rf /"),
            ],
        ),
    ];
    let out = run_at("beforeHelm", values("Direct", json!({})), &objects).unwrap();
    let state = out
        .objects
        .iter()
        .filter_map(|o| o.object.as_ref())
        .find(|o| o["metadata"]["name"] == STATE_SECRET)
        .map(|o| o["data"]["state.json"].as_str().unwrap().to_string())
        .unwrap();
    use base64::Engine as _;
    let text = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(state)
            .unwrap(),
    )
    .unwrap();
    assert!(
        text.contains("1 Ready node(s) have not acknowledged configuration"),
        "{text}"
    );
    assert!(text.contains("n1 (invalid)"), "{text}");
    assert!(!text.contains("reboot") && !text.contains("rm -rf") && !text.contains("Bad Name"));
}

/// Objects the bindings must not take, each shaped to change the run if taken: the pull
/// Secret's name in another namespace and as another kind, both naming the embedded
/// registry (with no saved copy, which stops the run), and a status report of a serving
/// master without the label, or in another namespace (it would make the chart render
/// the manager).
fn unseen() -> Vec<String> {
    let serving = [
        ("node", "m9"),
        ("staticPod", "present"),
        ("registry", "ready"),
    ];
    vec![
        secret_in("default", PULL_SECRET, OURS),
        config_map(NAMESPACE, PULL_SECRET, &[], OURS),
        config_map(NAMESPACE, &node_status_config_map("m9"), &[], &serving),
        config_map(
            "default",
            &node_status_config_map("m9"),
            &[(ROLE_LABEL, "node-status")],
            &serving,
        ),
    ]
}

#[test]
fn objects_outside_the_bindings_selectors_are_ignored() {
    let out = direct_with(UPSTREAM, None, &unseen()).unwrap();
    let written = format!("{:?}", out.objects);
    assert!(
        !written.contains(PULL_SECRET) && !written.contains(SAVED_PULL_SECRET),
        "the pull Secret is settled: {written}"
    );
    assert_eq!(
        out.values["embeddedRegistry"]["internal"]["switch"]["manager"],
        json!(false),
        "no master reports a static pod"
    );
    // The same report, labelled and in the module's namespace, is taken.
    let serving = [
        ("node", "m9"),
        ("staticPod", "present"),
        ("registry", "ready"),
    ];
    let taken = [node_status("m9", &serving)];
    let out = direct_with(UPSTREAM, None, &taken).unwrap();
    assert_eq!(
        out.values["embeddedRegistry"]["internal"]["switch"]["manager"],
        json!(true)
    );
}

/// Two Deckhouse Deployments: the module namespace's, and one of the same name elsewhere.
const DECKHOUSE: &str = r#"
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: deckhouse, namespace: d8-system, generation: 3}
spec:
  replicas: 1
  template:
    spec:
      containers: [{name: deckhouse, image: "registry.example.com/deckhouse/ee:v1.70.0"}]
status: {observedGeneration: 3, updatedReplicas: 1, availableReplicas: 1, readyReplicas: 1}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: deckhouse, namespace: default}
spec:
  template:
    spec:
      containers: [{name: deckhouse, image: "embedded-registry.d8-system.svc:5001/x:y"}]
"#;

/// What the handler receives: a hook with the same bindings whose handler copies every
/// snapshot into the values. The jqFilters leave only the fields the switch reads.
#[test]
fn the_handler_gets_only_what_the_jq_filters_keep() {
    let probe = hook_sdk::Hook::new(super::hook().config, |input| {
        for b in ["secrets", "node_status", "nodes", "deckhouse"] {
            let items: Vec<Value> = input.snapshots.get(b)?;
            input.values.set(&format!("probe.{b}"), &items)?;
        }
        Ok(())
    });
    let mut objects = unseen();
    objects.extend([
        secret(PULL_SECRET, UPSTREAM),
        secret("registry-user-rw", &[("name", "rw"), ("password", "pw")]),
        node_status("m1", &[("node", "m1")]),
        node("n1", true, &[(ACK_ANNOTATION, "00000000000000aa")]),
        DECKHOUSE.to_string(),
    ]);
    let out = HookTest::new()
        .values(json!({"probe": {}}))
        .lifecycle("beforeHelm")
        .cluster_state(&objects.concat())
        .run(&probe)
        .unwrap();
    let got = &out.values["probe"];
    assert_eq!(
        got["secrets"],
        json!([{"name": PULL_SECRET, "data": {
            "address": b64("registry.example.com"), "path": b64("/deckhouse/ee")}}]),
        "the listed names of the module namespace, name and data only"
    );
    assert_eq!(
        got["node_status"],
        json!([{"name": node_status_config_map("m1"), "data": {"node": "m1"}}])
    );
    assert_eq!(
        got["nodes"],
        json!([{"name": "n1", "ready": "True", "ack": "00000000000000aa", "containerd": "",
                "customRegistry": "default", "exclude": ""}]),
        "no heartbeat, no other annotation"
    );
    assert_eq!(
        got["deckhouse"],
        json!([{"images": ["registry.example.com/deckhouse/ee:v1.70.0"], "generation": 3,
                "observedGeneration": 3, "replicas": 1, "updatedReplicas": 1,
                "availableReplicas": 1}])
    );
}

#[test]
fn a_run_without_snapshots_changes_nothing() {
    let out = HookTest::new()
        .values(json!({"global": {}, "embeddedRegistry": {"mode": "Proxy", "proxy": {"host": "h"}, "internal": {}}}))
        .schedule("recheck")
        .run(&offline_hook())
        .unwrap();
    assert_eq!(out.values["embeddedRegistry"]["internal"], json!({}));
    assert!(out.objects.is_empty());
}

/// A Proxy cluster on master m1 whose registry serves and whose check passed, with
/// the release `v1.2.3` of two module images; m1 reports `warm` (its status keys).
fn proxy_warm_run(warm: &[(&str, &str)]) -> (TestOutput, String) {
    use crate::model::settings::{Mode, ProxySettings};
    use crate::model::values::Master;
    let proxy = ProxySettings {
        host: "registry.example.com".into(),
        scheme: "https".into(),
        path: Some("/deckhouse/ee".into()),
        ttl: "168h".into(),
        upstream_hysteresis: "1m".into(),
        warmup_concurrency: 4,
        storage_mode: "Fs".into(),
        ..Default::default()
    };
    let masters = vec![Master {
        name: "m1".into(),
        internal_ip: "10.0.0.1".into(),
    }];
    let target = crate::switch::desired::desired(
        Mode::Proxy,
        Some(&proxy),
        None,
        &masters,
        false,
        None,
        Some("k"),
    )
    .unwrap()
    .registry
    .unwrap();
    let state = crate::model::switch::State {
        registry: Some(target.clone()),
        check: Some(crate::model::switch::CheckRecord {
            what: "upstream".into(),
            generation: target.generation.clone(),
            ok: true,
            kind: String::new(),
            message: "usable".into(),
            since: 1,
        }),
        ..Default::default()
    };
    let global = json!({"deckhouseVersion": "v1.2.3", "modulesImages": {
        "registry": {"base": "registry.example.com/deckhouse/ee"},
        "digests": {"a": {"x": format!("sha256:{}", "a".repeat(64))}, "b": {"y": format!("sha256:{}", "b".repeat(64))}}}});
    let hash = crate::warm::list::WantedList::from_global(&global)
        .unwrap()
        .unwrap()
        .hash();
    let mut status = vec![
        ("node", "m1"),
        ("appliedGeneration", target.generation.as_str()),
        ("registry", "ready"),
        ("staticPod", "present"),
    ];
    let warm: Vec<(&str, String)> = warm
        .iter()
        .map(|(k, v)| (*k, v.replace("HASH", &hash)))
        .collect();
    status.extend(warm.iter().map(|(k, v)| (*k, v.as_str())));
    let objects = vec![
        secret(
            STATE_SECRET,
            &[("state.json", &serde_json::to_string(&state).unwrap())],
        ),
        secret(PULL_SECRET, UPSTREAM),
        node_status("m1", &status),
        node("n1", true, &[]),
    ];
    let values = json!({"global": global, "embeddedRegistry": {"mode": "Proxy", "proxy": proxy,
        "internal": {"masters": masters, "highAvailability": false, "pki": {"httpSecret": "k", "caBundle": "ca"}}}});
    (run_at("beforeHelm", values, &objects).unwrap(), hash)
}

fn state_of(out: &TestOutput) -> Value {
    use base64::Engine as _;
    let text = out
        .objects
        .iter()
        .filter_map(|o| o.object.as_ref())
        .find(|o| o["metadata"]["name"] == STATE_SECRET)
        .map(|o| o["data"]["state.json"].as_str().unwrap().to_string())
        .unwrap_or_else(|| panic!("no state written: {:?}", out.objects));
    let text = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    serde_json::from_slice(&text).unwrap()
}

#[test]
fn proxy_waits_for_every_master_to_report_the_release_cached() {
    let cond = |out: &TestOutput, t: &str| -> Value {
        state_of(out)["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == t)
            .cloned()
            .unwrap()
    };
    // No report: the nodes get no mirror configuration.
    let (cold, _) = proxy_warm_run(&[]);
    let c = cond(&cold, "CacheWarm");
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("Warming"))
    );
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("m1: no warm-up report yet"),
        "{c}"
    );
    assert_eq!(
        cold.values["embeddedRegistry"]["internal"]["switch"]["mirrors"],
        json!([])
    );
    // Two of three cached (the two digests and the platform image).
    let (half, _) = proxy_warm_run(&[
        ("warm", "2/3"),
        ("warmListHash", "HASH"),
        ("warmBytes", "10"),
        ("warmMissing", ":v1.2.3"),
    ]);
    let c = cond(&half, "CacheWarm");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("m1: 2/3 cached, missing :v1.2.3"),
        "{c}"
    );
    assert_eq!(
        half.values["embeddedRegistry"]["internal"]["switch"]["mirrors"],
        json!([])
    );
    // Everything cached: the nodes get the masters.
    let (warm, hash) = proxy_warm_run(&[
        ("warm", "3/3"),
        ("warmListHash", "HASH"),
        ("warmBytes", "10"),
        ("warmMissing", ""),
    ]);
    let c = cond(&warm, "CacheWarm");
    assert_eq!(c["status"], "True", "{c}");
    assert!(c["message"].as_str().unwrap().contains(&hash));
    assert_eq!(
        warm.values["embeddedRegistry"]["internal"]["switch"]["mirrors"][0]["name"],
        "m1"
    );
}

/// In Direct mode no check applies: the check metric's group is expired, so an outcome
/// of an abandoned upstream or bucket does not stay exported (and its alert firing).
#[test]
fn direct_expires_the_check_metric() {
    let out = direct(UPSTREAM, None).unwrap();
    assert!(
        out.metrics
            .iter()
            .any(|m| m.group == "registry_switch"
                && m.action == hook_sdk::metrics::MetricAction::Expire),
        "{:?}",
        out.metrics
    );
    assert!(!out
        .metrics
        .iter()
        .any(|m| m.name == "d8_embedded_registry_check_ok"));
}
