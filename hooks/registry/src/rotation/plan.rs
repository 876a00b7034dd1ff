//! Pure planning: which releases stay, which manifests go, in which order, and how many
//! bytes that frees. No I/O; the same catalogue and policy always give the same plan.
//!
//! Per repository, the keep-set is the closure (index → children, subject → referrers)
//! of every retained root: retained releases and the module images their
//! `images_digests.json` lists, every tag that is not a dropped release (unknown tags
//! are kept, never guessed about), and signatures of anything kept. A manifest is
//! deleted only when a dropped release reaches it and the keep-set does not hold it,
//! so a digest that any retained tag shares is never deleted.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::model::{release_version, signature_subject, Catalogue, Digest, Repository};

/// What to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How many latest releases (by semver) to keep; at least 1.
    pub keep: usize,
    /// Releases that must stay whatever their rank (the running release).
    pub keep_releases: Vec<String>,
    /// Releases built less than this many seconds ago stay (a push may be under way).
    pub min_age_secs: i64,
    /// The time now, unix seconds.
    pub now: i64,
}

/// A release that stays, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeptRelease {
    /// Its tag.
    pub tag: String,
    /// `latest`, `running`, `channel:<name>`, `young` or `age-unknown`.
    pub reasons: Vec<String>,
}

/// Why a manifest is deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum What {
    /// A signature, attestation or other referrer of a deleted manifest.
    Referrer,
    /// A module image only dropped releases list.
    ModuleImage,
    /// A child of a deleted index.
    IndexChild,
    /// A dropped release's tag in a sibling repository (`install`, ...).
    SiblingRelease,
    /// A dropped release's own manifest.
    Release,
}

/// One `DELETE /v2/<repository>/manifests/<digest>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// The repository.
    pub repository: String,
    /// The manifest's digest.
    pub digest: Digest,
    /// Tags that go with it.
    pub tags: Vec<String>,
    /// Why it goes.
    pub what: What,
    /// Bytes this deletion frees after garbage collection (the manifest and the blobs
    /// that no kept manifest references, each blob counted once in the plan).
    pub bytes: u64,
}

/// The plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// Releases that stay, newest first.
    pub kept: Vec<KeptRelease>,
    /// Releases that go, newest first.
    pub dropped: Vec<String>,
    /// Deletions in the order to apply them: what was found through a manifest goes
    /// before it, release manifests last, so a run stopped halfway can be resumed.
    pub deletions: Vec<Deletion>,
    /// Sum of the deletions' bytes.
    pub freed_bytes: u64,
    /// Things an administrator should know that do not stop the plan.
    pub warnings: Vec<String>,
}

/// Why no plan could be made; nothing may be deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlanError {
    /// One line: what is wrong and what to do.
    pub message: String,
}

impl std::fmt::Display for PlanError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PlanError {}

fn refuse(message: String) -> PlanError {
    PlanError { message }
}

