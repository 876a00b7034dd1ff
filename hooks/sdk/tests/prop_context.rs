//! Property tests of binding-context parsing: whatever the runner (or a broken runner)
//! writes to `$BINDING_CONTEXT_PATH`, parsing never panics, a rejection is one clean
//! line, and what parses behaves consistently.
//!
//! Bounded by default (proptest's 256 cases per property); a longer pass:
//! `PROPTEST_CASES=20000 cargo test -p hook-sdk --test prop_context --release`.

use hook_sdk::context::{parse_contexts, BindingContext, ContextType, Snapshots};
use proptest::prelude::*;
use serde::Deserialize;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    // Failures print the minimal input; no regression files in the source tree.
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, a few levels deep.
fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Floats from a fixed set: serde_json parses long decimals to the nearest float
        // only with its float_roundtrip feature, and the round-trip check below is exact.
        prop::sample::select(vec![0.5, -1.25, 3.0, 1e300, -2.5e-300, 0.1]).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("\\PC{0,8}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A value that is usually of the right shape for `key`, sometimes anything.
fn field(key: &'static str) -> BoxedStrategy<Value> {
    let usual: BoxedStrategy<Value> = match key {
        "binding" => prop_oneof![
            Just(json!("")),
            Just(json!("main")),
            Just(json!("masters")),
            "[a-z_]{1,10}".prop_map(Value::from),
        ]
        .boxed(),
        "type" => prop::sample::select(vec![
            "Synchronization",
            "Event",
            "Schedule",
            "Group",
            "Bogus",
        ])
        .prop_map(Value::from)
        .boxed(),
        "watchEvent" => prop::sample::select(vec!["Added", "Modified", "Deleted", "Changed"])
            .prop_map(Value::from)
            .boxed(),
        "objects" => prop::collection::vec(arb_item(), 0..5)
            .prop_map(Value::from)
            .boxed(),
        "snapshots" => prop::collection::btree_map(
            prop::sample::select(vec!["masters", "legacy_masters", "nodes", ""]),
            prop::collection::vec(arb_item(), 0..5),
            0..4,
        )
        .prop_map(|m| {
            Value::Object(
                m.into_iter()
                    .map(|(k, v)| (k.to_string(), Value::from(v)))
                    .collect(),
            )
        })
        .boxed(),
        _ => arb_json().boxed(),
    };
    prop_oneof![4 => usual, 1 => arb_json()].boxed()
}

/// A snapshot item: `object` and/or `filterResult` (possibly null), or junk.
fn arb_item() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (
            prop::option::of(arb_json()),
            prop::option::of(arb_json()),
        )
            .prop_map(|(object, filter)| {
                let mut m = Map::new();
                if let Some(o) = object {
                    m.insert("object".into(), o);
                }
                if let Some(f) = filter {
                    m.insert("filterResult".into(), f);
                }
                Value::Object(m)
            }),
        1 => arb_json(),
    ]
}

const KEYS: [&str; 8] = [
    "binding",
    "type",
    "watchEvent",
    "groupName",
    "objects",
    "object",
    "filterResult",
    "snapshots",
];

/// A context: a random subset of the real keys with plausible or arbitrary values.
fn arb_context() -> impl Strategy<Value = Value> {
    let fields: Vec<_> = KEYS
        .iter()
        .map(|k| prop::option::weighted(0.6, field(k)).prop_map(move |v| (*k, v)))
        .collect();
    fields.prop_map(|pairs| {
        Value::Object(
            pairs
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v)))
                .collect(),
        )
    })
}

fn arb_contexts_text() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(arb_context(), 0..5).prop_map(|cs| Value::from(cs).to_string()),
        1 => arb_json().prop_map(|v| v.to_string()),
    ]
}

/// Checks everything that must hold for one input text.
fn check_text(text: &str) -> Result<(), TestCaseError> {
    match parse_contexts(text) {
        Err(e) => {
            let line = format!("{e:#}");
            prop_assert!(!line.is_empty());
            prop_assert!(!line.contains('\n'), "a rejection is one line: {:?}", line);
        }
        Ok(contexts) => check_parsed(contexts)?,
    }
    Ok(())
}

