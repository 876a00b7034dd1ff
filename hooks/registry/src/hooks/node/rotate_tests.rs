//! Unit tests of the `rotate` hook.

use super::*;
use crate::hooks::node::cluster::{config_map, scheduled, secret};
use crate::module::NAMESPACE;
use serde_json::Value;

/// The node these tests run on.
const NODE: &str = "master-0";

fn run(objects: &[Value]) -> hook_sdk::testing::TestOutput {
    let hook = Hook::new(config(NODE), handle);
    scheduled(&hook, "daily", objects).run(&hook).unwrap()
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

/// `node`'s config Secret: its registry on `addr`, trusted through a fresh CA.
fn node_config(node: &str, addr: &str) -> Value {
    let ca = crate::pki::new_ca("test-ca", 1_700_000_000, 86_400 * 3650)
        .unwrap()
        .cert;
    secret(
        NAMESPACE,
        &node_config_secret(node),
        &[
            (
                "config.distribution.yaml",
                &format!("http:\n  addr: {addr}\n"),
            ),
            ("pki.ca.crt", &ca),
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
    did_nothing(&run(&[]));
}

/// The bindings select by namespace, name and kind: with any one input present only as
/// look-alikes (the ConfigMap in another namespace or as a Secret, another master's
/// Secret, this node's Secret in another namespace, the `ro` user), the hook does
/// nothing; with the real inputs it runs (and fails: nothing listens on the address).
#[test]
fn objects_the_bindings_do_not_select_are_ignored() {
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
    let out = run(&real());
    assert!(
        out.metrics
            .iter()
            .any(|m| m.name == "d8_embedded_registry_rotation_failed"),
        "{:?}",
        out.metrics
    );
}

#[test]
fn an_unreachable_registry_is_a_failed_metric_and_no_password_leaks() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = run(&[
        rotation_config(NAMESPACE),
        node_config(NODE, &format!("127.0.0.1:{port}")),
        user(Role::Rw),
    ]);
    let failed = out
        .metrics
        .iter()
        .find(|m| m.name == "d8_embedded_registry_rotation_failed")
        .unwrap();
    assert_eq!(failed.value, Some(1.0));
    assert!(!out.metrics.iter().any(|m| m.group == SUCCESS_GROUP));
    assert!(!format!("{:?}", out.metrics).contains("S3cret"));
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
        let e = restart_for_gc(r, "127.0.0.1:9", "", Duration::ZERO, Duration::ZERO).unwrap_err();
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
        let manifest_path = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
        if link != MANIFEST_DIR && !link.ends_with(MANIFEST_FILE) {
            assert_eq!(manifest_path.exists(), manifest, "{link}: nothing moved");
        }
    }
}
