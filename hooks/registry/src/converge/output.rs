//! The converge's rendered output: manifest files written only when they changed, and
//! files no longer rendered removed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context as _, Result};

use super::store::Changes;

pub(super) fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    std::fs::create_dir_all(path.parent().expect("has parent"))
        .with_context(|| format!("{}: cannot create its directory", path.display()))?;
    hook_sdk::fsutil::stage(path, text.as_bytes(), Some(mode))?.commit()?;
    Ok(true)
}

pub(super) fn write_rendered(dir: &Path, manifests: &BTreeMap<String, String>) -> Result<Changes> {
    let mut changes = Changes::default();
    let mut existing = Vec::new();
    collect_files(dir, dir, &mut existing)?;
    existing.sort();
    for (rel, text) in manifests {
        if rel.split('/').any(|s| s == ".." || s.is_empty()) {
            bail!("rendered path {rel:?} escapes the rendered directory");
        }
        let path = dir.join(rel);
        let before = std::fs::read_to_string(&path).ok();
        if write_if_changed(&path, text, 0o600)? {
            if before.is_some() {
                changes.updated.push(rel.clone());
            } else {
                changes.created.push(rel.clone());
            }
        }
    }
    for rel in existing {
        if !manifests.contains_key(&rel) {
            std::fs::remove_file(dir.join(&rel))
                .with_context(|| format!("rendered/{rel}: cannot remove"))?;
            changes.deleted.push(rel);
        }
    }
    Ok(changes)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}
