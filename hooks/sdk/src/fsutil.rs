//! Atomic file writes: a reader sees the old file or the new one, never half of one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

/// A file written to a temporary sibling, not yet in place.
pub struct Staged {
    tmp: PathBuf,
    target: PathBuf,
}

impl Staged {
    /// The temporary file (to adjust ownership before it goes into place).
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// Moves the staged file over its target (atomic on one filesystem).
    pub fn commit(self) -> Result<()> {
        fs::rename(&self.tmp, &self.target)
            .with_context(|| format!("{}: cannot move into place", self.target.display()))?;
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.tmp);
    }
}

/// Writes `content` to a temporary file beside `target` and syncs it to disk; call
/// [`Staged::commit`] to move it into place. Dropping it removes the temporary file.
pub fn stage(target: &Path, content: &[u8], mode: Option<u32>) -> Result<Staged> {
    stage_with(target, content, mode, true)
}

/// As [`stage`]; `durable: false` skips the fsync, for files a reader consumes right
/// away and that need not survive a power loss (a hook's output files).
pub fn stage_with(
    target: &Path,
    content: &[u8],
    mode: Option<u32>,
    durable: bool,
) -> Result<Staged> {
    let dir = target
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .with_context(|| format!("{}: not a file path", target.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let staged = Staged {
        tmp: tmp.clone(),
        target: target.to_path_buf(),
    };
    let mut f = File::create(&tmp).with_context(|| format!("{}: cannot create", tmp.display()))?;
    #[cfg(unix)]
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(fs::Permissions::from_mode(mode))
            .with_context(|| format!("{}: cannot set mode", tmp.display()))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    f.write_all(content)
        .and_then(|_| if durable { f.sync_all() } else { Ok(()) })
        .with_context(|| format!("{}: cannot write", tmp.display()))?;
    Ok(staged)
}

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write_atomic(target: &Path, content: &[u8]) -> Result<()> {
    stage(target, content, None)?.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_files_appear_only_on_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.json");
        let staged = stage(&target, b"new", Some(0o600)).unwrap();
        assert!(!target.exists());
        drop(staged);
        assert!(!target.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temp file cleaned up"
        );
        stage(&target, b"new", Some(0o600))
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"new");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&target).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
