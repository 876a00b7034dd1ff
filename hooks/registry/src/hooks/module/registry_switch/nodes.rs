//! The Node and Deckhouse Deployment snapshots of `registry-switch`, checked, and the
//! nodes' acknowledgement metrics.

use std::collections::BTreeMap;

use hook_sdk::HookInput;
use serde::Deserialize;
use serde_json::json;

use crate::model::switch::State;
use crate::module::PULL_SECRET;
use crate::switch::{self, pull_secret};

/// Metric group of the nodes' acknowledgements.
const NODES_METRICS_GROUP: &str = "registry_switch_nodes";

/// Longest acknowledgement annotation value read (the hash is 16 hex characters).
const ACK_MAX: usize = 64;

/// One Node as [`super::NODE_FILTER`] keeps it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeSnap {
    #[serde(default)]
    name: String,
    #[serde(default)]
    ready: String,
    #[serde(default)]
    ack: String,
    #[serde(default)]
    containerd: String,
    #[serde(default)]
    custom_registry: String,
    #[serde(default)]
    exclude: String,
}

/// The Deckhouse Deployment as [`super::DECKHOUSE_FILTER`] keeps it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeckhouseSnap {
    #[serde(default)]
    images: Vec<String>,
    #[serde(default)]
    generation: i64,
    #[serde(default)]
    observed_generation: i64,
    #[serde(default)]
    replicas: i64,
    #[serde(default)]
    updated_replicas: i64,
    #[serde(default)]
    available_replicas: i64,
}

/// The Node snapshot, checked: a node with an invalid name is skipped (with a warning,
/// its name shown escaped), an acknowledgement that is not a hash counts as none, an
/// unknown containerd verdict as `invalid`.
pub(super) fn node_acks(input: &HookInput) -> anyhow::Result<Vec<switch::NodeAck>> {
    let mut out = Vec::new();
    for n in input.snapshots.get::<NodeSnap>("nodes")? {
        let Ok(name) = crate::untrusted::node_name(&n.name) else {
            input.log.warn(
                "a Node with an invalid name is ignored",
                &[("name", json!(crate::untrusted::shown(&n.name)))],
            );
            continue;
        };
        let hash = if n.ack.len() <= ACK_MAX && n.ack.bytes().all(|b| b.is_ascii_hexdigit()) {
            n.ack
        } else {
            String::new()
        };
        let containerd = if n.containerd.is_empty()
            || switch::PREFLIGHT_VERDICTS.contains(&n.containerd.as_str())
        {
            n.containerd
        } else {
            "invalid".to_string()
        };
        out.push(switch::NodeAck {
            name: name.to_string(),
            ready: n.ready == "True",
            hash,
            containerd,
            custom_registry: n.custom_registry == "custom",
            excluded: n.exclude == "true",
        });
    }
    Ok(out)
}

/// The pull Secret is seen restored, and the Deckhouse Deployment (when there is one:
/// the local converge has none) rolled out with no image under the pull address.
pub(super) fn deckhouse_restored(
    input: &HookInput,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> anyhow::Result<bool> {
    if secrets
        .get(PULL_SECRET)
        .is_some_and(pull_secret::names_embedded)
    {
        return Ok(false);
    }
    let prefix = format!("{}/", crate::module::service_address());
    Ok(input
        .snapshots
        .get::<DeckhouseSnap>("deckhouse")?
        .iter()
        .all(|d| {
            d.images.iter().all(|i| !i.starts_with(&prefix))
                && d.observed_generation >= d.generation
                && d.updated_replicas >= d.replicas
                && d.available_replicas >= d.replicas
        }))
}

/// The nodes' acknowledgement metrics: `d8_embedded_registry_nodes{state}` (total,
/// ready, acknowledged, waiting, overdue, not_ready, excluded, preflight_failed) and
/// `d8_embedded_registry_nodes_wait_seconds` (since the configuration was rendered,
/// while a Ready node has not acknowledged it; else 0).
pub(super) fn set_node_metrics(
    input: &mut HookInput,
    fleet: &switch::Fleet,
    next: &State,
    now: i64,
) {
    let config = next.node_config.clone().unwrap_or_default();
    let acks = fleet.summary(&config.hash);
    let waited = if acks.laggards.is_empty() {
        0
    } else {
        now - config.since
    };
    let overdue = waited >= fleet.timeout_secs;
    input.metrics.expire(NODES_METRICS_GROUP);
    for (state, n) in [
        ("total", acks.total),
        ("ready", acks.ready),
        ("acknowledged", acks.acked),
        ("waiting", if overdue { 0 } else { acks.laggards.len() }),
        ("overdue", if overdue { acks.laggards.len() } else { 0 }),
        ("not_ready", acks.not_ready.len()),
        ("excluded", acks.excluded.len()),
        ("preflight_failed", acks.preflight.len()),
    ] {
        input.metrics.set(
            NODES_METRICS_GROUP,
            "d8_embedded_registry_nodes",
            n as f64,
            &[("state", state)],
        );
    }
    input.metrics.set(
        NODES_METRICS_GROUP,
        "d8_embedded_registry_nodes_wait_seconds",
        waited as f64,
        &[],
    );
}
