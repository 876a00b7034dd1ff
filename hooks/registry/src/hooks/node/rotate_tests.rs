//! Unit tests of the `rotate` hook. The registry is a fake ([`Fake`]): no test here
//! opens a socket; the real registry is exercised end to end (`tests/test_rotation*.py`).
//!
//! Above 400 lines: one file for the hook's scenarios, which share the fake registry
//! and the cluster builders above them.

use std::cell::RefCell;
use std::collections::VecDeque;

use super::*;
use crate::hooks::node::cluster::{config_map, scheduled, secret};
use crate::hooks::node::node_files::{MANIFEST_DIR, MANIFEST_FILE};
use crate::module::NAMESPACE;
use crate::rotation::apply::Applied;
use crate::rotation::plan::{KeptRelease, Plan};
use crate::rotation::run::{Report, Stop};
use serde_json::Value;

/// The node these tests run on.
const NODE: &str = "master-0";

/// What the fake registry answers and what it was asked, per test thread.
#[derive(Default)]
struct FakeState {
    /// The report every `execute` returns.
    report: Report,
    /// The jobs it was given.
    jobs: Vec<Job>,
    /// Successive answers of `answers` (then `true`).
    answers: VecDeque<bool>,
    /// The `(addr, ca)` of every `answers` call.
    asked: Vec<(String, String)>,
    /// The host root the handler is given.
    root: PathBuf,
}

thread_local! {
    static FAKE: RefCell<FakeState> = RefCell::new(FakeState::default());
}

/// The registry of these tests: reads and records [`FAKE`].
struct Fake;

impl Registry for Fake {
    fn execute(&self, job: &Job) -> Report {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            f.jobs.push(job.clone());
            f.report.clone()
        })
    }

    fn answers(&self, addr: &str, ca_pem: &str) -> bool {
        FAKE.with(|f| {
            let mut f = f.borrow_mut();
            f.asked.push((addr.to_string(), ca_pem.to_string()));
            f.answers.pop_front().unwrap_or(true)
        })
    }
}

fn handle_fake(input: &mut HookInput) -> anyhow::Result<()> {
    let root = FAKE.with(|f| f.borrow().root.clone());
    handle_with(input, NODE, &root, &Fake)
}

/// Sets the fake's report, answers and host root for this thread's next runs.
fn fake(report: Report, answers: &[bool], root: &Path) {
    FAKE.with(|f| {
        *f.borrow_mut() = FakeState {
            report,
            answers: answers.iter().copied().collect(),
            root: root.to_path_buf(),
            ..Default::default()
        }
    });
}

/// The jobs the fake was given and the `(addr, ca)` it was asked about.
fn fake_calls() -> (Vec<Job>, Vec<(String, String)>) {
    FAKE.with(|f| {
        let f = f.borrow();
        (f.jobs.clone(), f.asked.clone())
    })
}

/// A report that stopped at `connect`, as one against an address nothing listens on.
fn unreachable() -> Report {
    Report {
        mode: "apply".into(),
        failure: Some(Stop {
            stage: "connect",
            kind: Some(crate::distribution::Kind::Connect),
            message: "nothing was deleted: https://127.0.0.1:9/v2/: cannot connect (fake)".into(),
        }),
        ..Default::default()
    }
}

