//! The warm-up's side of `node-files`: the directory the warm container writes its
//! progress to (created here, owned by the registry's user: kubelet would create a
//! `hostPath` directory owned by root), and the progress it wrote, read as input (no
//! link followed, at most [`progress::MAX_BYTES`], validated) into the status
//! ConfigMap's [`WarmStatus`] and the metrics.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use hook_sdk::fsutil::Dir;
use hook_sdk::metrics::MetricsCollector as Metrics;

use crate::model::node_status::{UpstreamState, WarmNext, WarmStatus};
use crate::warm::list::ListFile;
use crate::warm::progress::{self, Progress};

/// The warm container's directory, relative to the host root.
pub const WARM_DIR: &str = "opt/deckhouse/registry/warm";
/// The Secret key of the wanted list.
pub const LIST_KEY: &str = "config.warm-images.json";
/// The metrics group.
pub const METRICS_GROUP: &str = "warm";

/// Creates [`WARM_DIR`] when missing, owned by `owner` (no link followed below `root`;
/// the root itself created when missing, as `apply` does). Called before the manifest
/// is written, so kubelet never creates it (owned by root) for the pod.
pub fn ensure_dir(root: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    if !root.exists() {
        std::fs::create_dir_all(root)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", root.display()))?;
    }
    let host = Dir::open(root)?;
    let (parent, name) = WARM_DIR.rsplit_once('/').expect("a path below the root");
    let Some(parent) = host.walk(parent, true)? else {
        anyhow::bail!("{}: cannot create", root.join(parent).display());
    };
    let (dir, created) = parent.create_subdir(name)?;
    if let (true, Some((u, g))) = (created, owner) {
        dir.chown(u, g)?;
    }
    Ok(())
}

