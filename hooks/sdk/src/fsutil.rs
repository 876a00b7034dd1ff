//! File writes that are atomic (a reader sees the old file or the new one, never half
//! of one) and that never go through a symbolic link they were not given.
//!
//! Every operation is made on a directory held open ([`Dir`]) by a single name in it:
//! temporary files are created with `O_CREAT | O_EXCL | O_NOFOLLOW` under a random name,
//! their mode and owner set on the open descriptor, then renamed over the target (a
//! rename replaces a name, it never writes through it). [`Dir::walk`] descends below a
//! trusted directory one component at a time with `O_NOFOLLOW | O_DIRECTORY`, so a
//! symbolic link placed below it is refused, never followed.
//!
//! Longer than 400 lines for a reason: every operation on a [`Dir`] follows the same
//! rules (one name, no link followed, `O_EXCL` temporary files) and they are checked
//! together; its unit tests are in `fsutil_tests.rs`.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

/// A file operation that failed or was refused; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The system refused an operation.
    #[error("{context}: {error}")]
    Io {
        /// The path and what was attempted (`/x/y: cannot open`).
        context: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// Something other than what is expected sits at a name: it is neither followed
    /// nor replaced.
    #[error("{}: {found} where {wanted} is expected: refusing to follow or replace it (remove it by hand)", path.display())]
    Refused {
        /// The name's path.
        path: PathBuf,
        /// What is there (`a symbolic link`, ...).
        found: &'static str,
        /// What was expected (`a directory`, `a regular file`).
        wanted: &'static str,
    },
    /// A path or directory this module will not work with (the message says why).
    #[error("{message}")]
    Invalid {
        /// What is wrong and where.
        message: String,
    },
}

type Result<T> = std::result::Result<T, FsError>;

/// Returns an [`FsError::Invalid`] with a formatted message.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err(FsError::Invalid { message: format!($($arg)*) })
    };
}

/// Adds the path and the attempted action to a system error.
trait IoContext<T> {
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T>;
}

impl<T> IoContext<T> for std::result::Result<T, std::io::Error> {
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|error| FsError::Io {
            context: f(),
            error,
        })
    }
}

impl<T> IoContext<T> for std::result::Result<T, Errno> {
    fn with_context<F: FnOnce() -> String>(self, f: F) -> Result<T> {
        self.map_err(|e| FsError::Io {
            context: f(),
            error: e.into(),
        })
    }
}

/// Attempts at a fresh temporary name before giving up (each name is random: a clash
/// means something else is creating files with the same names).
pub const TEMP_ATTEMPTS: usize = 16;
/// Most entries [`Dir::entries`] lists before refusing the directory.
pub const MAX_ENTRIES: usize = 1024;

/// What a name in a directory is, not following a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// Anything else (device, FIFO, socket).
    Other,
}

impl Kind {
    fn of(t: FileType) -> Kind {
        match t {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    /// How an error message names this kind.
    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a regular file",
            Kind::Dir => "a directory",
            Kind::Symlink => "a symbolic link",
            Kind::Other => "not a regular file",
        }
    }
}

/// A directory held open; names passed to its methods are single components.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC
}

fn single(name: &OsStr) -> Result<&OsStr> {
    let mut parts = Path::new(name).components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(n)), None) if n == name => Ok(name),
        _ => bail!("{name:?}: not a single file name"),
    }
}

fn random_suffix() -> String {
    use std::hash::{BuildHasher as _, Hasher as _};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is keyed from the OS's random source: the name cannot be guessed
    // ahead (O_EXCL is what makes it safe; the randomness keeps it from being blocked).
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    format!("{:016x}", h.finish())
}

impl Dir {
    /// Opens `path` as a directory, following symbolic links in it: for a path the caller
    /// trusts as a whole (a host root, a runner's working directory).
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rustix::fs::open(path, dir_flags(), Mode::empty())
            .with_context(|| format!("{}: cannot open the directory", path.display()))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// The path this directory was reached by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory (for messages).
    pub fn join(&self, name: impl AsRef<OsStr>) -> PathBuf {
        self.path.join(name.as_ref())
    }

