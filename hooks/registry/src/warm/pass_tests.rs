use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use serde_json::json;

use super::*;

fn sha(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "sha256:{}",
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

/// An upstream behind a proxying registry, in memory: what the registry stores on each
/// fetch, and every fetch counted.
#[derive(Default)]
struct Fake {
    upstream_manifests: BTreeMap<String, Vec<u8>>,
    upstream_tags: BTreeMap<String, String>,
    upstream_blobs: BTreeMap<String, Vec<u8>>,
    stored_manifests: Mutex<BTreeMap<String, Vec<u8>>>,
    stored_tags: Mutex<BTreeMap<String, String>>,
    stored_blobs: Mutex<BTreeMap<String, u64>>,
    blob_fetches: Mutex<Vec<String>>,
    manifest_fetches: Mutex<Vec<String>>,
    /// Blobs whose fetch fails (the registry answers 500).
    broken: BTreeSet<String>,
}

impl Fake {
    fn blob(&mut self, data: &[u8]) -> Value {
        let d = sha(data);
        self.upstream_blobs.insert(d.clone(), data.to_vec());
        json!({"digest": d, "size": data.len()})
    }

    fn image(&mut self, layers: &[&[u8]], config: &[u8]) -> String {
        let config = self.blob(config);
        let layers: Vec<Value> = layers.iter().map(|l| self.blob(l)).collect();
        let m =
            serde_json::to_vec(&json!({"schemaVersion": 2, "config": config, "layers": layers}))
                .unwrap();
        let d = sha(&m);
        self.upstream_manifests.insert(d.clone(), m);
        d
    }
}

impl Cache for Fake {
    fn manifest(&self, _repo: &str, digest: &str) -> Option<Vec<u8>> {
        self.stored_manifests.lock().unwrap().get(digest).cloned()
    }
    fn tag(&self, _repo: &str, tag: &str) -> Option<String> {
        self.stored_tags.lock().unwrap().get(tag).cloned()
    }
    fn blob(&self, _repo: &str, digest: &str) -> Option<u64> {
        self.stored_blobs.lock().unwrap().get(digest).copied()
    }
}

impl Fetch for Fake {
    fn manifest(&self, _repo: &str, reference: &str) -> Result<(String, Vec<u8>), FetchError> {
        self.manifest_fetches.lock().unwrap().push(reference.into());
        let digest = match self.upstream_tags.get(reference) {
            Some(d) => {
                self.stored_tags
                    .lock()
                    .unwrap()
                    .insert(reference.into(), d.clone());
                d.clone()
            }
            None => reference.to_string(),
        };
        let m = self
            .upstream_manifests
            .get(&digest)
            .ok_or(FetchError::NotFound)?;
        self.stored_manifests
            .lock()
            .unwrap()
            .insert(digest.clone(), m.clone());
        Ok((digest, m.clone()))
    }
    fn blob(&self, _repo: &str, digest: &str, _size: u64) -> Result<u64, FetchError> {
        self.blob_fetches.lock().unwrap().push(digest.into());
        if self.broken.contains(digest) {
            return Err(FetchError::Failed(format!("blob {digest}: HTTP 500")));
        }
        let b = self
            .upstream_blobs
            .get(digest)
            .ok_or(FetchError::NotFound)?;
        self.stored_blobs
            .lock()
            .unwrap()
            .insert(digest.into(), b.len() as u64);
        Ok(b.len() as u64)
    }
}

/// Ten images sharing a base layer, one of them also reached through an index, and
/// the platform image by tag.
fn release(fake: &mut Fake) -> WantedList {
    let base: &[u8] = b"base layer shared by all";
    let mut images = BTreeSet::new();
    for i in 0..10u8 {
        let own = vec![i; 100 + i as usize];
        images.insert(Ref::Digest(
            fake.image(&[base, &own], format!("config {i}").as_bytes()),
        ));
    }
    let child = fake.image(&[base, b"arm64 layer"], b"config arm64");
    let index = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"digest": child, "size": 1, "platform": {"architecture": "arm64", "os": "linux"}}]}))
    .unwrap();
    let index_digest = sha(&index);
    fake.upstream_manifests.insert(index_digest.clone(), index);
    images.insert(Ref::Digest(index_digest));
    let platform = fake.image(&[base, b"platform layer"], b"config platform");
    fake.upstream_tags.insert("v1.2.3".into(), platform);
    let mut images: Vec<Ref> = images.into_iter().collect();
    images.push(Ref::Tag("v1.2.3".into()));
    WantedList {
        repository: "deckhouse/ee".into(),
        images,
    }
}

