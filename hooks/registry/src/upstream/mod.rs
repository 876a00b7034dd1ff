//! The upstream check: can the cluster pull through this upstream? Walks the real flow
//! (`/v2/`, credentials, a token per repository scope, `HEAD` of each manifest the
//! cluster needs) within a time budget, and says what is wrong in words an admin can
//! act on. Used by the `upstream-check` hook and the `check-upstream` command.
//!
//! About 400 lines of code (the walk of the real flow and its report); the unit tests
//! are in `tests.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Serialize;

use crate::distribution::client::{read_body, Body, MANIFEST_ACCEPT};

use crate::distribution::{Auth, Client, Credentials, Endpoint, Failure, Kind};

/// An image to check: a repository relative to the upstream path, and a tag or digest.
/// Ordered by name, then reference (a release list sorts with it).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Image {
    /// Repository below the path; empty for the path's own repository.
    pub name: String,
    /// Tag or `sha256:...` digest.
    pub reference: String,
}

/// Why an image argument was refused; the message quotes it and says the form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Neither `:TAG` nor `@DIGEST`.
    #[error("image {0:?} needs a tag or digest: NAME:TAG, NAME@sha256:..., or :TAG for the path's own repository")]
    NoReference(String),
    /// A repository name or reference that is not valid.
    #[error("image {0:?} is not NAME:TAG or NAME@DIGEST")]
    Malformed(String),
}

impl Image {
    /// Parses `NAME:TAG`, `NAME@DIGEST`, `:TAG` or `@DIGEST` (the path's repository).
    pub fn parse(s: &str) -> Result<Self, ImageError> {
        let s = s.trim();
        let (name, reference) = if let Some((n, d)) = s.split_once('@') {
            (n, d)
        } else if let Some(i) = s.rfind(':').filter(|i| !s[*i..].contains('/')) {
            (&s[..i], &s[i + 1..])
        } else {
            return Err(ImageError::NoReference(s.to_string()));
        };
        let name = name.trim_matches('/');
        let valid_name = name.is_empty() || crate::untrusted::repository_path(name);
        if !valid_name || reference.is_empty() || reference.contains('/') {
            return Err(ImageError::Malformed(s.to_string()));
        }
        Ok(Image {
            name: name.to_string(),
            reference: reference.to_string(),
        })
    }

    /// The repository under `path`.
    pub fn repository(&self, path: &str) -> String {
        let path = path.trim_matches('/');
        match (path.is_empty(), self.name.is_empty()) {
            (true, _) => self.name.clone(),
            (false, true) => path.to_string(),
            (false, false) => format!("{path}/{}", self.name),
        }
    }

    fn shown(&self, path: &str) -> String {
        let sep = if self.reference.starts_with("sha256:") {
            '@'
        } else {
            ':'
        };
        format!("{}{sep}{}", self.repository(path), self.reference)
    }
}

/// What to check.
#[derive(Debug, Clone)]
pub struct Spec {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Repository path, e.g. `/deckhouse/ee`.
    pub path: String,
    /// Credentials, if any.
    pub credentials: Option<Credentials>,
    /// CA bundle (PEM) trusted beside the system roots.
    pub ca_pem: Option<String>,
    /// Trust only `ca_pem` (the module's own registries).
    pub ca_only: bool,
    /// DNS overrides (`host`, address).
    pub resolve: Vec<(String, std::net::IpAddr)>,
    /// Manifests to `HEAD`.
    pub images: Vec<Image>,
    /// Parallel manifest requests.
    pub concurrency: usize,
    /// The whole check ends within this.
    pub budget: Duration,
    /// No single request takes longer.
    pub request_timeout: Duration,
}

