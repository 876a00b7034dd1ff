//! The host side of `node-files`: which Secret keys land where, and [`apply`], which
//! makes the host root match a Secret (or its absence). Every write and removal goes
//! through the SDK's [`hook_sdk::fsutil::Dir`] handles opened below the host root: the
//! hook's injected filesystem (a temporary directory in unit tests), never a path
//! followed through a link.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;

use anyhow::{bail, Context as _};
use hook_sdk::fsutil::{Dir, Kind};

/// Config files, relative to the host root.
pub const CONFIG_DIR: &str = "etc/kubernetes/registry/config";
/// PKI files, relative to the host root.
pub const PKI_DIR: &str = "etc/kubernetes/registry/pki";
/// Static pod manifests, relative to the host root.
pub const MANIFEST_DIR: &str = "etc/kubernetes/manifests";
/// Registry data, relative to the host root.
pub const DATA_DIR: &str = "opt/deckhouse/registry/data";

/// The registry's own static pod manifest, in [`MANIFEST_DIR`]: the only one the hook
/// writes or removes there (Secret key `manifest.embedded-registry.yaml`).
pub const MANIFEST_FILE: &str = "embedded-registry.yaml";
/// The files of [`CONFIG_DIR`] a Secret may carry (keys `config.<file>`), as the chart
/// renders them (`templates/registry-node-config.yaml`); `warm-images.json` (the warm
/// process's wanted list) only for a Proxy registry of a named release.
pub const CONFIG_FILES: &[&str] = &["auth.yaml", "distribution.yaml", "warm-images.json"];
/// The files of [`PKI_DIR`] a Secret may carry (keys `pki.<file>`), as the chart renders
/// them; `upstream-ca.crt` only with `proxy.ca`.
pub const PKI_FILES: &[&str] = &[
    "auth.crt",
    "auth.key",
    "ca.crt",
    "distribution.crt",
    "distribution.key",
    "token-bundle.crt",
    "token.crt",
    "token.key",
    "upstream-ca.crt",
];

/// Which directory a Secret key writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Config,
    Pki,
    Manifest,
}

impl Place {
    fn dir(self) -> &'static str {
        match self {
            Place::Config => CONFIG_DIR,
            Place::Pki => PKI_DIR,
            Place::Manifest => MANIFEST_DIR,
        }
    }
}

/// Where a Secret key lands: `config.<file>`, `pki.<file>` or `manifest.<file>`, each
/// only with the file names the chart renders.
fn target(key: &str) -> anyhow::Result<(Place, &str)> {
    let (dir, file) = key.split_once('.').unwrap_or(("", key));
    let (place, known): (Place, &[&str]) = match dir {
        "config" => (Place::Config, CONFIG_FILES),
        "pki" => (Place::Pki, PKI_FILES),
        "manifest" => (Place::Manifest, &[MANIFEST_FILE]),
        _ => bail!(
            "Secret key {key:?}: not config.*, pki.* or manifest.*: refusing the whole Secret"
        ),
    };
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        bail!(
            "Secret key {key:?}: file name would escape {}: refusing the whole Secret",
            place.dir()
        );
    }
    if !known.contains(&file) {
        bail!(
            "Secret key {key:?}: not a file the registry uses ({dir}.* takes {}): refusing the whole Secret",
            known.join(", ")
        );
    }
    Ok((place, file))
}

/// The directories the hook changes, opened below the host root without following a
/// link (`None`: not there yet).
struct Found {
    config: Option<Dir>,
    pki: Option<Dir>,
    manifests: Option<Dir>,
}

/// Checks, before anything changes, that no directory on the way to the registry's
/// files below the host root is a link, that the hook's own directories (config, PKI)
/// hold only regular files, and that the manifest's name is a regular file or free.
fn preflight(host: &Dir) -> anyhow::Result<Found> {
    let own = |rel: &str| -> anyhow::Result<Option<Dir>> {
        let dir = host.walk(rel, false)?;
        if let Some(d) = &dir {
            for (name, kind) in d.entries()? {
                if kind != Kind::File {
                    bail!(
                        "{}: {} in the registry's own directory, where only its files belong: refusing to follow or remove it (remove it by hand)",
                        d.join(&name).display(),
                        kind.describe()
                    );
                }
            }
        }
        Ok(dir)
    };
    let config = own(CONFIG_DIR)?;
    let pki = own(PKI_DIR)?;
    let manifests = host.walk(MANIFEST_DIR, false)?;
    if let Some(m) = &manifests {
        match m.kind(MANIFEST_FILE)? {
            None | Some(Kind::File) => {}
            Some(kind) => bail!(
                "{}: {} where the registry's static pod manifest belongs: refusing to follow or replace it (remove it by hand)",
                m.join(MANIFEST_FILE).display(),
                kind.describe()
            ),
        }
    }
    Ok(Found {
        config,
        pki,
        manifests,
    })
}

/// The directories distribution's filesystem driver keeps its content in, relative to
/// the data directory. `registry garbage-collect` (the Detached pod's init container)
/// exits 1 when either is missing, so on a fresh master kubelet would never start the
/// registry: they are created with the data directory.
pub const STORAGE_DIRS: [&str; 2] = [
    "docker/registry/v2/repositories",
    "docker/registry/v2/blobs",
];

