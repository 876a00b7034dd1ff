//! Cluster-state builders for the node hooks' unit tests: objects as a cluster holds
//! them (a Secret's `data` in base64), one multi-document YAML of them for
//! [`HookTest::cluster_state`], and the schedule run shell-operator gives a node hook.

use hook_sdk::context::{BindingContext, ContextType};
use hook_sdk::testing::HookTest;
use hook_sdk::Hook;
use serde_json::{json, Map, Value};

fn object(kind: &str, namespace: &str, name: &str, data: Map<String, Value>) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    })
}

/// A Secret, its `data` base64-encoded as the API server keeps it.
pub fn secret(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(crate::secrets::b64(v))))
        .collect();
    object("Secret", namespace, name, data)
}

/// A ConfigMap.
pub fn config_map(namespace: &str, name: &str, data: &[(&str, &str)]) -> Value {
    let data = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    object("ConfigMap", namespace, name, data)
}

/// `object` with `annotations` added to its metadata.
pub fn annotated(mut object: Value, annotations: &[(&str, &str)]) -> Value {
    for (k, v) in annotations {
        object["metadata"]["annotations"][*k] = json!(v);
    }
    object
}

/// The objects as one multi-document YAML, as `kubectl get -o yaml` would list them.
pub fn yaml(objects: &[Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml_ng::to_string(o).expect("an object serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// A run of `hook`'s schedule `schedule` in a cluster holding `objects`: the snapshots
/// are built through the hook's own bindings ([`HookTest::cluster_state`]) and the
/// schedule's context carries those of the bindings it includes, as shell-operator
/// delivers a schedule with `includeSnapshotsFrom`.
pub fn scheduled(hook: &Hook, schedule: &str, objects: &[Value]) -> HookTest {
    let built = HookTest::new()
        .cluster_state(&yaml(objects))
        .contexts_for(hook)
        .expect("the cluster state and the bindings are valid");
    let include = &hook
        .config
        .schedule
        .iter()
        .find(|s| s.name.as_deref() == Some(schedule))
        .expect("the hook has this schedule")
        .include_snapshots_from;
    let mut context = BindingContext {
        binding: schedule.into(),
        kind: Some(ContextType::Schedule),
        ..Default::default()
    };
    for b in include {
        let items = built[0].snapshots.get(b).cloned().unwrap_or_default();
        context.snapshots.insert(b.clone(), items);
    }
    HookTest::new().context(context)
}
