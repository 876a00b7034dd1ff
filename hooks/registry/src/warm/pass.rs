//! One warm-up pass: resolve every wanted image's manifests (an index: every child),
//! fetch through the local registry each blob the cache lacks (each once, shared
//! layers once), then count from the cache what it now holds. Pure over two traits:
//! [`Cache`] (what the registry's storage holds, read from its files) and [`Fetch`]
//! (requests to the local registry, which stores what it proxies); the network and
//! filesystem implementations are in `net` and `store`, fakes in the unit tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::Value;

use super::list::{Ref, WantedList};
use super::progress::{Progress, MISSING_SHOWN};

/// Children of one index followed, at most.
pub const MAX_CHILDREN: usize = 64;
/// Blobs of one manifest, at most.
pub const MAX_BLOBS: usize = 1_000;
/// Index levels followed (an index of indexes is followed once).
pub const MAX_DEPTH: usize = 2;
/// How long a pass waits for the blobs it fetched to be stored before it counts.
pub const STORE_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// What the cache (the registry's storage) holds, read without the network.
pub trait Cache: Sync {
    /// The manifest `digest` as stored and linked in `repo`, when it is.
    fn manifest(&self, repo: &str, digest: &str) -> Option<Vec<u8>>;
    /// The digest the tag points to in `repo`, when the cache holds the tag.
    fn tag(&self, repo: &str, tag: &str) -> Option<String>;
    /// The blob's size, when it is stored and linked in `repo`.
    fn blob(&self, repo: &str, digest: &str) -> Option<u64>;
}

/// Why a fetch failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchError {
    /// `404`: neither the cache nor the upstream has it.
    NotFound,
    /// Anything else, in one line (retried by the implementation before).
    Failed(String),
}

/// Requests to the local registry: each one makes a proxying registry store what it
/// answers.
pub trait Fetch: Sync {
    /// `GET` a manifest by digest or tag: its bytes and digest.
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), FetchError>;
    /// `GET` a blob, read to its end (the registry stores it only then) and verified
    /// against `digest` and `size`; the bytes read.
    fn blob(&self, repo: &str, digest: &str, size: u64) -> Result<u64, FetchError>;
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What it reports (written to the progress file).
    pub progress: Progress,
    /// Blobs fetched in this pass.
    pub fetched_blobs: u64,
    /// Bytes fetched in this pass.
    pub fetched_bytes: u64,
    /// Manifests fetched in this pass.
    pub fetched_manifests: u64,
    /// The first failures (one line each), for the log.
    pub errors: Vec<String>,
}

#[derive(Debug, Default, Clone)]
struct Tree {
    manifests: Vec<String>,
    blobs: Vec<(String, u64)>,
}

enum Resolved {
    Tree(Tree),
    NotFound,
    Failed(String),
}

fn digest_of(v: &Value) -> Option<(String, u64)> {
    let d = v.get("digest")?.as_str()?;
    let ok = d
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
    ok.then(|| {
        (
            d.to_string(),
            v.get("size").and_then(Value::as_u64).unwrap_or(0),
        )
    })
}

struct Walk<'a> {
    repo: &'a str,
    cache: &'a dyn Cache,
    fetch: &'a dyn Fetch,
    manifests_fetched: &'a AtomicUsize,
}

impl Walk<'_> {
    /// The manifest's bytes: from the cache, else fetched through the registry.
    fn manifest(&self, r: &Ref) -> Result<(String, Vec<u8>), FetchError> {
        let local = match r {
            Ref::Digest(d) => Some(d.clone()),
            Ref::Tag(t) => self.cache.tag(self.repo, t),
        };
        if let Some(d) = local {
            if let Some(bytes) = self.cache.manifest(self.repo, &d) {
                return Ok((d, bytes));
            }
        }
        self.manifests_fetched.fetch_add(1, Ordering::Relaxed);
        self.fetch.manifest(self.repo, r.reference())
    }

    fn resolve(&self, r: &Ref, depth: usize, tree: &mut Tree) -> Result<(), Resolved> {
        let (digest, bytes) = self.manifest(r).map_err(|e| match e {
            FetchError::NotFound => Resolved::NotFound,
            FetchError::Failed(m) => Resolved::Failed(m),
        })?;
        tree.manifests.push(digest.clone());
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|_| Resolved::Failed(format!("{}: the manifest is not JSON", r.suffix())))?;
        if let Some(children) = v.get("manifests").and_then(Value::as_array) {
            if depth >= MAX_DEPTH || children.len() > MAX_CHILDREN {
                return Err(Resolved::Failed(format!(
                    "{}: an index deeper than {MAX_DEPTH} levels or with more than {MAX_CHILDREN} manifests",
                    r.suffix()
                )));
            }
            for c in children {
                let (d, _) = digest_of(c).ok_or_else(|| {
                    Resolved::Failed(format!(
                        "{}: an index entry without a sha256 digest",
                        r.suffix()
                    ))
                })?;
                self.resolve(&Ref::Digest(d), depth + 1, tree)?;
            }
            return Ok(());
        }
        let layers = v.get("layers").and_then(Value::as_array);
        if layers.is_some_and(|l| l.len() > MAX_BLOBS) {
            return Err(Resolved::Failed(format!(
                "{}: more than {MAX_BLOBS} layers",
                r.suffix()
            )));
        }
        for b in v
            .get("config")
            .into_iter()
            .chain(layers.into_iter().flatten())
        {
            let blob = digest_of(b).ok_or_else(|| {
                Resolved::Failed(format!("{}: a blob without a sha256 digest", r.suffix()))
            })?;
            tree.blobs.push(blob);
        }
        Ok(())
    }
}

