//! The storage check as a switch step, through the hook: the cluster is built from YAML
//! through the hook's own bindings ([`HookTest::cluster_state`]), the S3 bucket is a
//! fake [`storage::Checker`] that records the spec it was given (the real one is proven
//! end to end against Garage, `tests/test_switch_storage.py`).

use std::cell::RefCell;

use hook_sdk::testing::{HookTest, TestOutput};
use serde_json::{json, Value};

use crate::module::{NAMESPACE, PULL_SECRET, STATE_SECRET};
use crate::secrets::b64;
use crate::storage::{self, Failure, Kind, Report, Spec};

const SECRET_KEY: &str = "S3cr3t-n0t-t0-be-sh0wn";

thread_local! {
    /// What the fake bucket answers (`None`: usable) and the specs it was asked.
    static BUCKET: RefCell<(Option<Kind>, Vec<Spec>)> = const { RefCell::new((None, Vec::new())) };
}

/// A bucket answering as [`BUCKET`] says.
struct Bucket;

impl storage::Checker for Bucket {
    fn check(&self, spec: &Spec) -> Report {
        BUCKET.with(|b| {
            let mut b = b.borrow_mut();
            b.1.push(spec.clone());
            let failure = b.0.map(|k| {
                Failure::new(
                    k,
                    format!("{}: refused (fake); fix s3.secretKey", spec.s3.endpoint),
                )
            });
            Report {
                ok: failure.is_none(),
                endpoint: spec.s3.endpoint.clone(),
                bucket: spec.s3.bucket.clone(),
                region: spec.s3.region.clone(),
                failure,
                steps: vec![],
                requests: 1,
                elapsed_ms: 0,
            }
        })
    }
}

/// Every upstream refuses connections (as the hook's other tests' `Offline`).
struct Unreachable;

impl crate::upstream::Checker for Unreachable {
    fn check(&self, spec: &crate::upstream::Spec) -> crate::upstream::Report {
        use crate::distribution::{Failure, Kind};
        crate::upstream::Report {
            ok: false,
            registry: format!("{}://{}", spec.scheme, spec.host),
            auth: String::new(),
            failure: Some(Failure::new(Kind::Connect, "cannot connect (fake)")),
            images: vec![],
            requests: 0,
            token_requests: 0,
            elapsed_ms: 0,
        }
    }
}

fn handle(input: &mut hook_sdk::HookInput) -> anyhow::Result<()> {
    super::handle_with(input, &Unreachable, &Bucket)
}

fn s3(secret: &str) -> Value {
    json!({"endpoint": "https://s3.example.com:3900", "region": "garage", "bucket": "registry",
           "rootDirectory": "/er", "accessKey": "GK1", "secretKey": secret,
           "forcePathStyle": true})
}

/// A beforeHelm run with `settings` (the module's section), two masters, HA as given,
/// the bucket answering `answer`; returns the output and the specs the bucket was asked.
fn run(settings: Value, ha: bool, answer: Option<Kind>) -> (TestOutput, Vec<Spec>) {
    run_with(settings, ha, answer, "")
}

/// [`run`] on a cluster that also holds `objects` (YAML documents).
fn run_with(
    settings: Value,
    ha: bool,
    answer: Option<Kind>,
    objects: &str,
) -> (TestOutput, Vec<Spec>) {
    BUCKET.with(|b| *b.borrow_mut() = (answer, Vec::new()));
    let mut er = settings;
    er["internal"] = json!({
        "masters": [{"name": "m1", "internalIP": "10.0.0.1"}, {"name": "m2", "internalIP": "10.0.0.2"}],
        "highAvailability": ha,
        "pki": {"httpSecret": "k", "caBundle": "CA"}});
    let pull = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {PULL_SECRET}\n  namespace: {NAMESPACE}\ntype: Opaque\ndata:\n  address: {}\n  path: {}\n",
        b64("registry.example.com"),
        b64("/deckhouse/ee"),
    );
    let out = HookTest::new()
        .values(json!({"global": {}, "embeddedRegistry": er}))
        .lifecycle("beforeHelm")
        .cluster_state(&(pull + objects))
        .run(&hook_sdk::Hook::new(super::hook().config, handle))
        .expect("the hook runs");
    (out, BUCKET.with(|b| b.borrow().1.clone()))
}

