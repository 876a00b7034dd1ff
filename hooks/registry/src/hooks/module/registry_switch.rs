//! Hook `registry-switch`: moves the masters' registries and the nodes' pull target
//! towards the settings, one proven step at a time (see [`crate::switch`]).
//!
//! Reads the settings and computed values, its state Secret `registry-state`, every
//! master's status ConfigMap (written by the node hook), the `ro` user's Secret and the
//! cluster's pull Secret with its saved copy, every Node (name, Ready, the
//! acknowledgement annotations and the labels the switch needs) and the Deckhouse
//! Deployment; runs the upstream check (Proxy) or the mirror check (Detached) when a
//! step needs it; writes `internal.switch` (what the chart renders, with the revisions
//! of the upstream password and the S3 secret key the chart hashes in their place:
//! `revisions`), the state Secret, the pull Secret ([`crate::switch::pull_secret`])
//! and metrics.
//!
//! This file holds the bindings and the handler; its parts sit beside it: `nodes` (the
//! Node and Deployment snapshots, the acknowledgement metrics), `pull` (the pull
//! Secret), `check` (the checks and the schedule's recheck), `tests`.
//!
//! About 470 lines: the bindings, the handler and the outputs of one hook (with the
//! revisions of the secrets it renders); its checks, node reports and pull Secret are in
//! `registry_switch/`, its tests there too.

use std::collections::BTreeMap;

use anyhow::Context as _;
use hook_sdk::{
    Hook, HookConfig, HookInput, KubernetesBinding, NamespaceSelector, ScheduleBinding,
};
use serde_json::json;

use crate::model::duration::GoDuration;
use crate::model::node_status::NodeStatus;
use crate::model::settings::{Mode, ProxySettings};
use crate::model::switch::{
    CheckStatus, Recheck, SecretRevisions, State, StoredRevision, SwitchValues,
};
use crate::model::values::Master;
use crate::module::MODULE_KEY;
use crate::module::{user_secret, Role, NAMESPACE, PULL_SECRET, SAVED_PULL_SECRET, STATE_SECRET};
use crate::secrets::{self, SECRET_FILTER};
use crate::switch::pull_secret::Action;
use crate::switch::{self, desired, NodeReport};
use crate::upstream::{self, Checker};
use crate::{model::settings::S3Settings, storage};

/// The S3 bucket of `mode`'s section (`proxy` or `detached`) when its `storageMode` is
/// S3. Only these two keys are read: typing the whole section would fail on values the
/// schema accepts but the types cannot hold (see resolve-mode).
fn s3_settings(input: &HookInput, mode: Mode) -> anyhow::Result<Option<S3Settings>> {
    let section = match mode {
        Mode::Proxy => "proxy",
        Mode::Detached => "detached",
        Mode::Direct => return Ok(None),
    };
    let storage_mode: Option<String> = input
        .values
        .get_as(&format!("{MODULE_KEY}.{section}.storageMode"))?;
    if storage_mode.as_deref() != Some("S3") {
        return Ok(None);
    }
    // The settings check (and its CEL rules) require s3 with storageMode S3.
    let s3: Option<S3Settings> = input
        .values
        .get_as(&format!("{MODULE_KEY}.{section}.s3"))
        .map_err(|_| {
            anyhow::anyhow!(
                "spec.settings.{section}.s3 is not a valid s3 object: write endpoint, region, bucket, accessKey and secretKey as strings"
            )
        })?;
    match s3 {
        Some(b) => Ok(Some(b)),
        None => anyhow::bail!(
            "spec.settings.{section}.s3 is required when {section}.storageMode is S3: add s3 with endpoint, region, bucket, accessKey and secretKey"
        ),
    }
}

/// The Node binding's filter: a small object per node (name, Ready, the two
/// annotations and two labels the switch reads), so 5,000 nodes stay a small snapshot;
/// heartbeats change none of it, so they trigger no run.
pub const NODE_FILTER: &str = r#"{"name": .metadata.name, "ready": ([.status.conditions[]? | select(.type == "Ready") | .status][0] // ""), "ack": (.metadata.annotations["embedded-registry.deckhouse.io/mirror-config"] // ""), "containerd": (.metadata.annotations["embedded-registry.deckhouse.io/containerd"] // ""), "customRegistry": (.metadata.labels["node.deckhouse.io/containerd-config-registry"] // ""), "exclude": (.metadata.labels["embedded-registry.deckhouse.io/exclude"] // "")}"#;

