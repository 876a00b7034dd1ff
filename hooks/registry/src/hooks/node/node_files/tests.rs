//! Unit tests of the `node-files` handler: each run's snapshots are built from
//! cluster-state YAML through the hook's own bindings, its network is a fake [`Probe`]
//! and its host root a temporary directory.
//!
//! Above 400 lines: one file for the handler's scenarios, which share the fake
//! [`Probe`], the per-thread case and the cluster-state builders.

use std::cell::RefCell;
use std::path::Path;

use serde_json::Value;

use super::*;
use crate::hooks::node::cluster::{annotated, config_map, scheduled, secret};

/// The node these tests run on.
const NODE: &str = "master-0";

/// The probe of these tests: no I/O, the registry answers or not as set.
#[derive(Clone, Copy)]
struct Fake {
    registry: bool,
    upstream: bool,
    /// The configuration id the registry announces.
    serves: Option<&'static str>,
}

/// Every probe answers.
const ONLINE: Fake = Fake {
    registry: true,
    upstream: true,
    serves: None,
};

impl Probe for Fake {
    fn registry(&self, addr: &str, _ca_pem: &str) -> Result<(), crate::health::HealthError> {
        match self.registry {
            true => Ok(()),
            false => Err(crate::health::HealthError::Request {
                addr: addr.to_string(),
                chain: "cannot connect (fake)".into(),
            }),
        }
    }

    fn upstream(&self, _scheme: &str, _host: &str, _ca_pem: Option<&str>) -> bool {
        self.upstream
    }

    fn registry_config(
        &self,
        addr: &str,
        ca_pem: &str,
    ) -> Result<Option<String>, crate::health::HealthError> {
        self.registry(addr, ca_pem)
            .map(|()| self.serves.map(str::to_string))
    }
}

thread_local! {
    /// The node and probe of the run on this thread (each test runs on its own).
    static CASE: RefCell<Option<(Node, Fake)>> = const { RefCell::new(None) };
}

fn handle_fake(input: &mut HookInput) -> anyhow::Result<()> {
    CASE.with(|case| {
        let case = case.borrow();
        let (node, probe) = case.as_ref().expect("set by run");
        handle_with(input, node, probe)
    })
}

/// The `resync` schedule on [`NODE`] with host root `root`, in a cluster of `objects`.
fn run(
    root: &Path,
    probe: Fake,
    objects: &[Value],
) -> anyhow::Result<hook_sdk::testing::TestOutput> {
    let node = Node {
        name: NODE.into(),
        root: root.into(),
        owner: None,
    };
    CASE.with(|case| *case.borrow_mut() = Some((node, probe)));
    let hook = Hook::new(config(NODE), handle_fake);
    Ok(scheduled(&hook, "resync", objects).run(&hook)?)
}

/// `node`'s config Secret in `namespace` (as the chart renders it), told apart by `ca`.
fn node_config(namespace: &str, node: &str, ca: &str) -> Value {
    annotated(
        secret(
            namespace,
            &node_config_secret(node),
            &[
                (
                    "config.distribution.yaml",
                    "version: 0.1\nhttp:\n  addr: 127.0.0.1:5001\n",
                ),
                ("pki.ca.crt", ca),
                ("manifest.embedded-registry.yaml", "kind: Pod\n"),
            ],
        ),
        &[
            (CONFIG_HASH_ANNOTATION, "h1"),
            (GENERATION_ANNOTATION, "7"),
            (RO_USER_ANNOTATION, "ro-1"),
        ],
    )
}

/// Objects the bindings must not select: another master's Secret, this node's Secret in
/// another namespace, and a ConfigMap of the Secret's name. The first two sort before
/// this node's Secret (the cluster's order: namespace, kind, name), so a binding that
/// let them through would hand them to the handler first.
fn look_alikes() -> Vec<Value> {
    vec![
        node_config(NAMESPACE, "control-1", "CA of control-1\n"),
        node_config("d8-monitoring", NODE, "CA in d8-monitoring\n"),
        config_map(
            NAMESPACE,
            &node_config_secret(NODE),
            &[("pki.ca.crt", "CA in a ConfigMap\n")],
        ),
    ]
}

