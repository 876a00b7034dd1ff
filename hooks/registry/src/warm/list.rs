//! The wanted list: every image the running release needs, all in the repository of
//! `global.modulesImages.registry.base`: each digest of `global.modulesImages.digests`
//! (module → image → `sha256:…`) and the platform image `<base>:<global.deckhouseVersion>`.
//!
//! One computation for every reader: the chart renders the three inputs as they are
//! (`config.warm-images.json`), the warm process and `registry-switch` (from the
//! values) both build the list here, so the hash a master reports and the hash the
//! switch waits for come from the same code; and the images are the ones the
//! upstream/mirror check asks for ([`crate::switch::release::wanted_images`]: a digest
//! that is not `sha256:<64 hex>` is left out, the platform image is wanted when
//! `deckhouseVersion` is a release tag).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::switch::release;

/// The most images a list may name (Deckhouse releases name about 300).
pub const MAX_IMAGES: usize = 10_000;
/// The most bytes of the list file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A wanted image: a manifest digest, or the platform image's tag.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ref {
    /// `sha256:<64 hex>`.
    Digest(String),
    /// A tag (the platform image).
    Tag(String),
}

impl Ref {
    /// As written after the repository: `@sha256:…` or `:tag`.
    pub fn suffix(&self) -> String {
        match self {
            Ref::Digest(d) => format!("@{d}"),
            Ref::Tag(t) => format!(":{t}"),
        }
    }

    /// What the manifest API takes: the digest or the tag.
    pub fn reference(&self) -> &str {
        match self {
            Ref::Digest(d) | Ref::Tag(d) => d,
        }
    }
}

/// The list of one release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WantedList {
    /// The repository path (the base without its registry host), e.g. `deckhouse/ee`.
    pub repository: String,
    /// The images, sorted, each once (the platform tag last).
    pub images: Vec<Ref>,
}

/// Why a list is refused (the file is input): one line naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// A field is missing or of the wrong type.
    #[error("{0}: missing or not {1}")]
    Field(String, &'static str),
    /// A value is not what the field takes.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// Too many images.
    #[error("{0} images, more than the {MAX_IMAGES} a list may name")]
    TooMany(usize),
}

/// The chart's rendering of the inputs (`config.warm-images.json`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    base: String,
    deckhouse_version: String,
    digests: Value,
    /// `internal.warm.next`: read apart, so a bad entry never refuses the running list.
    #[serde(default)]
    next: Value,
}

/// Everything the list file names: the running release's list and the next releases
/// to warm after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFile {
    /// The running release's list (`None`: no release named).
    pub running: Option<WantedList>,
    /// `global.modulesImages.registry.base`, for the next releases' lists.
    pub base: String,
    /// The next releases, oldest first: release tags newer than the running one, each
    /// once, at most [`super::next::MAX_NEXT`] (the newest).
    pub next: Vec<String>,
    /// Entries of `next` refused, as one line each (shown escaped), at most 5.
    pub refused_next: Vec<String>,
}

impl ListFile {
    /// Reads the file: `Err` when the running list is refused; a bad `next` entry is
    /// left out and named in [`ListFile::refused_next`].
    pub fn parse(text: &[u8]) -> Result<Self, ListError> {
        if text.len() as u64 > MAX_FILE_BYTES {
            return Err(ListError::Invalid(
                "the wanted list".into(),
                format!("larger than {}", crate::untrusted::size(MAX_FILE_BYTES)),
            ));
        }
        let f: File = serde_json::from_slice(text).map_err(|e| {
            ListError::Invalid(
                "the wanted list".into(),
                format!(
                    "not the chart's JSON (line {}, column {})",
                    e.line(),
                    e.column()
                ),
            )
        })?;
        let running = WantedList::build(&f.base, &f.deckhouse_version, &f.digests)?;
        let mut refused_next = Vec::new();
        let mut versions = std::collections::BTreeSet::new();
        let current = super::next::Version::parse(&f.deckhouse_version);
        let entries: &[Value] = match &f.next {
            Value::Null => &[],
            Value::Array(a) => a,
            _ => {
                refused_next.push("next: not a list of release tags".into());
                &[]
            }
        };
        for e in entries.iter().take(super::next::MAX_RELEASES) {
            match (e.as_str().and_then(super::next::Version::parse), current) {
                (Some(v), Some(c)) if v > c => {
                    versions.insert(v);
                }
                (Some(_), _) => {}
                (None, _) if refused_next.len() < 5 => refused_next.push(format!(
                    "next: {} is not a release tag vX.Y.Z",
                    crate::untrusted::shown(&e.to_string())
                )),
                (None, _) => {}
            }
        }
        let skip = versions.len().saturating_sub(super::next::MAX_NEXT);
        let next = versions
            .into_iter()
            .skip(skip)
            .map(|v| v.to_string())
            .collect();
        Ok(ListFile {
            running,
            base: f.base,
            next,
            refused_next,
        })
    }
}

