//! Unit tests of `config`.

use super::*;

fn nodes_hook() -> HookConfig {
    HookConfig {
        name: "nodes".into(),
        kubernetes: vec![KubernetesBinding {
            label_selector: Some(LabelSelector::exists(
                "node-role.kubernetes.io/control-plane",
            )),
            jq_filter: Some(".metadata.name".into()),
            execute_hook_on_event: Some(vec![]),
            ..KubernetesBinding::new("masters", "v1", "Node")
        }],
        settings: Some(Settings {
            execution_min_interval: Some(Duration::from_secs(3)),
            execution_burst: Some(1),
        }),
        ..Default::default()
    }
}

#[test]
fn go_durations_round_trip_shapes() {
    assert_eq!(go_duration(Duration::from_secs(3)), "3s");
    assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    assert_eq!(go_duration(Duration::from_millis(1500)), "1.500s");
    assert_eq!(go_duration(Duration::ZERO), "0s");
}

#[test]
fn classic_config_omits_empty_fields_and_keeps_event_arrays() {
    let v = nodes_hook().classic_json(RunnerKind::Module).unwrap();
    assert_eq!(v["configVersion"], "v1");
    assert!(
        v.get("schedule").is_none(),
        "empty schedule must be omitted: {v}"
    );
    let k = &v["kubernetes"][0];
    assert_eq!(k["executeHookOnEvent"], json!([]));
    assert_eq!(
        k["labelSelector"]["matchExpressions"][0]["operator"],
        "Exists"
    );
    assert!(k["labelSelector"].get("matchLabels").is_none());
    assert_eq!(v["settings"]["executionMinInterval"], "3s");
}

#[test]
fn batch_config_uses_bool_events_and_nanoseconds() {
    let v = nodes_hook().batch_json("embedded-registry/nodes").unwrap();
    assert_eq!(v["metadata"]["name"], "nodes");
    assert_eq!(v["kubernetes"][0]["executeHookOnEvent"], json!(false));
    assert_eq!(
        v["settings"]["executionMinInterval"],
        json!(3_000_000_000u64)
    );
}

#[test]
fn shell_runner_rejects_helm_lifecycle() {
    let h = HookConfig {
        name: "x".into(),
        before_helm: Some(10),
        ..Default::default()
    };
    assert!(h.classic_json(RunnerKind::Module).is_ok());
    let e = h.classic_json(RunnerKind::Shell).unwrap_err().to_string();
    assert!(e.contains("beforeHelm"), "{e}");
}

#[test]
fn invalid_configs_are_refused() {
    let no_trigger = HookConfig {
        name: "x".into(),
        ..Default::default()
    };
    assert!(no_trigger.validate().is_err());
    let mut mixed = nodes_hook();
    mixed.on_startup = Some(1);
    assert!(mixed
        .validate()
        .unwrap_err()
        .to_string()
        .contains("onStartup"));
    let bad_cron = HookConfig {
        name: "x".into(),
        schedule: vec![ScheduleBinding::new("s", "* * *")],
        ..Default::default()
    };
    let msg = bad_cron.validate().unwrap_err().to_string();
    assert!(
        msg.starts_with("hook x: crontab \"* * *\" is not valid ("),
        "{msg}"
    );
    assert!(msg.ends_with("or 6 with seconds first"), "{msg}");
    for (crontab, ok) in [
        ("* * * * *", true),
        ("*/5 * * * *", true),
        ("41 3 * * *", true),
        ("0 41 3 * * *", true),
        ("61 * * * *", false),
        ("* 24 * * *", false),
        ("* * * 13 *", false),
        ("* * * * * * 2030", false),
        ("x * * * *", false),
    ] {
        let hook = HookConfig {
            name: "x".into(),
            schedule: vec![ScheduleBinding::new("s", crontab)],
            ..Default::default()
        };
        assert_eq!(hook.validate().is_ok(), ok, "{crontab}");
    }
    let mut dup = nodes_hook();
    dup.kubernetes.push(dup.kubernetes[0].clone());
    assert!(dup
        .validate()
        .unwrap_err()
        .to_string()
        .contains("duplicate"));
    let bdh = HookConfig {
        name: "x".into(),
        before_delete_helm: Some(1),
        ..Default::default()
    };
    assert!(bdh.batch_json("p").is_err());
    assert!(bdh.classic_json(RunnerKind::Module).is_ok());
}

#[test]
fn refusals_are_typed() {
    let mut dup = nodes_hook();
    dup.kubernetes.push(dup.kubernetes[0].clone());
    assert_eq!(
        dup.validate(),
        Err(ConfigError::DuplicateBinding {
            hook: "nodes".into(),
            binding: "masters".into()
        })
    );
    let mut subset = nodes_hook();
    subset.kubernetes[0].execute_hook_on_event = Some(vec![WatchEvent::Added]);
    assert!(matches!(
        subset.batch_json("p"),
        Err(ConfigError::BatchEventSubset { .. })
    ));
}