/// The Deckhouse Deployment's filter: its images and rollout counters.
pub const DECKHOUSE_FILTER: &str = r#"{"images": [(.spec.template.spec.initContainers // [])[].image, (.spec.template.spec.containers // [])[].image], "generation": (.metadata.generation // 0), "observedGeneration": (.status.observedGeneration // 0), "replicas": (.spec.replicas // 1), "updatedReplicas": (.status.updatedReplicas // 0), "availableReplicas": (.status.availableReplicas // 0)}"#;

mod check;
mod nodes;
mod pull;

use check::{clear_check_metric, recheck_from_values, run_check, set_check_metric};
use nodes::{deckhouse_restored, node_acks, set_node_metrics};
use pull::{pull_secret_actions, pull_secret_seen, restore_on_disable, write_pull_secret};

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
                super::node_status_binding(),
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
    handle_with(input, &upstream::Network, &storage::Network)
}

/// The handler with its checks injected: every I/O it does goes through `checker`
/// (upstream and mirror), `storage` (the S3 bucket) and the SDK's collectors.
fn handle_with(
    input: &mut HookInput,
    checker: &dyn Checker,
    storage: &dyn storage::Checker,
) -> anyhow::Result<()> {
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
    let s3 = s3_settings(input, mode)?;
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
    let mut desired = desired::desired(
        mode,
        proxy.as_ref(),
        s3.as_ref(),
        &masters,
        ha,
        state.registry.as_ref(),
        key.as_deref(),
    )?;
    if mode == crate::model::settings::Mode::Proxy {
        // The release's images every master must cache before the cluster uses them.
        let global: serde_json::Value = input.values.get_as("global")?.unwrap_or_default();
        desired.warm_list = crate::warm::list::WantedList::from_global(&global)
            .context("the running release's image list")?
            .map(|l| l.hash());
    }

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
    // At most two checks in one run: the storage check, then (once it passed) the
    // upstream check of the same target.
    let mut check = None;
    let mut probe = state.clone();
    for _ in 0..2 {
        let Some(need) = switch::check_needed(&probe, &desired, &reports, scheduled) else {
            if check.is_none() {
                check = recheck
                    .as_ref()
                    .and_then(|r| switch::recheck_news(r, &state, now));
                if let Some(c) = &check {
                    set_check_metric(input, c);
                } else if desired.registry.is_none() {
                    // Direct: nothing is checked, so no past check's outcome stays
                    // exported (an alert on an abandoned setting would keep firing).
                    clear_check_metric(input);
                }
            }
            break;
        };
        let storage_step = matches!(need, switch::CheckNeeded::Storage(_));
        let c = if storage_step {
            switch::check::run_storage(storage, need, now)?
        } else {
            run_check(
                input,
                checker,
                need,
                &masters,
                secrets.get(&user_secret(Role::Ro)),
                now,
            )?
        };
        set_check_metric(input, &c);
        let more = storage_step && c.ok;
        probe.check = Some(c.clone());
        check = Some(c);
        if !more {
            break;
        }
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
    let mut next = switch::step(state.clone(), &desired, &reports, check, &fleet, now);
    next.revisions = revisions(next.registry.as_ref(), &loaded.revisions)?;
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
        upstream_password_revision: next
            .revisions
            .upstream_password
            .as_ref()
            .map(|r| r.revision.clone())
            .unwrap_or_default(),
        s3_secret_key_revision: next
            .revisions
            .s3_secret_key
            .as_ref()
            .map(|r| r.revision.clone())
            .unwrap_or_default(),
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

/// The revisions of `registry`'s upstream password and S3 secret key: the stored ones
/// while each value is the one they were made for, new ones otherwise
/// ([`secrets::Revision`]), none for a secret the target does not have.
fn revisions(
    registry: Option<&crate::model::switch::RegistryTarget>,
    stored: &SecretRevisions,
) -> anyhow::Result<SecretRevisions> {
    let of = |value: Option<&str>, stored: &Option<StoredRevision>| {
        value
            .filter(|v| !v.is_empty())
            .map(|v| {
                secrets::Revision::of(
                    &[v],
                    stored
                        .as_ref()
                        .map(|s| (s.revision.as_str(), s.check.as_str())),
                )
                .map(|r| StoredRevision {
                    revision: r.revision,
                    check: r.check,
                })
            })
            .transpose()
    };
    Ok(SecretRevisions {
        upstream_password: of(
            registry
                .and_then(|r| r.proxy.as_ref())
                .and_then(|p| p.password.as_deref()),
            &stored.upstream_password,
        )?,
        s3_secret_key: of(
            registry
                .and_then(|r| r.s3.as_ref())
                .map(|s| s.secret_key.as_str()),
            &stored.s3_secret_key,
        )?,
    })
}

#[cfg(test)]
mod storage_tests;
#[cfg(test)]
mod tests;