fn tag_ok(t: &str) -> bool {
    let mut b = t.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric() || c == b'_')
        && t.len() <= 128
        && b.all(|c| c.is_ascii_alphanumeric() || b"._-".contains(&c))
}

/// The repository path of a base `host[:port]/path`: everything after the first `/`.
fn repository(base: &str) -> Result<String, ListError> {
    let field = || "global.modulesImages.registry.base".to_string();
    let (_, path) = base.split_once('/').ok_or_else(|| {
        ListError::Invalid(
            field(),
            "has no repository path after the registry host".into(),
        )
    })?;
    // Each component starts with a letter or digit: the path also names directories
    // of the registry's storage, so `.` and `..` are refused.
    let plain = path
        .split('/')
        .all(|c| c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()));
    if !crate::untrusted::repository_path(path) || !plain {
        return Err(ListError::Invalid(
            field(),
            format!("{} is not a repository path", crate::untrusted::shown(path)),
        ));
    }
    Ok(path.to_string())
}

impl WantedList {
    /// The list from its three inputs; `Ok(None)` when no release is named
    /// (`deckhouseVersion` empty: a cluster with no release has nothing to warm).
    pub fn build(base: &str, version: &str, digests: &Value) -> Result<Option<Self>, ListError> {
        if version.is_empty() {
            return Ok(None);
        }
        if !tag_ok(version) {
            return Err(ListError::Invalid(
                "global.deckhouseVersion".into(),
                format!("{} is not an image tag", crate::untrusted::shown(version)),
            ));
        }
        let repository = repository(base)?;
        let modules = digests.as_object().ok_or_else(|| {
            ListError::Field("global.modulesImages.digests".into(), "a map of modules")
        })?;
        let mut map = BTreeMap::new();
        for (module, images) in modules {
            let images = images.as_object().ok_or_else(|| {
                ListError::Field(
                    format!(
                        "global.modulesImages.digests.{}",
                        crate::untrusted::shown(module)
                    ),
                    "a map of images",
                )
            })?;
            let images: BTreeMap<String, Value> =
                images.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            map.insert(module.clone(), images);
        }
        let global = release::Global {
            deckhouse_version: Some(version.to_string()),
            modules_images: release::ModulesImages {
                registry: release::ImagesRegistry {
                    base: base.to_string(),
                },
                digests: map,
            },
        };
        let wanted = release::wanted_images(&global);
        if wanted.len() > MAX_IMAGES {
            return Err(ListError::TooMany(wanted.len()));
        }
        // Digests sort before the tag: the platform image comes last.
        let mut images: Vec<Ref> = wanted
            .into_iter()
            .map(|i| match release::is_digest(&i.reference) {
                true => Ref::Digest(i.reference),
                false => Ref::Tag(i.reference),
            })
            .collect();
        images.sort();
        Ok(Some(WantedList { repository, images }))
    }

    /// The list from the values' `global` (what `registry-switch` waits for).
    pub fn from_global(global: &Value) -> Result<Option<Self>, ListError> {
        let version = global
            .get("deckhouseVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if version.is_empty() {
            return Ok(None);
        }
        let images = global.get("modulesImages");
        let base = images
            .and_then(|i| i.pointer("/registry/base"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                ListError::Field("global.modulesImages.registry.base".into(), "a string")
            })?;
        let empty = Value::Object(Default::default());
        let digests = images.and_then(|i| i.get("digests")).unwrap_or(&empty);
        Self::build(base, version, digests)
    }

