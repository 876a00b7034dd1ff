//! Pure planning: which releases stay, which manifests go, in which order, and how many
//! bytes that frees. No I/O; the same catalogue and policy always give the same plan.
//!
//! Per repository, the keep-set is the closure (index → children, subject → referrers)
//! of every retained root: retained releases and the module images their
//! `images_digests.json` lists, every tag that is not a dropped release (unknown tags
//! are kept, never guessed about), and signatures of anything kept. A manifest is
//! deleted only when a dropped release reaches it and the keep-set does not hold it,
//! so a digest that any retained tag shares is never deleted.
//!
//! One file of about 400 lines on purpose: the keep-set closure, the deletion order and
//! the byte count read the same catalogue walk; its tests live in `plan/tests.rs`.

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
mod tests;