/// The status ConfigMap the run wrote (exactly one object operation).
fn written_status(out: &hook_sdk::testing::TestOutput) -> (Value, NodeStatus) {
    assert_eq!(out.objects.len(), 1, "{:?}", out.objects);
    let object = out.objects[0].object.clone().expect("a whole object");
    assert_eq!(object["metadata"]["name"], node_status_config_map(NODE));
    let data: BTreeMap<String, String> =
        serde_json::from_value(object["data"].clone()).expect("string data");
    (object, NodeStatus::from_data(&data))
}

fn ca_on_host(root: &Path) -> String {
    std::fs::read_to_string(root.join(PKI_DIR).join("ca.crt")).unwrap()
}

#[test]
fn this_node_s_secret_is_applied_and_its_look_alikes_ignored() {
    let root = tempfile::tempdir().unwrap();
    let mut objects = look_alikes();
    objects.push(node_config(NAMESPACE, NODE, "CA of master-0\n"));
    let out = run(root.path(), ONLINE, &objects).unwrap();
    assert_eq!(ca_on_host(root.path()), "CA of master-0\n");
    assert!(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).is_file());
    let (_, status) = written_status(&out);
    assert_eq!(
        (
            status.node.as_str(),
            status.applied_config_hash.as_str(),
            status.applied_generation.as_str(),
            status.applied_ro_user.as_str(),
        ),
        (NODE, "h1", "7", "ro-1")
    );
    assert_eq!(
        (status.static_pod, status.registry),
        (StaticPod::Present, RegistryHealth::Ready)
    );
}

#[test]
fn the_registry_s_answer_comes_from_the_probe() {
    let root = tempfile::tempdir().unwrap();
    let objects = [node_config(NAMESPACE, NODE, "CA\n")];
    let out = run(
        root.path(),
        Fake {
            registry: false,
            ..ONLINE
        },
        &objects,
    )
    .unwrap();
    let (_, status) = written_status(&out);
    assert_eq!(status.registry, RegistryHealth::NotReady);
    assert!(
        status.message.contains("127.0.0.1:5001") && status.message.contains("(fake)"),
        "{}",
        status.message
    );
}

/// The status binding selects this node's ConfigMap: the status in place is not
/// written again, and one under another master's name does not count.
#[test]
fn an_unchanged_status_is_not_written_again() {
    let root = tempfile::tempdir().unwrap();
    let secret = node_config(NAMESPACE, NODE, "CA\n");
    let first = run(root.path(), ONLINE, std::slice::from_ref(&secret)).unwrap();
    let (status, _) = written_status(&first);
    let mut elsewhere = status.clone();
    elsewhere["metadata"]["name"] = node_status_config_map("master-1").into();
    let other = run(root.path(), ONLINE, &[secret.clone(), elsewhere]).unwrap();
    written_status(&other);
    let again = run(root.path(), ONLINE, &[secret, status]).unwrap();
    assert!(again.objects.is_empty(), "{:?}", again.objects);
}

#[test]
fn without_this_node_s_secret_the_files_go_and_the_status_says_absent() {
    let root = tempfile::tempdir().unwrap();
    let secret = node_config(NAMESPACE, NODE, "CA\n");
    run(root.path(), ONLINE, &[secret]).unwrap();
    let out = run(root.path(), ONLINE, &look_alikes()).unwrap();
    assert!(!root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).exists());
    assert!(!root.path().join(PKI_DIR).join("ca.crt").exists());
    let (_, status) = written_status(&out);
    assert_eq!(
        (
            status.static_pod,
            status.registry,
            status.applied_config_hash.as_str()
        ),
        (StaticPod::Absent, RegistryHealth::Absent, "")
    );
}

