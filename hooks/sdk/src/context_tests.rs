//! Unit tests of `context`.

use super::*;
use serde_json::json;

#[test]
fn parses_every_context_type() {
    let text = json!([
        {"binding": "onStartup"},
        {"binding": "beforeHelm", "snapshots": {"nodes": [{"filterResult": {"name": "n1"}}]}},
        {"binding": "every-min", "type": "Schedule"},
        {"binding": "pods", "type": "Synchronization", "objects": []},
        {"binding": "pods", "type": "Event", "watchEvent": "Modified",
         "object": {"kind": "Pod"}, "filterResult": null,
         "snapshots": {"cm": [{"object": {"kind": "ConfigMap"}}]}},
        {"binding": "main", "type": "Group", "groupName": "main",
         "snapshots": {"nodes": [{"filterResult": {"name": "n2"}}], "secrets": []}}
    ])
    .to_string();
    let cs = parse_contexts(&text).unwrap();
    assert_eq!(cs.len(), 6);
    assert_eq!(cs[0].kind, None);
    assert_eq!(cs[2].kind, Some(ContextType::Schedule));
    assert_eq!(cs[3].objects.as_ref().unwrap().len(), 0);
    assert_eq!(cs[4].watch_event, Some(WatchEvent::Modified));
    assert_eq!(
        cs[4].filter_result,
        Some(Value::Null),
        "present null is kept"
    );
    assert_eq!(cs[3].filter_result, None, "absent stays absent");
    assert_eq!(cs[5].group_name.as_deref(), Some("main"));
    let snaps = Snapshots::from_contexts(&cs);
    #[derive(Deserialize)]
    struct N {
        name: String,
    }
    let nodes: Vec<N> = snaps.get("nodes").unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].name, "n2", "the last context wins");
    assert!(snaps.has("secrets") && snaps.items("secrets").is_empty());
    assert!(snaps.has("pods"), "Synchronization objects are a snapshot");
    assert!(!snaps.has("absent"));
}

#[test]
fn taking_snapshots_equals_copying_them() {
    let text = json!([
            {"binding": "a", "type": "Synchronization", "objects": [{"object": 1}]},
            {"binding": "main", "type": "Group", "snapshots": {"a": [{"object": 2}], "b": []}},
            {"binding": "b", "type": "Event", "watchEvent": "Deleted", "snapshots": {"b": [{"object": 3}]}}
        ])
        .to_string();
    let mut cs = parse_contexts(&text).unwrap();
    let copied = Snapshots::from_contexts(&cs);
    let taken = Snapshots::take_from_contexts(&mut cs);
    assert_eq!(copied, taken);
    assert_eq!(taken.get::<u32>("a").unwrap(), vec![2]);
    assert_eq!(taken.get::<u32>("b").unwrap(), vec![3]);
    assert!(cs.iter().all(|c| c.snapshots.is_empty()));
}

#[test]
fn filter_result_is_preferred_and_null_is_skipped() {
    let item: SnapshotItem =
        serde_json::from_str(r#"{"object": {"a": 1}, "filterResult": "x"}"#).unwrap();
    assert_eq!(item.parse::<Value>().unwrap(), json!("x"));
    let item: SnapshotItem = serde_json::from_str(r#"{"object": {"a": 1}}"#).unwrap();
    assert_eq!(item.parse::<Value>().unwrap(), json!({"a": 1}));
    let item: SnapshotItem =
        serde_json::from_str(r#"{"object": {"a": 1}, "filterResult": null}"#).unwrap();
    assert!(item.is_null(), "a null filter result is a result");
    assert!(SnapshotItem::default().is_null());
    let cs = parse_contexts(
        &json!([{"binding": "b", "type": "Synchronization",
                      "objects": [{"filterResult": null}, {"filterResult": "n"}]}])
        .to_string(),
    )
    .unwrap();
    let got: Vec<String> = Snapshots::from_contexts(&cs).get("b").unwrap();
    assert_eq!(got, vec!["n".to_string()]);
}

#[test]
fn deep_contexts_are_refused_in_linear_time() {
    let deep = |n: usize| {
        format!(
            r#"[{{"binding": "b", "type": "Group", "snapshots": {{"b": [{{"object": {}1{}}}]}}}}]"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // The raw snapshot object is where serde_json's own limit does not apply.
    assert!(parse_contexts(&deep(MAX_JSON_DEPTH - 5)).is_ok());
    let e = parse_contexts(&deep(MAX_JSON_DEPTH))
        .unwrap_err()
        .to_string();
    assert!(e.contains("nested deeper than 128 levels"), "{e}");
    assert!(parse_contexts(&deep(1_000_000)).is_err());
    // Brackets inside strings are text.
    let text = json!([{"binding": "b", "type": "Group", "snapshots": {"b": [{"filterResult": "[[[[".repeat(100)}]}}]).to_string();
    assert!(parse_contexts(&text).is_ok());
    assert!(check_json_depth(r#"{"a": "\"[[[[", "b": [1]}"#, 2).is_ok());
    assert!(check_json_depth(r#"{"a": "\\", "b": [[1]]}"#, 2).is_err());
}

#[test]
fn malformed_contexts_are_refused() {
    assert!(parse_contexts("").is_err());
    assert!(parse_contexts("[{\"binding\": \"x\"").is_err());
    assert!(
        parse_contexts("{\"binding\": \"x\"}").is_err(),
        "not an array"
    );
    assert!(
        parse_contexts("[{\"type\": \"Schedule\"}]").is_err(),
        "no binding"
    );
    assert!(parse_contexts("[{\"binding\": \"x\", \"type\": \"Event\"}]").is_err());
    assert!(parse_contexts("[{\"binding\": \"x\", \"type\": \"Bogus\"}]").is_err());
}

#[test]
fn typed_errors_name_the_binding_and_hide_values() {
    let cs = parse_contexts(
        &json!([{"binding": "b", "type": "Synchronization",
                      "objects": [{"filterResult": "hunter2-secret"}]}])
        .to_string(),
    )
    .unwrap();
    let e = Snapshots::from_contexts(&cs)
        .get::<u32>("b")
        .unwrap_err()
        .to_string();
    assert!(e.contains("snapshot b[0]"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}