/// A successful report that kept `kept` releases and deleted `deleted` manifests.
fn applied(kept: usize, deleted: usize, freed: u64) -> Report {
    Report {
        ok: true,
        mode: "apply".into(),
        plan: Some(Plan {
            kept: (0..kept)
                .map(|i| KeptRelease {
                    tag: format!("v1.{i}.0"),
                    reasons: vec!["latest".into()],
                })
                .collect(),
            freed_bytes: freed,
            ..Default::default()
        }),
        applied: Some(Applied {
            deleted,
            freed_bytes: freed,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn run(objects: &[Value]) -> hook_sdk::testing::TestOutput {
    let hook = Hook::new(config(NODE), handle_fake);
    scheduled(&hook, "daily", objects).run(&hook).unwrap()
}

/// The value of metric `name` (the last set), if set.
fn metric(out: &hook_sdk::testing::TestOutput, name: &str) -> Option<f64> {
    out.metrics
        .iter()
        .rev()
        .find(|m| m.name == name)
        .and_then(|m| m.value)
}

/// The chart's rotation ConfigMap (rotation enabled) in `namespace`.
fn rotation_config(namespace: &str) -> Value {
    config_map(
        namespace,
        CONFIG_MAP,
        &[
            ("enabled", "true"),
            ("keepReleases", "3"),
            ("minAge", "24h"),
            ("path", "/deckhouse/ee"),
        ],
    )
}

/// A CA certificate (PEM) the node's Secret carries.
fn test_ca() -> String {
    crate::pki::new_ca("test-ca", 1_700_000_000, 86_400 * 3650)
        .unwrap()
        .cert
}

/// `node`'s config Secret: its registry on `addr`, trusted through a fresh CA.
fn node_config(node: &str, addr: &str) -> Value {
    node_config_with(node, addr, &test_ca())
}

/// `node`'s config Secret: its registry on `addr`, trusted through `ca`.
fn node_config_with(node: &str, addr: &str, ca: &str) -> Value {
    secret(
        NAMESPACE,
        &node_config_secret(node),
        &[
            (
                "config.distribution.yaml",
                &format!("http:\n  addr: {addr}\n"),
            ),
            ("pki.ca.crt", ca),
        ],
    )
}

/// The user Secret of `role`.
fn user(role: Role) -> Value {
    secret(
        NAMESPACE,
        &user_secret(role),
        &[("name", role.as_str()), ("password", "S3cret-Passw0rd")],
    )
}

/// The metric operations of a run that found no input: only the group's expiry.
fn did_nothing(out: &hook_sdk::testing::TestOutput) {
    assert!(out.objects.is_empty());
    assert_eq!(
        out.metrics.len(),
        1,
        "only the group expiry: {:?}",
        out.metrics
    );
}

#[test]
fn settings_are_checked() {
    let m = |kv: &[(&str, &str)]| -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    let s = settings(&m(&[
        ("enabled", "true"),
        ("keepReleases", "3"),
        ("minAge", "24h"),
        ("path", "/deckhouse/ee"),
        ("runningReleases", "v1.66.3, "),
    ]))
    .unwrap();
    assert_eq!(
        (s.keep, s.min_age_secs, s.path.as_str()),
        (3, 86400, "deckhouse/ee")
    );
    assert_eq!(s.running, ["v1.66.3"]);
    let e = settings(&m(&[
        ("keepReleases", "0"),
        ("minAge", "1h"),
        ("path", "p"),
    ]))
    .unwrap_err();
    assert!(e.to_string().contains("keepReleases"));
    let e = settings(&m(&[("keepReleases", "2"), ("minAge", "x"), ("path", "p")])).unwrap_err();
    assert!(e.to_string().contains("minAge"));
}

#[test]
fn without_its_inputs_the_hook_does_nothing() {
    fake(unreachable(), &[], Path::new("/nonexistent"));
    did_nothing(&run(&[]));
    let (jobs, asked) = fake_calls();
    assert!(jobs.is_empty() && asked.is_empty());
}

/// The bindings select by namespace, name and kind: with any one input present only as
/// look-alikes (the ConfigMap in another namespace or as a Secret, another master's
/// Secret, this node's Secret in another namespace, the `ro` user), the hook does
/// nothing; with the real inputs it runs the job they describe (and fails: the registry
/// is unreachable).
#[test]
fn objects_the_bindings_do_not_select_are_ignored() {
    fake(unreachable(), &[], Path::new("/nonexistent"));
    let addr = "127.0.0.1:9";
    let real = || {
        vec![
            rotation_config(NAMESPACE),
            node_config(NODE, addr),
            user(Role::Rw),
        ]
    };
    let mut elsewhere = node_config(NODE, addr);
    elsewhere["metadata"]["namespace"] = "d8-monitoring".into();
    let look_alikes = [
        vec![
            rotation_config("d8-monitoring"),
            secret(NAMESPACE, CONFIG_MAP, &[("enabled", "true")]),
        ],
        vec![node_config("control-1", addr), elsewhere],
        vec![user(Role::Ro)],
    ];
    for (i, fakes) in look_alikes.into_iter().enumerate() {
        let mut objects = real();
        objects.remove(i);
        objects.extend(fakes);
        did_nothing(&run(&objects));
    }
    assert!(fake_calls().0.is_empty(), "no job without all three inputs");
    let out = run(&real());
    assert_eq!(
        metric(&out, "d8_embedded_registry_rotation_failed"),
        Some(1.0),
        "{:?}",
        out.metrics
    );
    let (jobs, asked) = fake_calls();
    assert_eq!(jobs.len(), 1);
    assert!(asked.is_empty(), "nothing deleted: no restart");
    let job = &jobs[0];
    assert_eq!(
        (job.endpoint.scheme.as_str(), job.endpoint.host.as_str()),
        ("https", addr)
    );
    assert!(job.endpoint.ca_only && job.endpoint.ca_pem.is_some());
    let creds = job.endpoint.credentials.as_ref().unwrap();
    assert_eq!(
        (creds.user.as_str(), creds.password.as_str()),
        ("rw", "S3cret-Passw0rd")
    );
    assert_eq!(job.path, "deckhouse/ee");
    assert!(job.apply);
    assert_eq!((job.policy.keep, job.policy.min_age_secs), (3, 86_400));
}

#[test]
fn an_unreachable_registry_is_a_failed_metric_and_no_password_leaks() {
    fake(unreachable(), &[], Path::new("/nonexistent"));
    let out = run(&[
        rotation_config(NAMESPACE),
        node_config(NODE, "127.0.0.1:9"),
        user(Role::Rw),
    ]);
    assert_eq!(
        metric(&out, "d8_embedded_registry_rotation_failed"),
        Some(1.0)
    );
    assert!(!out.metrics.iter().any(|m| m.group == SUCCESS_GROUP));
    assert!(!format!("{:?}", out.metrics).contains("S3cret"));
}

/// A host root holding the registry's static pod manifest, as on a master.
fn host_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join(MANIFEST_DIR);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(MANIFEST_FILE), "kind: Pod\n").unwrap();
    root
}

/// A run that deleted manifests restarts the registry for garbage collection: the
/// manifest goes aside until the registry stops answering, comes back, and the registry
/// answers again; the metrics report the run and its success time.
#[test]
fn a_run_that_deleted_restarts_the_registry_and_reports_success() {
    let root = host_root();
    // Stopped at the first look, answering again at the first look.
    fake(applied(3, 7, 4096), &[false, true], root.path());
    let ca = test_ca();
    let out = run(&[
        rotation_config(NAMESPACE),
        node_config_with(NODE, "10.0.0.1:5001", &ca),
        user(Role::Rw),
    ]);
    let m = |n: &str| metric(&out, &format!("d8_embedded_registry_rotation_{n}"));
    assert_eq!(m("failed"), Some(0.0));
    assert_eq!(m("releases_kept"), Some(3.0));
    assert_eq!(m("manifests_deleted"), Some(7.0));
    assert_eq!(m("freed_bytes"), Some(4096.0));
    assert!(m("last_success_timestamp_seconds").unwrap() > 1_700_000_000.0);
    let (_, asked) = fake_calls();
    assert_eq!(asked, vec![("10.0.0.1:5001".to_string(), ca.clone()); 2]);
    let manifest = root.path().join(MANIFEST_DIR).join(MANIFEST_FILE);
    assert_eq!(std::fs::read_to_string(manifest).unwrap(), "kind: Pod\n");
    assert!(!root.path().join(ASIDE_DIR).join(ASIDE_FILE).exists());
}

/// A run that deleted nothing (here: rotation disabled, a plan only) leaves the
/// registry running: nothing is asked of it and the manifest stays.
#[test]
fn a_run_that_deleted_nothing_does_not_restart() {
    let root = host_root();
    let mut report = applied(2, 0, 0);
    report.applied = None;
    report.mode = "dry-run".into();
    fake(report, &[], root.path());
    let mut config = rotation_config(NAMESPACE);
    config["data"]["enabled"] = "false".into();
    let out = run(&[config, node_config(NODE, "10.0.0.1:5001"), user(Role::Rw)]);
    assert_eq!(
        metric(&out, "d8_embedded_registry_rotation_failed"),
        Some(0.0)
    );
    let (jobs, asked) = fake_calls();
    assert!(!jobs[0].apply);
    assert!(asked.is_empty());
    assert!(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).exists());
}

/// A registry that does not stop, or does not come back, is a failed `gc` stage; the
/// manifest is back in kubelet's directory either way.
#[test]
fn a_registry_that_does_not_stop_or_come_back_fails_the_restart() {
    for (answers, want) in [
        (
            &[true][..],
            "did not stop within 0s; garbage collection did not run",
        ),
        (
            &[false, false][..],
            "did not answer within 0s after garbage collection",
        ),
    ] {
        let root = host_root();
        fake(Report::default(), answers, root.path());
        let e = restart_for_gc(
            root.path(),
            "10.0.0.1:5001",
            "",
            &Fake,
            (Duration::ZERO, Duration::ZERO),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("the registry on 10.0.0.1:5001 {want}")
        );
        assert!(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).exists());
        assert!(!root.path().join(ASIDE_DIR).join(ASIDE_FILE).exists());
    }
}

