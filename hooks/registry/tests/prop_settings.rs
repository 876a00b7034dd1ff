//! Property tests of the ModuleConfig settings validation, the way the converge runs it
//! (schema defaults, `settings::check`, then `openapi/config-values.yaml`): any settings
//! object is accepted or refused with one line naming a field under `spec.settings`,
//! never panics and never prints the password; the friendly rules never refuse what the
//! schema (the runner's authority) accepts; and what is accepted runs through the
//! `resolve-mode` hook, which reads the settings typed.
//!
//! Bounded by default (proptest's 256 cases per property); a longer pass:
//! `PROPTEST_CASES=20000 cargo test -p embedded-registry --test prop_settings --release`.

use std::path::Path;
use std::sync::OnceLock;

use embedded_registry::converge::schema::ModuleSchemas;
use embedded_registry::model::settings::{self, FieldError};
use hook_sdk::testing::HookTest;
use proptest::prelude::*;
use serde_json::{json, Map, Value};

fn config() -> ProptestConfig {
    ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn schemas() -> &'static ModuleSchemas {
    static SCHEMAS: OnceLock<ModuleSchemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| {
        let module_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        ModuleSchemas::load(&module_dir).expect("openapi/ of the module loads")
    })
}

/// The validation of `converge` (hooks/registry/src/converge/mod.rs), step by step.
fn validate(raw: &Value) -> (Value, Result<(), FieldError>, Result<(), FieldError>) {
    let mut settings = raw.clone();
    schemas().config.apply_defaults(&mut settings);
    let rules = settings::check(&settings);
    let schema = schemas().config.validate(&settings);
    (settings, rules, schema)
}

fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!([])),
        Just(json!({})),
        "\\PC{0,10}".prop_map(Value::from),
    ]
}

/// Usually a plausible value for the field, sometimes junk.
fn one_of(usual: Vec<Value>) -> BoxedStrategy<Value> {
    prop_oneof![4 => prop::sample::select(usual), 1 => junk()].boxed()
}