/// Computes the plan.
pub fn plan(cat: &Catalogue, policy: &Policy) -> Result<Plan, PlanError> {
    if policy.keep == 0 {
        return Err(refuse(
            "keep must be at least 1: the newest release is always kept".into(),
        ));
    }
    let mut out = Plan::default();
    let mut order: Vec<usize> = (0..cat.releases.len()).collect();
    order.sort_by(|a, b| {
        let (a, b) = (&cat.releases[*a], &cat.releases[*b]);
        b.version.cmp(&a.version).then_with(|| a.tag.cmp(&b.tag))
    });

    // Why each release stays.
    let mut reasons: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for &i in order.iter().take(policy.keep) {
        reasons.entry(i).or_default().push("latest".into());
    }
    let by_version = |wanted: &str| -> Vec<usize> {
        let v = release_version(wanted);
        order
            .iter()
            .copied()
            .filter(|&i| {
                cat.releases[i].tag == wanted || Some(&cat.releases[i].version) == v.as_ref()
            })
            .collect()
    };
    for wanted in &policy.keep_releases {
        let found = by_version(wanted);
        if found.is_empty() {
            out.warnings.push(format!(
                "release {wanted} to keep (running) is not in the mirror"
            ));
        }
        for i in found {
            reasons.entry(i).or_default().push("running".into());
        }
    }
    for ch in &cat.channels {
        let Some(version) = &ch.version else {
            return Err(refuse(format!(
                "release channel {} names no version (no version.json in its image): cannot tell which release it needs; nothing was deleted",
                ch.name
            )));
        };
        let found = by_version(version);
        if found.is_empty() {
            out.warnings.push(format!(
                "release channel {} points at {version}, which is not in the mirror",
                ch.name
            ));
        }
        for i in found {
            reasons
                .entry(i)
                .or_default()
                .push(format!("channel:{}", ch.name));
        }
    }
    if policy.min_age_secs > 0 {
        for &i in &order {
            match cat.releases[i].created {
                Some(t) if t > policy.now - policy.min_age_secs => {
                    reasons.entry(i).or_default().push("young".into())
                }
                Some(_) => {}
                None => reasons.entry(i).or_default().push("age-unknown".into()),
            }
        }
    }
    for &i in &order {
        let r = &cat.releases[i];
        if r.modules.is_none() {
            return Err(refuse(format!(
                "release {} ({}) holds no images_digests.json: cannot tell which module images it needs; nothing was deleted. Push the release again or remove its tag",
                r.tag, r.digest
            )));
        }
        match reasons.get(&i) {
            Some(why) => out.kept.push(KeptRelease {
                tag: r.tag.clone(),
                reasons: why.clone(),
            }),
            None => out.dropped.push(r.tag.clone()),
        }
    }

    // The root repository.
    let modules_of = |i: usize| cat.releases[i].modules.iter().flatten().cloned();
    let kept_idx: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| reasons.contains_key(i))
        .collect();
    let dropped_idx: Vec<usize> = order
        .iter()
        .copied()
        .filter(|i| !reasons.contains_key(i))
        .collect();
    let dropped_tags: HashSet<&str> = dropped_idx
        .iter()
        .map(|&i| cat.releases[i].tag.as_str())
        .collect();
    let mut keep_roots: Vec<Digest> = kept_idx.iter().flat_map(|&i| modules_of(i)).collect();
    keep_roots.extend(kept_idx.iter().map(|&i| cat.releases[i].digest.clone()));
    let module_roots: Vec<Digest> = dropped_idx.iter().flat_map(|&i| modules_of(i)).collect();
    let release_roots: Vec<Digest> = dropped_idx
        .iter()
        .map(|&i| cat.releases[i].digest.clone())
        .collect();

    let mut decisions = Vec::new();
    let root = decide(
        &cat.root,
        &dropped_tags,
        keep_roots,
        &[
            (What::ModuleImage, module_roots),
            (What::Release, release_roots),
        ],
    );
    for sib in &cat.siblings {
        let roots: Vec<Digest> = sib
            .tags
            .iter()
            .filter(|(t, _)| dropped_tags.contains(t.as_str()))
            .map(|(_, d)| d.clone())
            .collect();
        decisions.push(decide(
            sib,
            &dropped_tags,
            vec![],
            &[(What::SiblingRelease, roots)],
        ));
    }
    decisions.push(root);

    // Bytes: blobs no kept manifest of any scanned repository references.
    let mut kept_blobs: HashSet<&str> = HashSet::new();
    let every = std::iter::once(&cat.root)
        .chain(&cat.siblings)
        .chain(&cat.others);
    let deleted_in: HashMap<&str, HashSet<&str>> = decisions
        .iter()
        .map(|d| {
            (
                d.repository.as_str(),
                d.order.iter().map(|(x, _)| x.as_str()).collect(),
            )
        })
        .collect();
    for repo in every {
        let gone = deleted_in.get(repo.name.as_str());
        for m in repo.manifests.values() {
            if gone.is_some_and(|g| g.contains(m.digest.as_str())) {
                continue;
            }
            kept_blobs.extend(m.blobs.iter().map(|b| b.digest.as_str()));
        }
    }
    let repo_by_name: HashMap<&str, &Repository> = std::iter::once(&cat.root)
        .chain(&cat.siblings)
        .map(|r| (r.name.as_str(), r))
        .collect();
    let mut counted: HashSet<&str> = HashSet::new();
    for d in &decisions {
        let repo = repo_by_name[d.repository.as_str()];
        let mut tags_of: HashMap<&str, Vec<String>> = HashMap::new();
        for (t, dg) in &repo.tags {
            tags_of.entry(dg.as_str()).or_default().push(t.clone());
        }
        for (digest, what) in &d.order {
            let m = &repo.manifests[digest.as_str()];
            let mut bytes = m.size;
            for b in &m.blobs {
                if !kept_blobs.contains(b.digest.as_str()) && counted.insert(b.digest.as_str()) {
                    bytes += b.size;
                }
            }
            out.freed_bytes += bytes;
            out.deletions.push(Deletion {
                repository: repo.name.clone(),
                digest: digest.clone(),
                tags: tags_of.remove(digest.as_str()).unwrap_or_default(),
                what: *what,
                bytes,
            });
        }
    }
    Ok(out)
}

