//! Hook `registry-switch`: moves the masters' registries and the nodes' pull target
//! towards the settings, one proven step at a time (see [`crate::switch`]).
//!
//! Reads the settings and computed values, its state Secret `registry-state`, every
//! master's status ConfigMap (written by the node hook), the `ro` user's Secret and the
//! cluster's pull Secret with its saved copy, every Node (name, Ready, the
//! acknowledgement annotations and the labels the switch needs) and the Deckhouse
//! Deployment; runs the upstream check (Proxy) or the mirror check (Detached) when a
//! step needs it; writes `internal.switch` (what the chart renders), the state Secret,
//! the pull Secret ([`crate::switch::pull_secret`]) and metrics.

use std::collections::BTreeMap;

use anyhow::Context as _;
use hook_sdk::{
    Hook, HookConfig, HookInput, KubernetesBinding, NamespaceSelector, ScheduleBinding,
};
use serde::Deserialize;
use serde_json::json;

use crate::model::duration::GoDuration;
use crate::model::node_status::NodeStatus;
use crate::model::settings::{Mode, ProxySettings};
use crate::model::switch::{CheckRecord, CheckStatus, ClusterTarget, Recheck, State, SwitchValues};
use crate::model::values::Master;
use crate::module::MODULE_KEY;
use crate::module::{
    user_secret, Role, NAMESPACE, PULL_SECRET, ROLE_LABEL, SAVED_PULL_SECRET, STATE_SECRET,
};
use crate::secrets::{self, SECRET_FILTER};
use crate::switch::check::MirrorInputs;
use crate::switch::pull_secret::{self, Action, Embedded};
use crate::switch::{self, desired, CheckNeeded, NodeReport};
use crate::upstream::{self, Checker, Image};

/// Metric group of this hook.
const METRICS_GROUP: &str = "registry_switch";
/// Metric group of the nodes' acknowledgements.
const NODES_METRICS_GROUP: &str = "registry_switch_nodes";

/// The Node binding's filter: a small object per node (name, Ready, the two
/// annotations and two labels the switch reads), so 5,000 nodes stay a small snapshot;
/// heartbeats change none of it, so they trigger no run.
pub const NODE_FILTER: &str = r#"{"name": .metadata.name, "ready": ([.status.conditions[]? | select(.type == "Ready") | .status][0] // ""), "ack": (.metadata.annotations["embedded-registry.deckhouse.io/mirror-config"] // ""), "containerd": (.metadata.annotations["embedded-registry.deckhouse.io/containerd"] // ""), "customRegistry": (.metadata.labels["node.deckhouse.io/containerd-config-registry"] // ""), "exclude": (.metadata.labels["embedded-registry.deckhouse.io/exclude"] // "")}"#;

/// The Deckhouse Deployment's filter: its images and rollout counters.
pub const DECKHOUSE_FILTER: &str = r#"{"images": [(.spec.template.spec.initContainers // [])[].image, (.spec.template.spec.containers // [])[].image], "generation": (.metadata.generation // 0), "observedGeneration": (.status.observedGeneration // 0), "replicas": (.spec.replicas // 1), "updatedReplicas": (.status.updatedReplicas // 0), "availableReplicas": (.status.availableReplicas // 0)}"#;

/// Longest acknowledgement annotation value read (the hash is 16 hex characters).
const ACK_MAX: usize = 64;

/// One Node as [`NODE_FILTER`] keeps it.
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