#[test]
fn a_value_that_is_not_base64_refuses_the_secret_by_name() {
    let root = tempfile::tempdir().unwrap();
    let mut secret = node_config(NAMESPACE, NODE, "CA\n");
    secret["data"]["pki.ca.crt"] = "not base64!".into();
    let e = run(root.path(), ONLINE, &[secret]).unwrap_err().to_string();
    assert!(
        e.contains(&node_config_secret(NODE)) && e.contains("base64"),
        "{e}"
    );
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

/// A Proxy registry whose upstream does not answer and which does not serve goes
/// cache-only at once: the variant is installed in place of its configuration, the
/// manifest marked, and the state recorded in the status and the metrics.
#[test]
fn a_dead_upstream_installs_the_cache_only_variant() {
    let root = tempfile::tempdir().unwrap();
    let proxy = secret(
        NAMESPACE,
        &node_config_secret(NODE),
        &[
            (
                cache_only::CONFIG_KEY,
                "http:\n  addr: 127.0.0.1:5001\nproxy:\n  remoteurl: https://upstream.example:8443\n",
            ),
            (cache_only::CACHE_ONLY_KEY, "http:\n  addr: 127.0.0.1:5001\n# cache only\n"),
            ("pki.ca.crt", "CA\n"),
            (
                "manifest.embedded-registry.yaml",
                "kind: Pod\nmetadata:\n  annotations: {}\n",
            ),
        ],
    );
    let dead = Fake {
        registry: false,
        upstream: false,
        serves: None,
    };
    let out = run(root.path(), dead, &[proxy]).unwrap();
    let config = std::fs::read_to_string(root.path().join(CONFIG_DIR).join("distribution.yaml"));
    assert!(config.unwrap().contains("# cache only"));
    let manifest =
        std::fs::read_to_string(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE)).unwrap();
    assert!(manifest.contains(CACHE_ONLY_ANNOTATION), "{manifest}");
    let (_, status) = written_status(&out);
    let upstream = status.upstream.expect("a Proxy registry's upstream state");
    assert!(!upstream.answers && upstream.cache_only, "{upstream:?}");
    let metric = out
        .metrics
        .iter()
        .find(|m| m.name == "d8_embedded_registry_cache_only")
        .expect("the cache-only metric");
    assert_eq!(metric.value, Some(1.0));
}

/// A config hash as the chart renders it.
fn sha(c: char) -> String {
    c.to_string().repeat(64)
}

/// [`NODE`]'s config Secret with config hash `hash` and the rollout order `order`,
/// announcing configuration id `id`; told apart on the host by `ca`.
fn ordered(hash: &str, order: &str, id: &str, ca: &str) -> Value {
    let mut s = node_config(NAMESPACE, NODE, ca);
    let dist = format!(
        "version: 0.1\nhttp:\n  addr: 127.0.0.1:5001\n  headers:\n    {}: [{id}]\n",
        crate::health::CONFIG_ID_HEADER
    );
    s["data"]["config.distribution.yaml"] = crate::secrets::b64(&dist).into();
    annotated(
        s,
        &[
            (CONFIG_HASH_ANNOTATION, hash),
            (rollout::ORDER_ANNOTATION, order),
        ],
    )
}

/// Another master's status ConfigMap as its node hook writes it (name and labels).
fn peer_status(node: &str, hash: &str, registry: &str) -> Value {
    let mut cm = config_map(
        NAMESPACE,
        &node_status_config_map(node),
        &[
            ("node", node),
            ("appliedConfigHash", hash),
            ("registry", registry),
        ],
    );
    cm["metadata"]["labels"] = serde_json::json!({ROLE_LABEL: "node-status", NODE_LABEL: node});
    cm
}

/// This node's status ConfigMap from a run's output, as the next run's snapshot.
fn own_status(out: &hook_sdk::testing::TestOutput) -> Value {
    let (mut object, _) = written_status(out);
    object["metadata"]["labels"][NODE_LABEL] = NODE.into();
    object
}

/// Three masters, this one second: `control-0` before it, `zeta-2` after.
fn order(before: &str, me: &str) -> String {
    format!("control-0={before},{NODE}={me},zeta-2={}", sha('9'))
}

/// The old configuration installed and serving: a run with the old Secret.
fn installed(root: &Path) -> Value {
    let first = ordered(&sha('1'), &order(&sha('0'), &sha('1')), "id-1", "CA old\n");
    let serving = Fake {
        serves: Some("id-1"),
        ..ONLINE
    };
    let out = run(root, serving, &[first]).unwrap();
    let (_, status) = written_status(&out);
    assert_eq!(status.registry, RegistryHealth::Ready, "{}", status.message);
    own_status(&out)
}

const T0: i64 = 1_800_000_000;

fn at<T>(t: i64, f: impl FnOnce() -> T) -> T {
    crate::clock::with_now(t, f)
}

