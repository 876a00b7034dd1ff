//! Unit tests of `plan`.

use super::*;
use crate::rotation::model::{Blob, Channel, Manifest, ManifestKind, Release};

fn dg(n: u32) -> Digest {
    format!("sha256:{n:064x}")
}

fn image(repo: &mut Repository, d: &Digest, blobs: &[(u32, u64)]) {
    repo.manifests.insert(
        d.clone(),
        Manifest {
            digest: d.clone(),
            kind: ManifestKind::Image,
            size: 100,
            children: vec![],
            blobs: blobs
                .iter()
                .map(|(b, s)| Blob {
                    digest: dg(1_000_000 + b),
                    size: *s,
                })
                .collect(),
            subject: None,
        },
    );
}

/// Releases v1.(60+i).0 for i in 0..n: each an image with a shared base layer
/// (blob 0) and its own layer; module 1000 shared by all, module 2000+i own.
fn mirror(n: u32) -> Catalogue {
    let mut root = Repository::new("deckhouse/ee");
    let mut install = Repository::new("deckhouse/ee/install");
    let mut releases = vec![];
    image(&mut root, &dg(1000), &[(1000, 5000)]);
    for i in 0..n {
        let tag = format!("v1.{}.0", 60 + i);
        let d = dg(i + 1);
        image(&mut root, &d, &[(0, 10_000), (i + 1, 1000)]);
        root.tags.insert(tag.clone(), d.clone());
        image(&mut root, &dg(2000 + i), &[(2000 + i, 300)]);
        let inst = dg(3000 + i);
        image(&mut install, &inst, &[(0, 10_000), (3000 + i, 50)]);
        install.tags.insert(tag.clone(), inst);
        releases.push(Release {
            version: release_version(&tag).unwrap(),
            tag,
            digest: d,
            modules: Some(vec![dg(1000), dg(2000 + i)]),
            created: Some(1_000 + i as i64),
        });
    }
    Catalogue {
        root,
        siblings: vec![install],
        others: vec![],
        releases,
        channels: vec![],
    }
}

fn policy(keep: usize) -> Policy {
    Policy {
        keep,
        keep_releases: vec![],
        min_age_secs: 0,
        now: 10_000,
    }
}

fn digests(p: &Plan) -> Vec<(String, Digest)> {
    p.deletions
        .iter()
        .map(|d| (d.repository.clone(), d.digest.clone()))
        .collect()
}

#[test]
fn keeps_latest_drops_the_rest_leaves_first_releases_last() {
    let cat = mirror(6);
    let p = plan(&cat, &policy(3)).unwrap();
    assert_eq!(
        p.kept.iter().map(|k| k.tag.as_str()).collect::<Vec<_>>(),
        ["v1.65.0", "v1.64.0", "v1.63.0"]
    );
    assert_eq!(p.dropped, ["v1.62.0", "v1.61.0", "v1.60.0"]);
    let gone = digests(&p);
    assert_eq!(gone.len(), 9, "{gone:?}");
    assert!(
        !gone.iter().any(|(_, d)| *d == dg(1000)),
        "shared module stays"
    );
    // Install images first, then modules, then the release manifests.
    let whats: Vec<What> = p.deletions.iter().map(|d| d.what).collect();
    assert_eq!(&whats[..3], [What::SiblingRelease; 3]);
    assert_eq!(&whats[3..6], [What::ModuleImage; 3]);
    assert_eq!(&whats[6..], [What::Release; 3]);
    assert_eq!(p.deletions[8].tags, ["v1.60.0"]);
    // Freed: 3 release layers (1000) + 3 modules (300) + 3 install layers (50) +
    // 9 manifests (100); the shared base layer stays.
    assert_eq!(p.freed_bytes, 3 * 1000 + 3 * 300 + 3 * 50 + 9 * 100);
}

