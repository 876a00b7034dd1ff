//! Finds the master nodes (name and InternalIP) the registry runs on.
//!
//! Masters carry `node-role.kubernetes.io/control-plane` (current) or
//! `node-role.kubernetes.io/master` (older clusters); a selector cannot OR two labels,
//! so there is one binding per label and the results are merged by name.

use std::collections::BTreeMap;

use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, LabelSelector};
use serde::Deserialize;
use serde_json::json;

use crate::model::values::Master;
use crate::module::{MASTER_LABELS, MODULE_KEY};
use crate::untrusted::{self, Invalid};

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

/// Why a master node is not listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    /// It reports no InternalIP (yet).
    NoAddress,
    /// Its name or address is not what it claims to be.
    Invalid(Invalid),
}

impl Skip {
    const ALL: [Skip; 3] = [
        Skip::NoAddress,
        Skip::Invalid(Invalid::NodeName),
        Skip::Invalid(Invalid::Address),
    ];

    fn as_str(self) -> &'static str {
        match self {
            Skip::NoAddress => "no-address",
            Skip::Invalid(why) => why.as_str(),
        }
    }

    fn message(self) -> String {
        match self {
            Skip::NoAddress => {
                "master nodes without an InternalIP are skipped until they report one".into()
            }
            Skip::Invalid(why) => {
                format!("master nodes skipped: {why}; fix the Node, or remove its master label")
            }
        }
    }
}