/// An object with a random subset of `fields`, plus now and then an unknown key.
fn object(fields: Vec<(&'static str, BoxedStrategy<Value>)>) -> BoxedStrategy<Value> {
    let parts: Vec<_> = fields
        .into_iter()
        .map(|(k, s)| prop::option::weighted(0.55, s).prop_map(move |v| (k, v)))
        .collect();
    (parts, prop::option::weighted(0.1, "[a-zA-Z]{1,8}"))
        .prop_map(|(parts, extra)| {
            let mut m = Map::new();
            for (k, v) in parts {
                if let Some(v) = v {
                    m.insert(k.to_string(), v);
                }
            }
            if let Some(k) = extra {
                m.insert(k, json!("x"));
            }
            Value::Object(m)
        })
        .boxed()
}

/// A password: the secret value (as a string, or as a number the schema refuses).
fn password(secret: String, digits: u64) -> BoxedStrategy<Value> {
    prop_oneof![
        4 => Just(Value::from(secret)),
        1 => Just(Value::from(digits)),
    ]
    .boxed()
}

fn ttl() -> BoxedStrategy<Value> {
    prop_oneof![
        one_of(
            [
                "168h", "0", "72h", "1h30m", "1.5s", "7d", "", "h", "10", "1.s", ".5s", "µs",
                "5µs", "1h-3m"
            ]
            .map(Value::from)
            .to_vec()
        ),
        "[0-9.]{0,4}(ns|us|µs|ms|s|m|h|d|){0,3}".prop_map(Value::from),
    ]
    .boxed()
}

fn arb_settings(secret: String, digits: u64) -> BoxedStrategy<Value> {
    let proxy = object(vec![
        (
            "host",
            one_of(
                [
                    "registry.example.com",
                    "h",
                    "h:5000",
                    "https://h",
                    "-h",
                    "a.b.c:123456",
                ]
                .map(Value::from)
                .to_vec(),
            ),
        ),
        (
            "scheme",
            one_of(["http", "https", "ftp"].map(Value::from).to_vec()),
        ),
        (
            "path",
            one_of(
                ["/deckhouse/ee", "/a", "deckhouse", "/A", "/a//b", "/"]
                    .map(Value::from)
                    .to_vec(),
            ),
        ),
        ("user", one_of(["puller", ""].map(Value::from).to_vec())),
        ("password", password(secret, digits)),
        (
            "ca",
            one_of(
                [
                    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
                    "not a certificate",
                ]
                .map(Value::from)
                .to_vec(),
            ),
        ),
        ("ttl", ttl()),
        (
            "storageMode",
            one_of(["Fs", "S3"].map(Value::from).to_vec()),
        ),
    ]);
    let rotation = object(vec![(
        "keepReleases",
        prop_oneof![
            (0i64..10).prop_map(Value::from).boxed(),
            any::<i64>().prop_map(Value::from).boxed(),
            Just(json!(u64::MAX)).boxed(),
            Just(json!(3.0)).boxed(),
            junk().boxed(),
        ]
        .boxed(),
    )]);
    let detached = object(vec![
        (
            "storageMode",
            one_of(["Fs", "S3"].map(Value::from).to_vec()),
        ),
        ("rotation", prop_oneof![4 => rotation, 1 => junk()].boxed()),
    ]);
    let certificates = object(vec![(
        "renewalThresholdPercent",
        prop_oneof![(0i64..100).prop_map(Value::from), junk()].boxed(),
    )]);
    object(vec![
        (
            "mode",
            one_of(
                ["Direct", "Proxy", "Detached", "Mirror", "proxy"]
                    .map(Value::from)
                    .to_vec(),
            ),
        ),
        ("proxy", prop_oneof![6 => proxy, 1 => junk()].boxed()),
        ("detached", prop_oneof![6 => detached, 1 => junk()].boxed()),
        (
            "certificates",
            prop_oneof![4 => certificates, 1 => junk()].boxed(),
        ),
        ("highAvailability", one_of(vec![json!(true), json!(false)])),
    ])
}

fn case() -> impl Strategy<Value = (Value, String, u64)> {
    ("[A-Za-z0-9]{16,24}", 10_000_000_000u64..u64::MAX).prop_flat_map(|(secret, digits)| {
        (
            arb_settings(secret.clone(), digits),
            Just(secret),
            Just(digits),
        )
    })
}

/// The mode and the proxy/detached sections often disagree in random settings; this
/// strategy makes them agree, so the deeper rules (and the hook) are reached too.
fn consistent_case() -> impl Strategy<Value = (Value, String, u64)> {
    case().prop_map(|(mut s, secret, digits)| {
        if let Some(obj) = s.as_object_mut() {
            let mode = if obj.get("proxy").is_some_and(Value::is_object) {
                obj.remove("detached");
                "Proxy"
            } else if obj.get("detached").is_some_and(Value::is_object) {
                obj.remove("highAvailability");
                "Detached"
            } else {
                obj.remove("proxy");
                obj.remove("detached");
                obj.remove("highAvailability");
                "Direct"
            };
            obj.insert("mode".into(), json!(mode));
        }
        (s, secret, digits)
    })
}

/// A valid Proxy configuration with at most one fault: one field replaced, removed or
/// added (random configs rarely get every Proxy field right at once).
fn proxy_case() -> impl Strategy<Value = (Value, String, u64)> {
    let valid =
        |v: &[&str]| prop::sample::select(v.iter().map(|s| Value::from(*s)).collect::<Vec<_>>());
    (
        "[A-Za-z0-9]{16,24}",
        10_000_000_000u64..u64::MAX,
        valid(&["registry.example.com", "h", "h:5000", "r-1.example.com:443"]),
        prop::option::of(valid(&["http", "https"])),
        prop::option::of(valid(&["/deckhouse/ee", "/a", "/a-b/c_d.e"])),
        any::<bool>(),
        prop::option::of(ttl()),
        prop::option::of(any::<bool>()),
        prop::option::of((
            prop::sample::select(vec![
                "host",
                "scheme",
                "path",
                "user",
                "password",
                "ttl",
                "ca",
                "storageMode",
                "extra",
            ]),
            prop::option::of(junk()),
        )),
    )
        .prop_map(
            |(secret, digits, host, scheme, path, with_user, ttl, ha, fault)| {
                let mut proxy = json!({"host": host});
                for (k, v) in [("scheme", scheme), ("path", path), ("ttl", ttl)] {
                    if let Some(v) = v {
                        proxy[k] = v;
                    }
                }
                if with_user {
                    proxy["user"] = json!("puller");
                    proxy["password"] = json!(secret);
                }
                if let Some((key, value)) = fault {
                    let obj = proxy.as_object_mut().unwrap();
                    match value {
                        Some(v) => obj.insert(key.to_string(), v),
                        None => obj.remove(key),
                    };
                }
                let mut settings = json!({"mode": "Proxy", "proxy": proxy});
                if let Some(ha) = ha {
                    settings["highAvailability"] = json!(ha);
                }
                (settings, secret, digits)
            },
        )
}

fn check_case(raw: &Value, secret: &str, digits: u64) -> Result<(), TestCaseError> {
    let (settings, rules, schema) = validate(raw);
    let digits = digits.to_string();
    // What the converge prints: the rules' error, else the schema's first one.
    if let Some(e) = rules.as_ref().err().or(schema.as_ref().err()) {
        let line = e.to_string();
        prop_assert!(e.field.starts_with("spec.settings"), "{}", line);
        prop_assert!(!line.contains('\n'), "one line: {:?}", line);
        prop_assert!(!line.contains(secret), "the password leaked: {}", line);
        prop_assert!(!line.contains(&digits), "the password leaked: {}", line);
    }
    if let Err(e) = &rules {
        prop_assert!(
            schema.is_err(),
            "settings::check refuses what the schema accepts: {} for {}",
            e,
            settings
        );
    }
    if rules.is_ok() && schema.is_ok() {
        // Accepted: the module values are the settings plus values defaults, and the
        // hook that reads them typed must run on them.
        let mut module = settings.clone();
        schemas().values.apply_defaults(&mut module);
        module["internal"] = json!({"masters": [{"name": "m", "internalIP": "10.0.0.1"}]});
        let hook = embedded_registry::hooks::resolve_mode::hook();
        let out = HookTest::new()
            .values(json!({"global": {}, "embeddedRegistry": module}))
            .lifecycle("beforeHelm")
            .run(&hook);
        prop_assert!(
            out.is_ok(),
            "accepted settings fail resolve-mode: {:#} for {}",
            out.err().unwrap(),
            settings
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_settings_are_accepted_or_refused_cleanly((raw, secret, digits) in case()) {
        check_case(&raw, &secret, digits)?;
    }

    #[test]
    fn consistent_settings_reach_every_rule((raw, secret, digits) in consistent_case()) {
        check_case(&raw, &secret, digits)?;
    }

    #[test]
    fn proxy_settings_with_one_fault((raw, secret, digits) in proxy_case()) {
        check_case(&raw, &secret, digits)?;
    }

    #[test]
    fn non_objects_are_refused_naming_the_settings(
        v in prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            prop::collection::vec(junk(), 0..3).prop_map(Value::from),
            "\\PC{0,10}".prop_map(Value::from),
        ]
    ) {
        let (_, rules, schema) = validate(&v);
        let e = rules.expect_err("settings must be an object");
        prop_assert_eq!(e.field.as_str(), "spec.settings");
        prop_assert!(schema.is_err());
    }
}
