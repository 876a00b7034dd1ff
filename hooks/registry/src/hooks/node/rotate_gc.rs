//! The `rotate` hook's restart of the registry for garbage collection: the static pod
//! manifest moves aside until the registry stops, then back ([`restart_for_gc`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hook_sdk::fsutil::{Dir, Kind};

use crate::hooks::node::node_files::{MANIFEST_DIR, MANIFEST_FILE};
use crate::rotation::Registry;

/// How long the registry may take to stop once its manifest is gone.
pub(super) const GC_STOP_WAIT: Duration = Duration::from_secs(120);
/// How long it may take to start again (garbage collection runs first).
pub(super) const GC_START_WAIT: Duration = Duration::from_secs(900);

/// Where [`restart_for_gc`] keeps the manifest while the registry is stopped, relative
/// to the host root (beside the registry's config and PKI directories).
pub const ASIDE_DIR: &str = "etc/kubernetes/registry";
/// The manifest's name while it is aside.
pub const ASIDE_FILE: &str = "embedded-registry.yaml.gc";

/// The manifest's place and its place aside, opened below the host root without
/// following a link; each name must be a regular file or free.
fn gc_dirs(root: &Path) -> anyhow::Result<(Dir, Dir)> {
    let host = Dir::open(root)?;
    let manifests = host.walk(MANIFEST_DIR, false)?.with_context(|| {
        format!(
            "{}: no static pod directory",
            root.join(MANIFEST_DIR).display()
        )
    })?;
    let aside = host
        .walk(ASIDE_DIR, true)?
        .with_context(|| format!("{}: cannot create", root.join(ASIDE_DIR).display()))?;
    for (dir, name) in [(&manifests, MANIFEST_FILE), (&aside, ASIDE_FILE)] {
        match dir.kind(name)? {
            None | Some(Kind::File) => {}
            Some(kind) => anyhow::bail!(
                "{}: {} where the registry's manifest belongs: refusing to move it (remove it by hand)",
                dir.join(name).display(),
                kind.describe()
            ),
        }
    }
    Ok((manifests, aside))
}

/// Why [`restart_for_gc`] could not restart the registry; each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A directory or file on the way could not be reached, or is not what it should
    /// be (a symbolic link, a directory): the message names its path.
    #[error("{0}")]
    Files(String),
    /// Neither kubelet's directory nor the place aside holds the manifest.
    #[error("{}: no static pod manifest to restart", .0.display())]
    NoManifest(PathBuf),
    /// The registry still answered when the stop wait ran out (the manifest is back).
    #[error("the registry on {addr} did not stop within {secs}s; garbage collection did not run")]
    NotStopped {
        /// The registry's `host:port`.
        addr: String,
        /// The wait, in seconds.
        secs: u64,
    },
    /// The registry did not answer again within the start wait.
    #[error("the registry on {addr} did not answer within {secs}s after garbage collection")]
    NotBack {
        /// The registry's `host:port`.
        addr: String,
        /// The wait, in seconds.
        secs: u64,
    },
}

impl From<anyhow::Error> for GcError {
    fn from(e: anyhow::Error) -> Self {
        GcError::Files(format!("{e:#}").replace('\n', " "))
    }
}

impl From<hook_sdk::fsutil::FsError> for GcError {
    fn from(e: hook_sdk::fsutil::FsError) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// Restarts the static pod so its `garbage-collect` init container runs with the
/// registry stopped: the manifest moves out of kubelet's directory until `/v2/` stops
/// answering (asked of `registry`), then back, then the registry must answer again;
/// `waits` bounds the stop and the start. The manifest always goes back, whatever
/// happened. Both directories are reached without following a link below `root`, and
/// only a regular file is moved (a link there is refused).
pub fn restart_for_gc(
    root: &Path,
    addr: &str,
    ca: &str,
    registry: &dyn Registry,
    (stop_wait, start_wait): (Duration, Duration),
) -> Result<(), GcError> {
    let (manifests, aside) = gc_dirs(root)?;
    let is_file = |d: &Dir, name: &str| d.kind(name).map(|k| k == Some(Kind::File));
    let manifest_there = is_file(&manifests, MANIFEST_FILE)?;
    if !manifest_there && is_file(&aside, ASIDE_FILE)? {
        // A run that stopped between the two moves: put the manifest back first.
        aside.rename(ASIDE_FILE, &manifests, MANIFEST_FILE)?;
    }
    if !is_file(&manifests, MANIFEST_FILE)? {
        return Err(GcError::NoManifest(manifests.join(MANIFEST_FILE)));
    }
    manifests.rename(MANIFEST_FILE, &aside, ASIDE_FILE)?;
    let answers = || registry.answers(addr, ca);
    let stopped = wait_for(|| !answers(), stop_wait);
    aside.rename(ASIDE_FILE, &manifests, MANIFEST_FILE)?;
    if !stopped {
        return Err(GcError::NotStopped {
            addr: addr.to_string(),
            secs: stop_wait.as_secs(),
        });
    }
    if !wait_for(answers, start_wait) {
        return Err(GcError::NotBack {
            addr: addr.to_string(),
            secs: start_wait.as_secs(),
        });
    }
    Ok(())
}

fn wait_for(mut done: impl FnMut() -> bool, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}