fn switch(out: &TestOutput) -> Value {
    out.values["embeddedRegistry"]["internal"]["switch"].clone()
}

/// The state the run wrote.
fn state(out: &TestOutput) -> Value {
    use base64::Engine as _;
    let text = out
        .objects
        .iter()
        .filter_map(|o| o.object.as_ref())
        .find(|o| o["metadata"]["name"] == STATE_SECRET)
        .and_then(|o| o["data"]["state.json"].as_str())
        .expect("a state is written");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn condition(state: &Value, type_: &str) -> (String, String) {
    let c = state["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap();
    (
        c["status"].as_str().unwrap().into(),
        c["reason"].as_str().unwrap().into(),
    )
}

fn check_metric(out: &TestOutput) -> (f64, String, String) {
    let m = out
        .metrics
        .iter()
        .rev()
        .find(|m| m.name == "d8_embedded_registry_check_ok")
        .expect("the check metric");
    (
        m.value.unwrap(),
        m.labels["check"].clone(),
        m.labels["kind"].clone(),
    )
}

fn detached_on_s3(secret: &str) -> Value {
    json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": s3(secret)}})
}

#[test]
fn a_bucket_that_fails_its_check_is_never_rendered_and_the_failure_is_named() {
    let (out, asked) = run(detached_on_s3("wrong"), true, Some(Kind::BadCredentials));
    assert_eq!(asked.len(), 1, "the bucket of the target is checked once");
    let spec = &asked[0];
    assert_eq!(
        (
            spec.s3.endpoint.as_str(),
            spec.s3.bucket.as_str(),
            spec.s3.root_directory.as_str(),
            spec.s3.secret_key.as_str()
        ),
        ("https://s3.example.com:3900", "registry", "/er", "wrong")
    );
    assert_eq!(spec.budget, crate::switch::check::STORAGE_BUDGET);
    let sw = switch(&out);
    assert!(sw.get("registry").is_none(), "no registry rendered: {sw}");
    assert_eq!(
        (
            &sw["check"]["what"],
            &sw["check"]["ok"],
            &sw["check"]["kind"]
        ),
        (&json!("storage"), &json!(false), &json!("bad-credentials"))
    );
    let st = state(&out);
    assert_eq!(
        condition(&st, "Ready"),
        ("False".into(), "StorageCheckFailed".into())
    );
    assert_eq!(
        condition(&st, "ChecksPassed"),
        ("False".into(), "CheckBadCredentials".into())
    );
    assert_eq!(
        check_metric(&out),
        (0.0, "storage".into(), "bad-credentials".into())
    );
}

#[test]
fn a_bucket_that_passes_is_rendered_on_every_master_with_ha() {
    let (out, asked) = run(detached_on_s3(SECRET_KEY), true, None);
    assert_eq!(asked.len(), 1);
    let sw = switch(&out);
    let r = &sw["registry"];
    assert_eq!(r["mode"], json!("Detached"));
    assert_eq!(r["nodes"], json!(["m1", "m2"]), "HA on S3: every master");
    assert_eq!(
        (
            &r["s3"]["bucket"],
            &r["s3"]["rootDirectory"],
            &r["s3"]["secretKey"]
        ),
        (&json!("registry"), &json!("/er"), &json!(SECRET_KEY))
    );
    assert_eq!(
        (&sw["check"]["what"], &sw["check"]["ok"]),
        (&json!("storage"), &json!(true))
    );
    assert_eq!(check_metric(&out), (1.0, "storage".into(), String::new()));
    // The secret key is in the rendered target only: not in the check, its message
    // or the generation.
    let shown = json!([sw["check"], r["generation"], out.metrics.len()]).to_string();
    assert!(!shown.contains(SECRET_KEY));
    // Without HA, one master.
    let (out, _) = run(detached_on_s3(SECRET_KEY), false, None);
    assert_eq!(switch(&out)["registry"]["nodes"], json!(["m1"]));

    // A new secret key is a new generation, checked before it is rendered.
    let (wrong, _) = run(detached_on_s3("changed"), true, Some(Kind::BadCredentials));
    let (right, _) = run(detached_on_s3("changed"), true, None);
    assert!(switch(&wrong).get("registry").is_none());
    assert_ne!(
        switch(&right)["registry"]["generation"],
        r["generation"],
        "the secret key is in the generation's HMAC"
    );
}

#[test]
fn proxy_on_s3_checks_the_bucket_then_the_upstream_in_one_run() {
    let settings = json!({"mode": "Proxy", "proxy": {"host": "registry.example.com",
        "path": "/deckhouse/ee", "storageMode": "S3", "s3": s3(SECRET_KEY)}});
    let (out, asked) = run(settings.clone(), true, None);
    assert_eq!(asked.len(), 1);
    let sw = switch(&out);
    assert!(sw.get("registry").is_none(), "the upstream is unreachable");
    assert_eq!(
        (&sw["check"]["what"], &sw["check"]["kind"]),
        (&json!("upstream"), &json!("connect"))
    );
    assert_eq!(
        condition(&state(&out), "Ready"),
        ("False".into(), "UpstreamCheckFailed".into())
    );
    // A bucket that fails stops the switch before the upstream is asked.
    let (out, _) = run(settings, true, Some(Kind::NoBucket));
    assert_eq!(
        (
            &switch(&out)["check"]["what"],
            &switch(&out)["check"]["kind"]
        ),
        (&json!("storage"), &json!("no-bucket"))
    );
    assert_eq!(
        condition(&state(&out), "ChecksPassed"),
        ("False".into(), "CheckNoBucket".into())
    );
}

#[test]
fn fs_asks_no_storage_check() {
    let (out, asked) = run(
        json!({"mode": "Detached", "detached": {"storageMode": "Fs"}}),
        true,
        None,
    );
    assert!(asked.is_empty());
    let r = &switch(&out)["registry"];
    assert!(r.get("s3").is_none());
    assert_eq!(r["nodes"], json!(["m1"]), "Fs is never HA");
}

/// The S3 secret key's revision (what the chart hashes in the key's place): random,
/// kept in the state while the key is, whatever else changes, renewed with a new key.
#[test]
fn the_s3_secret_key_keeps_its_revision_until_it_changes() {
    let (first, _) = run(detached_on_s3(SECRET_KEY), true, None);
    let revision = switch(&first)["s3SecretKeyRevision"].clone();
    assert!(
        crate::secrets::is_revision(revision.as_str().unwrap()),
        "{revision}"
    );
    let stored = |out: &TestOutput| {
        format!(
            "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {STATE_SECRET}\n  namespace: {NAMESPACE}\ntype: Opaque\ndata:\n  state.json: {}\n",
            b64(&state(out).to_string())
        )
    };
    let kept = stored(&first);
    // The same key on one master less (a new generation): the same revision.
    let (fewer, _) = run_with(detached_on_s3(SECRET_KEY), false, None, &kept);
    assert_eq!(switch(&fewer)["registry"]["nodes"], json!(["m1"]));
    assert_eq!(switch(&fewer)["s3SecretKeyRevision"], revision);
    // A new key: a new revision; a new key that fails its check: the old target and
    // its revision stay.
    let (changed, _) = run_with(detached_on_s3("changed"), true, None, &kept);
    assert_ne!(switch(&changed)["s3SecretKeyRevision"], revision);
    let (refused, _) = run_with(
        detached_on_s3("wrong"),
        true,
        Some(Kind::BadCredentials),
        &kept,
    );
    assert_eq!(switch(&refused)["s3SecretKeyRevision"], revision);
    // No S3: no revision.
    let (fs, _) = run(json!({"mode": "Detached", "detached": {}}), false, None);
    assert!(switch(&fs).get("s3SecretKeyRevision").is_none());
}
