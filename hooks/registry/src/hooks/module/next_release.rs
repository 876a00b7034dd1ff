//! Hook `next-release`: the releases Deckhouse has announced and not yet rolled out,
//! so a Proxy registry's `warm` container caches their images before the cluster needs
//! them ([`crate::warm::next`]).
//!
//! Binding `releases`: every `DeckhouseRelease` (`deckhouse.io/v1alpha1`, cluster
//! scope), filtered to its name, `spec.version` and `status.phase`; an announced, a
//! deployed or a superseded release changes the choice, so events run it, and
//! `beforeHelm` runs it with the values it compares against (`global.deckhouseVersion`).
//! Writes `internal.warm.next`: the `Pending` releases newer than the running one, the
//! newest two, oldest first (absent when there is none). A version that is not a
//! release tag `vX.Y.Z` is refused with a warning and never reaches the values.

use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding};
use serde_json::json;

use crate::model::values::WarmValues;
use crate::module::MODULE_KEY;
use crate::warm::next::{self, Announced};

/// Keeps only what the hook needs of a `DeckhouseRelease` (its changelog and
/// approval annotations are large and change often).
pub const RELEASE_FILTER: &str =
    r#"{"name": .metadata.name, "version": .spec.version, "phase": .status.phase}"#;

/// The binding's name.
pub const BINDING: &str = "releases";

/// The hook.
pub fn hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "next-release".into(),
            before_helm: Some(25),
            kubernetes: vec![KubernetesBinding {
                jq_filter: Some(RELEASE_FILTER.into()),
                keep_full_objects_in_memory: Some(false),
                execute_hook_on_synchronization: Some(false),
                ..KubernetesBinding::new(BINDING, "deckhouse.io/v1alpha1", "DeckhouseRelease")
            }],
            ..Default::default()
        },
        handle,
    )
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    // Without the snapshot the run knows nothing of the releases: what was chosen stays.
    if !input.snapshots.has(BINDING) {
        return Ok(());
    }
    let releases: Vec<Announced> = input.snapshots.get(BINDING)?;
    let current: String = input
        .values
        .get_as("global.deckhouseVersion")
        .ok()
        .flatten()
        .unwrap_or_default();
    let chosen = next::select(&current, &releases);
    if !chosen.refused.is_empty() {
        input.log.warn(
            "DeckhouseRelease objects refused: their images are not warmed ahead",
            &[("refused", json!(chosen.refused))],
        );
    }
    if chosen.left_out > 0 {
        input.log.info(
            "more pending releases than are warmed ahead: the newest only",
            &[
                ("leftOut", json!(chosen.left_out)),
                ("warmed", json!(chosen.next)),
            ],
        );
    }
    input.metrics.expire("next_release");
    input.metrics.set(
        "next_release",
        "d8_embedded_registry_next_releases",
        chosen.next.len() as f64,
        &[],
    );
    let path = format!("{MODULE_KEY}.internal.warm");
    if chosen.next.is_empty() {
        if input.values.get(&path).is_some() {
            input.values.remove(&path)?;
        }
    } else {
        input.values.set(&path, &WarmValues { next: chosen.next })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hook_sdk::testing::HookTest;
    use serde_json::{json, Value};

    fn release(name: &str, version: &str, phase: &str) -> Value {
        json!({"apiVersion": "deckhouse.io/v1alpha1", "kind": "DeckhouseRelease",
            "metadata": {"name": name, "annotations": {"big": "x".repeat(1000)}},
            "spec": {"version": version, "changelog": {"a": "b"}},
            "status": {"phase": phase, "message": ""}})
    }

    fn run(version: &str, releases: &[Value], values: Value) -> Value {
        let cluster = crate::hooks::module::cluster_yaml::yaml(releases);
        let out = HookTest::new()
            .cluster_state(&cluster)
            .values(json!({"global": {"deckhouseVersion": version}, "embeddedRegistry": values}))
            .lifecycle("beforeHelm")
            .run(&hook())
            .unwrap();
        out.values["embeddedRegistry"]["internal"].clone()
    }

    #[test]
    fn the_filter_keeps_name_version_and_phase_only() {
        let cluster =
            crate::hooks::module::cluster_yaml::yaml(&[release("v1-67-0", "v1.67.0", "Pending")]);
        let seen = crate::hooks::module::cluster_yaml::seen(&hook(), &cluster, BINDING);
        assert_eq!(
            seen,
            vec![json!({"name": "v1-67-0", "version": "v1.67.0", "phase": "Pending"})]
        );
    }

    #[test]
    fn pending_newer_releases_reach_the_values_and_leave_them_when_rolled_out() {
        let rs = [
            release("v1-66-0", "v1.66.0", "Deployed"),
            release("v1-67-0", "v1.67.0", "Pending"),
            release("evil", "v1.67.0/../../x", "Pending"),
        ];
        let internal = run("v1.66.0", &rs, json!({"internal": {}}));
        assert_eq!(internal["warm"], json!({"next": ["v1.67.0"]}));
        // Rolled out: v1.67.0 is deployed and running; nothing is next, the value goes.
        let rs = [
            release("v1-66-0", "v1.66.0", "Superseded"),
            release("v1-67-0", "v1.67.0", "Deployed"),
        ];
        let internal = run(
            "v1.67.0",
            &rs,
            json!({"internal": {"warm": {"next": ["v1.67.0"]}}}),
        );
        assert_eq!(internal.get("warm"), None, "{internal}");
        // No release object at all: nothing to write, nothing written.
        assert_eq!(run("v1.67.0", &[], json!({"internal": {}})), json!({}));
    }
}
