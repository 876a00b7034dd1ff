//! The state directory: one converge at a time, and an all-or-nothing switch.
//!
//! - **Lock.** A converge holds an exclusive `flock` on `DIR/.lock` from before it reads
//!   the state until it has written it; a second converge waits up to
//!   [`LOCK_WAIT`], then fails with one line naming the lock file. The lock file is
//!   carried from one generation of the directory to the next as a hard link, so it
//!   is always the same inode; after taking it, a converge checks that `DIR/.lock`
//!   still is the file it locked (a failed first run removes the directory).
//! - **Switch.** The new state is built in the sibling `DIR.new`: every file of `DIR`
//!   hard-linked (files are only ever replaced by rename, never changed in place), then
//!   what changed written, synced, and exchanged with `DIR` by one
//!   `renameat2(RENAME_EXCHANGE)`. A reader, or a converge killed at any moment, sees
//!   the old tree or the new one, never a mix. `DIR` and `DIR.new` must be on one
//!   filesystem that supports the exchange (ext4, xfs, btrfs, tmpfs, overlayfs).
//! - **Hook inputs** are written to `DIR/.hook-XXXXXX` (mode 0700, files 0600): values
//!   hold the upstream password and private keys.
//! - **Recovery.** Under the lock, a converge first removes what a killed one left: the
//!   staging directory (old or new, it is never the current state) and hook input
//!   directories.

use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

/// How long a converge waits for another one to release the state directory.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// The lock file's name inside the state directory.
pub const LOCK_FILE: &str = ".lock";
/// Prefix of a hook input directory inside the state directory.
pub const HOOK_DIR_PREFIX: &str = ".hook-";

/// A locked state directory.
pub struct StateDir {
    dir: PathBuf,
    staging: PathBuf,
    lock: File,
    /// This converge created `dir`: a failed run removes it again.
    created: bool,
    done: bool,
}

fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

impl StateDir {
    /// Locks `dir` (creating it, mode 0700, when absent), waiting at most `wait`, then
    /// removes what a killed converge left behind.
    pub fn open(dir: &Path, wait: Duration) -> Result<Self> {
        // A symlinked state directory: work on its target (the exchange renames names).
        let dir = match fs::symlink_metadata(dir) {
            Ok(m) if m.file_type().is_symlink() => fs::canonicalize(dir)
                .with_context(|| format!("{}: cannot resolve the symlink", dir.display()))?,
            _ => dir.to_path_buf(),
        };
        let name = dir
            .file_name()
            .with_context(|| format!("{}: not a directory name", dir.display()))?;
        let staging = dir.with_file_name(format!("{}.new", name.to_string_lossy()));
        let deadline = Instant::now() + wait;
        // Each round ends with the lock or a changed lock file (a failed first run
        // removed the directory): a few rounds at most.
        for _ in 0..8 {
            let created = match fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => {
                    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                        fs::create_dir_all(parent)
                            .with_context(|| format!("{}: cannot create", parent.display()))?;
                    }
                    match fs::DirBuilder::new().mode(0o700).create(&dir) {
                        Ok(()) => true,
                        Err(e2) if e2.kind() == ErrorKind::AlreadyExists => false,
                        Err(_) => {
                            return Err(e).with_context(|| {
                                format!("{}: cannot create the state directory", dir.display())
                            })
                        }
                    }
                }
            };
            let lock_path = dir.join(LOCK_FILE);
            let lock = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&lock_path)
                .with_context(|| format!("{}: cannot open the lock file", lock_path.display()))?;
            wait_for_lock(&lock, &lock_path, deadline, wait)?;
            // The path may name another file by now (the directory was removed and
            // made again): then this lock guards nothing; take the new one.
            match fs::metadata(&lock_path) {
                Ok(m) if same_file(&m, &lock.metadata()?) => {}
                _ => continue,
            }
            let mut state = StateDir {
                dir,
                staging,
                lock,
                created,
                done: false,
            };
            state.recover()?;
            return Ok(state);
        }
        bail!(
            "{}: the lock file keeps changing: is something else removing the state directory?",
            dir.join(LOCK_FILE).display()
        )
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Removes a staging directory and hook input directories a killed converge left.
    fn recover(&mut self) -> Result<()> {
        if fs::symlink_metadata(&self.staging).is_ok() {
            let ours = match fs::symlink_metadata(self.staging.join(LOCK_FILE)) {
                Ok(m) => same_file(&m, &self.lock.metadata()?),
                // A staging directory killed before its lock link is empty.
                Err(_) => fs::read_dir(&self.staging).is_ok_and(|mut d| d.next().is_none()),
            };
            if !ours {
                bail!(
                    "{}: exists and is not a staging directory of this state: move it away",
                    self.staging.display()
                );
            }
            remove_staging(&self.staging)?;
        }
        for entry in fs::read_dir(&self.dir)
            .with_context(|| format!("{}: cannot list", self.dir.display()))?
        {
            let entry = entry?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(HOOK_DIR_PREFIX)
            {
                fs::remove_dir_all(entry.path())
                    .with_context(|| format!("{}: cannot remove", entry.path().display()))?;
            }
        }
        Ok(())
    }

    /// A private directory (0700) for one hook run's files, removed when dropped.
    pub fn hook_dir(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(HOOK_DIR_PREFIX)
            .permissions(fs::Permissions::from_mode(0o700))
            .tempdir_in(&self.dir)
            .with_context(|| {
                format!(
                    "{}: cannot create a hook input directory",
                    self.dir.display()
                )
            })
    }

    /// Builds the next state beside the current one: `write` gets the staging
    /// directory, a copy of the current state (hard links: `write` must replace a file
    /// by rename, as `hook_sdk::fsutil` does, never write into it), and returns whether
    /// it changed anything. Only then is the staging directory switched in, in one step.
    /// Returns `write`'s answer.
    pub fn commit(mut self, write: impl FnOnce(&Path) -> Result<bool>) -> Result<bool> {
        let result = self.stage_and_switch(write);
        if result.is_err() {
            let _ = remove_staging(&self.staging);
        } else {
            self.done = true;
        }
        result
    }

    fn stage_and_switch(&mut self, write: impl FnOnce(&Path) -> Result<bool>) -> Result<bool> {
        let staging = self.staging.clone();
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .with_context(|| format!("{}: cannot create", staging.display()))?;
        fs::hard_link(self.dir.join(LOCK_FILE), staging.join(LOCK_FILE))
            .with_context(|| format!("{}: cannot link the lock file", staging.display()))?;
        fs::set_permissions(&staging, fs::metadata(&self.dir)?.permissions())?;
        clone_tree(&self.dir, &staging, true)?;
        if !write(&staging)? {
            remove_staging(&staging)?;
            return Ok(false);
        }
        sync_dirs(&staging)?;
        let parent = match self.dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            Some(p) => p.to_path_buf(),
            None => PathBuf::from("."),
        };
        let parent_fd =
            File::open(&parent).with_context(|| format!("{}: cannot open", parent.display()))?;
        rustix::fs::renameat_with(
            &parent_fd,
            staging.file_name().expect("has a name"),
            &parent_fd,
            self.dir.file_name().expect("has a name"),
            rustix::fs::RenameFlags::EXCHANGE,
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "{}: cannot switch to the new state in one step (renameat2 RENAME_EXCHANGE: {e}): keep --state on a local filesystem (ext4, xfs, btrfs, tmpfs)",
                self.dir.display()
            )
        })?;
        parent_fd.sync_all().ok();
        // The staging name now holds the old state.
        remove_staging(&staging)?;
        Ok(true)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // A first run that failed leaves nothing: not even the directory it made for
        // its lock (a converge waiting on it sees the lock file gone and starts over).
        if self.created && !self.done {
            let _ = fs::remove_file(self.dir.join(LOCK_FILE));
            let _ = fs::remove_dir(&self.dir);
        }
    }
}