fn check_parsed(contexts: Vec<BindingContext>) -> Result<(), TestCaseError> {
    for c in &contexts {
        prop_assert!(!c.binding.is_empty(), "empty bindings are refused");
    }
    // What parsed serialises back to an equal list (nothing lost, nothing invented).
    let again = parse_contexts(&serde_json::to_string(&contexts).unwrap())
        .map_err(|e| TestCaseError::fail(format!("re-parse failed: {e:#}")))?;
    prop_assert_eq!(&again, &contexts);
    // Moving the snapshots out equals copying them.
    let copied = Snapshots::from_contexts(&contexts);
    let mut moved_from = contexts.clone();
    let taken = Snapshots::take_from_contexts(&mut moved_from);
    prop_assert_eq!(&copied, &taken);
    // Every binding's items: the non-null ones come back as values, in order.
    let mut bindings: Vec<String> = contexts
        .iter()
        .flat_map(|c| c.snapshots.keys().cloned().chain([c.binding.clone()]))
        .collect();
    bindings.dedup();
    for b in bindings {
        let items = taken.items(&b);
        let values: Vec<Value> = taken
            .get(&b)
            .map_err(|e| TestCaseError::fail(format!("{b}: {e:#}")))?;
        let expected: Vec<Value> = items
            .iter()
            .filter(|i| !i.is_null())
            .map(|i| serde_json::from_str(i.raw()).unwrap())
            .collect();
        prop_assert_eq!(values, expected);
        let delivered = contexts.iter().any(|c| {
            c.snapshots.contains_key(&b)
                || (c.binding == b
                    && c.kind == Some(ContextType::Synchronization)
                    && c.objects.is_some())
        });
        prop_assert_eq!(taken.has(&b), delivered);
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check_text(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn arbitrary_json_never_panics(v in arb_json()) {
        check_text(&v.to_string())?;
    }

    #[test]
    fn context_shaped_json_parses_or_fails_cleanly(text in arb_contexts_text()) {
        check_text(&text)?;
    }

    #[test]
    fn truncated_contexts_fail_cleanly(text in arb_contexts_text(), cut in 0.0f64..1.0) {
        let mut end = (text.len() as f64 * cut) as usize;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        check_text(&text[..end])?;
    }

    /// A snapshot value of the wrong shape is an error naming the binding and item,
    /// never quoting the value (snapshot items are often Secrets).
    #[test]
    fn typed_snapshot_errors_never_quote_string_values(
        secret in "[A-Za-z0-9]{12,24}",
        shape in 0usize..6,
        position in 0usize..3,
    ) {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Typed {
            name: String,
            count: u32,
            tags: Vec<String>,
            flag: Option<bool>,
        }
        let bad = match shape {
            0 => json!(secret),
            1 => json!({"name": 1, "count": secret}),
            2 => json!({"name": "n", "count": 1, "tags": [secret, 5]}),
            3 => json!({"name": "n", "count": 1, "tags": [], "flag": secret}),
            4 => json!([secret]),
            _ => json!({"name": "n", "count": 1, "tags": secret}),
        };
        let mut items = vec![json!({"filterResult": {"name": "ok", "count": 1, "tags": []}}); 3];
        items[position] = json!({"object": {"data": secret}, "filterResult": bad});
        let text = json!([{"binding": "b", "type": "Synchronization", "objects": items}]).to_string();
        let contexts = parse_contexts(&text).unwrap();
        let err = Snapshots::from_contexts(&contexts)
            .get::<Typed>("b")
            .expect_err("a wrong shape is refused");
        let line = format!("{err:#}");
        prop_assert!(line.contains(&format!("snapshot b[{position}]")), "{}", line);
        prop_assert!(!line.contains(&secret), "the value leaked: {}", line);
        prop_assert!(!line.contains('\n'));
    }
}
