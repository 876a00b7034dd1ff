//! Test-only builders of the cluster state the module hooks' unit tests give
//! [`HookTest::cluster_state`]: objects as a cluster holds them (Secret data in base64),
//! written out as the multi-document YAML `kubectl get -o yaml` would print.

use hook_sdk::testing::HookTest;
use hook_sdk::Hook;
use serde_json::{json, Value};

/// The multi-document YAML of `objects`.
pub fn yaml<'a>(objects: impl IntoIterator<Item = &'a Value>) -> String {
    objects
        .into_iter()
        .map(|o| {
            format!(
                "---\n{}",
                serde_yaml_ng::to_string(o).expect("a JSON value")
            )
        })
        .collect()
}

/// A Node carrying `labels` (each with the value `""`, as node roles are set), its
/// Hostname address and, when given, an InternalIP.
pub fn node(name: &str, labels: &[&str], ip: Option<&str>) -> Value {
    let labels: serde_json::Map<String, Value> =
        labels.iter().map(|l| (l.to_string(), json!(""))).collect();
    let addresses: Vec<Value> = ip
        .into_iter()
        .map(|ip| json!({"type": "InternalIP", "address": ip}))
        .chain([json!({"type": "Hostname", "address": name})])
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels},
        "status": {"addresses": addresses},
    })
}

/// An object of `kind` in `namespace` with `labels` and `data` (plain text; stored in
/// base64 when the kind is a Secret).
pub fn object(
    kind: &str,
    namespace: &str,
    name: &str,
    labels: &[(&str, &str)],
    data: &[(&str, &str)],
) -> Value {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| {
            let v = if kind == "Secret" {
                crate::secrets::b64(v)
            } else {
                v.to_string()
            };
            (k.to_string(), json!(v))
        })
        .collect();
    json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": data,
    })
}

/// What the handler gets in `binding`'s snapshot from `cluster`: the jqFilter result of
/// every object the binding's selectors take, in the cluster's order. Panics when an
/// item also carries the whole object (the bindings keep only the filter result).
pub fn seen(hook: &Hook, cluster: &str, binding: &str) -> Vec<Value> {
    let contexts = HookTest::new()
        .cluster_state(cluster)
        .contexts_for(hook)
        .expect("a valid cluster state");
    contexts[0].snapshots[binding]
        .iter()
        .map(|item| {
            assert!(item.object.is_none(), "{binding} keeps the whole object");
            let result = item.filter_result.as_ref().expect("a jqFilter result");
            serde_json::from_str(result.get()).expect("JSON")
        })
        .collect()
}