#[test]
fn running_channel_and_young_releases_stay() {
    let mut cat = mirror(6);
    cat.channels = vec![
        Channel {
            name: "stable".into(),
            version: Some("v1.60.0".into()),
        },
        Channel {
            name: "alpha".into(),
            version: Some("v1.99.0".into()),
        },
    ];
    let mut pol = policy(2);
    pol.keep_releases = vec!["1.61.0".into()];
    pol.min_age_secs = 10_000 - 1_003; // v1.63.0 was built at 1003
    let p = plan(&cat, &pol).unwrap();
    let kept: Vec<(&str, Vec<&str>)> = p
        .kept
        .iter()
        .map(|k| {
            (
                k.tag.as_str(),
                k.reasons.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        kept,
        [
            ("v1.65.0", vec!["latest", "young"]),
            ("v1.64.0", vec!["latest", "young"]),
            ("v1.61.0", vec!["running"]),
            ("v1.60.0", vec!["channel:stable"]),
        ]
    );
    assert_eq!(p.dropped, ["v1.63.0", "v1.62.0"]);
    assert!(p
        .warnings
        .iter()
        .any(|w| w.contains("alpha") && w.contains("v1.99.0")));
}

#[test]
fn a_digest_a_retained_tag_shares_is_never_deleted() {
    let mut cat = mirror(4);
    // v1.60.0 and an unknown tag `pinned` share a digest; a dropped release lists a
    // module image that is also the kept release's own manifest.
    cat.root.tags.insert("pinned".into(), dg(1));
    cat.releases[1].modules.as_mut().unwrap().push(dg(4));
    // Same digest under a dropped and a kept release tag.
    cat.root.tags.insert("v1.59.0".into(), dg(4));
    cat.releases.push(Release {
        tag: "v1.59.0".into(),
        version: release_version("v1.59.0").unwrap(),
        digest: dg(4),
        modules: Some(vec![]),
        created: Some(1),
    });
    let p = plan(&cat, &policy(1)).unwrap();
    let gone: Vec<Digest> = p.deletions.iter().map(|d| d.digest.clone()).collect();
    assert!(!gone.contains(&dg(1)), "pinned by an unknown tag");
    assert!(!gone.contains(&dg(4)), "the kept release's digest");
    assert!(gone.contains(&dg(2)) && gone.contains(&dg(3)));
}

#[test]
fn index_children_and_signatures_follow_their_parent() {
    let mut cat = mirror(2);
    // v1.60.0 becomes an index of two children; each release image is signed.
    let idx = dg(1);
    let (a, b) = (dg(500), dg(501));
    image(&mut cat.root, &a, &[(500, 7)]);
    image(&mut cat.root, &b, &[(501, 7)]);
    cat.root.manifests.get_mut(&idx).unwrap().kind = ManifestKind::Index;
    cat.root.manifests.get_mut(&idx).unwrap().children = vec![a.clone(), b.clone()];
    cat.root.manifests.get_mut(&idx).unwrap().blobs.clear();
    for (n, subject) in [(600, dg(1)), (601, dg(2)), (602, dg(2001))] {
        let s = dg(n);
        image(&mut cat.root, &s, &[(n, 1)]);
        let tag = format!("sha256-{}.sig", &subject[7..]);
        cat.root.tags.insert(tag, s.clone());
        cat.root.add_referrer(&subject, &s);
    }
    let p = plan(&cat, &policy(1)).unwrap();
    let gone: Vec<(Digest, What)> = p
        .deletions
        .iter()
        .map(|d| (d.digest.clone(), d.what))
        .collect();
    let pos = |d: &Digest| gone.iter().position(|(x, _)| x == d).unwrap();
    for child in [&a, &b, &dg(600)] {
        assert!(pos(child) < pos(&idx), "{child} before its index");
    }
    assert!(gone.contains(&(dg(600), What::Referrer)));
    assert!(
        !gone.iter().any(|(d, _)| *d == dg(601) || *d == dg(602)),
        "signatures of kept images stay"
    );
    let sig = p.deletions.iter().find(|d| d.digest == dg(600)).unwrap();
    assert_eq!(sig.tags.len(), 1);
}

#[test]
fn a_release_without_digests_file_stops_the_plan() {
    let mut cat = mirror(3);
    cat.releases[0].modules = None;
    let e = plan(&cat, &policy(1)).unwrap_err();
    assert!(
        e.message.contains("v1.60.0") && e.message.contains("images_digests.json"),
        "{e}"
    );
    let mut cat = mirror(3);
    cat.channels.push(Channel {
        name: "stable".into(),
        version: None,
    });
    assert!(plan(&cat, &policy(1))
        .unwrap_err()
        .message
        .contains("stable"));
    assert!(plan(&mirror(1), &policy(0)).is_err());
}

#[test]
fn missing_manifests_and_a_second_run_delete_nothing() {
    let mut cat = mirror(4);
    cat.root.manifests.remove(&dg(2000)); // already gone
    cat.root.missing.insert(dg(2000));
    let p = plan(&cat, &policy(2)).unwrap();
    assert!(!p.deletions.iter().any(|d| d.digest == dg(2000)));
    // Apply the plan to the model: a second plan is empty.
    for d in &p.deletions {
        let repo = if d.repository == cat.root.name {
            &mut cat.root
        } else {
            &mut cat.siblings[0]
        };
        repo.manifests.remove(&d.digest);
        repo.tags.retain(|_, x| *x != d.digest);
    }
    cat.releases.retain(|r| !p.dropped.contains(&r.tag));
    let again = plan(&cat, &policy(2)).unwrap();
    assert!(again.deletions.is_empty(), "{:?}", again.deletions);
    assert_eq!(again.kept.len(), 2);
}