/// The Deckhouse Deployment as [`DECKHOUSE_FILTER`] keeps it.
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
fn node_acks(input: &HookInput) -> anyhow::Result<Vec<switch::NodeAck>> {
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
fn deckhouse_restored(
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

/// The hook.
pub fn hook() -> Hook {
    let ns = || Some(NamespaceSelector::names(&[NAMESPACE]));
    Hook::new(
        HookConfig {
            name: "registry-switch".into(),
            before_helm: Some(30),
            after_delete_helm: Some(30),
            schedule: vec![ScheduleBinding::new("recheck", "*/5 * * * *")],
            kubernetes: vec![
                KubernetesBinding {
                    namespace: ns(),
                    name_selector: Some(hook_sdk::config::NameSelector {
                        match_names: vec![
                            STATE_SECRET.into(),
                            user_secret(Role::Ro),
                            PULL_SECRET.into(),
                            SAVED_PULL_SECRET.into(),
                        ],
                    }),
                    jq_filter: Some(SECRET_FILTER.into()),
                    keep_full_objects_in_memory: Some(false),
                    execute_hook_on_event: Some(vec![]),
                    execute_hook_on_synchronization: Some(false),
                    ..KubernetesBinding::new("secrets", "v1", "Secret")
                },
                KubernetesBinding {
                    namespace: ns(),
                    label_selector: Some(hook_sdk::config::LabelSelector {
                        match_labels: BTreeMap::from([(
                            ROLE_LABEL.to_string(),
                            "node-status".to_string(),
                        )]),
                        ..Default::default()
                    }),
                    // Name and data: the same shape for a ConfigMap.
                    jq_filter: Some(SECRET_FILTER.into()),
                    keep_full_objects_in_memory: Some(false),
                    execute_hook_on_synchronization: Some(false),
                    ..KubernetesBinding::new("node_status", "v1", "ConfigMap")
                },
                KubernetesBinding {
                    jq_filter: Some(NODE_FILTER.into()),
                    keep_full_objects_in_memory: Some(false),
                    execute_hook_on_synchronization: Some(false),
                    ..KubernetesBinding::new("nodes", "v1", "Node")
                },
                KubernetesBinding {
                    namespace: ns(),
                    name_selector: Some(hook_sdk::config::NameSelector {
                        match_names: vec!["deckhouse".into()],
                    }),
                    jq_filter: Some(DECKHOUSE_FILTER.into()),
                    keep_full_objects_in_memory: Some(false),
                    execute_hook_on_synchronization: Some(false),
                    ..KubernetesBinding::new("deckhouse", "apps/v1", "Deployment")
                },
            ],
            ..Default::default()
        },
        handle,
    )
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    handle_with(input, &upstream::Network)
}

/// The handler with its upstream/mirror check injected: every I/O it does goes through
/// `checker` (and the SDK's collectors).
fn handle_with(input: &mut HookInput, checker: &dyn Checker) -> anyhow::Result<()> {
    // A run without the state (a schedule or an event whose context carries no
    // snapshots) must not start over from Direct, nor block the queue by failing:
    // the next beforeHelm run carries every snapshot.
    if ["secrets", "node_status", "nodes", "deckhouse"]
        .iter()
        .any(|b| !input.snapshots.has(b))
    {
        // The batch runner gives schedules no snapshots: the recheck checks the
        // upstream in use from the values and hands a changed outcome to the next
        // beforeHelm through them.
        if input.bindings().any(|b| b == "recheck") {
            return recheck_from_values(input, checker);
        }
        input
            .log
            .info("no snapshots in this run: nothing to step", &[]);
        return Ok(());
    }
    if input.bindings().any(|b| b == "afterDeleteHelm") {
        return restore_on_disable(input);
    }
    let now = crate::clock::now()?;
    let mode: Mode = input
        .values
        .get_as(&format!("{MODULE_KEY}.mode"))?
        .unwrap_or_default();
    let proxy: Option<ProxySettings> = input.values.get_as(&format!("{MODULE_KEY}.proxy"))?;
    let masters: Vec<Master> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.masters"))?
        .unwrap_or_default();
    let ha: bool = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.highAvailability"))?
        .unwrap_or(false);
    let secrets = secrets::by_name(input, "secrets")?;
    let loaded: State = match secrets.get(STATE_SECRET).and_then(|d| d.get("state.json")) {
        Some(text) => serde_json::from_str(text).with_context(|| {
            format!("Secret {NAMESPACE}/{STATE_SECRET}: state.json is not a valid state; fix or delete it (deleting restarts the switch from Direct)")
        })?,
        None => State::default(),
    };
    let state = pull_secret_seen(loaded.clone(), &secrets);
    let key: Option<String> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.pki.httpSecret"))?;
    let desired = desired::desired(
        mode,
        proxy.as_ref(),
        &masters,
        ha,
        state.registry.as_ref(),
        key.as_deref(),
    )?;

    let reports: Vec<NodeReport> = input
        .snapshots
        .get::<crate::hooks::DataSnap>("node_status")?
        .into_iter()
        .map(|c| NodeReport::from(NodeStatus::from_data(&c.data)))
        .collect();

    let scheduled = input.bindings().any(|b| b == "recheck");
    let recheck: Option<Recheck> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.switch.recheck"))?;
    let check = match switch::check_needed(&state, &desired, &reports, scheduled) {
        None => recheck
            .as_ref()
            .and_then(|r| switch::recheck_news(r, &state, now)),
        Some(need) => Some(run_check(
            input,
            checker,
            need,
            &masters,
            secrets.get(&user_secret(Role::Ro)),
            now,
        )?),
    };
    if let Some(c) = &check {
        set_check_metric(input, c);
    }
    let ca: String = input
        .values
        .get_as::<String>(&format!("{MODULE_KEY}.internal.pki.caBundle"))?
        .unwrap_or_default();
    let address = crate::module::service_address();
    let listed = {
        let masters = masters.clone();
        move |names: &[String]| -> Vec<Master> {
            names
                .iter()
                .filter_map(|n| masters.iter().find(|m| &m.name == n).cloned())
                .collect()
        }
    };
    let timeout: Option<GoDuration> = input
        .values
        .get_as(&format!("{MODULE_KEY}.nodeAcknowledgementTimeout"))?;
    let timeout_secs = match timeout {
        None => switch::DEFAULT_ACK_TIMEOUT_SECS,
        Some(t) => t.get().map(|d| d.as_secs() as i64).map_err(|e| {
            anyhow::anyhow!(
                "spec.settings.nodeAcknowledgementTimeout: {} {e}; write it as 15m or 1h",
                crate::untrusted::shown(t.as_str())
            )
        })?,
    };
    let fleet = switch::Fleet {
        nodes: node_acks(input)?,
        timeout_secs,
        deckhouse_restored: deckhouse_restored(input, &secrets)?,
        config_hash: {
            let (address, ca, listed) = (address.clone(), ca.clone(), listed.clone());
            Box::new(move |names: &[String]| {
                desired::node_config_hash(&address, &listed(names), &ca)
            })
        },
    };
    let next = switch::step(state.clone(), &desired, &reports, check, &fleet, now);
    set_node_metrics(input, &fleet, &next, now);
    // Decided before anything is written: a pull Secret that cannot follow leaves
    // the state, the Secrets and the values as they are.
    let pull = pull_secret_actions(input, &next, &secrets, &reports)?;
    if next != loaded {
        let text = serde_json::to_string_pretty(&next)? + "\n";
        let data = BTreeMap::from([("state.json".to_string(), text)]);
        input.objects.create_or_update(secrets::secret(
            STATE_SECRET,
            "state",
            "Opaque",
            &data,
            &[],
        ));
        for c in &next.conditions {
            if !loaded.conditions.iter().any(|o| o == c) {
                input.log.info(
                    "condition",
                    &[
                        ("type", json!(c.type_)),
                        ("status", json!(c.status)),
                        ("reason", json!(c.reason)),
                        ("message", json!(c.message)),
                    ],
                );
            }
        }
    }
    for action in pull {
        match action {
            Action::Save(data) => input.objects.create_or_update(secrets::secret(
                SAVED_PULL_SECRET,
                "upstream-pull",
                "Opaque",
                &data,
                &[],
            )),
            Action::Write(data) => {
                input.log.info(
                    "pull Secret",
                    &[
                        ("name", json!(PULL_SECRET)),
                        ("address", json!(data.get("address"))),
                        ("path", json!(data.get("path"))),
                    ],
                );
                write_pull_secret(input, secrets.get(PULL_SECRET), &data);
            }
            Action::DropSaved => input
                .objects
                .delete("v1", "Secret", NAMESPACE, SAVED_PULL_SECRET),
        }
    }
    let ready = next
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    input.metrics.set(
        "",
        "d8_embedded_registry_switch_ready",
        if ready { 1.0 } else { 0.0 },
        &[],
    );

    let values = SwitchValues {
        manager: next.registry.is_some() || reports.iter().any(|r| r.static_pod),
        mirrors: listed(&next.mirrors),
        node_config_hash: next
            .node_config
            .as_ref()
            .map(|c| c.hash.clone())
            .unwrap_or_default(),
        check: next.check.as_ref().map(|c| CheckStatus {
            what: c.what.clone(),
            ok: c.ok,
            kind: c.kind.clone(),
            message: c.message.clone(),
        }),
        registry: next.registry,
        cluster: next.cluster,
        pull_address: crate::module::service_address(),
        recheck,
    };
    input
        .values
        .set(&format!("{MODULE_KEY}.internal.switch"), &values)?;
    Ok(())
}

/// The state as the pull Secret shows it: a state that says the cluster pulls through
/// the masters while the pull Secret names another registry and no copy was saved
/// (written before the module managed the pull Secret, or restored by hand) goes
/// through the nodes' grace period again before the Secret is rewritten.
fn pull_secret_seen(
    mut state: State,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> State {
    let upstream = secrets
        .get(PULL_SECRET)
        .is_some_and(|c| !pull_secret::names_embedded(c));
    if state.cluster == ClusterTarget::Embedded
        && upstream
        && !secrets.contains_key(SAVED_PULL_SECRET)
    {
        state.cluster = ClusterTarget::Upstream;
        state.mirrors_since = None;
    }
    state
}

/// The schedule's run (no snapshots): checks the upstream the masters proxy now, sets
/// the check metric, and records a changed outcome in `internal.switch.recheck`, which
/// makes the runner run the module.
fn recheck_from_values(input: &mut HookInput, checker: &dyn Checker) -> anyhow::Result<()> {
    let key = format!("{MODULE_KEY}.internal.switch");
    let Some(current) = input.values.get_as::<SwitchValues>(&key)? else {
        return Ok(());
    };
    let Some(target) = current.registry.filter(|r| r.mode == Mode::Proxy) else {
        return Ok(());
    };
    let now = crate::clock::now()?;
    let c = run_check(
        input,
        checker,
        CheckNeeded::Upstream(target),
        &[],
        None,
        now,
    )?;
    set_check_metric(input, &c);
    let outcome = Recheck {
        generation: c.generation,
        ok: c.ok,
        kind: c.kind,
        message: c.message,
    };
    if current.recheck.as_ref() != Some(&outcome) {
        input.values.set(&format!("{key}.recheck"), &outcome)?;
    }
    Ok(())
}

/// The nodes' acknowledgement metrics: `d8_embedded_registry_nodes{state}` (total,
/// ready, acknowledged, waiting, overdue, not_ready, excluded, preflight_failed) and
/// `d8_embedded_registry_nodes_wait_seconds` (since the configuration was rendered,
/// while a Ready node has not acknowledged it; else 0).
fn set_node_metrics(input: &mut HookInput, fleet: &switch::Fleet, next: &State, now: i64) {
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

fn set_check_metric(input: &mut HookInput, c: &CheckRecord) {
    input.metrics.expire(METRICS_GROUP);
    input.metrics.set(
        METRICS_GROUP,
        "d8_embedded_registry_check_ok",
        if c.ok { 1.0 } else { 0.0 },
        &[("check", c.what.as_str()), ("kind", c.kind.as_str())],
    );
    if !c.ok {
        input.log.warn(
            "check failed",
            &[
                ("check", json!(c.what)),
                ("kind", json!(c.kind)),
                ("message", json!(c.message)),
            ],
        );
    }
}

/// The module was disabled (its registry is gone with its Helm release): the pull
/// Secret gets the upstream's data back if it still names the embedded registry. The
/// saved copy stays; an enabled module drops it once it sees the Secret restored.
fn restore_on_disable(input: &mut HookInput) -> anyhow::Result<()> {
    let secrets = secrets::by_name(input, "secrets")?;
    let actions = pull_secret::plan(
        crate::model::switch::ClusterTarget::Upstream,
        secrets.get(PULL_SECRET),
        secrets.get(SAVED_PULL_SECRET),
        None,
    )?;
    for action in actions {
        if let Action::Write(data) = action {
            input.log.info(
                "module disabled: the pull Secret names the upstream again",
                &[("address", json!(data.get("address")))],
            );
            write_pull_secret(input, secrets.get(PULL_SECRET), &data);
        }
    }
    Ok(())
}

/// The writes that make the pull Secret follow the cluster target.
fn pull_secret_actions(
    input: &HookInput,
    next: &State,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    reports: &[NodeReport],
) -> anyhow::Result<Vec<Action>> {
    let current = secrets.get(PULL_SECRET);
    let saved = secrets.get(SAVED_PULL_SECRET);
    let ca: Option<String> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.pki.caBundle"))?;
    let ro = secrets.get(&user_secret(Role::Ro));
    let serving = next
        .registry
        .as_ref()
        .is_some_and(|r| switch::all_ready(r, reports));
    let path = match (
        next.registry.as_ref().and_then(|r| r.proxy.as_ref()),
        current,
    ) {
        // A new upstream path only once the masters serve it.
        (Some(_), Some(c)) if pull_secret::names_embedded(c) && !serving => {
            pull_secret::normalize_path(c.get("path").map_or("", |p| p))
        }
        (Some(p), _) => pull_secret::normalize_path(&p.path),
        (None, _) => pull_secret::upstream_path(current, saved),
    };
    if next.cluster == ClusterTarget::Embedded
        && current.is_some_and(pull_secret::names_embedded)
        && saved.is_none()
    {
        input.log.warn(
            &format!("Secret {NAMESPACE}/{SAVED_PULL_SECRET} is missing: going back to the upstream will need {PULL_SECRET} restored by hand"),
            &[],
        );
    }
    // A rotated ro user: the previous password stays in the pull Secret until every
    // listed master runs the new one.
    let version = ro
        .and_then(|r| r.get("passwordHash"))
        .map(|h| pull_secret::ro_user_version(h));
    let all_run_it = version.is_some()
        && next.mirrors.iter().all(|n| {
            reports
                .iter()
                .any(|r| &r.node == n && Some(&r.ro_user) == version.as_ref())
        });
    let previous = current
        .filter(|c| pull_secret::names_embedded(c))
        .and_then(pull_secret::ro_credentials)
        .filter(|(_, p)| !all_run_it && ro.and_then(|r| r.get("password")) != Some(p));
    let embedded = match (ca, ro.and_then(|r| r.get("name").zip(r.get("password")))) {
        (Some(ca), Some((user, password))) => Some(Embedded {
            path,
            ca,
            user: user.clone(),
            password: password.clone(),
            previous,
        }),
        _ => None,
    };
    Ok(pull_secret::plan(
        next.cluster,
        current,
        saved,
        embedded.as_ref(),
    )?)
}

/// Writes `wanted` into the pull Secret as a merge patch of its data only: Deckhouse
/// owns the Secret (its metadata and type stay as they are).
fn write_pull_secret(
    input: &mut HookInput,
    current: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) {
    let empty = BTreeMap::new();
    input.objects.merge_patch(
        pull_secret::data_patch(current.unwrap_or(&empty), wanted),
        "v1",
        "Secret",
        NAMESPACE,
        PULL_SECRET,
        "",
        false,
    );
}

/// The release image the cluster runs, when `global.deckhouseVersion` is a release tag.
fn release_images(input: &HookInput) -> anyhow::Result<Vec<Image>> {
    let version: Option<String> = input.values.get_as("global.deckhouseVersion")?;
    Ok(version
        .filter(|v| {
            v.starts_with('v')
                && v[1..].split('.').count() == 3
                && v[1..].split('.').all(|p| p.parse::<u64>().is_ok())
        })
        .map(|v| {
            vec![Image {
                name: String::new(),
                reference: v,
            }]
        })
        .unwrap_or_default())
}

/// Runs the check `need` asks for through `checker`, with what it needs from the
/// values (read only for a mirror check).
fn run_check(
    input: &HookInput,
    checker: &dyn Checker,
    need: CheckNeeded,
    masters: &[Master],
    ro: Option<&BTreeMap<String, String>>,
    now: i64,
) -> anyhow::Result<CheckRecord> {
    let images = release_images(input)?;
    let mirror = match need {
        CheckNeeded::Upstream(_) => MirrorInputs::default(),
        CheckNeeded::Mirror(_) => MirrorInputs {
            masters,
            ro,
            ca: input
                .values
                .get_as(&format!("{MODULE_KEY}.internal.pki.caBundle"))?,
            base: input
                .values
                .get_as("global.modulesImages.registry.base")?
                .unwrap_or_default(),
        },
    };
    Ok(switch::check::run(checker, need, images, mirror, now)?)
}

#[cfg(test)]
mod tests;
