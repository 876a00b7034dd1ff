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
use crate::switch::release::{self, Global};
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

/// Drops the exported check outcome (mode `Direct`: no check applies).
pub(super) fn clear_check_metric(input: &mut HookInput) {
    input.metrics.expire(METRICS_GROUP);
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

/// The images of the running release ([`release::wanted_images`]); the digests left
/// out as invalid are named in one warning (at most five, escaped).
pub(super) fn release_images(input: &HookInput) -> anyhow::Result<Vec<Image>> {
    let global: Global = input.values.get_as("global")?.unwrap_or_default();
    let invalid = release::invalid_digests(&global);
    if !invalid.is_empty() {
        let shown: Vec<String> = invalid
            .iter()
            .take(switch::NAMES_SHOWN)
            .map(|n| crate::untrusted::shown(n))
            .collect();
        input.log.warn(
            "global.modulesImages.digests: entries that are not sha256:<64 hex digits> are left out of the check",
            &[("count", json!(invalid.len())), ("entries", json!(shown))],
        );
    }
    Ok(release::wanted_images(&global))
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
        CheckNeeded::Upstream(_) | CheckNeeded::Storage(_) => MirrorInputs::default(),
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
mod tests {
    //! The release list through the hook: global values in, the checker's spec and the
    //! switch's recorded check out. The cluster is built from YAML through the hook's
    //! own bindings ([`HookTest::cluster_state`]); the checker is a fake.

    use hook_sdk::testing::{HookTest, TestOutput};
    use serde_json::{json, Value};

    use crate::module::{NAMESPACE, PULL_SECRET};
    use crate::upstream::{Checker, Report, Spec};

    /// An upstream that holds every image except the digests starting `sha256:f`,
    /// and names what it was asked in its `registry` (images, budget).
    struct Upstream;

    impl Checker for Upstream {
        fn check(&self, spec: &Spec) -> Report {
            crate::upstream::holds_all_but_f(spec)
        }
    }

    fn handle(input: &mut hook_sdk::HookInput) -> anyhow::Result<()> {
        super::super::handle_with(input, &Upstream, &super::super::tests::NoStorage)
    }

    fn digest(first: char, i: usize) -> String {
        format!("sha256:{first}{i:063x}")
    }

    /// A beforeHelm run switching Direct → Proxy with `global` as the global values.
    fn switch_to_proxy(global: Value) -> TestOutput {
        let b64 = crate::secrets::b64;
        let pull = format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {PULL_SECRET}\n  namespace: {NAMESPACE}\ntype: Opaque\ndata:\n  address: {}\n  path: {}\n",
            b64("registry.example.com"),
            b64("/deckhouse/ee"),
        );
        let values = json!({
            "global": global,
            "embeddedRegistry": {
                "mode": "Proxy",
                "proxy": {"host": "registry.example.com", "path": "/deckhouse/ee",
                          "user": "puller", "password": "the-Pa55word"},
                "internal": {"masters": [{"name": "m1", "internalIP": "10.0.0.1"}],
                             "pki": {"httpSecret": "k"}},
            },
        });
        HookTest::new()
            .values(values)
            .lifecycle("beforeHelm")
            .cluster_state(&pull)
            .run(&hook_sdk::Hook::new(super::super::hook().config, handle))
            .expect("the hook runs")
    }

    fn check(out: &TestOutput) -> Value {
        out.values["embeddedRegistry"]["internal"]["switch"]["check"].clone()
    }

    #[test]
    fn the_check_asks_for_every_digest_and_the_release_and_counts_the_missing() {
        let mut digests = serde_json::Map::new();
        for i in 0..328 {
            digests.insert(format!("image{i}"), json!(digest('0', i)));
        }
        for i in 0..12 {
            digests.insert(format!("late{i}"), json!(digest('f', i)));
        }
        // The same digest under two names is asked once; a bad one is left out.
        digests.insert("again".into(), json!(digest('0', 0)));
        digests.insert("broken".into(), json!("sha256:123"));
        let global = json!({
            "deckhouseVersion": "v1.65.3",
            "modulesImages": {"registry": {"base": "registry.example.com/deckhouse/ee"},
                              "digests": {"modA": digests}},
        });
        let out = switch_to_proxy(global);
        let c = check(&out);
        assert_eq!(
            (c["what"].as_str(), c["ok"].as_bool(), c["kind"].as_str()),
            (Some("upstream"), Some(false), Some("manifest-unknown")),
            "{c}"
        );
        let message = c["message"].as_str().unwrap();
        let first = format!("registry.example.com/deckhouse/ee@{}", digest('f', 0));
        assert!(
            message.starts_with(&format!("12 of 341 images missing: {first}, ")),
            "{message}"
        );
        assert!(message.ends_with(", and 7 more"), "{message}");
        let text = serde_json::to_string(&out.values).unwrap();
        assert!(!text.replace("\"the-Pa55word\"", "").contains("Pa55word"));

        // Every digest there: the check passes and counts them with the release.
        let global = json!({
            "deckhouseVersion": "v1.65.3",
            "modulesImages": {"registry": {"base": "registry.example.com/deckhouse/ee"},
                              "digests": {"modA": {"a": digest('0', 1), "b": digest('0', 2)}}},
        });
        let c = check(&switch_to_proxy(global));
        assert_eq!(c["ok"], json!(true), "{c}");
        assert!(
            c["message"].as_str().unwrap().contains("3 image(s) found"),
            "{c}"
        );
    }

    #[test]
    fn only_a_release_tag_still_checks_that_one_image() {
        let c = check(&switch_to_proxy(json!({
            "deckhouseVersion": "v1.65.3",
            "modulesImages": {"registry": {"base": "registry.example.com/deckhouse/ee"}},
        })));
        assert_eq!(c["ok"], json!(true), "{c}");
        assert!(c["message"].as_str().unwrap().contains("1 image(s) found"));
    }
}
