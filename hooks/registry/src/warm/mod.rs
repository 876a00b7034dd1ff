//! The warm-up: a long-running process (the container `warm` of a Proxy registry's
//! static pod, `embedded-registry warm`) that keeps every image of the running release
//! in this master's cache, so the cluster can be pointed at the masters, and ride out
//! an upstream outage, without depending on what some node happened to pull.
//!
//! - The wanted list ([`list`]) comes from a file the node hook writes from the
//!   master's config Secret (`config/warm-images.json`, outside the pod's restart
//!   hash: a new release does not restart the registry); the process re-reads it when
//!   it changes (polled every [`LIST_POLL`]).
//! - A pass ([`pass`]) pulls every image through the local registry, which stores what
//!   it proxies: manifests by digest (an index: every child), each config and layer
//!   blob once per pass (layers shared by images once), only what the storage lacks
//!   ([`store`] reads it from the data directory: resumable after any restart), with
//!   [`Options::concurrency`] requests at a time ([`net`]: self-signed pull tokens,
//!   capped reads, retries with a back-off).
//! - After each pass it writes its [`progress::Progress`] atomically to the host; the
//!   node hook publishes it in the status ConfigMap and as metrics, and
//!   `registry-switch` waits for it (`CacheWarm`).
//! - Once the running release is all cached, it warms the next releases the list file
//!   names ([`next`]: announced by Deckhouse, not yet rolled out): their platform image
//!   first, then every module image its `images_digests.json` names, with the same
//!   pass; their progress goes into the same file (`next`).
//! - It passes again every [`Options::interval`] (distribution 2.8 expires proxied
//!   content after 7 days whatever `proxy.ttl` says: what expired is fetched again
//!   while the upstream answers), sooner after a failed pass (back-off from
//!   [`RETRY_MIN`] doubling to the interval), and at once when the list changes.

pub mod list;
pub mod net;
pub mod next;
pub mod pass;
pub mod progress;
pub mod store;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;

use list::{ListFile, WantedList};
use progress::{NextProblem, NextProgress};

/// How often the list file is looked at between passes.
pub const LIST_POLL: Duration = Duration::from_secs(10);
/// The first wait after a pass that left images missing; it doubles up to the interval.
pub const RETRY_MIN: Duration = Duration::from_secs(30);
/// The default requests at a time.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The most requests at a time.
pub const MAX_CONCURRENCY: usize = 32;

/// What the process is given.
#[derive(Clone, Debug)]
pub struct Options {
    /// distribution's configuration (`/config/distribution.yaml`): the registry's
    /// address, its token issuer and service, its data directory, whether it proxies.
    pub config: PathBuf,
    /// The wanted list file.
    pub list: PathBuf,
    /// The PKI directory (`ca.crt`, `token.key`, `token.crt`).
    pub pki: PathBuf,
    /// The progress file written after each pass.
    pub progress: PathBuf,
    /// Requests at a time.
    pub concurrency: usize,
    /// Time between passes.
    pub interval: Duration,
    /// One pass, then exit (0: every image cached, 1: not).
    pub once: bool,
}

/// What the process reads of distribution's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// `http.addr`.
    pub addr: String,
    /// `auth.token.issuer`.
    pub issuer: String,
    /// `auth.token.service`.
    pub service: String,
    /// `storage.filesystem.rootdirectory`.
    pub root: PathBuf,
    /// It has a `proxy` section.
    pub proxying: bool,
}

impl RegistryConfig {
    /// Reads it from the configuration's text; `Err` names the missing key.
    pub fn parse(text: &str) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Http {
            addr: String,
        }
        #[derive(Deserialize)]
        struct Token {
            issuer: String,
            service: String,
        }
        #[derive(Deserialize)]
        struct Auth {
            token: Token,
        }
        #[derive(Deserialize)]
        struct Fs {
            rootdirectory: PathBuf,
        }
        #[derive(Deserialize)]
        struct Storage {
            filesystem: Fs,
        }
        #[derive(Deserialize)]
        struct Dist {
            http: Http,
            auth: Auth,
            storage: Storage,
            proxy: Option<serde_yaml_ng::Value>,
        }
        let d: Dist = serde_yaml_ng::from_str(text).map_err(|e| {
            format!("not a registry configuration with http.addr, auth.token.issuer/service and storage.filesystem.rootdirectory ({})", crate::untrusted::escape_controls(&e.to_string()))
        })?;
        Ok(RegistryConfig {
            addr: d.http.addr,
            issuer: d.auth.token.issuer,
            service: d.auth.token.service,
            root: d.storage.filesystem.rootdirectory,
            proxying: d.proxy.is_some(),
        })
    }
}