    /// What `name` is, without following a link; `None` when it does not exist.
    pub fn kind(&self, name: impl AsRef<OsStr>) -> Result<Option<Kind>> {
        let name = single(name.as_ref())?;
        match rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Kind::of(FileType::from_raw_mode(st.st_mode)))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("{}: cannot stat", self.join(name).display())),
        }
    }

    fn refuse(&self, name: &OsStr, kind: Option<Kind>, wanted: &'static str) -> FsError {
        FsError::Refused {
            path: self.join(name),
            found: kind.map_or("not usable", Kind::describe),
            wanted,
        }
    }

    /// The directory `name` in this one, not following a link: `None` when it does not
    /// exist; an error naming it when it is a symbolic link or not a directory.
    pub fn subdir(&self, name: impl AsRef<OsStr>) -> Result<Option<Dir>> {
        let name = single(name.as_ref())?;
        match rustix::fs::openat(
            &self.fd,
            name,
            dir_flags() | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.join(name),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(Errno::LOOP | Errno::NOTDIR) => {
                Err(self.refuse(name, self.kind(name)?, "a directory"))
            }
            Err(e) => Err(e).with_context(|| format!("{}: cannot open", self.join(name).display())),
        }
    }

    /// As [`Dir::subdir`], creating the directory (mode 0755 before the umask) when it
    /// is missing; the flag says whether this call created it.
    pub fn create_subdir(&self, name: impl AsRef<OsStr>) -> Result<(Dir, bool)> {
        let name = single(name.as_ref())?;
        if let Some(d) = self.subdir(name)? {
            return Ok((d, false));
        }
        let created = match rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => true,
            Err(Errno::EXIST) => false,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot create", self.join(name).display()))
            }
        };
        match self.subdir(name)? {
            Some(d) => Ok((d, created)),
            None => bail!("{}: removed while being created", self.join(name).display()),
        }
    }

    /// Descends `rel` (plain components only) from this directory without following a
    /// link: a component that is a symbolic link or not a directory is an error naming
    /// it. `create`: missing directories are created; else `None` when one is missing.
    pub fn walk(&self, rel: impl AsRef<Path>, create: bool) -> Result<Option<Dir>> {
        let rel = rel.as_ref();
        let mut here: Option<Dir> = None;
        for c in rel.components() {
            let Component::Normal(name) = c else {
                bail!("{}: only plain path components are walked", rel.display());
            };
            let from = here.as_ref().unwrap_or(self);
            let next = if create {
                Some(from.create_subdir(name)?.0)
            } else {
                from.subdir(name)?
            };
            match next {
                Some(d) => here = Some(d),
                None => return Ok(None),
            }
        }
        match here {
            Some(d) => Ok(Some(d)),
            None => Ok(Some(Dir {
                fd: self
                    .fd
                    .try_clone()
                    .with_context(|| format!("{}: cannot duplicate", self.path.display()))?,
                path: self.path.clone(),
            })),
        }
    }

    /// The entries of this directory (not `.` or `..`), sorted by name, each with what
    /// it is (links not followed); more than [`MAX_ENTRIES`] is an error.
    pub fn entries(&self) -> Result<Vec<(OsString, Kind)>> {
        let list = || format!("{}: cannot list", self.path.display());
        let mut out = Vec::new();
        for entry in rustix::fs::Dir::read_from(&self.fd).with_context(list)? {
            let entry = entry.with_context(list)?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            if out.len() == MAX_ENTRIES {
                bail!(
                    "{}: more than {MAX_ENTRIES} entries: refusing to scan it (clean it up)",
                    self.path.display()
                );
            }
            // d_type may be unknown on some filesystems: ask lstat then.
            let kind = match entry.file_type() {
                FileType::Unknown => match self.kind(name)? {
                    Some(k) => k,
                    None => continue,
                },
                t => Kind::of(t),
            };
            out.push((name.to_os_string(), kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Whether `name` is a regular file holding exactly `content` (read through
    /// `O_NOFOLLOW`, at most `content.len()` bytes). Absent: false; a link or anything
    /// but a regular file: an error naming it.
    pub fn holds(&self, name: impl AsRef<OsStr>, content: &[u8]) -> Result<bool> {
        let name = single(name.as_ref())?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        let fd = match rustix::fs::openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(false),
            Err(Errno::LOOP) => return Err(self.refuse(name, self.kind(name)?, "a regular file")),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("{}: cannot open", self.join(name).display()))
            }
        };
        let st = rustix::fs::fstat(&fd)
            .with_context(|| format!("{}: cannot stat", self.join(name).display()))?;
        let kind = Kind::of(FileType::from_raw_mode(st.st_mode));
        if kind != Kind::File {
            return Err(self.refuse(name, Some(kind), "a regular file"));
        }
        if u64::try_from(st.st_size).ok() != Some(content.len() as u64) {
            return Ok(false);
        }
        let mut old = Vec::with_capacity(content.len());
        File::from(fd)
            .take(content.len() as u64)
            .read_to_end(&mut old)
            .with_context(|| format!("{}: cannot read", self.join(name).display()))?;
        Ok(old == content)
    }

    /// Removes the regular file `name`; false when it was absent. A symbolic link or
    /// anything but a regular file is an error naming it (nothing is removed).
    pub fn remove_file(&self, name: impl AsRef<OsStr>) -> Result<bool> {
        let name = single(name.as_ref())?;
        match self.kind(name)? {
            None => return Ok(false),
            Some(Kind::File) => {}
            other => return Err(self.refuse(name, other, "a regular file")),
        }
        // unlinkat never follows a link: even if the name were swapped since, only the
        // name goes.
        match rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => {
                Err(e).with_context(|| format!("{}: cannot remove", self.join(name).display()))
            }
        }
    }

    /// Renames `name` here to `to_name` in `to` (atomic on one filesystem; replaces the
    /// name `to_name`, never writes through it).
    pub fn rename(
        &self,
        name: impl AsRef<OsStr>,
        to: &Dir,
        to_name: impl AsRef<OsStr>,
    ) -> Result<()> {
        let (name, to_name) = (single(name.as_ref())?, single(to_name.as_ref())?);
        rustix::fs::renameat(&self.fd, name, &to.fd, to_name).with_context(|| {
            format!(
                "{}: cannot move to {}",
                self.join(name).display(),
                to.join(to_name).display()
            )
        })
    }

    /// Sets this directory's owner (on its descriptor).
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::fchown(&self.fd, Some(uid), Some(gid))
            .with_context(|| format!("{}: cannot chown to {uid}:{gid}", self.path.display()))
    }

    /// Syncs this directory (its entries) to disk.
    pub fn sync(&self) -> Result<()> {
        rustix::fs::fsync(&self.fd).with_context(|| format!("{}: cannot sync", self.path.display()))
    }

    /// Writes `content` to a new temporary file beside `name` (created with `O_EXCL`,
    /// random name, mode `mode` or 0600: files are private unless the caller asks) and,
    /// when `durable`, syncs it;
    /// call [`Staged::commit`] to move it over `name`. Dropping it removes the
    /// temporary file.
    pub fn stage(
        &self,
        name: impl AsRef<OsStr>,
        content: &[u8],
        mode: Option<u32>,
        durable: bool,
    ) -> Result<Staged> {
        let name = single(name.as_ref())?;
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let create_mode = Mode::from_raw_mode(mode.unwrap_or(0o600));
        let dir = self
            .fd
            .try_clone()
            .with_context(|| format!("{}: cannot duplicate", self.path.display()))?;
        let mut attempt = 0;
        let (tmp, fd) = loop {
            let mut tmp = OsString::from(".");
            tmp.push(name);
            tmp.push(format!(".tmp-{}", random_suffix()));
            match rustix::fs::openat(&self.fd, &tmp, flags, create_mode) {
                Ok(fd) => break (tmp, fd),
                Err(Errno::EXIST) if attempt + 1 < TEMP_ATTEMPTS => attempt += 1,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("{}: cannot create", self.join(&tmp).display()))
                }
            }
        };
        let staged = Staged {
            dir,
            dir_path: self.path.clone(),
            tmp,
            target: name.to_os_string(),
            file: File::from(fd),
            durable,
            committed: false,
        };
        let tmp_path = staged.dir_path.join(&staged.tmp);
        if let Some(mode) = mode {
            // The umask narrowed the creation mode: set it exactly, on the descriptor.
            use std::os::unix::fs::PermissionsExt;
            staged
                .file
                .set_permissions(std::fs::Permissions::from_mode(mode))
                .with_context(|| format!("{}: cannot set mode", tmp_path.display()))?;
        }
        (&staged.file)
            .write_all(content)
            .and_then(|_| {
                if durable {
                    staged.file.sync_all()
                } else {
                    Ok(())
                }
            })
            .with_context(|| format!("{}: cannot write", tmp_path.display()))?;
        Ok(staged)
    }
}