/// Creates the data directory when it is missing (no link followed below the host
/// root; the owner set on the new directory's descriptor). An existing one is used as
/// it is, even reached through a link the administrator placed (a larger disk): the
/// hook never changes what is in it, and only adds the [`STORAGE_DIRS`] it lacks.
fn ensure_data_dir(root: &Path, host: &Dir, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let data = if root.join(DATA_DIR).is_dir() {
        Dir::open(&root.join(DATA_DIR))?
    } else {
        let (parent, name) = DATA_DIR.rsplit_once('/').expect("a path below the root");
        let parent = host
            .walk(parent, true)?
            .with_context(|| format!("{}: cannot create", root.join(parent).display()))?;
        let (data, created) = parent.create_subdir(name)?;
        if let (true, Some((u, g))) = (created, owner) {
            data.chown(u, g)?;
        }
        data
    };
    for rel in STORAGE_DIRS {
        let mut here: Option<Dir> = None;
        for name in rel.split('/') {
            let (next, created) = here.as_ref().unwrap_or(&data).create_subdir(name)?;
            if let (true, Some((u, g))) = (created, owner) {
                next.chown(u, g)?;
            }
            here = Some(next);
        }
    }
    Ok(())
}

/// Whether the registry's static pod manifest is on the host (no link followed below the
/// host root): without it, an install is a first one.
pub fn manifest_present(root: &Path) -> anyhow::Result<bool> {
    if !root.exists() {
        return Ok(false);
    }
    match Dir::open(root)?.walk(MANIFEST_DIR, false)? {
        Some(d) => Ok(d.kind(MANIFEST_FILE)? == Some(Kind::File)),
        None => Ok(false),
    }
}

/// What a run did to the node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written (host-root relative).
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
    /// The config hash now in place ("" when the registry was removed).
    pub config_hash: String,
}

/// Makes the host match the Secret (or its absence). Every key is checked, and the
/// host's directories are checked for links, before anything changes; every file is
/// then reached through directories opened without following links, written to an
/// `O_EXCL` temporary file and renamed into place, and removed only when it is a
/// regular file.
pub fn apply(
    root: &Path,
    secret: Option<&BTreeMap<String, String>>,
    hash: &str,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Applied> {
    let rel = |dir: &str, file: &OsStr| format!("{dir}/{}", file.to_string_lossy());
    let plan = match secret {
        Some(files) => {
            let mut plan: Vec<(Place, &str, &String)> = files
                .iter()
                .map(|(k, v)| target(k).map(|(place, file)| (place, file, v)))
                .collect::<anyhow::Result<_>>()?;
            if !plan.iter().any(|(p, _, _)| *p == Place::Manifest) {
                bail!("the Secret has no manifest.{MANIFEST_FILE}");
            }
            // Configs and PKI first, the manifest last.
            plan.sort();
            Some(plan)
        }
        None => None,
    };
    // The host root is trusted as given (it may be a link); only what lies below it is
    // opened without following links.
    match (&plan, root.exists()) {
        (None, false) => return Ok(Applied::default()),
        (Some(_), false) => std::fs::create_dir_all(root)
            .with_context(|| format!("{}: cannot create", root.display()))?,
        _ => {}
    }
    let host = Dir::open(root)?;
    let found = preflight(&host)?;
    let mut done = Applied::default();
    let Some(plan) = plan else {
        // Manifest first: kubelet stops the pod before its files go.
        if let Some(m) = &found.manifests {
            if m.remove_file(MANIFEST_FILE)? {
                done.removed.push(rel(MANIFEST_DIR, MANIFEST_FILE.as_ref()));
            }
        }
        for (dir, d) in [(CONFIG_DIR, &found.config), (PKI_DIR, &found.pki)] {
            if let Some(d) = d {
                for (name, _) in d.entries()? {
                    if d.remove_file(&name)? {
                        done.removed.push(rel(dir, &name));
                    }
                }
            }
        }
        return Ok(done);
    };
    ensure_data_dir(root, &host, owner)?;
    let mut dirs = BTreeMap::new();
    for (place, file, content) in &plan {
        let d = match dirs.entry(*place) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(host.walk(place.dir(), true)?.with_context(|| {
                    format!("{}: cannot create", root.join(place.dir()).display())
                })?)
            }
        };
        if d.holds(file, content.as_bytes())? {
            continue;
        }
        let staged = d.stage(file, content.as_bytes(), Some(0o600), true)?;
        if let Some((u, g)) = owner {
            staged.chown(u, g)?;
        }
        staged.commit()?;
        done.written.push(rel(place.dir(), file.as_ref()));
    }
    for place in [Place::Config, Place::Pki] {
        let Some(d) = host.walk(place.dir(), false)? else {
            continue;
        };
        let keep = |name: &OsStr| plan.iter().any(|(p, f, _)| *p == place && name == *f);
        for (name, _) in d.entries()? {
            // Not ours to keep: an old file or a temporary left by an interrupted run.
            if !keep(&name) && d.remove_file(&name)? {
                done.removed.push(rel(place.dir(), &name));
            }
        }
    }
    done.config_hash = hash.to_string();
    Ok(done)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
