//! Hook `gc-window`: garbage collection of a Detached registry on S3, where the bucket
//! is shared by every master and distribution's offline collection must never run while
//! one of them writes. It steps the window of [`crate::switch::gc_window`] (Idle →
//! ReadOnly → Collect → Back → Idle, one hour at most read-only) and gives the chart
//! `internal.gcWindow`, from which it renders every master's read-only configuration,
//! the collector's `garbage-collect` init container and each Secret's window tag.
//!
//! Reads the request the `rotate` node hook writes (ConfigMap `registry-gc-request`),
//! its own state (ConfigMap `registry-gc-window`, `state.json`; the values hold the same
//! between runs), every master's status ConfigMap (`appliedGcWindow`, `registry`) and
//! `internal.switch.registry` (set by `registry-switch`, order 30, before it). Runs at
//! `beforeHelm` (order 35), on a request or a master's report, and every minute
//! (`bound`: the schedule has no snapshots, so it only applies the bound from the
//! values). Metrics (group `gc_window`): `d8_embedded_registry_gc_window_phase{phase}`,
//! `..._open_seconds`, `..._opened_timestamp_seconds` (0 when idle) and
//! `..._last_timed_out`.

use std::collections::BTreeMap;

use anyhow::Context as _;
use hook_sdk::{
    Hook, HookConfig, HookInput, KubernetesBinding, NamespaceSelector, ScheduleBinding,
};
use serde_json::json;

use crate::model::gc_window::{GcWindow, Outcome, Phase, Request, STATE_KEY};
use crate::model::node_status::{NodeStatus, RegistryHealth};
use crate::model::settings::Mode;
use crate::model::switch::RegistryTarget;
use crate::module::{
    GC_REQUEST_CONFIG_MAP, GC_STATE_CONFIG_MAP, MODULE_KEY, MODULE_NAME, NAMESPACE,
};
use crate::secrets::{SecretSnap, SECRET_FILTER};
use crate::switch::gc_window::{open_seconds, step, Inputs, Report, BOUND_SECS};

/// The metric group replaced on every run.
pub const GROUP: &str = "gc_window";
/// Where the state is in the values.
const VALUES_PATH: &str = "internal.gcWindow";

/// The hook.
pub fn hook() -> Hook {
    let ns = || Some(NamespaceSelector::names(&[NAMESPACE]));
    let named = |binding: &str, name: &str, events: bool| KubernetesBinding {
        namespace: ns(),
        name_selector: Some(hook_sdk::config::NameSelector {
            match_names: vec![name.into()],
        }),
        jq_filter: Some(SECRET_FILTER.into()),
        keep_full_objects_in_memory: Some(false),
        // Its own state: snapshots only, so its writes do not run it again.
        execute_hook_on_event: (!events).then(Vec::new),
        execute_hook_on_synchronization: Some(false),
        ..KubernetesBinding::new(binding, "v1", "ConfigMap")
    };
    Hook::new(
        HookConfig {
            name: "gc-window".into(),
            before_helm: Some(35),
            schedule: vec![ScheduleBinding::new("bound", "* * * * *")],
            kubernetes: vec![
                named("gc_request", GC_REQUEST_CONFIG_MAP, true),
                named("gc_state", GC_STATE_CONFIG_MAP, false),
                super::node_status_binding(),
            ],
            ..Default::default()
        },
        handle,
    )
}

/// The state the values hold (what the last run decided), or the default.
fn from_values(input: &HookInput) -> anyhow::Result<GcWindow> {
    Ok(input
        .values
        .get_as(&format!("{MODULE_KEY}.{VALUES_PATH}"))
        .with_context(|| format!("{MODULE_KEY}.{VALUES_PATH} is not a valid window state"))?
        .unwrap_or_default())
}

