//! Finds the master nodes (name and InternalIP) the registry runs on.
//!
//! Masters carry `node-role.kubernetes.io/control-plane` (current) or
//! `node-role.kubernetes.io/master` (older clusters); a selector cannot OR two labels,
//! so there is one binding per label and the results are merged by name.

use std::collections::BTreeMap;

use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, LabelSelector};
use serde::Deserialize;
use serde_json::json;

use super::MODULE_KEY;
use crate::internal::Master;

/// Labels that mark a master node.
pub const MASTER_LABELS: [(&str, &str); 2] = [
    ("masters", "node-role.kubernetes.io/control-plane"),
    ("legacy_masters", "node-role.kubernetes.io/master"),
];

/// Keeps only what the hook needs, so the runner holds small snapshots.
pub const NODE_FILTER: &str = r#"{"name": .metadata.name, "internalIP": ([.status.addresses[]? | select(.type == "InternalIP") | .address] | first)}"#;

/// The hook.
pub fn hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "discover-masters".into(),
            kubernetes: MASTER_LABELS
                .iter()
                .map(|(binding, label)| KubernetesBinding {
                    label_selector: Some(LabelSelector::exists(label)),
                    jq_filter: Some(NODE_FILTER.into()),
                    keep_full_objects_in_memory: Some(false),
                    ..KubernetesBinding::new(binding, "v1", "Node")
                })
                .collect(),
            ..Default::default()
        },
        handle,
    )
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Address {
    #[serde(rename = "type")]
    kind: String,
    address: String,
}

#[derive(Deserialize)]
struct NodeStatus {
    #[serde(default)]
    addresses: Vec<Address>,
}

#[derive(Deserialize)]
struct NodeMeta {
    name: String,
}

/// A snapshot item: the filter result (`name`, `internalIP`) or, when the runner
/// passes whole objects, a Node (`metadata`, `status`). One struct reads both in one
/// pass; an untagged enum would parse every object twice.
#[derive(Deserialize)]
struct NodeItem {
    name: Option<String>,
    #[serde(rename = "internalIP")]
    internal_ip: Option<String>,
    metadata: Option<NodeMeta>,
    status: Option<NodeStatus>,
}

impl NodeItem {
    fn into_parts(self) -> Option<(String, Option<String>)> {
        match (self.name, self.metadata) {
            (Some(name), _) => Some((name, self.internal_ip)),
            (None, Some(meta)) => {
                let ip = self.status.and_then(|s| {
                    s.addresses
                        .into_iter()
                        .find(|a| a.kind == "InternalIP")
                        .map(|a| a.address)
                });
                Some((meta.name, ip))
            }
            (None, None) => None,
        }
    }
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    // Without either snapshot the run knows nothing about the nodes: emitting an empty
    // list would remove the registry from every master.
    if !MASTER_LABELS.iter().any(|(b, _)| input.snapshots.has(b)) {
        anyhow::bail!(
            "no snapshot of binding masters or legacy_masters in this run: refusing to report no masters"
        );
    }
    let mut masters = BTreeMap::new();
    let mut without_ip = Vec::new();
    for (binding, _) in MASTER_LABELS {
        for (i, item) in input
            .snapshots
            .get::<NodeItem>(binding)?
            .into_iter()
            .enumerate()
        {
            let parts = item.into_parts().ok_or_else(|| {
                anyhow::anyhow!("snapshot {binding}[{i}]: neither a Node nor a filter result")
            })?;
            match parts {
                (name, Some(ip)) if !ip.is_empty() => {
                    masters.insert(
                        name.clone(),
                        Master {
                            name,
                            internal_ip: ip,
                        },
                    );
                }
                (name, _) => without_ip.push(name),
            }
        }
    }
    without_ip.retain(|n| !masters.contains_key(n));
    if !without_ip.is_empty() {
        input.log.warn(
            "master nodes without an InternalIP are skipped until they report one",
            &[("nodes", json!(without_ip))],
        );
    }
    let masters: Vec<Master> = masters.into_values().collect();
    input.metrics.expire("masters");
    input.metrics.set(
        "masters",
        "d8_embedded_registry_masters",
        masters.len() as f64,
        &[],
    );
    input
        .values
        .set(&format!("{MODULE_KEY}.internal.masters"), &masters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hook_sdk::testing::{filtered, full, HookTest};

    fn node(name: &str, ip: Option<&str>) -> serde_json::Value {
        let addresses: Vec<_> = ip
            .into_iter()
            .map(|ip| json!({"type": "InternalIP", "address": ip}))
            .chain([json!({"type": "Hostname", "address": name})])
            .collect();
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}, "status": {"addresses": addresses}})
    }

    #[test]
    fn merges_both_labels_sorted_and_skips_nodes_without_ip() {
        let out = HookTest::new()
            .values(json!({"embeddedRegistry": {"internal": {}}}))
            .group_snapshot(
                "masters",
                vec![
                    filtered(json!({"name": "m2", "internalIP": "10.0.0.2"})),
                    filtered(json!({"name": "m9", "internalIP": null})),
                ],
            )
            .group_snapshot(
                "legacy_masters",
                vec![
                    full(node("m1", Some("10.0.0.1"))),
                    full(node("m2", Some("10.0.0.2"))),
                ],
            )
            .run(&hook())
            .unwrap();
        assert_eq!(
            out.values["embeddedRegistry"]["internal"]["masters"],
            json!([{"name": "m1", "internalIP": "10.0.0.1"}, {"name": "m2", "internalIP": "10.0.0.2"}])
        );
        assert_eq!(out.metrics[1].value, Some(2.0));
    }

    #[test]
    fn a_second_run_on_its_own_output_changes_nothing() {
        let run = |values| {
            HookTest::new()
                .values(values)
                .group_snapshot(
                    "masters",
                    vec![filtered(json!({"name": "m1", "internalIP": "10.0.0.1"}))],
                )
                .group_snapshot("legacy_masters", vec![])
                .run(&hook())
                .unwrap()
        };
        let first = run(json!({"embeddedRegistry": {}}));
        assert!(!first.values_patch.is_empty());
        let second = run(first.values.clone());
        assert!(second.values_patch.is_empty(), "{:?}", second.values_patch);
    }
}
