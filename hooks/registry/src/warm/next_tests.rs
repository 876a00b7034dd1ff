use std::path::Path;

use serde_json::json;

use super::*;
use crate::warm::list::{ListFile, Ref, WantedList};

fn d(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

fn release(name: &str, version: Value, phase: &str) -> Announced {
    Announced {
        name: json!(name),
        version,
        phase: json!(phase),
    }
}

#[test]
fn pending_releases_newer_than_the_running_one_the_newest_two() {
    let rs = vec![
        release("v1-66-0", json!("v1.66.0"), "Deployed"),
        release("v1-67-0", json!("v1.67.0"), "Pending"),
        release("v1-67-1", json!("v1.67.1"), "Pending"),
        release("v1-67-1-again", json!("v1.67.1"), "Pending"),
        release("v1-68-0", json!("v1.68.0"), "Pending"),
        release("v1-69-0", json!("v1.69.0"), "Suspended"),
        release("v1-65-9", json!("v1.65.9"), "Pending"),
        release("v1-66-0-p", json!("v1.66.0"), "Pending"),
    ];
    let s = select("v1.66.0", &rs);
    assert_eq!(s.next, vec!["v1.67.1", "v1.68.0"]);
    assert_eq!(s.left_out, 1, "v1.67.0 is older than the two kept");
    assert!(s.refused.is_empty());
    // Numbers, not text: v1.100.0 is newer than v1.99.0.
    let s = select("v1.99.0", &[release("a", json!("v1.100.0"), "Pending")]);
    assert_eq!(s.next, vec!["v1.100.0"]);
    // A development build has no next release; twice the same input, the same choice.
    assert_eq!(select("dev", &rs), Selection::default());
    assert_eq!(select("v1.66.0", &rs), select("v1.66.0", &rs));
}

#[test]
fn hostile_releases_are_refused_in_one_line_and_never_chosen() {
    let rs = vec![
        release("evil", json!("v1.67.0/../../etc"), "Pending"),
        release("evil2", json!("v1.67.0\nx"), "Pending"),
        release("huge", json!(format!("v1.{}.0", "9".repeat(40))), "Pending"),
        release("num", json!(167), "Pending"),
        release("rc", json!("v1.67.0-rc.1"), "Pending"),
        release("ok", json!("v1.67.2"), "Pending"),
    ];
    let s = select("v1.66.0", &rs);
    assert_eq!(s.next, vec!["v1.67.2"]);
    assert_eq!(s.refused.len(), 5, "{:?}", s.refused);
    for r in &s.refused {
        assert!(!r.contains('\n') && r.contains("spec.version"), "{r}");
    }
    assert!(Version::parse(&format!("v1.{}.0", "9".repeat(40))).is_none());
    assert_eq!(Version::parse("v1.2.3"), Some(Version(1, 2, 3)));
}

#[test]
fn the_list_file_names_the_next_releases_and_a_bad_one_never_refuses_the_running_list() {
    let file = json!({"base": "r.example/deckhouse/ee", "deckhouseVersion": "v1.66.0",
        "digests": {"m": {"a": d('a')}},
        "next": ["v1.68.0", "v1.67.0", "v1.69.0", "v1.66.0", "v1.0.0", "../x", 5]});
    let f = ListFile::parse(file.to_string().as_bytes()).unwrap();
    assert_eq!(f.next, vec!["v1.68.0", "v1.69.0"]);
    assert_eq!(f.refused_next.len(), 2, "{:?}", f.refused_next);
    assert!(f.refused_next.iter().all(|r| !r.contains('\n')));
    // The running list (and its hash) is the one without `next`.
    let mut plain = file.clone();
    plain.as_object_mut().unwrap().remove("next");
    assert_eq!(
        f.running.as_ref().unwrap().hash(),
        WantedList::from_file_text(plain.to_string().as_bytes())
            .unwrap()
            .unwrap()
            .hash()
    );
    let mut bad = file.clone();
    bad["next"] = json!({"v1.67.0": true});
    let f = ListFile::parse(bad.to_string().as_bytes()).unwrap();
    assert!(f.next.is_empty() && f.running.is_some() && f.refused_next.len() == 1);
}

/// A blob stored and linked in `repo`, as distribution's filesystem driver keeps it.
fn put_blob(root: &Path, repo: &str, data: &[u8], manifest: bool) -> String {
    use sha2::{Digest as _, Sha256};
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let v2 = root.join("docker/registry/v2");
    let dir = v2.join("blobs/sha256").join(&hex[..2]).join(&hex);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("data"), data).unwrap();
    let digest = format!("sha256:{hex}");
    let kind = if manifest {
        "_manifests/revisions"
    } else {
        "_layers"
    };
    let link = v2
        .join("repositories")
        .join(repo)
        .join(kind)
        .join("sha256")
        .join(&hex);
    std::fs::create_dir_all(&link).unwrap();
    std::fs::write(link.join("link"), &digest).unwrap();
    digest
}

