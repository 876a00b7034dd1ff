//! The images of the running release, as Deckhouse's global values describe them: every
//! digest of `global.modulesImages.digests` (module → image name → `sha256:…`, all in
//! the repository of `global.modulesImages.registry.base`) and the platform image
//! (`<base>:<global.deckhouseVersion>` when that is a release tag `vX.Y.Z`).
//!
//! One list for every consumer (the upstream and mirror checks of `registry-switch`,
//! the cache warm-up): [`wanted_images`]. Pure: it reads typed values ([`Global`]) and
//! does no I/O.
//!
//! Choices, written down in `docs/internal/mode-switching.md`:
//! - A digest that is not `sha256:` and 64 lower-case hex digits is **left out** and
//!   named by [`invalid_digests`] (the hook logs a warning): the digests come from
//!   Deckhouse's build, not from the admin, no registry could be asked for such a
//!   reference, and refusing would block every switch on a value nobody in the cluster
//!   can fix.
//! - Values without `global.deckhouseVersion` describe no Deckhouse installation (a
//!   cluster always has it; the local converge's built-in defaults do not): the list
//!   is empty and a check proves only that the registry answers and accepts the
//!   credentials.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::upstream::Image;

/// The part of Deckhouse's `global` values the release list is read from. Unknown keys
/// are ignored; every field may be absent.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Global {
    /// `global.deckhouseVersion`: a release tag (`v1.65.3`) or a development name.
    #[serde(default)]
    pub deckhouse_version: Option<String>,
    /// `global.modulesImages`.
    #[serde(default)]
    pub modules_images: ModulesImages,
}

/// `global.modulesImages`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ModulesImages {
    /// `global.modulesImages.registry`.
    #[serde(default)]
    pub registry: ImagesRegistry,
    /// `global.modulesImages.digests`: module → image name → digest. A value that is
    /// not a string counts as an invalid digest (see [`invalid_digests`]) instead of
    /// failing the whole document.
    #[serde(default)]
    pub digests: BTreeMap<String, BTreeMap<String, serde_json::Value>>,
}

/// `global.modulesImages.registry`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ImagesRegistry {
    /// `host[:port]/path`: the repository every image of the release lives in.
    #[serde(default)]
    pub base: String,
}

/// `sha256:` and 64 lower-case hexadecimal digits.
pub fn is_digest(s: &str) -> bool {
    s.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

/// `vMAJOR.MINOR.PATCH`, each part decimal digits.
pub fn is_release_tag(v: &str) -> bool {
    v.strip_prefix('v').is_some_and(|rest| {
        let parts: Vec<&str> = rest.split('.').collect();
        parts.len() == 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Whether the values describe a Deckhouse installation (`deckhouseVersion` set).
fn installed(global: &Global) -> bool {
    global
        .deckhouse_version
        .as_deref()
        .is_some_and(|v| !v.trim().is_empty())
}

/// Every image of the running release, deduplicated and sorted: one [`Image`] per
/// distinct valid digest, plus the platform image when `deckhouseVersion` is a release
/// tag. Names are empty: every image is in the repository of `modulesImages.registry.base`
/// (its path is the upstream's or the mirror's repository), so a consumer builds the
/// full reference as `<base>@<digest>` / `<base>:<tag>` ([`Image::repository`]).
/// Empty when `deckhouseVersion` is not set.
pub fn wanted_images(global: &Global) -> Vec<Image> {
    if !installed(global) {
        return Vec::new();
    }
    let mut images: Vec<Image> = global
        .modules_images
        .digests
        .values()
        .flat_map(BTreeMap::values)
        .filter_map(|v| v.as_str().filter(|d| is_digest(d)))
        .map(|d| Image {
            name: String::new(),
            reference: d.to_string(),
        })
        .collect();
    if let Some(v) = global
        .deckhouse_version
        .as_deref()
        .filter(|v| is_release_tag(v))
    {
        images.push(Image {
            name: String::new(),
            reference: v.to_string(),
        });
    }
    images.sort();
    images.dedup();
    images
}

/// The entries [`wanted_images`] leaves out, as `module.image` (sorted): values that
/// are not a `sha256:` digest of 64 lower-case hex digits. Empty when
/// `deckhouseVersion` is not set (nothing is wanted then).
pub fn invalid_digests(global: &Global) -> Vec<String> {
    if !installed(global) {
        return Vec::new();
    }
    global
        .modules_images
        .digests
        .iter()
        .flat_map(|(module, images)| {
            images
                .iter()
                .filter(|(_, v)| !v.as_str().is_some_and(is_digest))
                .map(move |(image, _)| format!("{module}.{image}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn global(v: serde_json::Value) -> Global {
        serde_json::from_value(v).expect("valid global values")
    }

    #[test]
    fn every_digest_once_and_the_release_tag_sorted() {
        let g = global(json!({
            "deckhouseVersion": "v1.65.3",
            "modulesImages": {
                "registry": {"base": "registry.example/deckhouse/ee"},
                "digests": {
                    "common": {"kubeRbacProxy": digest('b'), "pause": digest('a')},
                    "embeddedRegistry": {"distribution": digest('b'), "manager": digest('c')},
                },
            },
        }));
        let refs: Vec<String> = wanted_images(&g)
            .into_iter()
            .map(|i| {
                assert!(i.name.is_empty());
                i.reference
            })
            .collect();
        assert_eq!(
            refs,
            vec![digest('a'), digest('b'), digest('c'), "v1.65.3".into()]
        );
        assert!(invalid_digests(&g).is_empty());
        // Twice the same input, the same list.
        assert_eq!(wanted_images(&g), wanted_images(&g));
    }

    #[test]
    fn invalid_digests_are_left_out_and_named() {
        let g = global(json!({
            "deckhouseVersion": "dev",
            "modulesImages": {"digests": {
                "m": {
                    "ok": digest('d'),
                    "short": "sha256:abc",
                    "upper": format!("sha256:{}", "A".repeat(64)),
                    "md5": format!("md5:{}", "a".repeat(64)),
                    "number": 7,
                },
            }},
        }));
        // A development version: the digests, no platform tag.
        assert_eq!(
            wanted_images(&g),
            vec![Image {
                name: String::new(),
                reference: digest('d')
            }]
        );
        assert_eq!(
            invalid_digests(&g),
            vec!["m.md5", "m.number", "m.short", "m.upper"]
        );
    }

    #[test]
    fn values_without_a_deckhouse_version_want_nothing() {
        let g = global(json!({"modulesImages": {"digests": {"m": {"a": digest('e'), "b": "x"}}}}));
        assert!(wanted_images(&g).is_empty() && invalid_digests(&g).is_empty());
        assert!(wanted_images(&Global::default()).is_empty());
        let g = global(json!({"deckhouseVersion": "v1.2.3"}));
        assert_eq!(wanted_images(&g).len(), 1);
    }

    #[test]
    fn release_tags_and_digests() {
        for ok in ["v1.65.3", "v0.0.0", "v10.200.3000"] {
            assert!(is_release_tag(ok), "{ok}");
        }
        for bad in [
            "1.65.3",
            "v1.65",
            "v1.65.3-rc1",
            "v1..3",
            "vx.y.z",
            "",
            "v1.2.3.4",
        ] {
            assert!(!is_release_tag(bad), "{bad}");
        }
        assert!(is_digest(&digest('0')));
        assert!(!is_digest(&format!("sha256:{}", "g".repeat(64))));
        assert!(!is_digest(&format!("sha256:{}", "a".repeat(65))));
    }
}