/// A master from its name and InternalIP, when both are what they claim to be; the
/// address is kept in its canonical form.
fn checked(name: &str, ip: &str) -> Result<Master, Invalid> {
    Ok(Master {
        name: untrusted::node_name(name)?.to_owned(),
        internal_ip: untrusted::address(ip)?.to_string(),
    })
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
    let mut skipped: BTreeMap<Skip, Vec<String>> = BTreeMap::new();
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
            let (name, ip) = parts;
            match ip.filter(|ip| !ip.is_empty()).map(|ip| checked(&name, &ip)) {
                Some(Ok(master)) => {
                    masters.insert(name, master);
                }
                Some(Err(why)) => skipped.entry(Skip::Invalid(why)).or_default().push(name),
                None => skipped.entry(Skip::NoAddress).or_default().push(name),
            }
        }
    }
    // A node seen through the other binding with good data is not skipped.
    for names in skipped.values_mut() {
        names.retain(|n| !masters.contains_key(n));
    }
    input.metrics.expire("masters_skipped");
    for skip in Skip::ALL {
        let names = skipped.get(&skip).map(Vec::as_slice).unwrap_or_default();
        input.metrics.set(
            "masters_skipped",
            "d8_embedded_registry_masters_skipped",
            names.len() as f64,
            &[("reason", skip.as_str())],
        );
        if !names.is_empty() {
            // Names may hold anything: logged escaped and cut.
            let shown: Vec<String> = names.iter().map(|n| untrusted::shown(n)).collect();
            input.log.warn(
                &skip.message(),
                &[("reason", json!(skip.as_str())), ("nodes", json!(shown))],
            );
        }
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
        .set(&format!("{MODULE_KEY}.internal.masters"), &masters)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::module::cluster_yaml::{node, object, seen, yaml};
    use hook_sdk::testing::{HookTest, TestOutput};

    const CONTROL_PLANE: &str = MASTER_LABELS[0].1;
    const LEGACY: &str = MASTER_LABELS[1].1;
    const WORKER: &str = "node-role.kubernetes.io/worker";

    /// m1 carries only the legacy label, m2 both, m9 the current one without an
    /// InternalIP; the worker and the labelled ConfigMap are no masters.
    fn mixed_cluster() -> String {
        yaml(&[
            node("m2", &[CONTROL_PLANE, LEGACY], Some("10.0.0.2")),
            node("m9", &[CONTROL_PLANE], None),
            node("m1", &[LEGACY], Some("10.0.0.1")),
            node("w1", &[WORKER], Some("10.0.0.9")),
            object(
                "ConfigMap",
                "kube-system",
                "m3",
                &[(CONTROL_PLANE, "")],
                &[],
            ),
        ])
    }

    fn run_on(hook: &Hook, cluster: &str, values: serde_json::Value) -> TestOutput {
        HookTest::new()
            .values(values)
            .cluster_state(cluster)
            .run(hook)
            .unwrap()
    }

    fn run(cluster: &str) -> TestOutput {
        run_on(
            &hook(),
            cluster,
            json!({"embeddedRegistry": {"internal": {}}}),
        )
    }

    #[test]
    fn merges_both_labels_sorted_and_skips_nodes_without_ip() {
        let out = run(&mixed_cluster());
        assert_eq!(
            out.values["embeddedRegistry"]["internal"]["masters"],
            json!([{"name": "m1", "internalIP": "10.0.0.1"}, {"name": "m2", "internalIP": "10.0.0.2"}]),
            "the worker and the ConfigMap are not masters"
        );
        assert_eq!(metric(&out, "d8_embedded_registry_masters", ""), Some(2.0));
        assert_eq!(
            metric(&out, "d8_embedded_registry_masters_skipped", "no-address"),
            Some(1.0)
        );
    }

    #[test]
    fn the_bindings_take_labelled_nodes_and_keep_name_and_address_only() {
        let cluster = mixed_cluster();
        assert_eq!(
            seen(&hook(), &cluster, "masters"),
            [
                json!({"name": "m2", "internalIP": "10.0.0.2"}),
                json!({"name": "m9", "internalIP": null}),
            ],
            "no labels, no Hostname address, no worker, no ConfigMap"
        );
        let legacy: Vec<_> = seen(&hook(), &cluster, "legacy_masters")
            .into_iter()
            .map(|m| m["name"].clone())
            .collect();
        assert_eq!(legacy, [json!("m1"), json!("m2")]);
    }

    #[test]
    fn whole_nodes_are_read_like_filter_results() {
        // A runner that ignored the jqFilter would pass whole Nodes: same masters.
        let mut unfiltered = hook();
        for b in &mut unfiltered.config.kubernetes {
            b.jq_filter = None;
        }
        let values = json!({"embeddedRegistry": {"internal": {}}});
        let cluster = mixed_cluster();
        let whole = run_on(&unfiltered, &cluster, values.clone());
        assert_eq!(whole.values, run_on(&hook(), &cluster, values).values);
        assert_eq!(
            whole.values["embeddedRegistry"]["internal"]["masters"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
    }

    /// The value of a metric set in the run (by name and `reason` label, "" for none).
    fn metric(out: &TestOutput, name: &str, reason: &str) -> Option<f64> {
        out.metrics
            .iter()
            .find(|m| {
                m.name == name && m.labels.get("reason").map(String::as_str).unwrap_or("") == reason
            })
            .and_then(|m| m.value)
    }

    #[test]
    fn hostile_names_and_addresses_are_skipped_counted_and_never_listed() {
        let injection = "10.0.0.9\nEMBEDDED_REGISTRY_HOSTS\ntouch /pwned\n";
        let long = "a".repeat(242);
        let cp = |name: &str, ip: &str| node(name, &[CONTROL_PLANE], Some(ip));
        let out = run(&yaml(&[
            cp("m1", "10.0.0.1"),
            cp("m2", injection),
            cp("m3", "10.0.0.3:5001"),
            cp("M$(id)", "10.0.0.4"),
            cp(&long, "10.0.0.5"),
            cp("m6", "FD00:0::6"),
            node("m\nx", &[LEGACY], Some("10.0.0.7")),
        ]));
        assert_eq!(
            out.values["embeddedRegistry"]["internal"]["masters"],
            json!([{"name": "m1", "internalIP": "10.0.0.1"}, {"name": "m6", "internalIP": "fd00::6"}])
        );
        assert_eq!(
            metric(
                &out,
                "d8_embedded_registry_masters_skipped",
                "invalid-address"
            ),
            Some(2.0)
        );
        assert_eq!(
            metric(&out, "d8_embedded_registry_masters_skipped", "invalid-name"),
            Some(3.0)
        );
    }

    #[test]
    fn a_second_run_on_its_own_output_changes_nothing() {
        let cluster = yaml(&[node("m1", &[CONTROL_PLANE], Some("10.0.0.1"))]);
        let run = |values| run_on(&hook(), &cluster, values);
        let first = run(json!({"embeddedRegistry": {}}));
        assert!(!first.values_patch.is_empty());
        let second = run(first.values.clone());
        assert!(second.values_patch.is_empty(), "{:?}", second.values_patch);
    }
}