fn tar_gz(files: &[(&str, &[u8])]) -> Vec<u8> {
    crate::rotation::layer::test_layer(files, true)
}

/// The platform image `:tag` with these layers (bottom first), tagged in the store.
fn put_platform(root: &Path, repo: &str, tag: &str, layers: &[Vec<u8>]) {
    let config = put_blob(root, repo, b"{}", false);
    let layers: Vec<Value> = layers
        .iter()
        .map(|l| json!({"digest": put_blob(root, repo, l, false), "size": l.len()}))
        .collect();
    let m = json!({"schemaVersion": 2, "config": {"digest": config, "size": 2}, "layers": layers});
    let md = put_blob(root, repo, m.to_string().as_bytes(), true);
    let t = root
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_manifests/tags")
        .join(tag)
        .join("current");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("link"), md).unwrap();
}

#[test]
fn the_next_list_is_read_from_the_platform_image_in_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let repo = "deckhouse/ee";
    let modules =
        json!({"common": {"pause": d('a'), "proxy": d('b')}, "ingress": {"nginx": d('c')}});
    let candi = json!({"common": {"pause": d('e')}});
    let top = tar_gz(&[
        (
            "deckhouse/modules/images_digests.json",
            modules.to_string().as_bytes(),
        ),
        (
            "deckhouse/candi/images_digests.json",
            candi.to_string().as_bytes(),
        ),
    ]);
    let below = tar_gz(&[("deckhouse/modules/images_digests.json", b"{\"old\": {}}")]);
    put_platform(
        dir.path(),
        repo,
        "v1.67.0",
        &[below, top, tar_gz(&[("bin/x", b"x")])],
    );
    let store = Store::new(dir.path());
    let digests = release_digests(&store, repo, "v1.67.0").unwrap();
    assert_eq!(
        digests.keys().collect::<Vec<_>>(),
        vec!["candi/common", "common", "ingress"],
        "the topmost layer that has the files; candi's modules apart"
    );
    let l = WantedList::build(
        "up.example/deckhouse/ee",
        "v1.67.0",
        &serde_json::to_value(&digests).unwrap(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(
        l.images,
        vec![
            Ref::Digest(d('a')),
            Ref::Digest(d('b')),
            Ref::Digest(d('c')),
            Ref::Digest(d('e')),
            Ref::Tag("v1.67.0".into())
        ]
    );
    // Not (yet) in the cache.
    assert_eq!(
        release_digests(&store, repo, "v1.68.0"),
        Err(DigestsError::NotCached("v1.68.0".into()))
    );
}

#[test]
fn hostile_platform_images_are_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let repo = "deckhouse/ee";
    let huge = vec![b' '; (LAYER_LIMITS.max_file + 1) as usize];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "v1.0.1",
            tar_gz(&[("deckhouse/modules/images_digests.json", &huge)]),
            "more than 4194304",
        ),
        (
            "v1.0.2",
            tar_gz(&[("deckhouse/modules/images_digests.json", b"[1, 2]")]),
            "not a map of modules",
        ),
        (
            "v1.0.3",
            tar_gz(&[("deckhouse/modules/images_digests.json", b"{\"m\": [\"x\"]}")]),
            "not a map of modules",
        ),
    ];
    for (tag, layer, _) in &cases {
        put_platform(dir.path(), repo, tag, std::slice::from_ref(layer));
    }
    put_platform(dir.path(), repo, "v1.0.5", &[tar_gz(&[("etc/x", b"x")])]);
    let store = Store::new(dir.path());
    for (tag, _, why) in &cases {
        let e = release_digests(&store, repo, tag).unwrap_err();
        let line = e.to_string();
        assert!(matches!(e, DigestsError::Refused(..)), "{tag}: {line}");
        assert!(line.contains(why) && !line.contains('\n'), "{tag}: {line}");
    }
    assert_eq!(
        release_digests(&store, repo, "v1.0.5"),
        Err(DigestsError::NoFile("v1.0.5".into()))
    );
}