/// A file written to a temporary name in its directory, not yet in place.
#[derive(Debug)]
pub struct Staged {
    dir: OwnedFd,
    dir_path: PathBuf,
    tmp: OsString,
    target: OsString,
    file: File,
    durable: bool,
    committed: bool,
}

impl Staged {
    /// The temporary file's path (for messages; the file is reached by its descriptor).
    pub fn path(&self) -> PathBuf {
        self.dir_path.join(&self.tmp)
    }

    /// Sets the temporary file's owner, on its descriptor, before it goes into place.
    pub fn chown(&self, uid: u32, gid: u32) -> Result<()> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
            .with_context(|| format!("{}: cannot chown to {uid}:{gid}", self.path().display()))
    }

    /// Moves the staged file over its target (atomic on one filesystem; a link at the
    /// target's name is replaced, not followed).
    pub fn commit(mut self) -> Result<()> {
        rustix::fs::renameat(&self.dir, &self.tmp, &self.dir, &self.target).with_context(|| {
            format!(
                "{}: cannot move into place",
                self.dir_path.join(&self.target).display()
            )
        })?;
        self.committed = true;
        if self.durable {
            rustix::fs::fsync(&self.dir)
                .with_context(|| format!("{}: cannot sync", self.dir_path.display()))?;
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&self.dir, &self.tmp, AtFlags::empty());
        }
    }
}

/// Writes `content` to a temporary file beside `target` and syncs it to disk; call
/// [`Staged::commit`] to move it into place. Dropping it removes the temporary file.
pub fn stage(target: &Path, content: &[u8], mode: Option<u32>) -> Result<Staged> {
    stage_with(target, content, mode, true)
}

/// As [`stage`]; `durable: false` skips the fsyncs, for files a reader consumes right
/// away and that need not survive a power loss (a hook's output files). The directory
/// of `target` is opened as given (links in it followed: the caller chose it); the
/// temporary file is created with `O_EXCL | O_NOFOLLOW` under a random name.
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
    let name = target.file_name().ok_or_else(|| FsError::Invalid {
        message: format!("{}: not a file path", target.display()),
    })?;
    Dir::open(dir)?.stage(name, content, mode, durable)
}

/// Writes a file atomically (temporary file, fsync, rename).
pub fn write_atomic(target: &Path, content: &[u8]) -> Result<()> {
    stage(target, content, None)?.commit()
}

#[cfg(test)]
#[path = "fsutil_tests.rs"]
mod tests;