impl Spec {
    /// Defaults: 8 parallel requests, 30 s overall, 10 s per request.
    pub fn new(scheme: &str, host: &str, path: &str) -> Self {
        Spec {
            scheme: scheme.into(),
            host: host.into(),
            path: path.into(),
            credentials: None,
            ca_pem: None,
            ca_only: false,
            resolve: crate::distribution::client::resolve_overrides(),
            images: Vec::new(),
            concurrency: 8,
            budget: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// One image's result.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageResult {
    /// `repository:tag` or `repository@digest`.
    pub image: String,
    /// The manifest exists and may be pulled.
    pub ok: bool,
    /// Its digest, from `Docker-Content-Digest`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
}

/// The check's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The upstream is usable: it answers, the credentials work, every image is there.
    pub ok: bool,
    /// `scheme://host/path`.
    pub registry: String,
    /// `anonymous`, `basic`, `bearer`, or empty when `/v2/` failed.
    pub auth: String,
    /// The first failure (the registry's, or the first image's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// Per-image results, in the order given.
    pub images: Vec<ImageResult>,
    /// HTTP requests sent.
    pub requests: usize,
    /// Token requests among them.
    pub token_requests: usize,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Report {
    /// Lines for a human: a verdict, then one line per image.
    pub fn human(&self) -> String {
        let ok = || {
            format!(
                "{} is usable ({} auth, {} image(s) found)",
                self.registry,
                self.auth,
                self.images.len()
            )
        };
        let lines = self.images.iter().map(|i| match (&i.digest, &i.failure) {
            (_, Some(f)) => format!("missing {}: {f}", i.image),
            (Some(d), None) => format!("found   {} ({d})", i.image),
            (None, None) => format!("found   {}", i.image),
        });
        crate::distribution::failure::human_report(self.failure.as_ref(), ok, lines)
    }
}

/// The kebab-case name of a failure kind ([`Kind::as_str`]).
pub fn kind_name(kind: Kind) -> String {
    kind.as_str().to_string()
}

/// What runs a check: the network in production and end-to-end tests ([`Network`]), a
/// fake in unit tests, so that a hook handler does no I/O of its own.
pub trait Checker {
    /// The check of `spec`.
    fn check(&self, spec: &Spec) -> Report;
}

pub use crate::distribution::Network;

/// The real check, over the network ([`check`]).
impl Checker for Network {
    fn check(&self, spec: &Spec) -> Report {
        check(spec)
    }
}

/// Runs the check; never longer than `spec.budget` (plus one request's connect).
pub fn check(spec: &Spec) -> Report {
    let started = Instant::now();
    let deadline = crate::distribution::client::deadline(started, spec.budget);
    let path = spec.path.trim_matches('/').to_string();
    let registry = format!("{}://{}/{}", spec.scheme, spec.host, path)
        .trim_end_matches('/')
        .to_string();
    let endpoint = Endpoint {
        scheme: spec.scheme.clone(),
        host: spec.host.clone(),
        credentials: spec.credentials.clone(),
        ca_pem: spec.ca_pem.clone(),
        ca_only: spec.ca_only,
        resolve: spec.resolve.clone(),
    };
    let mut report = Report {
        ok: false,
        registry,
        auth: String::new(),
        failure: None,
        images: Vec::new(),
        requests: 0,
        token_requests: 0,
        elapsed_ms: 0,
    };
    let client = match Client::connect(endpoint, spec.request_timeout, deadline) {
        Ok(c) => c,
        Err(f) => {
            report.failure = Some(f);
            report.elapsed_ms = started.elapsed().as_millis() as u64;
            return report;
        }
    };
    report.auth = client.auth().name().to_string();
    if let Err(f) = prove_credentials(&client, spec, &path) {
        report.failure = Some(f);
    } else {
        report.images = check_images(&client, spec, &path);
        report.failure = report.images.iter().find_map(|i| i.failure.clone());
    }
    report.ok = report.failure.is_none();
    report.requests = client.requests();
    report.token_requests = client.token_requests();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// Credentials are proven before any manifest: "login works" alone is not enough,
/// but a bad password must be named as such, not as a missing image.
fn prove_credentials(client: &Client, spec: &Spec, path: &str) -> Result<(), Failure> {
    match client.auth() {
        Auth::Anonymous => Ok(()),
        Auth::Basic => client.login_basic(),
        Auth::Bearer { .. } => {
            let repo = spec
                .images
                .first()
                .map(|i| i.repository(path))
                .unwrap_or_else(|| path.to_string());
            client.token(&format!("repository:{repo}:pull")).map(drop)
        }
    }
}

fn check_images(client: &Client, spec: &Spec, path: &str) -> Vec<ImageResult> {
    let n = spec.images.len();
    let results: Vec<Mutex<Option<ImageResult>>> = (0..n).map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..spec.concurrency.clamp(1, n.max(1)) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(image) = spec.images.get(i) else {
                    break;
                };
                let r = check_image(client, image, path);
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every image checked")
        })
        .collect()
}

fn check_image(client: &Client, image: &Image, path: &str) -> ImageResult {
    let repo = image.repository(path);
    let shown = image.shown(path);
    let outcome = head_manifest(client, &repo, &image.reference, &shown);
    match outcome {
        Ok(digest) => ImageResult {
            image: shown,
            ok: true,
            digest,
            failure: None,
        },
        Err(f) => ImageResult {
            image: shown,
            ok: false,
            digest: None,
            failure: Some(f),
        },
    }
}

fn head_manifest(
    client: &Client,
    repo: &str,
    reference: &str,
    shown: &str,
) -> Result<Option<String>, Failure> {
    let tail = format!("manifests/{reference}");
    let resp = client.send(Method::HEAD, repo, &tail, "pull", Some(MANIFEST_ACCEPT))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match status {
        200 => Ok(header("docker-content-digest")),
        401 => {
            let challenge = header("www-authenticate").unwrap_or_default();
            if challenge.contains("insufficient_scope")
                || matches!(client.auth(), Auth::Bearer { .. })
            {
                Err(Failure::new(Kind::Denied, format!("{shown}: no pull rights on {repo} for these credentials; grant the user pull on the path")))
            } else {
                Err(Failure::new(Kind::BadCredentials, format!("{shown}: the registry refused the credentials; check proxy.user and proxy.password")))
            }
        }
        403 => Err(Failure::new(
            Kind::Denied,
            format!("{shown}: access denied to {repo}; grant the user pull on the path"),
        )),
        404 => Err(classify_missing(client, repo, reference, shown)),
        code => Err(Failure::new(
            Kind::Http,
            format!("{shown}: the registry answered HTTP {code}"),
        )),
    }
}

/// `HEAD` has no body, and distribution answers `MANIFEST_UNKNOWN` for a missing
/// repository too: the tag list tells a wrong path from a missing tag.
fn classify_missing(client: &Client, repo: &str, reference: &str, shown: &str) -> Failure {
    let code = match client.send(Method::GET, repo, "tags/list?n=1", "pull", None) {
        Ok(r) if r.status().as_u16() == 404 => match read_body(r, Body::Error) {
            Ok(body) => Some((404, String::from_utf8_lossy(&body).into_owned())),
            Err(f) => return f,
        },
        Ok(r) => Some((r.status().as_u16(), String::new())),
        Err(_) => None,
    };
    match code {
        Some((200, _)) => Failure::new(
            Kind::ManifestUnknown,
            format!("{shown}: {repo} has no {reference}: this release is not in the upstream (wrong edition, or not mirrored yet)"),
        ),
        Some((404, body)) if body.contains("NAME_UNKNOWN") || body.is_empty() || body.contains("MANIFEST_UNKNOWN") => Failure::new(
            Kind::NameUnknown,
            format!("{shown}: repository {repo} does not exist: check proxy.path (and the edition, e.g. /deckhouse/ee)"),
        ),
        _ => Failure::new(
            Kind::ManifestUnknown,
            format!("{shown}: not found in the upstream (wrong path, edition or release)"),
        ),
    }
}

/// A registry for unit tests that holds every image but those whose reference starts
/// with `sha256:f`: the report a [`Checker`] fake gives for `spec` (`elapsed_ms` carries
/// the spec's budget, so a test sees what it was given).
#[cfg(test)]
pub(crate) fn holds_all_but_f(spec: &Spec) -> Report {
    use crate::distribution::{Failure, Kind};
    let images: Vec<ImageResult> = spec
        .images
        .iter()
        .map(|i| {
            let image = format!("{}@{}", i.repository(&spec.path), i.reference);
            let failure = i
                .reference
                .starts_with("sha256:f")
                .then(|| Failure::new(Kind::ManifestUnknown, format!("{image}: not there")));
            ImageResult {
                image,
                ok: failure.is_none(),
                digest: None,
                failure,
            }
        })
        .collect();
    let failure = images.iter().find_map(|i| i.failure.clone());
    Report {
        ok: failure.is_none(),
        registry: format!("{}://{}{}", spec.scheme, spec.host, spec.path),
        auth: "bearer".into(),
        failure,
        images,
        requests: 1,
        token_requests: 1,
        elapsed_ms: spec.budget.as_millis() as u64,
    }
}

#[cfg(test)]
mod tests;