/// A changed configuration waits while the master before it runs the old one (a
/// look-alike of its status in another namespace does not count), and goes
/// once that master reports the new hash applied and ready.
#[test]
fn a_change_waits_for_the_master_before_and_goes_when_it_is_ready() {
    let root = tempfile::tempdir().unwrap();
    let own = installed(root.path());
    let mut new = ordered(&sha('b'), &order(&sha('a'), &sha('b')), "id-b", "CA new\n");
    new["metadata"]["annotations"][RO_USER_ANNOTATION] = "ro-2".into();
    new["metadata"]["annotations"][crate::module::GC_WINDOW_ANNOTATION] = "5/read-only".into();
    let old_serves = Fake {
        serves: Some("id-1"),
        ..ONLINE
    };
    let mut elsewhere = peer_status("control-0", &sha('a'), "ready");
    elsewhere["metadata"]["namespace"] = "d8-monitoring".into();
    let objects = [
        new.clone(),
        own.clone(),
        peer_status("control-0", &sha('0'), "ready"),
        elsewhere,
    ];
    let out = at(T0, || run(root.path(), old_serves, &objects)).unwrap();
    assert_eq!(ca_on_host(root.path()), "CA old\n", "nothing installed");
    let (_, status) = written_status(&out);
    assert_eq!(status.applied_config_hash, sha('1'));
    assert_eq!(
        (
            status.applied_generation.as_str(),
            status.applied_ro_user.as_str()
        ),
        ("7", "ro-1"),
        "what it runs, not what waits"
    );
    assert_eq!(status.applied_gc_window, "", "no window runs yet");
    assert_eq!(
        status.rollout,
        Some(Rollout {
            waiting_for: vec!["control-0".into()],
            since: T0
        })
    );
    assert_eq!(status.registry, RegistryHealth::Ready, "it still serves");

    // control-0 restarting on the new hash: still waiting, since the same time.
    let waiting = own_status(&out);
    let restarting = [
        new.clone(),
        waiting.clone(),
        peer_status("control-0", &sha('a'), "not-ready"),
    ];
    let out = at(T0 + 30, || run(root.path(), old_serves, &restarting)).unwrap();
    assert!(out.objects.is_empty(), "the same status: {:?}", out.objects);
    assert_eq!(ca_on_host(root.path()), "CA old\n");

    // control-0 ready on the new hash: this master installs.
    let new_again = new.clone();
    let ready = [new, waiting, peer_status("control-0", &sha('a'), "ready")];
    let out = at(T0 + 60, || run(root.path(), old_serves, &ready)).unwrap();
    assert_eq!(ca_on_host(root.path()), "CA new\n");
    let (_, status) = written_status(&out);
    assert_eq!(status.applied_config_hash, sha('b'));
    assert_eq!(status.rollout, None);
    // The old process still answers: not ready on the files just installed.
    assert_eq!(status.registry, RegistryHealth::NotReady);
    assert!(
        status
            .message
            .contains("not with the configuration installed"),
        "{}",
        status.message
    );
    assert_eq!(
        status.applied_ro_user, "ro-1",
        "the new users do not run yet"
    );
    assert_eq!(
        status.applied_gc_window, "",
        "nor the window's read-only files"
    );
    // kubelet restarted it: ready on the new files, with the new users.
    let restarted = Fake {
        serves: Some("id-b"),
        ..ONLINE
    };
    let after = [new_again, own_status(&out)];
    let out = at(T0 + 90, || run(root.path(), restarted, &after)).unwrap();
    let (_, status) = written_status(&out);
    assert_eq!(
        (status.registry, status.applied_ro_user.as_str()),
        (RegistryHealth::Ready, "ro-2")
    );
    assert_eq!(status.applied_gc_window, "5/read-only");
}

/// A master before it that never comes back holds the change for the bound only.
#[test]
fn a_change_goes_after_the_bound() {
    let root = tempfile::tempdir().unwrap();
    let own = installed(root.path());
    let new = ordered(&sha('b'), &order(&sha('a'), &sha('b')), "id-b", "CA new\n");
    let dead = peer_status("control-0", &sha('0'), "not-ready");
    let out = at(T0, || {
        run(root.path(), ONLINE, &[new.clone(), own, dead.clone()])
    })
    .unwrap();
    let waiting = own_status(&out);
    let out = at(T0 + rollout::BOUND_SECS - 1, || {
        run(
            root.path(),
            ONLINE,
            &[new.clone(), waiting.clone(), dead.clone()],
        )
    })
    .unwrap();
    assert_eq!(ca_on_host(root.path()), "CA old\n");
    let wait = out
        .metrics
        .iter()
        .find(|m| m.name == "d8_embedded_registry_rollout_wait_seconds")
        .expect("the wait metric");
    assert_eq!(wait.value, Some((rollout::BOUND_SECS - 1) as f64));
    at(T0 + rollout::BOUND_SECS, || {
        run(root.path(), ONLINE, &[new, waiting, dead])
    })
    .unwrap();
    assert_eq!(
        ca_on_host(root.path()),
        "CA new\n",
        "installed past the bound"
    );
}