fn wait_for_lock(lock: &File, path: &Path, deadline: Instant, wait: Duration) -> Result<()> {
    let mut pause = Duration::from_millis(10);
    loop {
        // flock(2) through rustix: std's File::try_lock is newer than the workspace's
        // declared rust-version.
        match rustix::fs::flock(lock, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(()),
            Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => {
                return Err(std::io::Error::from(e))
                    .with_context(|| format!("{}: cannot lock", path.display()))
            }
        }
        let now = Instant::now();
        if now >= deadline {
            bail!(
                "{}: another converge holds this state directory's lock (waited {:?}): run one converge at a time",
                path.display(),
                wait
            );
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// Removes a staging directory so that a kill at any moment leaves it recognisable
/// ([`StateDir::recover`]): everything but its lock link first, the lock link last, then
/// the empty directory.
fn remove_staging(staging: &Path) -> Result<()> {
    let cannot = || format!("{}: cannot remove", staging.display());
    for entry in fs::read_dir(staging).with_context(cannot)? {
        let entry = entry.with_context(cannot)?;
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let path = entry.path();
        if entry.file_type().with_context(cannot)?.is_dir() {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        }
        .with_context(|| format!("{}: cannot remove", path.display()))?;
    }
    match fs::remove_file(staging.join(LOCK_FILE)) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(cannot),
    }
    fs::remove_dir(staging).with_context(cannot)
}

/// Recreates `from`'s tree in `to`: directories with their modes, files as hard links,
/// symlinks as symlinks. At the top, the lock file and hook input directories stay out.
fn clone_tree(from: &Path, to: &Path, top: bool) -> Result<()> {
    for entry in fs::read_dir(from).with_context(|| format!("{}: cannot list", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if top {
            let n = name.to_string_lossy();
            if n == LOCK_FILE || n.starts_with(HOOK_DIR_PREFIX) {
                continue;
            }
        }
        let src = entry.path();
        let dst = to.join(&name);
        let meta = fs::symlink_metadata(&src)?;
        let ft = meta.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new()
                .mode(meta.permissions().mode() & 0o7777)
                .create(&dst)
                .with_context(|| format!("{}: cannot create", dst.display()))?;
            clone_tree(&src, &dst, false)?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&src)?, &dst)
                .with_context(|| format!("{}: cannot create", dst.display()))?;
        } else {
            fs::hard_link(&src, &dst)
                .with_context(|| format!("{}: cannot link into {}", src.display(), to.display()))?;
        }
    }
    Ok(())
}

/// fsyncs every directory under `root` (new files are synced when staged; linked
/// files were synced when first written), so the switch never outlives its entries.
fn sync_dirs(root: &Path) -> Result<()> {
    let mut stack = vec![root.to_path_buf()];
    // Bounded by the tree: each directory is pushed once.
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                stack.push(entry.path());
            }
        }
        File::open(&dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("{}: cannot sync", dir.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
