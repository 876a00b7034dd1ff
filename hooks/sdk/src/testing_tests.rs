//! Unit tests of `testing`.

use super::*;
use crate::config::HookConfig;

#[test]
fn harness_applies_the_patch_like_the_runner() {
    let hook = Hook::new(
        HookConfig {
            name: "h".into(),
            before_helm: Some(1),
            ..Default::default()
        },
        |input| {
            let names: Vec<String> = input.snapshots.get("nodes")?;
            input.values.set("m.internal.names", &names)?;
            input.values.remove("m.stale")?;
            input.objects.delete("v1", "Secret", "ns", "old");
            Ok(())
        },
    );
    let out = HookTest::new()
        .values(json!({"m": {"stale": 1}}))
        .group_snapshot(
            "nodes",
            vec![filtered("a"), filtered(Value::Null), full(json!("b"))],
        )
        .run(&hook)
        .unwrap();
    assert_eq!(
        out.values,
        json!({"m": {"internal": {"names": ["a", "b"]}}})
    );
    assert_eq!(out.objects.len(), 1);
}

/// A hook with two bindings: masters by label with a jqFilter, and Secrets of one
/// namespace by name only; the handler copies both snapshots into values.
fn watching_hook() -> Hook {
    use crate::config::{KubernetesBinding, LabelSelector, NamespaceSelector};
    Hook::new(
            HookConfig {
                name: "watch".into(),
                before_helm: Some(1),
                kubernetes: vec![
                    KubernetesBinding {
                        label_selector: Some(LabelSelector::exists(
                            "node-role.kubernetes.io/control-plane",
                        )),
                        jq_filter: Some(
                            r#"{name: .metadata.name, ip: ([.status.addresses[]? | select(.type == "InternalIP") | .address] | first)}"#
                                .into(),
                        ),
                        ..KubernetesBinding::new("masters", "v1", "Node")
                    },
                    KubernetesBinding {
                        namespace: Some(NamespaceSelector::names(&["d8-system"])),
                        ..KubernetesBinding::new("secrets", "v1", "Secret")
                    },
                ],
                ..Default::default()
            },
            |input| {
                let masters: Vec<Value> = input.snapshots.get("masters")?;
                let secrets: Vec<Value> = input.snapshots.get("secrets")?;
                let names: Vec<&str> = secrets
                    .iter()
                    .filter_map(|s| s.pointer("/metadata/name")?.as_str())
                    .collect();
                input.values.set("m.masters", &masters)?;
                input.values.set("m.secrets", &names)?;
                Ok(())
            },
        )
}

const CLUSTER: &str = r#"
apiVersion: v1
kind: Node
metadata:
  name: master-b
  labels: {node-role.kubernetes.io/control-plane: ""}
status:
  addresses: [{type: Hostname, address: master-b}, {type: InternalIP, address: 10.0.0.2}]
---
apiVersion: v1
kind: Node
metadata: {name: worker-0, labels: {node-role.kubernetes.io/worker: ""}}
status: {addresses: [{type: InternalIP, address: 10.0.0.9}]}
---
apiVersion: v1
kind: Node
metadata:
  name: master-a
  labels: {node-role.kubernetes.io/control-plane: ""}
status: {addresses: [{type: InternalIP, address: 10.0.0.1}]}
---
apiVersion: v1
kind: Secret
metadata: {name: registry-pki, namespace: d8-system}
---
apiVersion: v1
kind: Secret
metadata: {name: registry-pki, namespace: default}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: not-a-secret
  namespace: d8-system
  labels: {node-role.kubernetes.io/control-plane: ""}
"#;

fn run_watch(cluster: &str) -> TestOutput {
    HookTest::new()
        .values(json!({"m": {}}))
        .lifecycle("beforeHelm")
        .cluster_state(cluster)
        .run(&watching_hook())
        .unwrap()
}