fn read_capped(path: &Path, cap: u64, what: &str) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let f = std::fs::File::open(path).map_err(|e| format!("{what} {}: {e}", path.display()))?;
    let mut out = Vec::new();
    f.take(cap + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if out.len() as u64 > cap {
        return Err(format!(
            "{what} {}: larger than {cap} bytes",
            path.display()
        ));
    }
    Ok(out)
}

/// The registry client and what it needs, from the pod's files; `Err` is one line
/// naming the file.
pub fn setup(opts: &Options) -> Result<(RegistryConfig, net::Registry), String> {
    let text = read_capped(&opts.config, 1 << 20, "--config")?;
    let text = String::from_utf8(text)
        .map_err(|_| format!("--config {}: not UTF-8", opts.config.display()))?;
    let cfg = RegistryConfig::parse(&text)
        .map_err(|e| format!("--config {}: {e}", opts.config.display()))?;
    let pki = |name: &str| -> Result<String, String> {
        String::from_utf8(read_capped(&opts.pki.join(name), 1 << 20, "--pki")?)
            .map_err(|_| format!("--pki {}: not UTF-8", opts.pki.join(name).display()))
    };
    let registry = net::Registry::new(
        &cfg.addr,
        &pki("ca.crt")?,
        &pki("token.key")?,
        &pki("token.crt")?,
        &cfg.issuer,
        &cfg.service,
    )
    .map_err(|e| format!("--pki {}: {e}", opts.pki.display()))?;
    Ok((cfg, registry))
}

/// The list file's bytes and what it names (`Ok(None)`: no file).
fn read_list(path: &Path) -> Result<(Vec<u8>, Option<ListFile>), String> {
    if !path.exists() {
        return Ok((Vec::new(), None));
    }
    let bytes = read_capped(path, list::MAX_FILE_BYTES, "--list")?;
    let l = ListFile::parse(&bytes).map_err(|e| format!("--list {}: {e}", path.display()))?;
    Ok((bytes, Some(l)))
}

/// Warms the next release `version` after the running `list`: its platform image,
/// then its list read from that image. The progress says how far it got.
fn warm_next(
    file: &ListFile,
    list: &WantedList,
    version: &str,
    store: &store::Store,
    registry: &net::Registry,
    opts: &Options,
    proxying: bool,
) -> NextProgress {
    let now = || crate::clock::now().unwrap_or_default();
    let platform = list.platform(version);
    let out = pass::run(
        &platform,
        store,
        registry,
        opts.concurrency,
        proxying,
        now(),
    );
    if !out.progress.complete() {
        log(
            "warn",
            "next release: its platform image is not cached",
            serde_json::json!({"version": version, "errors": out.errors}),
        );
        return NextProgress::from_pass(version, &out.progress, Some(NextProblem::PlatformImage));
    }
    let digests = next::release_digests(store, &list.repository, version)
        .map_err(|e| e.to_string())
        .and_then(|d| {
            let d = serde_json::to_value(d).map_err(|e| e.to_string())?;
            WantedList::build(&file.base, version, &d).map_err(|e| e.to_string())
        });
    let next = match digests {
        Ok(Some(l)) => l,
        Ok(None) | Err(_) => {
            let error = digests.err().unwrap_or_default();
            log(
                "error",
                "next release: its module images cannot be read",
                serde_json::json!({"version": version, "error": error}),
            );
            return NextProgress::from_pass(version, &out.progress, Some(NextProblem::DigestsFile));
        }
    };
    let started = Instant::now();
    let out = pass::run(&next, store, registry, opts.concurrency, proxying, now());
    let p = NextProgress::from_pass(version, &out.progress, None);
    log(
        if p.complete() { "info" } else { "warn" },
        "next release pass",
        serde_json::json!({
            "version": version, "listHash": p.list_hash, "cached": p.cached, "wanted": p.wanted,
            "bytes": p.bytes, "missing": p.missing, "unavailable": p.unavailable,
            "fetchedBlobs": out.fetched_blobs, "fetchedBytes": out.fetched_bytes,
            "errors": out.errors, "seconds": started.elapsed().as_secs_f64(),
        }),
    );
    p
}

fn write_progress(path: &Path, p: &progress::Progress) {
    if let Err(e) = hook_sdk::fsutil::write_atomic(path, &p.to_bytes()) {
        log(
            "error",
            "writing the progress file",
            serde_json::json!({"error": e.to_string()}),
        );
    }
}

