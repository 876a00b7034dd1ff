//! The `gc-window` hook over cluster objects given as YAML (snapshots built through its
//! own bindings and jqFilters, by the real `jq`): a window through its phases, the
//! bound from a schedule run, idempotence, and objects its bindings must not take.

use super::*;
use crate::hooks::module::cluster_yaml::{object, yaml};
use crate::module::ROLE_LABEL;
use hook_sdk::testing::{HookTest, TestOutput};
use serde_json::Value;

const MASTERS: [&str; 2] = ["m1", "m2"];

fn values(s3: bool, window: Option<&GcWindow>) -> Value {
    let mut registry = json!({"mode": "Detached", "nodes": MASTERS, "generation": "g"});
    if s3 {
        registry["s3"] = json!({"endpoint": "https://s3.example:3900", "region": "garage",
            "bucket": "b", "rootDirectory": "/r", "accessKey": "GK1", "secretKey": "hidden",
            "forcePathStyle": true});
    }
    let mut internal = json!({"switch": {"registry": registry, "cluster": "Embedded",
        "mirrors": [], "pullAddress": "x", "manager": true}});
    if let Some(w) = window {
        internal["gcWindow"] = serde_json::to_value(w).unwrap();
    }
    json!({"global": {}, "embeddedRegistry": {"internal": internal}})
}

fn status(node: &str, applied: &str, ready: bool) -> Value {
    let mut data = vec![
        ("node", node),
        ("registry", if ready { "ready" } else { "not-ready" }),
    ];
    if !applied.is_empty() {
        data.push(("appliedGcWindow", applied));
    }
    object(
        "ConfigMap",
        NAMESPACE,
        &format!("registry-node-{node}-status"),
        &[(ROLE_LABEL, "node-status")],
        &data,
    )
}

fn request(id: &str, node: &str) -> Value {
    object(
        "ConfigMap",
        NAMESPACE,
        GC_REQUEST_CONFIG_MAP,
        &[],
        &[("id", id), ("node", node)],
    )
}

fn run(v: Value, cluster: &[Value], now: i64) -> TestOutput {
    crate::clock::with_now(now, || {
        HookTest::new()
            .values(v)
            .cluster_state(&yaml(cluster))
            .lifecycle("beforeHelm")
            .run(&hook())
            .unwrap()
    })
}

fn window(out: &TestOutput) -> GcWindow {
    serde_json::from_value(out.values["embeddedRegistry"]["internal"]["gcWindow"].clone()).unwrap()
}

/// The state ConfigMap a run wrote (to be given to the next run), if any.
fn stored(out: &TestOutput) -> Option<Value> {
    out.objects.iter().find_map(|o| o.object.clone())
}

fn metric(out: &TestOutput, name: &str, label: Option<(&str, &str)>) -> f64 {
    out.metrics
        .iter()
        .filter_map(|m| serde_json::to_value(m).ok())
        .find(|m| m["name"] == name && label.is_none_or(|(k, v)| m["labels"][k] == v))
        .and_then(|m| m["value"].as_f64())
        .unwrap_or_else(|| panic!("no metric {name} {label:?}"))
}

