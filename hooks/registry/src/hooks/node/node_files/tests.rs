//! Unit tests of the `node-files` handler: each run's snapshots are built from
//! cluster-state YAML through the hook's own bindings, its network is a fake [`Probe`]
//! and its host root a temporary directory.

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
}

/// Every probe answers.
const ONLINE: Fake = Fake {
    registry: true,
    upstream: true,
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