/// A run stopped between the two moves left the manifest aside: the next restart puts
/// it back first, then restarts as usual.
#[test]
fn a_manifest_left_aside_is_put_back() {
    let root = host_root();
    std::fs::create_dir_all(root.path().join(ASIDE_DIR)).unwrap();
    std::fs::rename(
        root.path().join(MANIFEST_DIR).join(MANIFEST_FILE),
        root.path().join(ASIDE_DIR).join(ASIDE_FILE),
    )
    .unwrap();
    fake(Report::default(), &[false, true], root.path());
    restart_for_gc(
        root.path(),
        "10.0.0.1:5001",
        "",
        &Fake,
        (Duration::ZERO, Duration::ZERO),
    )
    .unwrap();
    assert!(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).exists());
    assert!(!root.path().join(ASIDE_DIR).join(ASIDE_FILE).exists());
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(empty.path().join(MANIFEST_DIR)).unwrap();
    let e = restart_for_gc(
        empty.path(),
        "10.0.0.1:5001",
        "",
        &Fake,
        (Duration::ZERO, Duration::ZERO),
    )
    .unwrap_err();
    assert!(matches!(e, GcError::NoManifest(_)), "{e}");
}

/// Each link an attacker could place on the way of the restart's two moves: the run
/// is refused naming the link, before anything moves; the victim keeps its files.
#[test]
fn the_gc_restart_refuses_links_and_moves_nothing() {
    use std::os::unix::fs::symlink;
    let names = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    // (what to link, link target in the victim dir, manifest in place, aside file)
    let cases: [(&str, &str, bool, bool); 4] = [
        // kubelet's directory: the aside file would be "put back" into the victim.
        (MANIFEST_DIR, "", false, true),
        // the aside directory: the manifest would be renamed over the victim's file.
        (ASIDE_DIR, "", true, false),
        // the aside name: a link moved into kubelet's directory as the manifest.
        (
            "etc/kubernetes/registry/embedded-registry.yaml.gc",
            "embedded-registry.yaml.gc",
            false,
            false,
        ),
        // the manifest name itself.
        (
            "etc/kubernetes/manifests/embedded-registry.yaml",
            "embedded-registry.yaml.gc",
            false,
            false,
        ),
    ];
    for (link, to, manifest, aside) in cases {
        let victim = tempfile::tempdir().unwrap();
        std::fs::write(victim.path().join("embedded-registry.yaml.gc"), "keep me\n").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join(MANIFEST_DIR)).unwrap();
        std::fs::create_dir_all(r.join(ASIDE_DIR)).unwrap();
        if manifest {
            std::fs::write(r.join(MANIFEST_DIR).join(MANIFEST_FILE), "kind: Pod\n").unwrap();
        }
        if aside {
            std::fs::write(r.join(ASIDE_DIR).join(ASIDE_FILE), "kind: Pod\n").unwrap();
        }
        let at = r.join(link);
        if at.is_dir() {
            std::fs::remove_dir_all(&at).unwrap();
        }
        symlink(victim.path().join(to), &at).unwrap();
        fake(Report::default(), &[], r);
        let e = restart_for_gc(
            r,
            "127.0.0.1:9",
            "",
            &Fake,
            (Duration::ZERO, Duration::ZERO),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(&format!("{}: a symbolic link", at.display())) && !e.contains('\n'),
            "{link}: {e}"
        );
        assert_eq!(
            names(victim.path()),
            ["embedded-registry.yaml.gc"],
            "{link}"
        );
        assert_eq!(
            std::fs::read_to_string(victim.path().join("embedded-registry.yaml.gc")).unwrap(),
            "keep me\n",
            "{link}"
        );
        assert!(
            std::fs::symlink_metadata(&at).unwrap().is_symlink(),
            "{link}: left as it was"
        );
        assert!(fake_calls().1.is_empty(), "{link}: refused before any wait");
        let manifest_path = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
        if link != MANIFEST_DIR && !link.ends_with(MANIFEST_FILE) {
            assert_eq!(manifest_path.exists(), manifest, "{link}: nothing moved");
        }
    }
}