/// A master alone, and a first install, are never held.
#[test]
fn a_single_master_and_a_first_install_go_at_once() {
    let root = tempfile::tempdir().unwrap();
    let own = installed(root.path());
    let alone = ordered(
        &sha('b'),
        &format!("{NODE}={}", sha('b')),
        "id-b",
        "CA new\n",
    );
    run(root.path(), ONLINE, &[alone, own]).unwrap();
    assert_eq!(ca_on_host(root.path()), "CA new\n");

    let fresh = tempfile::tempdir().unwrap();
    let new = ordered(&sha('b'), &order(&sha('a'), &sha('b')), "id-b", "CA new\n");
    let behind = peer_status("control-0", &sha('0'), "ready");
    let out = run(fresh.path(), ONLINE, &[new, behind]).unwrap();
    assert_eq!(
        ca_on_host(fresh.path()),
        "CA new\n",
        "no manifest yet: installed"
    );
    assert_eq!(written_status(&out).1.rollout, None);
}

/// An order annotation that is not what the chart renders refuses the run before
/// anything is written, in one line that does not quote it.
#[test]
fn a_hostile_order_is_refused_and_nothing_written() {
    for order in [
        format!("control-0;touch /x={},{NODE}={}", sha('a'), sha('b')),
        format!("control-0=$(id),{NODE}={}", sha('b')),
        format!("control-0={}", sha('a')),
    ] {
        let root = tempfile::tempdir().unwrap();
        let secret = ordered(&sha('b'), &order, "id-b", "CA\n");
        let e = run(root.path(), ONLINE, &[secret]).unwrap_err().to_string();
        assert!(e.contains(rollout::ORDER_ANNOTATION), "{e}");
        assert!(
            !e.contains("touch") && !e.contains("$(id)") && !e.contains('\n'),
            "{e}"
        );
        assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
    }
}

/// A Proxy registry going cache-only (node-local) is not held back by the rollout: a
/// configuration that waits goes with it.
#[test]
fn a_cache_only_switch_is_not_gated() {
    let root = tempfile::tempdir().unwrap();
    let proxy = |hash: &str, ca: &str| {
        annotated(
            secret(
                NAMESPACE,
                &node_config_secret(NODE),
                &[
                    (
                        cache_only::CONFIG_KEY,
                        "http:\n  addr: 127.0.0.1:5001\nproxy:\n  remoteurl: https://upstream.example:8443\n",
                    ),
                    (cache_only::CACHE_ONLY_KEY, "http:\n  addr: 127.0.0.1:5001\n# cache only\n"),
                    ("pki.ca.crt", ca),
                    (
                        "manifest.embedded-registry.yaml",
                        "kind: Pod\nmetadata:\n  annotations: {}\n",
                    ),
                ],
            ),
            &[
                (CONFIG_HASH_ANNOTATION, hash),
                (rollout::ORDER_ANNOTATION, &order(&sha('a'), hash)),
            ],
        )
    };
    let out = run(root.path(), ONLINE, &[proxy(&sha('1'), "CA old\n")]).unwrap();
    let own = own_status(&out);
    let behind = peer_status("control-0", &sha('0'), "ready");
    // The upstream answers: the change waits for control-0.
    run(
        root.path(),
        ONLINE,
        &[proxy(&sha('b'), "CA new\n"), own.clone(), behind.clone()],
    )
    .unwrap();
    assert_eq!(ca_on_host(root.path()), "CA old\n");
    // The upstream and the registry gone: cache-only at once, with the new files.
    let dead = Fake {
        registry: false,
        upstream: false,
        serves: None,
    };
    run(
        root.path(),
        dead,
        &[proxy(&sha('b'), "CA new\n"), own, behind],
    )
    .unwrap();
    assert_eq!(ca_on_host(root.path()), "CA new\n");
    let config = std::fs::read_to_string(root.path().join(CONFIG_DIR).join("distribution.yaml"));
    assert!(config.unwrap().contains("# cache only"));
}
