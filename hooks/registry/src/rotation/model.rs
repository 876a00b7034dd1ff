//! The typed, in-memory view of a mirror that planning works on. [`crate::rotation::scan`]
//! fills it from a registry; tests and the benchmark build it by hand.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

/// A content digest, `sha256:<hex>`.
pub type Digest = String;

/// What a manifest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ManifestKind {
    /// An OCI index or a Docker manifest list: it points at child manifests.
    Index,
    /// An image manifest: a config and layers.
    Image,
    /// Anything else the registry stores (e.g. an artifact without layers).
    Other,
}

/// A blob a manifest references (its config or a layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes, as the manifest's descriptor says.
    pub size: u64,
}

/// One manifest of a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Its digest.
    pub digest: Digest,
    /// Index, image or other.
    pub kind: ManifestKind,
    /// Size of the manifest document itself.
    pub size: u64,
    /// Child manifests (indexes only).
    pub children: Vec<Digest>,
    /// Config and layers (images only).
    pub blobs: Vec<Blob>,
    /// The manifest this one refers to (`subject`, e.g. a signature's image).
    pub subject: Option<Digest>,
}

/// A repository as scanned: its tags and every manifest reachable from them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Repository {
    /// Full repository name, e.g. `deckhouse/ee/install`.
    pub name: String,
    /// Tag → the digest it points at.
    pub tags: BTreeMap<String, Digest>,
    /// Every manifest fetched, by digest.
    pub manifests: HashMap<Digest, Manifest>,
    /// Subject digest → manifests that refer to it (the referrers API, and cosign-style
    /// `sha256-<hex>.sig|.att|.sbom` tags).
    pub referrers: HashMap<Digest, Vec<Digest>>,
    /// Digests something pointed at that the registry does not hold.
    pub missing: BTreeSet<Digest>,
}

impl Repository {
    /// An empty repository named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Repository {
            name: name.into(),
            ..Default::default()
        }
    }

    /// Adds a referrer `by` of `subject`, once.
    pub fn add_referrer(&mut self, subject: &str, by: &str) {
        let list = self.referrers.entry(subject.to_string()).or_default();
        if !list.iter().any(|d| d == by) {
            list.push(by.to_string());
        }
    }
}

/// A platform release: a semver tag of the root repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// The tag, e.g. `v1.66.3`.
    pub tag: String,
    /// Its version.
    pub version: semver::Version,
    /// The digest the tag points at.
    pub digest: Digest,
    /// Module image digests its `images_digests.json` lists; `None` when the image
    /// holds no such file.
    pub modules: Option<Vec<Digest>>,
    /// When the image was built (its config's `created`, unix seconds); for an index,
    /// the newest of its children.
    pub created: Option<i64>,
}

/// A release channel (a tag of the `release-channel` repository).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Channel {
    /// The channel's tag, e.g. `stable`.
    pub name: String,
    /// The version its image names (`version.json`), if it names one.
    pub version: Option<String>,
}

/// Everything planning needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Catalogue {
    /// The root repository: releases, module images, signatures.
    pub root: Repository,
    /// Repositories whose semver tags follow the releases (`install`,
    /// `install-standalone`): a dropped release's tag there goes too.
    pub siblings: Vec<Repository>,
    /// Repositories that are only read and never changed (`release-channel`); they
    /// count for shared blobs.
    pub others: Vec<Repository>,
    /// Releases found in the root repository.
    pub releases: Vec<Release>,
    /// Release channels.
    pub channels: Vec<Channel>,
}

/// Parses a release tag: `v1.66.3` or `1.66.3` (pre-releases allowed).
pub fn release_version(tag: &str) -> Option<semver::Version> {
    let v = tag.strip_prefix('v').unwrap_or(tag);
    if !v.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    semver::Version::parse(v).ok()
}

/// The subject of a cosign-style tag `sha256-<hex>.sig|.att|.sbom`.
pub fn signature_subject(tag: &str) -> Option<Digest> {
    let rest = tag.strip_prefix("sha256-")?;
    let (hex, suffix) = rest.split_once('.')?;
    let valid = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    (valid && matches!(suffix, "sig" | "att" | "sbom")).then(|| format!("sha256:{hex}"))
}

/// Whether `s` is a `sha256:` digest.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_signature_tags() {
        assert_eq!(release_version("v1.66.3").unwrap().minor, 66);
        assert!(release_version("1.2.3-alpha.1").is_some());
        assert!(release_version("stable").is_none());
        assert!(release_version("v1.66").is_none());
        let hex = "a".repeat(64);
        assert_eq!(
            signature_subject(&format!("sha256-{hex}.sig")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(signature_subject(&format!("sha256-{hex}.txt")), None);
        assert_eq!(signature_subject("sha256-abc.sig"), None);
        assert!(is_digest(&format!("sha256:{hex}")));
        assert!(!is_digest("sha256:xyz"));
    }
}