/// The masters of the registry when it is a Detached registry on S3.
fn s3_masters(input: &HookInput) -> anyhow::Result<Option<Vec<String>>> {
    let target: Option<RegistryTarget> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.switch.registry"))?;
    Ok(target
        .filter(|t| t.mode == Mode::Detached && t.s3.is_some())
        .map(|t| t.nodes))
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    let now = crate::clock::now()?;
    let before = from_values(input)?;
    if ["gc_request", "gc_state", "node_status"]
        .iter()
        .any(|b| !input.snapshots.has(b))
    {
        // A schedule run: no snapshots, so only the bound, from the values; the next
        // beforeHelm (the values change runs the module) takes it from there.
        let mut next = before.clone();
        let expired = now - before.opened_at >= BOUND_SECS;
        if matches!(before.phase, Phase::ReadOnly | Phase::Collect) && expired {
            next.phase = Phase::Back;
            next.outcome = Some(Outcome::TimedOut);
        }
        return output(input, &before, &next, now, None);
    }
    let objects: BTreeMap<String, BTreeMap<String, String>> = ["gc_request", "gc_state"]
        .iter()
        .map(|b| input.snapshots.get::<SecretSnap>(b))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .map(|s| (s.name, s.data))
        .collect();
    let stored = objects.get(GC_STATE_CONFIG_MAP);
    let state: GcWindow = match stored.and_then(|d| d.get(STATE_KEY)) {
        Some(text) => serde_json::from_str(text).with_context(|| {
            format!("ConfigMap {NAMESPACE}/{GC_STATE_CONFIG_MAP}: {STATE_KEY} is not a valid window state; delete the ConfigMap (the window starts Idle and every master's configuration goes back to read-write)")
        })?,
        None => before.clone(),
    };
    let request = objects
        .get(GC_REQUEST_CONFIG_MAP)
        .and_then(Request::from_data);
    let reports: BTreeMap<String, Report> = input
        .snapshots
        .get::<SecretSnap>("node_status")?
        .into_iter()
        .map(|c| {
            let s = NodeStatus::from_data(&c.data);
            let report = Report {
                applied: s.applied_gc_window,
                ready: s.registry == RegistryHealth::Ready,
            };
            (s.node, report)
        })
        .collect();
    let masters = s3_masters(input)?;
    let next = step(
        &state,
        &Inputs {
            masters: masters.as_deref(),
            request: request.as_ref(),
            reports: &reports,
            now,
        },
    );
    let stored_state = stored
        .and_then(|d| d.get(STATE_KEY))
        .and_then(|t| serde_json::from_str::<GcWindow>(t).ok());
    output(input, &state, &next, now, Some(stored_state))
}

/// Records `next`: the values, the state ConfigMap when it differs from `stored`
/// (`None`: unknown in this run, written when the state changed), the log of a
/// transition, and the metrics.
fn output(
    input: &mut HookInput,
    state: &GcWindow,
    next: &GcWindow,
    now: i64,
    stored: Option<Option<GcWindow>>,
) -> anyhow::Result<()> {
    input
        .values
        .set(&format!("{MODULE_KEY}.{VALUES_PATH}"), next)?;
    let write = match &stored {
        // No ConfigMap reads as Idle: a module that never opened a window writes none.
        Some(s) => s.clone().unwrap_or_default() != *next,
        None => state != next,
    };
    if write {
        input.objects.create_or_update(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": GC_STATE_CONFIG_MAP,
                "namespace": NAMESPACE,
                "labels": {"heritage": "deckhouse", "module": MODULE_NAME},
            },
            "data": {STATE_KEY: serde_json::to_string(next)?},
        }));
    }
    if state.phase != next.phase {
        let level_warn = next.outcome == Some(Outcome::TimedOut) && next.phase == Phase::Back;
        let fields = [
            ("window", json!(next.id)),
            ("from", json!(state.phase.as_str())),
            ("to", json!(next.phase.as_str())),
            ("collector", json!(next.collector)),
            ("outcome", json!(next.outcome)),
        ];
        if level_warn {
            input.log.warn(
                "garbage collection window timed out: every master goes back to read-write without a collection",
                &fields,
            );
        } else {
            input.log.info("garbage collection window", &fields);
        }
    }
    input.metrics.expire(GROUP);
    for phase in Phase::ALL {
        input.metrics.set(
            GROUP,
            "d8_embedded_registry_gc_window_phase",
            if phase == next.phase { 1.0 } else { 0.0 },
            &[("phase", phase.as_str())],
        );
    }
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_gc_window_open_seconds",
        open_seconds(next, now) as f64,
        &[],
    );
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_gc_window_opened_timestamp_seconds",
        if next.phase == Phase::Idle {
            0.0
        } else {
            next.opened_at as f64
        },
        &[],
    );
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_gc_window_last_timed_out",
        if next.outcome == Some(Outcome::TimedOut) {
            1.0
        } else {
            0.0
        },
        &[],
    );
    Ok(())
}

#[cfg(test)]
#[path = "gc_window_tests.rs"]
mod tests;