/// Runs `work` over `items` on at most `concurrency` threads; results in item order.
fn parallel<T: Sync, R: Send>(
    items: &[T],
    concurrency: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<(usize, R)>> = Mutex::new(Vec::with_capacity(items.len()));
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                out.lock().unwrap_or_else(|e| e.into_inner()).push((i, r));
            });
        }
    });
    let mut out = out.into_inner().unwrap_or_else(|e| e.into_inner());
    out.sort_by_key(|(i, _)| *i);
    out.into_iter().map(|(_, r)| r).collect()
}

/// One pass over `list`; `now` is the time written into the progress. `proxying`: the
/// registry proxies an upstream, so its `404` means the upstream lacks the image (a
/// cache-only registry answers `404` for whatever it has not cached).
pub fn run(
    list: &WantedList,
    cache: &dyn Cache,
    fetch: &dyn Fetch,
    concurrency: usize,
    proxying: bool,
    now: i64,
) -> Outcome {
    let repo = list.repository.as_str();
    let manifests_fetched = AtomicUsize::new(0);
    let walk = Walk {
        repo,
        cache,
        fetch,
        manifests_fetched: &manifests_fetched,
    };
    let resolved = parallel(&list.images, concurrency, |r| {
        let mut tree = Tree::default();
        match walk.resolve(r, 0, &mut tree) {
            Ok(()) => Resolved::Tree(tree),
            Err(e) => e,
        }
    });
    let mut errors = Vec::new();
    // Every blob once, whichever images share it.
    let mut blobs: BTreeMap<String, u64> = BTreeMap::new();
    for r in &resolved {
        match r {
            Resolved::Tree(t) => blobs.extend(t.blobs.iter().cloned()),
            Resolved::Failed(m) if errors.len() < MISSING_SHOWN => errors.push(m.clone()),
            _ => {}
        }
    }
    let todo: Vec<(String, u64)> = blobs
        .iter()
        .filter(|(d, _)| cache.blob(repo, d).is_none())
        .map(|(d, s)| (d.clone(), *s))
        .collect();
    let fetched = parallel(&todo, concurrency, |(d, size)| fetch.blob(repo, d, *size));
    let mut outcome = Outcome {
        fetched_manifests: manifests_fetched.load(Ordering::Relaxed) as u64,
        ..Outcome::default()
    };
    let mut fetched_ok: Vec<&String> = Vec::new();
    for ((d, _), r) in todo.iter().zip(fetched) {
        match r {
            Ok(n) => {
                fetched_ok.push(d);
                outcome.fetched_blobs += 1;
                outcome.fetched_bytes += n;
            }
            Err(e) if errors.len() < MISSING_SHOWN => errors.push(match e {
                FetchError::NotFound => {
                    format!("blob {d}: unknown to the registry and its upstream")
                }
                FetchError::Failed(m) => m,
            }),
            Err(_) => {}
        }
    }
    // A proxying distribution stores a blob beside its answer, finishing after the
    // client has read it: give what was fetched a moment to land (bounded) before
    // counting, so one pass reports what it did.
    let landed = std::time::Instant::now() + STORE_GRACE;
    while std::time::Instant::now() < landed
        && fetched_ok.iter().any(|d| cache.blob(repo, d).is_none())
    {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // What the cache holds now, counted from the cache alone.
    let mut counted: BTreeSet<&str> = BTreeSet::new();
    let mut p = Progress {
        list_hash: list.hash(),
        wanted: list.images.len() as u64,
        at: now,
        ..Progress::default()
    };
    for (image, r) in list.images.iter().zip(&resolved) {
        let held = match r {
            Resolved::Tree(t) => {
                let tag_ok = match image {
                    Ref::Tag(tag) => {
                        cache.tag(repo, tag).as_deref() == t.manifests.first().map(String::as_str)
                    }
                    Ref::Digest(_) => true,
                };
                tag_ok
                    && t.manifests
                        .iter()
                        .all(|m| cache.manifest(repo, m).is_some())
                    && t.blobs.iter().all(|(b, _)| cache.blob(repo, b).is_some())
            }
            Resolved::NotFound => {
                p.unavailable += u64::from(proxying);
                false
            }
            Resolved::Failed(_) => false,
        };
        if held {
            p.cached += 1;
            if let Resolved::Tree(t) = r {
                for (b, _) in &t.blobs {
                    if counted.insert(b) {
                        p.bytes += cache.blob(repo, b).unwrap_or(0);
                    }
                }
            }
        } else if p.missing.len() < MISSING_SHOWN {
            p.missing.push(image.suffix());
        }
    }
    outcome.progress = p;
    outcome.errors = errors;
    outcome
}

#[cfg(test)]
#[path = "pass_tests.rs"]
mod tests;
