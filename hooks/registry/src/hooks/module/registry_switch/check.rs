//! The checks of `registry-switch`: the upstream or mirror check a step needs, run
//! through the injected [`Checker`], the schedule's recheck, and the check metric.

use std::collections::BTreeMap;

use hook_sdk::HookInput;
use serde_json::json;

use crate::model::settings::Mode;
use crate::model::switch::{CheckRecord, Recheck, SwitchValues};
use crate::model::values::Master;
use crate::module::MODULE_KEY;
use crate::switch::check::MirrorInputs;
use crate::switch::{self, CheckNeeded};
use crate::upstream::{Checker, Image};

/// Metric group of this hook.
const METRICS_GROUP: &str = "registry_switch";

/// The schedule's run (no snapshots): checks the upstream the masters proxy now, sets
/// the check metric, and records a changed outcome in `internal.switch.recheck`, which
/// makes the runner run the module.
pub(super) fn recheck_from_values(
    input: &mut HookInput,
    checker: &dyn Checker,
) -> anyhow::Result<()> {
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

pub(super) fn set_check_metric(input: &mut HookInput, c: &CheckRecord) {
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

/// The release image the cluster runs, when `global.deckhouseVersion` is a release tag.
pub(super) fn release_images(input: &HookInput) -> anyhow::Result<Vec<Image>> {
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
pub(super) fn run_check(
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
