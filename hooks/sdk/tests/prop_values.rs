//! Property tests of values patches: whatever a handler sets and removes, the patch it
//! records, replayed with the runner's strict RFC 6902 rules (json-patch), yields
//! exactly the values the handler saw; a failed operation changes nothing; patch files
//! of any content parse or fail cleanly.
//!
//! Bounded by default (proptest's 256 cases per property); a longer pass:
//! `PROPTEST_CASES=20000 cargo test -p hook-sdk --test prop_values --release`.

use hook_sdk::values::{apply_values_patch, parse_values_patch, PatchableValues};
use proptest::prelude::*;
use serde_json::{json, Value};

/// A rejection is one line (runners take stderr as the error text).
fn one_line(e: &dyn std::error::Error) -> Result<(), TestCaseError> {
    let line = format!("{e:#}");
    prop_assert!(
        !line.is_empty() && !line.contains('\n'),
        "not one line: {:?}",
        line
    );
    Ok(())
}

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Segment names, including the two that JSON Pointer must escape.
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "global", "m", "internal", "a", "b", "0", "a/b", "x~y", "~1", " "
        ])
        .prop_map(String::from),
        "[a-z~/]{1,4}",
    ]
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "\\PC{0,6}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(segment(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A values document: an object whose keys come from the same alphabet as the paths,
/// so operations hit existing parents, scalars and arrays as often as missing ones.
fn arb_document() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(segment(), arb_json(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

#[derive(Clone, Debug)]
enum Op {
    Set(String, Value),
    Remove(String),
}

fn arb_path() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(segment(), 1..5).prop_map(|s| s.join(".")),
        // Malformed dotted paths: empty segments.
        1 => prop::sample::select(vec!["", ".", "a.", ".a", "a..b"]).prop_map(String::from),
    ]
}

fn arb_ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            3 => (arb_path(), arb_json()).prop_map(|(p, v)| Op::Set(p, v)),
            1 => arb_path().prop_map(Op::Remove),
        ],
        0..10,
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn recorded_patch_replays_strictly_to_the_same_values(doc in arb_document(), ops in arb_ops()) {
        let mut v = PatchableValues::new(doc.clone());
        for op in &ops {
            let before_doc = v.document().clone();
            let before_len = v.patch().len();
            let result = match op {
                Op::Set(p, value) => v.set(p, value),
                Op::Remove(p) => v.remove(p),
            };
            match result {
                Ok(()) => {
                    if let Op::Set(p, value) = op {
                        // Dotted paths cannot name keys containing '.', so a read-back
                        // through `get` is exact.
                        prop_assert_eq!(v.get(p), Some(value));
                    }
                }
                Err(e) => {
                    one_line(&e)?;
                    prop_assert_eq!(v.document(), &before_doc, "a failed operation changes nothing");
                    prop_assert_eq!(v.patch().len(), before_len, "and records nothing");
                }
            }
        }
        for op in v.patch() {
            let name = op["op"].as_str().unwrap();
            prop_assert!(name == "add" || name == "remove", "only add and remove: {}", op);
        }
        let mut replay = doc;
        apply_values_patch(&mut replay, v.patch())
            .map_err(|e| TestCaseError::fail(format!("the runner would refuse the patch: {e:#}")))?;
        prop_assert_eq!(&replay, v.document());
        // The patch file the runtime writes parses back to the same operations.
        let file = Value::from(v.patch().to_vec()).to_string();
        prop_assert_eq!(parse_values_patch(&file).unwrap(), v.patch().to_vec());
    }

    #[test]
    fn setting_what_is_already_there_records_nothing(doc in arb_document(), path in arb_path(), value in arb_json()) {
        let mut v = PatchableValues::new(doc);
        if v.set(&path, &value).is_ok() {
            let recorded = v.patch().len();
            v.set(&path, &value).unwrap();
            prop_assert_eq!(v.patch().len(), recorded);
            // A second handler run on the patched values emits no patch at all.
            let mut second = PatchableValues::new(v.document().clone());
            second.set(&path, &value).unwrap();
            prop_assert!(second.patch().is_empty());
        }
    }

    #[test]
    fn patch_files_of_any_content_parse_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Err(e) = parse_values_patch(&String::from_utf8_lossy(&bytes)) {
            one_line(&e)?;
        }
    }

    /// Operations from a patch file (any op, any path) apply all or nothing.
    #[test]
    fn arbitrary_operations_apply_all_or_nothing(
        doc in arb_document(),
        ops in prop::collection::vec(
            (prop::sample::select(vec!["add", "remove", "replace", "move", "test"]),
             prop::collection::vec(segment(), 0..4),
             arb_json()),
            0..6),
    ) {
        let ops: Vec<Value> = ops
            .into_iter()
            .map(|(op, segs, value)| {
                let path: String = segs
                    .iter()
                    .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
                    .collect();
                json!({"op": op, "path": path, "value": value, "from": "/m"})
            })
            .collect();
        let mut work = doc.clone();
        match apply_values_patch(&mut work, &ops) {
            Ok(()) => {}
            Err(e) => {
                prop_assert_eq!(&work, &doc, "a refused patch changes nothing");
                one_line(&e)?;
            }
        }
        // The file form refuses anything but add and remove, naming the operation.
        let text = Value::from(ops.clone()).to_string();
        let parsed = parse_values_patch(&text);
        let other = ops.iter().find(|o| o["op"] != "add" && o["op"] != "remove");
        match (parsed, other) {
            (Ok(p), None) => prop_assert_eq!(p, ops),
            (Err(e), Some(o)) => prop_assert!(e.to_string().contains(o["op"].as_str().unwrap())),
            (r, o) => prop_assert!(false, "unexpected {:?} for offending op {:?}", r.map(|p| p.len()), o),
        }
    }
}

/// Found by `arbitrary_operations_apply_all_or_nothing`: json-patch's undo panicked
/// ("unable to undo applied patches") on a failed patch that had moved a value into
/// the root.
#[test]
fn a_failed_patch_after_a_move_into_the_root_is_refused_cleanly() {
    let doc = json!({"m": null});
    let ops = vec![
        json!({"op": "move", "from": "/m", "path": ""}),
        json!({"op": "remove", "path": "/absent"}),
    ];
    let mut work = doc.clone();
    let e = apply_values_patch(&mut work, &ops).unwrap_err();
    assert!(e.to_string().contains("values patch"), "{e}");
    assert_eq!(work, doc);
}
