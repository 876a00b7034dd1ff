//! The next release: the images of a release Deckhouse has announced but not yet
//! rolled out, cached before the values that make the cluster use them are applied.
//!
//! - [`select`]: which announced releases to warm. Deckhouse announces a release as a
//!   `DeckhouseRelease` object (`spec.version`, `status.phase`) before it deploys it;
//!   the `next-release` hook keeps those `Pending` whose version is a release tag newer
//!   than `global.deckhouseVersion`, the newest [`MAX_NEXT`], into `internal.warm.next`.
//! - [`release_digests`]: the module images a release needs, read from its platform
//!   image as it lies in this master's cache (`deckhouse/modules/images_digests.json`
//!   and, when present, `deckhouse/candi/images_digests.json`, from the topmost layer
//!   that has them; the rotation's layer reader, within [`LAYER_LIMITS`]), so the warm
//!   process fetches every blob once: the platform image's through the registry, and
//!   reads it from the storage.
//!
//! The list of a next release is then built by [`super::list::WantedList::build`],
//! exactly as the running release's will be once Deckhouse applies its values, so the
//! hash the master reports for it is the one `CacheWarm` waits for after the rollout.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::store::Store;
use crate::rotation::layer::{self, Limits};

/// Next releases warmed at most (the newest announced ones).
pub const MAX_NEXT: usize = 2;
/// `DeckhouseRelease` objects looked at, at most (a cluster keeps tens).
pub const MAX_RELEASES: usize = 1_000;
/// The phase of a release announced and not yet deployed.
pub const PENDING: &str = "Pending";
/// The files naming a release's module images, in its platform image.
pub const DIGESTS_FILES: [&str; 2] = [
    "deckhouse/modules/images_digests.json",
    "deckhouse/candi/images_digests.json",
];
/// Bounds of the platform image's layers read for [`DIGESTS_FILES`]: a digests file of
/// at most 4 MiB (a real one is tens of KiB), a layer unpacking to at most 4 GiB.
pub const LAYER_LIMITS: Limits = Limits {
    max_file: 4 << 20,
    max_unpacked: 4 << 30,
};
/// Bytes unpacked over all the layers read for one release, at most (16 GiB).
pub const MAX_UNPACKED_TOTAL: u64 = 16 << 30;
/// Layers of one platform image read, at most.
pub const MAX_LAYERS: usize = 256;

/// A release tag `vMAJOR.MINOR.PATCH`, ordered by its numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version(pub u64, pub u64, pub u64);

impl Version {
    /// The version of a release tag; `None` for anything else (a part that does not
    /// fit 64 bits included).
    pub fn parse(tag: &str) -> Option<Self> {
        if !crate::switch::release::is_release_tag(tag) || tag.len() > 64 {
            return None;
        }
        let mut parts = tag[1..].split('.').map(|p| p.parse::<u64>().ok());
        Some(Version(parts.next()??, parts.next()??, parts.next()??))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}.{}.{}", self.0, self.1, self.2)
    }
}

/// A `DeckhouseRelease` as the hook's filter keeps it (every field may be absent or of
/// another type: cluster data).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Announced {
    /// `metadata.name`.
    #[serde(default)]
    pub name: Value,
    /// `spec.version`.
    #[serde(default)]
    pub version: Value,
    /// `status.phase`.
    #[serde(default)]
    pub phase: Value,
}

/// What [`select`] chose.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// The releases to warm, oldest first, at most [`MAX_NEXT`].
    pub next: Vec<String>,
    /// Pending releases refused, as `name: why` (shown escaped), at most 5.
    pub refused: Vec<String>,
    /// Pending releases left out because newer ones fill [`MAX_NEXT`].
    pub left_out: usize,
}

/// The releases to warm: `Pending`, a release tag newer than `current`, each version
/// once, the newest [`MAX_NEXT`]; none when `current` is not a release tag (a
/// development build has no release to come). At most [`MAX_RELEASES`] items are read.
pub fn select(current: &str, releases: &[Announced]) -> Selection {
    let mut out = Selection::default();
    let Some(current) = Version::parse(current) else {
        return out;
    };
    let mut versions = std::collections::BTreeSet::new();
    for r in releases.iter().take(MAX_RELEASES) {
        if r.phase.as_str() != Some(PENDING) {
            continue;
        }
        let name = crate::untrusted::shown(r.name.as_str().unwrap_or("(no name)"));
        match r.version.as_str().map(|v| (v, Version::parse(v))) {
            Some((_, Some(v))) if v > current => {
                versions.insert(v);
            }
            Some((_, Some(_))) => {}
            Some((v, None)) if out.refused.len() < 5 => out.refused.push(format!(
                "{name}: spec.version {} is not a release tag vX.Y.Z",
                crate::untrusted::shown(v)
            )),
            None if out.refused.len() < 5 => out
                .refused
                .push(format!("{name}: spec.version is not a string")),
            _ => {}
        }
    }
    let keep = versions.len().min(MAX_NEXT);
    out.left_out = versions.len() - keep;
    out.next = versions
        .into_iter()
        .rev()
        .take(keep)
        .rev()
        .map(|v| v.to_string())
        .collect();
    out
}