#[test]
fn a_window_steps_through_its_phases_on_what_the_masters_report() {
    let req = request("1000", "m2");
    // Idle + a request: the window opens, collected by the master that asked.
    let out = run(values(true, None), std::slice::from_ref(&req), 1000);
    let w = window(&out);
    assert_eq!(
        (w.phase, w.collector.as_str(), w.opened_at),
        (Phase::ReadOnly, "m2", 1000)
    );
    let state = stored(&out).expect("the state is stored");
    assert_eq!(
        metric(
            &out,
            "d8_embedded_registry_gc_window_phase",
            Some(("phase", "ReadOnly"))
        ),
        1.0
    );
    assert_eq!(
        metric(
            &out,
            "d8_embedded_registry_gc_window_phase",
            Some(("phase", "Idle"))
        ),
        0.0
    );
    assert_eq!(
        metric(
            &out,
            "d8_embedded_registry_gc_window_opened_timestamp_seconds",
            None
        ),
        1000.0
    );

    // The same inputs again: nothing changes, nothing is written.
    let again = run(values(true, Some(&w)), &[req.clone(), state.clone()], 1010);
    assert_eq!(window(&again), w);
    assert!(again.objects.is_empty(), "{:?}", again.objects);
    assert_eq!(
        metric(&again, "d8_embedded_registry_gc_window_open_seconds", None),
        10.0
    );

    // One master read-only: still ReadOnly. Both: Collect.
    let one = [
        req.clone(),
        state.clone(),
        status("m1", "1000/read-only", true),
        status("m2", "", true),
    ];
    assert_eq!(
        window(&run(values(true, Some(&w)), &one, 1020)).phase,
        Phase::ReadOnly
    );
    let both = [
        req.clone(),
        state.clone(),
        status("m1", "1000/read-only", true),
        status("m2", "1000/read-only", true),
    ];
    let out = run(values(true, Some(&w)), &both, 1030);
    assert_eq!(window(&out).phase, Phase::Collect);
    let state = stored(&out).unwrap();

    // The collector answers on its collect files: Back, then Idle once both run
    // read-write again.
    let collected = [
        req.clone(),
        state,
        status("m1", "1000/read-only", true),
        status("m2", "1000/collect", true),
    ];
    let out = run(values(true, None), &collected, 1040);
    assert_eq!(
        (window(&out).phase, window(&out).outcome),
        (Phase::Back, Some(Outcome::Collected))
    );
    let state = stored(&out).unwrap();
    let back = [
        req.clone(),
        state,
        status("m1", "", true),
        status("m2", "", true),
    ];
    let out = run(values(true, None), &back, 1050);
    let w = window(&out);
    assert_eq!((w.phase, w.id.as_str()), (Phase::Idle, "1000"));
    assert_eq!(
        metric(
            &out,
            "d8_embedded_registry_gc_window_opened_timestamp_seconds",
            None
        ),
        0.0
    );
    // The served request opens nothing again.
    let state = stored(&out).unwrap();
    let out = run(values(true, Some(&w)), &[req, state], 1060);
    assert_eq!(window(&out), w);
    assert!(out.objects.is_empty());
}

#[test]
fn on_fs_a_request_opens_nothing() {
    let out = run(values(false, None), &[request("1000", "m1")], 1000);
    assert_eq!(window(&out), GcWindow::default());
    assert!(out.objects.is_empty());
}

#[test]
fn the_schedule_applies_the_bound_from_the_values_alone() {
    let open = GcWindow {
        phase: Phase::ReadOnly,
        id: "1000".into(),
        collector: "m1".into(),
        opened_at: 1000,
        outcome: None,
    };
    let tick = |now| {
        crate::clock::with_now(now, || {
            HookTest::new()
                .values(values(true, Some(&open)))
                .schedule("bound")
                .run(&hook())
                .unwrap()
        })
    };
    let early = tick(1000 + BOUND_SECS - 1);
    assert_eq!(window(&early), open);
    assert!(early.objects.is_empty());
    let late = tick(1000 + BOUND_SECS);
    let w = window(&late);
    assert_eq!((w.phase, w.outcome), (Phase::Back, Some(Outcome::TimedOut)));
    assert_eq!(
        metric(&late, "d8_embedded_registry_gc_window_last_timed_out", None),
        1.0
    );
    assert!(stored(&late).is_some(), "the state is stored");
}

#[test]
fn only_the_module_namespaces_objects_are_read_and_a_bad_state_is_one_line() {
    // A request in another namespace, a status ConfigMap without the role label, a
    // Secret under the request's name: none is taken.
    let mut foreign = request("1000", "m1");
    foreign["metadata"]["namespace"] = json!("default");
    let secret = object(
        "Secret",
        NAMESPACE,
        GC_REQUEST_CONFIG_MAP,
        &[],
        &[("id", "1000"), ("node", "m1")],
    );
    let out = run(values(true, None), &[foreign, secret], 1000);
    assert_eq!(window(&out).phase, Phase::Idle);

    let bad = object(
        "ConfigMap",
        NAMESPACE,
        GC_STATE_CONFIG_MAP,
        &[],
        &[("state.json", "{")],
    );
    let err = crate::clock::with_now(1000, || {
        HookTest::new()
            .values(values(true, None))
            .cluster_state(&yaml(&[bad]))
            .lifecycle("beforeHelm")
            .run(&hook())
            .unwrap_err()
    });
    let text = format!("{err:#}");
    assert!(
        text.contains("registry-gc-window") && !text.contains('\n'),
        "{text}"
    );
}