/// What goes from one repository, in deletion order.
struct Decision {
    repository: String,
    order: Vec<(Digest, What)>,
}

/// Decides one repository: `keep_roots` plus every tag that is neither a dropped
/// release nor a signature stay with their closure; what `drop_roots` reach outside
/// that goes. Signatures follow their subject.
fn decide(
    repo: &Repository,
    dropped_tags: &HashSet<&str>,
    mut keep_roots: Vec<Digest>,
    drop_roots: &[(What, Vec<Digest>)],
) -> Decision {
    for (tag, digest) in &repo.tags {
        if !dropped_tags.contains(tag.as_str()) && signature_subject(tag).is_none() {
            keep_roots.push(digest.clone());
        }
    }
    let mut keep: HashSet<&str> = HashSet::new();
    let mut stack: Vec<&str> = keep_roots.iter().map(String::as_str).collect();
    close(repo, &mut stack, &mut keep);
    // Reach of the dropped roots, post-order (what was found through X before X).
    let reach = |keep: &HashSet<&str>| -> Vec<(Digest, What)> {
        let mut seen: HashSet<&str> = HashSet::new();
        let mut out = Vec::new();
        for (what, roots) in drop_roots {
            for r in roots {
                post_order(repo, r, *what, keep, &mut seen, &mut out);
            }
        }
        out
    };
    // A signature tag whose subject stays is a retained tag: keep it and its closure;
    // repeat until nothing changes (a kept signature may in turn keep something).
    loop {
        let going: HashSet<Digest> = reach(&keep).into_iter().map(|(d, _)| d).collect();
        let mut grew = false;
        for (tag, digest) in &repo.tags {
            if let Some(subject) = signature_subject(tag) {
                if !going.contains(&subject) && !keep.contains(digest.as_str()) {
                    let mut stack = vec![digest.as_str()];
                    close(repo, &mut stack, &mut keep);
                    grew = true;
                }
            }
        }
        if !grew {
            break;
        }
    }
    Decision {
        repository: repo.name.clone(),
        order: reach(&keep),
    }
}

/// Adds the closure of `stack` (children, referrers) to `keep`.
fn close<'a>(repo: &'a Repository, stack: &mut Vec<&'a str>, keep: &mut HashSet<&'a str>) {
    while let Some(d) = stack.pop() {
        if !keep.insert(d) {
            continue;
        }
        if let Some(m) = repo.manifests.get(d) {
            stack.extend(m.children.iter().map(String::as_str));
        }
        if let Some(rs) = repo.referrers.get(d) {
            stack.extend(rs.iter().map(String::as_str));
        }
    }
}

/// Appends what `root` reaches outside `keep`, leaves first, iteratively (deep
/// chains must not overflow the stack).
fn post_order<'a>(
    repo: &'a Repository,
    root: &'a str,
    what: What,
    keep: &HashSet<&str>,
    seen: &mut HashSet<&'a str>,
    out: &mut Vec<(Digest, What)>,
) {
    // (digest, its role, whether its successors were pushed already)
    let mut stack: Vec<(&'a str, What, bool)> = vec![(root, what, false)];
    while let Some((d, w, expanded)) = stack.pop() {
        if expanded {
            out.push((d.to_string(), w));
            continue;
        }
        if keep.contains(d) || !repo.manifests.contains_key(d) || !seen.insert(d) {
            continue;
        }
        stack.push((d, w, true));
        if let Some(m) = repo.manifests.get(d) {
            for c in &m.children {
                stack.push((c.as_str(), What::IndexChild, false));
            }
        }
        if let Some(rs) = repo.referrers.get(d) {
            for r in rs {
                stack.push((r.as_str(), What::Referrer, false));
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
}