fn log(level: &str, msg: &str, fields: serde_json::Value) {
    let mut line = serde_json::json!({"level": level, "msg": msg});
    if let (Some(l), Some(f)) = (line.as_object_mut(), fields.as_object()) {
        l.extend(f.clone());
    }
    eprintln!("{line}");
}

/// Runs the process: passes until killed (or one with [`Options::once`]); returns the
/// exit code.
pub fn run(opts: &Options) -> u8 {
    let (cfg, registry) = match setup(opts) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("warm: {e}");
            return 2;
        }
    };
    let store = store::Store::new(&cfg.root);
    let mut retry = RETRY_MIN;
    let mut last_next: Vec<NextProgress> = Vec::new();
    loop {
        let (bytes, wanted) = match read_list(&opts.list) {
            Ok(x) => x,
            Err(e) => {
                // A bad list is the chart's or an editor's fault: say so, wait for a new one.
                log(
                    "error",
                    "wanted list refused",
                    serde_json::json!({"error": e}),
                );
                if opts.once {
                    return 2;
                }
                wait_for_change(&opts.list, &[], opts.interval);
                continue;
            }
        };
        let running = wanted.as_ref().and_then(|f| f.running.as_ref());
        if let Some(f) = wanted.as_ref().filter(|f| !f.refused_next.is_empty()) {
            log(
                "error",
                "next releases refused",
                serde_json::json!({"refused": f.refused_next}),
            );
        }
        let complete = match (&wanted, running) {
            (Some(file), Some(l)) => {
                let started = Instant::now();
                let now = crate::clock::now().unwrap_or_default();
                let out = pass::run(l, &store, &registry, opts.concurrency, cfg.proxying, now);
                let mut p = out.progress.clone();
                // What the last round found of the next releases still named stands
                // until this round warms them again.
                p.next = last_next
                    .iter()
                    .filter(|n| file.next.contains(&n.version))
                    .cloned()
                    .collect();
                write_progress(&opts.progress, &p);
                log(
                    if p.complete() { "info" } else { "warn" },
                    "pass",
                    serde_json::json!({
                        "listHash": p.list_hash, "cached": p.cached, "wanted": p.wanted,
                        "bytes": p.bytes, "missing": p.missing, "unavailable": p.unavailable,
                        "fetchedBlobs": out.fetched_blobs, "fetchedBytes": out.fetched_bytes,
                        "fetchedManifests": out.fetched_manifests, "errors": out.errors,
                        "seconds": started.elapsed().as_secs_f64(),
                    }),
                );
                // The next releases only once the running one is all cached: it comes first.
                if p.complete() && !file.next.is_empty() {
                    p.next = file
                        .next
                        .iter()
                        .map(|v| warm_next(file, l, v, &store, &registry, opts, cfg.proxying))
                        .collect();
                    write_progress(&opts.progress, &p);
                }
                last_next = p.next.clone();
                p.complete()
                    && p.next.len() == file.next.len()
                    && p.next.iter().all(NextProgress::complete)
            }
            _ => {
                log(
                    "info",
                    "no wanted list: nothing to warm",
                    serde_json::json!({"list": opts.list}),
                );
                true
            }
        };
        if opts.once {
            return if complete { 0 } else { 1 };
        }
        let wait = if complete {
            retry = RETRY_MIN;
            opts.interval
        } else {
            let w = retry.min(opts.interval);
            retry = (retry * 2).min(opts.interval);
            w
        };
        wait_for_change(&opts.list, &bytes, wait);
    }
}

/// Waits `wait`, or less when the list file's content differs from `seen` (looked at
/// every [`LIST_POLL`]).
fn wait_for_change(list: &Path, seen: &[u8], wait: Duration) {
    let end = Instant::now() + wait;
    while Instant::now() < end {
        std::thread::sleep(LIST_POLL.min(end.saturating_duration_since(Instant::now())));
        let now = read_capped(list, list::MAX_FILE_BYTES, "--list").unwrap_or_default();
        if now != seen {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_needs_of_the_registry_configuration() {
        let c = RegistryConfig::parse(
            "http: {addr: '10.0.0.1:5001'}\nauth: {token: {issuer: i, service: s, realm: r}}\nstorage: {filesystem: {rootdirectory: /data}}\nproxy: {remoteurl: 'https://u'}\n",
        )
        .unwrap();
        assert_eq!(c.addr, "10.0.0.1:5001");
        assert_eq!((c.issuer.as_str(), c.service.as_str()), ("i", "s"));
        assert!(c.proxying);
        let e = RegistryConfig::parse("http: {addr: x}\n").unwrap_err();
        assert!(
            e.starts_with("not a registry configuration") && !e.contains('\n'),
            "{e}"
        );
    }
}