/// On S3 (`gc: window`) the master the ConfigMap names asks the module for a window
/// instead of restarting: the request carries the run's time and its node, nothing is
/// asked of the registry's liveness and the manifest stays. Any other master does
/// nothing at all.
#[test]
fn on_s3_the_named_master_asks_for_a_window_and_the_others_do_nothing() {
    let root = host_root();
    let on = |node: &str| {
        let mut config = rotation_config(NAMESPACE);
        config["data"]["gc"] = "window".into();
        config["data"]["node"] = node.into();
        config
    };
    let inputs = |config| vec![config, node_config(NODE, "10.0.0.1:5001"), user(Role::Rw)];
    fake(applied(3, 7, 4096), &[false, true], root.path());
    let out = crate::clock::with_now(1_800_000_000, || run(&inputs(on(NODE))));
    assert_eq!(
        metric(&out, "d8_embedded_registry_rotation_failed"),
        Some(0.0)
    );
    let [op] = out.objects.as_slice() else {
        panic!("one request: {:?}", out.objects)
    };
    let obj = op.object.as_ref().unwrap();
    assert_eq!(obj["metadata"]["name"], GC_REQUEST_CONFIG_MAP);
    assert_eq!(obj["data"]["id"], "1800000000");
    assert_eq!(obj["data"]["node"], NODE);
    let (jobs, asked) = fake_calls();
    assert_eq!(jobs.len(), 1);
    assert!(asked.is_empty(), "no restart: {asked:?}");
    assert!(root.path().join(MANIFEST_DIR).join(MANIFEST_FILE).exists());

    fake(applied(3, 7, 4096), &[], root.path());
    did_nothing(&run(&inputs(on("master-1"))));
    assert!(fake_calls().0.is_empty(), "another master rotates");

    let mut bad = on(NODE);
    bad["data"]["gc"] = "sometimes".into();
    let out = run(&inputs(bad));
    assert_eq!(
        metric(&out, "d8_embedded_registry_rotation_failed"),
        Some(1.0)
    );
    assert!(out.objects.is_empty());
}