    /// The list from the file the chart renders (`config.warm-images.json`).
    pub fn from_file_text(text: &[u8]) -> Result<Option<Self>, ListError> {
        ListFile::parse(text).map(|f| f.running)
    }

    /// The list of only the platform image `:version` (what a next release's pass
    /// caches first, to read its module images from it).
    pub fn platform(&self, version: &str) -> Self {
        WantedList {
            repository: self.repository.clone(),
            images: vec![Ref::Tag(version.to_string())],
        }
    }

    /// The list's hash (16 hex digits): the repository and every image, in order.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"embedded-registry wanted list v1\n");
        h.update(self.repository.as_bytes());
        for i in &self.images {
            h.update(b"\n");
            h.update(i.suffix().as_bytes());
        }
        h.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    #[test]
    fn digests_deduplicated_sorted_platform_last_and_the_hash_is_stable() {
        let digests = json!({"b": {"x": d('b'), "y": d('a')}, "a": {"z": d('b')}});
        let l = WantedList::build("reg.example:5000/deckhouse/ee", "v1.2.3", &digests)
            .unwrap()
            .unwrap();
        assert_eq!(l.repository, "deckhouse/ee");
        assert_eq!(
            l.images,
            vec![
                Ref::Digest(d('a')),
                Ref::Digest(d('b')),
                Ref::Tag("v1.2.3".into())
            ]
        );
        let file = json!({"base": "other:5001/deckhouse/ee", "deckhouseVersion": "v1.2.3", "digests": digests});
        let f = WantedList::from_file_text(file.to_string().as_bytes())
            .unwrap()
            .unwrap();
        // The registry host is not part of the list: the switch of the pull address
        // (which rewrites base) keeps the hash.
        assert_eq!(f.hash(), l.hash());
        let g = json!({"deckhouseVersion": "v1.2.3", "modulesImages": {"registry": {"base": "r/deckhouse/ee"}, "digests": digests}});
        assert_eq!(
            WantedList::from_global(&g).unwrap().unwrap().hash(),
            l.hash()
        );
        let other = WantedList::build("r/deckhouse/ee", "v1.2.4", &digests)
            .unwrap()
            .unwrap();
        assert_ne!(other.hash(), l.hash());
    }

    #[test]
    fn no_release_no_list() {
        assert_eq!(WantedList::from_global(&json!({})).unwrap(), None);
        assert_eq!(WantedList::build("r/p", "", &json!({})).unwrap(), None);
    }

    #[test]
    fn hostile_inputs_name_the_field() {
        // A digest that is not one is left out, as the check leaves it out.
        let odd = json!({"m": {"i": "sha256:XYZ", "j": 5, "k": d('c')}});
        let l = WantedList::build("r/p", "v1.0.0", &odd).unwrap().unwrap();
        assert_eq!(
            l.images,
            vec![Ref::Digest(d('c')), Ref::Tag("v1.0.0".into())]
        );
        let bad = [
            (json!({"m": []}), "global.modulesImages.digests.m"),
            (json!([]), "global.modulesImages.digests"),
        ];
        for (digests, field) in bad {
            let e = WantedList::build("r/p", "v1", &digests)
                .unwrap_err()
                .to_string();
            assert!(e.starts_with(field), "{e}");
            assert!(!e.contains('\n'));
        }
        let e = WantedList::build("r/p", "v1;rm", &json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("global.deckhouseVersion"), "{e}");
        let e = WantedList::build("hostonly", "v1", &json!({}))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("global.modulesImages.registry.base"), "{e}");
        let e = WantedList::from_file_text(b"{\"base\": 1}")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("the wanted list"), "{e}");
        let big = vec![b' '; (MAX_FILE_BYTES + 1) as usize];
        assert!(WantedList::from_file_text(&big).is_err());
    }
}
