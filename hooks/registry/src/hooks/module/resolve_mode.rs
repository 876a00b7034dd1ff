//! Decides what the chart renders: the effective mode and whether the registry runs in
//! HA (Proxy, or Detached on S3: every master). Runs before every Helm render, after
//! the masters are known.

use anyhow::bail;
use hook_sdk::{Hook, HookConfig, HookInput};

use crate::model::settings::{Mode, Settings};
use crate::model::values::Master;
use crate::module::MODULE_KEY;

/// The hook.
pub fn hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "resolve-mode".into(),
            before_helm: Some(10),
            ..Default::default()
        },
        handle,
    )
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    // Only the two settings this hook decides on are read: typing the whole section
    // would fail the hook on values the schema accepts but the types cannot hold
    // (detached.rotation.keepReleases beyond u32), blocking the queue.
    if input.values.get(MODULE_KEY).is_none() {
        bail!("values have no embeddedRegistry section");
    }
    let settings = Settings {
        mode: input
            .values
            .get_as(&format!("{MODULE_KEY}.mode"))?
            .unwrap_or_default(),
        high_availability: input
            .values
            .get_as(&format!("{MODULE_KEY}.highAvailability"))?,
        ..Settings::default()
    };
    let masters: Vec<Master> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.masters"))?
        .unwrap_or_default();
    if settings.mode != Mode::Direct && masters.is_empty() {
        bail!(
            "mode {} needs at least one master node with an InternalIP (label node-role.kubernetes.io/control-plane); none found",
            settings.mode
        );
    }
    let control_plane_ha: Option<bool> = input
        .values
        .get_as("global.discovery.clusterControlPlaneIsHighlyAvailable")?;
    // Detached on S3 runs on every master like Proxy: they all serve the same bucket.
    let detached_on_s3 = input
        .values
        .get_as::<String>(&format!("{MODULE_KEY}.detached.storageMode"))?
        .is_some_and(|m| m == "S3");
    let ha = match settings.mode {
        Mode::Detached if detached_on_s3 => settings
            .high_availability
            .or(control_plane_ha)
            .unwrap_or(masters.len() > 1),
        Mode::Proxy => settings
            .high_availability
            .or(control_plane_ha)
            .unwrap_or(masters.len() > 1),
        Mode::Direct | Mode::Detached => false,
    };
    input
        .values
        .set(&format!("{MODULE_KEY}.internal.mode"), &settings.mode)?;
    input
        .values
        .set(&format!("{MODULE_KEY}.internal.highAvailability"), &ha)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hook_sdk::testing::HookTest;
    use serde_json::{json, Value};

    fn run(settings: Value, masters: usize, global: Value) -> anyhow::Result<Value> {
        let masters: Vec<Value> = (0..masters)
            .map(|i| json!({"name": format!("m{i}"), "internalIP": format!("10.0.0.{i}")}))
            .collect();
        let mut er = settings;
        er["internal"] = json!({"masters": masters});
        HookTest::new()
            .values(json!({"global": global, "embeddedRegistry": er}))
            .lifecycle("beforeHelm")
            .run(&hook())
            .map(|o| o.values["embeddedRegistry"]["internal"].clone())
            .map_err(Into::into)
    }

    #[test]
    fn ha_follows_setting_then_control_plane_then_master_count() {
        let proxy = json!({"mode": "Proxy", "proxy": {"host": "h"}});
        assert_eq!(
            run(proxy.clone(), 3, json!({})).unwrap()["highAvailability"],
            true
        );
        assert_eq!(
            run(proxy.clone(), 1, json!({})).unwrap()["highAvailability"],
            false
        );
        let cp = json!({"discovery": {"clusterControlPlaneIsHighlyAvailable": false}});
        assert_eq!(
            run(proxy.clone(), 3, cp).unwrap()["highAvailability"],
            false
        );
        let mut forced = proxy;
        forced["highAvailability"] = json!(true);
        assert_eq!(run(forced, 1, json!({})).unwrap()["highAvailability"], true);
        let detached = json!({"mode": "Detached", "detached": {}});
        let out = run(detached, 3, json!({})).unwrap();
        assert_eq!(
            (out["mode"].clone(), out["highAvailability"].clone()),
            (json!("Detached"), json!(false))
        );
    }

    #[test]
    fn detached_on_s3_is_ha_like_proxy_and_on_fs_never() {
        let s3 = json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": {}}});
        assert_eq!(
            run(s3.clone(), 3, json!({})).unwrap()["highAvailability"],
            true
        );
        assert_eq!(
            run(s3.clone(), 1, json!({})).unwrap()["highAvailability"],
            false
        );
        let cp = json!({"discovery": {"clusterControlPlaneIsHighlyAvailable": false}});
        assert_eq!(run(s3.clone(), 3, cp).unwrap()["highAvailability"], false);
        let mut off = s3;
        off["highAvailability"] = json!(false);
        assert_eq!(run(off, 3, json!({})).unwrap()["highAvailability"], false);
        let fs = json!({"mode": "Detached", "detached": {"storageMode": "Fs"}});
        assert_eq!(run(fs, 3, json!({})).unwrap()["highAvailability"], false);
    }

    #[test]
    fn a_registry_mode_without_masters_fails_clearly() {
        let e = run(
            json!({"mode": "Proxy", "proxy": {"host": "h"}}),
            0,
            json!({}),
        )
        .unwrap_err();
        assert!(e.to_string().contains("at least one master"), "{e}");
        assert!(run(json!({"mode": "Direct"}), 0, json!({})).is_ok());
    }
}
