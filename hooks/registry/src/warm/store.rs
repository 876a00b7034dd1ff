//! The cache as distribution's filesystem driver keeps it, read from the data
//! directory (mounted read-only into the warm container): what is stored is known
//! without asking the registry, which, proxying, answers `HEAD` from its upstream as
//! well. A blob counts only when its data is stored and it is linked in the
//! repository (a cache-only registry serves nothing else); a manifest likewise; a tag
//! when its `current/link` names a digest.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::pass::Cache;

/// The most bytes of a manifest read (distribution's own limit on a manifest).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// The storage below a registry's `rootdirectory`.
#[derive(Clone, Debug)]
pub struct Store {
    v2: PathBuf,
}

fn hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn read_capped(path: &Path, cap: u64) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut out = Vec::new();
    f.take(cap + 1).read_to_end(&mut out).ok()?;
    (out.len() as u64 <= cap).then_some(out)
}

impl Store {
    /// The storage of a registry whose `rootdirectory` is `root`.
    pub fn new(root: &Path) -> Self {
        Store {
            v2: root.join("docker/registry/v2"),
        }
    }

    fn data(&self, hex: &str) -> PathBuf {
        self.v2
            .join("blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }

    /// The stored data of a blob linked in `repo` (what a cache-only registry would
    /// serve), to read a layer without the network.
    pub fn blob_file(&self, repo: &str, digest: &str) -> Option<PathBuf> {
        self.blob(repo, digest)?;
        Some(self.data(hex(digest)?))
    }

    fn repo(&self, repo: &str) -> PathBuf {
        // The repository path was checked when the list was read (no `.` or `..`).
        self.v2.join("repositories").join(repo)
    }
}

impl Cache for Store {
    fn manifest(&self, repo: &str, digest: &str) -> Option<Vec<u8>> {
        let h = hex(digest)?;
        let link = self
            .repo(repo)
            .join("_manifests/revisions/sha256")
            .join(h)
            .join("link");
        if !link.is_file() {
            return None;
        }
        read_capped(&self.data(h), MAX_MANIFEST_BYTES)
    }

    fn tag(&self, repo: &str, tag: &str) -> Option<String> {
        let link = self
            .repo(repo)
            .join("_manifests/tags")
            .join(tag)
            .join("current/link");
        let text = read_capped(&link, 256)?;
        let d = String::from_utf8(text).ok()?.trim().to_string();
        hex(&d).is_some().then_some(d)
    }

    fn blob(&self, repo: &str, digest: &str) -> Option<u64> {
        let h = hex(digest)?;
        let link = self.repo(repo).join("_layers/sha256").join(h).join("link");
        if !link.is_file() {
            return None;
        }
        std::fs::metadata(self.data(h))
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_filesystem_layout_and_ignores_what_is_half_there() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::new(dir.path());
        let h = "ab".repeat(32);
        let d = format!("sha256:{h}");
        let data = dir
            .path()
            .join(format!("docker/registry/v2/blobs/sha256/ab/{h}/data"));
        std::fs::create_dir_all(data.parent().unwrap()).unwrap();
        std::fs::write(&data, b"{}").unwrap();
        // Stored but not linked in the repository: a cache-only registry would not serve it.
        assert_eq!(s.blob("r/p", &d), None);
        assert_eq!(s.manifest("r/p", &d), None);
        let repo = dir.path().join("docker/registry/v2/repositories/r/p");
        for l in [
            format!("_layers/sha256/{h}"),
            format!("_manifests/revisions/sha256/{h}"),
        ] {
            std::fs::create_dir_all(repo.join(&l)).unwrap();
            std::fs::write(repo.join(l).join("link"), &d).unwrap();
        }
        assert_eq!(s.blob("r/p", &d), Some(2));
        assert_eq!(s.blob_file("r/p", &d), Some(data.clone()));
        assert_eq!(s.blob_file("r/other", &d), None);
        assert_eq!(s.manifest("r/p", &d), Some(b"{}".to_vec()));
        let tag = repo.join("_manifests/tags/v1/current");
        std::fs::create_dir_all(&tag).unwrap();
        std::fs::write(tag.join("link"), format!("{d}\n")).unwrap();
        assert_eq!(s.tag("r/p", "v1"), Some(d.clone()));
        std::fs::write(tag.join("link"), "sha256:../../x").unwrap();
        assert_eq!(s.tag("r/p", "v1"), None);
        assert_eq!(s.blob("r/p", "sha256:../../../etc"), None);
        // A manifest larger than the cap is not read.
        std::fs::write(&data, vec![b' '; MAX_MANIFEST_BYTES as usize + 1]).unwrap();
        assert_eq!(s.manifest("r/p", &d), None);
    }
}