/// Why a release's module images could not be read from its platform image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestsError {
    /// The platform image is not (completely) in the cache.
    #[error("the platform image :{0} is not in the cache")]
    NotCached(String),
    /// No layer holds a digests file.
    #[error("the platform image :{0} holds no deckhouse/modules/images_digests.json")]
    NoFile(String),
    /// A manifest, a layer or a digests file is not what it should be.
    #[error("the platform image :{0}: {1}")]
    Refused(String, String),
}

/// The module images a release needs (module → image → digest), from the digests
/// files of its platform image `:version` in `repo` as the cache holds it. Modules of
/// `candi/images_digests.json` are named `candi/<module>`, so the two files never
/// overwrite each other.
pub fn release_digests(
    store: &Store,
    repo: &str,
    version: &str,
) -> Result<BTreeMap<String, BTreeMap<String, Value>>, DigestsError> {
    use super::pass::Cache;
    let refused = |m: String| DigestsError::Refused(version.to_string(), m);
    let not_cached = || DigestsError::NotCached(version.to_string());
    let digest = store.tag(repo, version).ok_or_else(not_cached)?;
    let manifest = |d: &str| -> Result<Value, DigestsError> {
        let bytes = store.manifest(repo, d).ok_or_else(not_cached)?;
        serde_json::from_slice(&bytes).map_err(|_| refused(format!("manifest {d} is not JSON")))
    };
    let top = manifest(&digest)?;
    // An index: its children, each an image of another platform with the same files;
    // the first one the cache holds is read.
    let images: Vec<Value> = match top.get("manifests").and_then(Value::as_array) {
        Some(children) => {
            let mut held = Vec::new();
            for c in children.iter().take(super::pass::MAX_CHILDREN) {
                if let Some(d) = c.get("digest").and_then(Value::as_str) {
                    if let Ok(m) = manifest(d) {
                        held.push(m);
                        break;
                    }
                }
            }
            if held.is_empty() {
                return Err(not_cached());
            }
            held
        }
        None => vec![top],
    };
    let mut budget = MAX_UNPACKED_TOTAL;
    for image in images {
        let layers = image
            .get("layers")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if layers.len() > MAX_LAYERS {
            return Err(refused(format!("more than {MAX_LAYERS} layers")));
        }
        for l in layers.iter().rev() {
            let d = l.get("digest").and_then(Value::as_str).unwrap_or("");
            let path = store.blob_file(repo, d).ok_or_else(not_cached)?;
            let file = std::fs::File::open(&path).map_err(|_| not_cached())?;
            let limits = Limits {
                max_unpacked: LAYER_LIMITS.max_unpacked.min(budget),
                ..LAYER_LIMITS
            };
            let (found, unpacked) = layer::find_files_within(
                file,
                |p| DIGESTS_FILES.contains(&p),
                DIGESTS_FILES.len(),
                limits,
            )
            .map_err(|e| {
                refused(format!(
                    "layer {d}: {}",
                    crate::untrusted::escape_controls(&e.to_string())
                ))
            })?;
            budget = budget.saturating_sub(unpacked);
            if found.is_empty() {
                if budget == 0 {
                    return Err(refused(format!(
                        "its layers unpack to more than {}",
                        crate::untrusted::size(MAX_UNPACKED_TOTAL)
                    )));
                }
                continue;
            }
            if !found.iter().any(|(p, _)| p == DIGESTS_FILES[0]) {
                return Err(DigestsError::NoFile(version.to_string()));
            }
            let mut out = BTreeMap::new();
            for (p, content) in found {
                let modules: BTreeMap<String, BTreeMap<String, Value>> =
                    serde_json::from_slice(&content).map_err(|e| {
                        refused(format!(
                            "{p} is not a map of modules to images to digests (line {}, column {})",
                            e.line(),
                            e.column()
                        ))
                    })?;
                let candi = p == DIGESTS_FILES[1];
                for (m, images) in modules {
                    let key = if candi { format!("candi/{m}") } else { m };
                    out.insert(key, images);
                }
            }
            return Ok(out);
        }
    }
    Err(DigestsError::NoFile(version.to_string()))
}

#[cfg(test)]
#[path = "next_tests.rs"]
mod tests;