/// The progress file's content: `Ok(None)` when there is none yet; `Err` (one line)
/// when it is not a regular file, too large, or not the warm process's JSON.
pub fn read_progress(root: &Path) -> Result<Option<Progress>, String> {
    let dir = match Dir::open(root).and_then(|h| h.walk(WARM_DIR, false)) {
        Ok(Some(d)) => d,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("{e:#}").replace('\n', " ")),
    };
    let path = dir.join(progress::FILE);
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(
            rustix::fs::OFlags::NOFOLLOW.bits() as i32 | rustix::fs::OFlags::NONBLOCK.bits() as i32,
        )
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if !file.metadata().map(|m| m.is_file()).unwrap_or(false) {
        return Err(format!("{}: not a regular file", path.display()));
    }
    let mut bytes = Vec::new();
    file.take(progress::MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Progress::parse(&bytes)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The warm status to report for a registry given the Secret's files: `None` without a
/// wanted list. Before the first pass over this list (a progress file about another
/// list, or a refused one, logged by the caller through the `Err`), it counts the list
/// with nothing cached.
pub fn status(
    files: &BTreeMap<String, String>,
    root: &Path,
) -> Option<(WarmStatus, Option<String>)> {
    let file = ListFile::parse(files.get(LIST_KEY)?.as_bytes()).ok()?;
    let list = file.running.as_ref()?;
    // Each next release the list names, as far as the last pass got (before the first
    // one: its platform image wanted, nothing cached).
    let next = |p: Option<&Progress>| -> Vec<WarmNext> {
        file.next
            .iter()
            .map(
                |v| match p.and_then(|p| p.next.iter().find(|n| &n.version == v)) {
                    Some(n) => WarmNext {
                        version: v.clone(),
                        cached: n.cached,
                        wanted: n.wanted,
                        problem: n
                            .problem
                            .map(|x| x.as_str().to_string())
                            .unwrap_or_default(),
                    },
                    None => WarmNext {
                        version: v.clone(),
                        wanted: 1,
                        ..WarmNext::default()
                    },
                },
            )
            .collect()
    };
    let empty = WarmStatus {
        list_hash: String::new(),
        wanted: list.images.len() as u64,
        missing: list
            .images
            .iter()
            .take(progress::MISSING_SHOWN)
            .map(|i| i.suffix())
            .collect(),
        next: next(None),
        ..WarmStatus::default()
    };
    Some(match read_progress(root) {
        // A pass over another list (the previous release) says nothing of this one.
        Ok(Some(p)) if p.list_hash != list.hash() => (
            WarmStatus {
                next: next(Some(&p)),
                ..empty
            },
            None,
        ),
        Ok(Some(p)) => (
            WarmStatus {
                next: next(Some(&p)),
                list_hash: p.list_hash,
                cached: p.cached,
                wanted: p.wanted,
                bytes: p.bytes,
                missing: p.missing,
                unavailable: p.unavailable,
                at: p.at,
            },
            None,
        ),
        Ok(None) => (empty, None),
        Err(e) => (empty, Some(e)),
    })
}

/// The warm-up's metrics for `node`: `d8_embedded_registry_warm_images{state=cached|wanted}`,
/// `d8_embedded_registry_warm_next_images{version,state=cached|wanted}` (each next release),
/// `d8_embedded_registry_warm_bytes`, and `d8_embedded_registry_cache_only_since_seconds`
/// (unix time the registry started serving its cache alone; absent while it proxies).
pub fn metrics(
    m: &mut Metrics,
    node: &str,
    warm: Option<&WarmStatus>,
    upstream: Option<UpstreamState>,
) {
    m.expire(METRICS_GROUP);
    if let Some(w) = warm {
        for (state, v) in [("cached", w.cached), ("wanted", w.wanted)] {
            m.set(
                METRICS_GROUP,
                "d8_embedded_registry_warm_images",
                v as f64,
                &[("node", node), ("state", state)],
            );
        }
        m.set(
            METRICS_GROUP,
            "d8_embedded_registry_warm_bytes",
            w.bytes as f64,
            &[("node", node)],
        );
        for n in &w.next {
            for (state, v) in [("cached", n.cached), ("wanted", n.wanted)] {
                m.set(
                    METRICS_GROUP,
                    "d8_embedded_registry_warm_next_images",
                    v as f64,
                    &[("node", node), ("version", &n.version), ("state", state)],
                );
            }
        }
    }
    if let Some(u) = upstream.filter(|u| u.cache_only) {
        m.set(
            METRICS_GROUP,
            "d8_embedded_registry_cache_only_since_seconds",
            u.cache_only_since as f64,
            &[("node", node)],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warm::list::WantedList;
    use crate::warm::progress::{NextProblem, NextProgress};

    #[test]
    fn the_next_releases_the_list_names_are_reported_as_far_as_the_last_pass_got() {
        let root = tempfile::tempdir().unwrap();
        ensure_dir(root.path(), None).unwrap();
        let mut list: serde_json::Value = serde_json::from_str(&list_files()[LIST_KEY]).unwrap();
        list["next"] = serde_json::json!(["v1.3.0", "v1.4.0"]);
        let files = BTreeMap::from([(LIST_KEY.to_string(), list.to_string())]);
        // Before any pass: each next release wants its platform image.
        let (w, _) = status(&files, root.path()).unwrap();
        assert_eq!(
            w.next
                .iter()
                .map(|n| (n.version.as_str(), n.cached, n.wanted))
                .collect::<Vec<_>>(),
            vec![("v1.3.0", 0, 1), ("v1.4.0", 0, 1)]
        );
        let hash = WantedList::from_file_text(list.to_string().as_bytes())
            .unwrap()
            .unwrap()
            .hash();
        let p = Progress {
            list_hash: hash,
            wanted: 2,
            cached: 2,
            next: vec![
                NextProgress {
                    version: "v1.3.0".into(),
                    list_hash: "0123456789abcdef".into(),
                    wanted: 7,
                    cached: 7,
                    ..NextProgress::default()
                },
                NextProgress {
                    version: "v1.4.0".into(),
                    wanted: 1,
                    problem: Some(NextProblem::PlatformImage),
                    ..NextProgress::default()
                },
            ],
            ..Progress::default()
        };
        std::fs::write(
            root.path().join(WARM_DIR).join(progress::FILE),
            p.to_bytes(),
        )
        .unwrap();
        let (w, _) = status(&files, root.path()).unwrap();
        assert!(w.next[0].complete() && w.next[0].cached == 7);
        assert_eq!(w.next[1].problem, "platform-image");
        let mut m = Metrics::default();
        metrics(&mut m, "m1", Some(&w), None);
        let text = format!("{m:?}");
        assert!(
            text.contains("d8_embedded_registry_warm_next_images"),
            "{text}"
        );
        // A release no longer named (rolled out, or withdrawn) is not reported.
        list["next"] = serde_json::json!(["v1.4.0"]);
        let files = BTreeMap::from([(LIST_KEY.to_string(), list.to_string())]);
        let (w, _) = status(&files, root.path()).unwrap();
        assert_eq!(w.next.len(), 1);
        assert_eq!(w.next[0].version, "v1.4.0");
    }

    fn list_files() -> BTreeMap<String, String> {
        let list = serde_json::json!({"base": "r.example/deckhouse/ee", "deckhouseVersion": "v1.2.3",
            "digests": {"m": {"a": format!("sha256:{}", "a".repeat(64))}}});
        BTreeMap::from([(LIST_KEY.to_string(), list.to_string())])
    }

    #[test]
    fn before_the_first_pass_the_list_counts_with_nothing_cached() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("host");
        ensure_dir(&root, None).unwrap();
        ensure_dir(&root, None).unwrap();
        assert!(root.join(WARM_DIR).is_dir());
        let root = tmp;
        let (w, err) = status(&list_files(), root.path()).unwrap();
        assert_eq!((w.cached, w.wanted, err), (0, 2, None));
        assert_eq!(w.list_hash, "");
        assert_eq!(w.missing.len(), 2);
        assert!(
            status(&BTreeMap::new(), root.path()).is_none(),
            "no list, no warm status"
        );
    }

    #[test]
    fn the_progress_file_is_read_as_input() {
        let root = tempfile::tempdir().unwrap();
        ensure_dir(root.path(), None).unwrap();
        let file = root.path().join(WARM_DIR).join(progress::FILE);
        let hash = WantedList::from_file_text(list_files()[LIST_KEY].as_bytes())
            .unwrap()
            .unwrap()
            .hash();
        let good = Progress {
            list_hash: hash,
            wanted: 2,
            cached: 2,
            bytes: 5,
            ..Progress::default()
        };
        std::fs::write(&file, good.to_bytes()).unwrap();
        let (w, err) = status(&list_files(), root.path()).unwrap();
        assert_eq!((w.cached, w.wanted, w.bytes, err), (2, 2, 5, None));
        // A pass over another list (the previous release) counts as none over this one.
        let old = Progress {
            list_hash: "0123456789abcdef".into(),
            ..good.clone()
        };
        std::fs::write(&file, old.to_bytes()).unwrap();
        let (w, err) = status(&list_files(), root.path()).unwrap();
        assert_eq!((w.cached, w.list_hash.as_str(), err), (0, "", None));
        // Hostile: oversize, not JSON, impossible counts, a link, a directory.
        let hostile: Vec<Vec<u8>> = vec![
            vec![b'{'; progress::MAX_BYTES as usize + 10],
            b"password=hunter2".to_vec(),
            Progress {
                cached: 3,
                ..good.clone()
            }
            .to_bytes(),
        ];
        for h in hostile {
            std::fs::write(&file, &h).unwrap();
            let (w, err) = status(&list_files(), root.path()).unwrap();
            let err = err.unwrap();
            assert_eq!(w.cached, 0, "a refused file reports nothing cached");
            assert!(!err.contains('\n') && !err.contains("hunter2"), "{err}");
        }
        std::fs::remove_file(&file).unwrap();
        let secret = root.path().join("secret");
        std::fs::write(&secret, good.to_bytes()).unwrap();
        std::os::unix::fs::symlink(&secret, &file).unwrap();
        assert!(
            read_progress(root.path()).is_err(),
            "a link is not followed"
        );
        std::fs::remove_file(&file).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(read_progress(root.path()).is_err());
        // The warm directory itself a link: refused too.
        std::fs::remove_dir(&file).unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::remove_dir(root.path().join(WARM_DIR)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), root.path().join(WARM_DIR)).unwrap();
        assert!(read_progress(root.path()).is_err());
    }
}