#[test]
fn a_label_selector_excludes_an_object() {
    let out = run_watch(CLUSTER);
    let names: Vec<&str> = out.values["m"]["masters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["master-a", "master-b"],
        "worker-0 has no control-plane label"
    );
}

#[test]
fn a_jq_filter_shapes_the_snapshot() {
    let out = run_watch(CLUSTER);
    assert_eq!(
        out.values["m"]["masters"],
        json!([{"name": "master-a", "ip": "10.0.0.1"}, {"name": "master-b", "ip": "10.0.0.2"}])
    );
    // Without a filter the item is the whole object.
    let hook = watching_hook();
    let contexts = HookTest::new()
        .cluster_state(CLUSTER)
        .contexts_for(&hook)
        .unwrap();
    let secret = &contexts[0].snapshots["secrets"][0];
    assert!(secret.object.is_some() && secret.filter_result.is_none());
    let master = &contexts[0].snapshots["masters"][0];
    assert!(
        master.object.is_none(),
        "a filtered binding keeps only the result"
    );
}

#[test]
fn a_namespace_selector_excludes_an_object() {
    let out = run_watch(CLUSTER);
    assert_eq!(out.values["m"]["secrets"], json!(["registry-pki"]));
    let only_default = CLUSTER.replace("namespace: d8-system}", "namespace: kube-system}");
    let out = run_watch(&only_default);
    assert_eq!(out.values["m"]["secrets"], json!([]));
}

#[test]
fn an_object_of_another_kind_is_ignored() {
    // The ConfigMap carries the masters' label and sits in d8-system: neither the
    // Node binding nor the Secret binding takes it.
    let out = run_watch(CLUSTER);
    let text = out.values.to_string();
    assert!(!text.contains("not-a-secret"), "{text}");
    let as_node = CLUSTER.replace("kind: ConfigMap", "kind: Node");
    let out = run_watch(&as_node);
    assert!(
        out.values.to_string().contains("not-a-secret"),
        "the same object as a Node is taken"
    );
}

#[test]
fn cluster_state_fills_lifecycle_and_group_contexts_only() {
    let hook = watching_hook();
    let bare = HookTest::new()
        .cluster_state(CLUSTER)
        .contexts_for(&hook)
        .unwrap();
    assert_eq!(bare.len(), 1);
    assert_eq!(bare[0].kind, Some(ContextType::Group));
    assert_eq!(bare[0].snapshots["masters"].len(), 2);
    let contexts = HookTest::new()
        .lifecycle("onStartup")
        .schedule("daily")
        .group_snapshot("masters", vec![filtered("given")])
        .cluster_state(CLUSTER)
        .contexts_for(&hook)
        .unwrap();
    assert!(contexts[0].snapshots.is_empty() && contexts[1].snapshots.is_empty());
    assert_eq!(
        contexts[2].snapshots["masters"],
        vec![filtered("given")],
        "given by hand wins"
    );
    assert_eq!(contexts[2].snapshots["secrets"].len(), 1);
}

#[test]
fn bad_cluster_state_names_the_document() {
    let hook = watching_hook();
    for (yaml, want) in [
        (
            "apiVersion: v1\nkind: Node\nmetadata: {name: a}\n---\n- 1\n",
            "document 1: not an object",
        ),
        (
            "apiVersion: v1\nkind: Node\n",
            "document 0: an object needs kind and metadata.name",
        ),
        ("kind: Node\nmetadata: {name: a}\n", "no apiVersion"),
        ("a: [\n", "document 0:"),
        ("kind: List\n", "a List without items"),
    ] {
        let e = HookTest::new()
            .cluster_state(yaml)
            .run(&hook)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{yaml:?}: {e}");
        assert!(!e.contains('\n'), "{e}");
    }
    let list = "apiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Secret, metadata: {name: s, namespace: d8-system}}\n";
    assert_eq!(parse_cluster_state(list).unwrap().len(), 1);
    assert!(parse_cluster_state("---\n---\n").unwrap().is_empty());
}