#[test]
fn every_image_cached_each_blob_fetched_once_and_a_second_pass_fetches_nothing() {
    let mut fake = Fake::default();
    let list = release(&mut fake);
    let out = run(&list, &fake, &fake, 4, true, 7);
    assert_eq!(out.errors, Vec::<String>::new());
    assert_eq!(out.progress.wanted, 12);
    assert_eq!(out.progress.cached, 12, "{:?}", out.progress);
    assert!(out.progress.complete());
    assert_eq!(out.progress.list_hash, list.hash());
    assert_eq!(out.progress.at, 7);
    let fetches = fake.blob_fetches.lock().unwrap().clone();
    let unique: BTreeSet<_> = fetches.iter().collect();
    assert_eq!(fetches.len(), unique.len(), "a blob fetched twice");
    // Every upstream blob is fetched: 1 shared base, 10+1+1 own layers, 12 configs.
    assert_eq!(fetches.len(), fake.upstream_blobs.len());
    let total: u64 = fake.upstream_blobs.values().map(|b| b.len() as u64).sum();
    assert_eq!(out.fetched_bytes, total);
    assert_eq!(out.progress.bytes, total);
    // The index's child was fetched as a manifest of its own.
    assert_eq!(out.fetched_manifests, 13);

    // Resumable: what the cache holds is neither fetched nor asked for again.
    let again = run(&list, &fake, &fake, 4, true, 8);
    assert_eq!((again.fetched_blobs, again.fetched_manifests), (0, 0));
    assert_eq!(fake.blob_fetches.lock().unwrap().len(), fetches.len());
    assert_eq!(again.progress.cached, 12);
}

#[test]
fn a_pass_cut_short_resumes_with_only_what_is_missing() {
    let mut fake = Fake::default();
    let list = release(&mut fake);
    let broken: BTreeSet<String> = fake.upstream_blobs.keys().take(3).cloned().collect();
    fake.broken = broken.clone();
    let out = run(&list, &fake, &fake, 2, true, 1);
    assert!(out.progress.cached < 12);
    assert!(!out.progress.complete());
    assert!(!out.errors.is_empty() && out.errors.iter().all(|e| !e.contains('\n')));
    assert!(!out.progress.missing.is_empty() && out.progress.missing.len() <= MISSING_SHOWN);
    let first = fake.blob_fetches.lock().unwrap().len();
    fake.broken.clear();
    let out = run(&list, &fake, &fake, 2, true, 2);
    assert_eq!(out.progress.cached, 12);
    // The second pass fetched exactly the three that failed.
    let fetches = fake.blob_fetches.lock().unwrap().clone();
    let second: BTreeSet<String> = fetches[first..].iter().cloned().collect();
    assert_eq!(second, broken);
}

#[test]
fn an_image_the_upstream_lacks_is_unavailable_and_keeps_the_list_incomplete() {
    let mut fake = Fake::default();
    let mut list = release(&mut fake);
    let ghost = Ref::Digest(format!("sha256:{}", "0".repeat(64)));
    list.images.insert(0, ghost.clone());
    let out = run(&list, &fake, &fake, 4, true, 1);
    assert_eq!(
        (
            out.progress.cached,
            out.progress.wanted,
            out.progress.unavailable
        ),
        (12, 13, 1)
    );
    assert_eq!(out.progress.missing, vec![ghost.suffix()]);
    assert!(!out.progress.complete());
    // A cache-only registry answers 404 for whatever it lacks: not "unavailable".
    let out = run(&list, &fake, &fake, 4, false, 1);
    assert_eq!(out.progress.unavailable, 0);
}

#[test]
fn hostile_manifests_fail_their_image_only() {
    let mut fake = Fake::default();
    let mut list = release(&mut fake);
    let bad = br#"{"manifests": [{"digest": "sha256:../../etc"}]}"#.to_vec();
    let d = sha(&bad);
    fake.upstream_manifests.insert(d.clone(), bad);
    list.images.insert(0, Ref::Digest(d));
    let out = run(&list, &fake, &fake, 4, true, 1);
    assert_eq!(out.progress.cached, 12);
    assert!(
        out.errors[0].contains("without a sha256 digest"),
        "{:?}",
        out.errors
    );
}
