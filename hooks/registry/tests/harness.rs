//! The SDK's process harness against the real binary: the same hook, in-process and as
//! a process under the batch protocol, gives the same result.

use std::path::Path;

use hook_sdk::testing::{filtered, full, HookTest};
use serde_json::json;

fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_embedded-registry"))
}

fn test_input() -> HookTest {
    HookTest::new()
        .values(json!({"global": {}, "embeddedRegistry": {"mode": "Direct", "internal": {}}}))
        .group_snapshot(
            "masters",
            vec![filtered(json!({"name": "b", "internalIP": "10.0.0.2"}))],
        )
        .group_snapshot(
            "legacy_masters",
            vec![full(json!({
                "apiVersion": "v1", "kind": "Node", "metadata": {"name": "a"},
                "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}
            }))],
        )
}

#[test]
fn in_process_and_as_a_process_agree() {
    let hook = embedded_registry::hooks::discover_masters::hook();
    let index = embedded_registry::hooks::module_hooks()
        .iter()
        .position(|h| h.config.name == hook.config.name)
        .unwrap()
        .to_string();
    let inproc = test_input().run(&hook).unwrap();
    let process = test_input()
        .run_process(binary(), &["hook", "run", &index])
        .unwrap();
    assert_eq!(inproc.values, process.values);
    assert_eq!(inproc.metrics, process.metrics);
    assert_eq!(
        process.values["embeddedRegistry"]["internal"]["masters"],
        json!([{"name": "a", "internalIP": "10.0.0.1"}, {"name": "b", "internalIP": "10.0.0.2"}])
    );
}

#[test]
fn a_failing_process_reports_and_writes_nothing() {
    let resolve = embedded_registry::hooks::module_hooks()
        .iter()
        .position(|h| h.config.name == "resolve-mode")
        .unwrap()
        .to_string();
    let err = HookTest::new()
        .values(json!({"global": {}, "embeddedRegistry": {"mode": "Proxy", "proxy": {"host": "h"}, "internal": {}}}))
        .lifecycle("beforeHelm")
        .run_process(binary(), &["hook", "run", &resolve])
        .unwrap_err()
        .to_string();
    assert!(err.contains("at least one master"), "{err}");
    assert!(!err.contains("wrote"), "{err}");
}

#[test]
fn classic_protocol_under_the_hooks_own_name() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("discover-masters");
    std::os::unix::fs::symlink(binary(), &link).unwrap();
    let out = test_input().run_process(&link, &[]).unwrap();
    assert_eq!(
        out.values["embeddedRegistry"]["internal"]["masters"][0]["name"],
        "a"
    );
}
