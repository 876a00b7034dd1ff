//! The S3 storage check: can distribution keep its data in this bucket? Walks what the
//! registry will do, within a time budget: ListBuckets (the credentials), a one-key
//! listing of the bucket under the root directory (the bucket exists and may be read),
//! then `PUT`, `GET` and `DELETE` of a small probe object under the root directory
//! (write, read back byte-identical, delete). Each failure is classified
//! ([`Kind`]) in one line that names the setting to fix and holds no secret. Run
//! through the [`Checker`] trait, like the upstream check, so that the switch can call
//! it and a unit test can fake it.
//!
//! Requests are SigV4-presigned (`rusty-s3`, sans-IO) and sent with the module's
//! reqwest+rustls client; TLS is verified against `s3.ca` beside the system roots. No
//! request is retried; every answer body is read up to a cap ([`limits`]).
//!
//! Longer than 400 lines for a reason: [`Run`]'s steps share the one client, deadline,
//! request counter and report, and each step's classification sits with its request
//! (the answers' classification is in `classify.rs`, the unit tests in `tests.rs`).

pub mod classify;

use std::io::Read;
use std::time::{Duration, Instant};

use reqwest::blocking::Client as Http;
use reqwest::Url;
use serde::Serialize;

pub use classify::Step;

use crate::distribution::failure::FailureKind;
use crate::model::switch::S3Target;

/// The caps on what the check reads and how long it waits.
pub mod limits {
    use std::time::Duration;

    /// The most read of a ListBuckets answer: 1 MiB (AWS allows 10 000 buckets of 63
    /// characters, about 1.5 MiB of XML, but a key that owns that many is not a
    /// registry's; a larger answer is `oversize`).
    pub const LIST_BUCKETS_BYTES: u64 = 1 << 20;
    /// The most read of any other answer (a one-key listing, an error document, the
    /// probe object): 64 KiB.
    pub const ANSWER_BYTES: u64 = 64 << 10;
    /// The probe object's size: 64 bytes of random data.
    pub const PROBE_BYTES: usize = 64;
    /// How long a presigned URL stays valid: 5 minutes (S3 accepts 1 s to 7 days;
    /// this absorbs clock skew between the node and the S3 server).
    pub const PRESIGN: Duration = Duration::from_secs(300);
    /// The default time budget of the whole check.
    pub const BUDGET: Duration = Duration::from_secs(30);
    /// The default limit of one request (connect included).
    pub const REQUEST: Duration = Duration::from_secs(10);
}

/// The class of a storage check failure; stable kebab-case names for JSON output,
/// metrics and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum Kind {
    /// The server refused the access key or the signature (secret key).
    BadCredentials,
    /// The bucket does not exist.
    NoBucket,
    /// The key is valid but may not read, write or delete in the bucket.
    Denied,
    /// The signature's region is not the server's.
    WrongRegion,
    /// The endpoint does not answer like an S3 API.
    NotS3,
    /// An answer larger than the check reads ([`limits`]).
    Oversize,
    /// Any other unexpected answer (a 5xx, a probe read back different).
    Http,
    /// One of the upstream check's transport and TLS kinds, under its own name (`dns`,
    /// `connect`, `timeout`, `tls-name-mismatch`, `tls-unknown-ca`, `tls-expired`,
    /// `tls`): the same classification of the same client's errors.
    #[serde(untagged)]
    Transport(crate::distribution::Kind),
}

impl FailureKind for Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Transport(k) => k.as_str(),
            other => other.into(),
        }
    }
}

impl Kind {
    /// The kinds of the storage check's own (the transport kinds are
    /// [`crate::distribution::Kind`]'s).
    pub const OWN: [Kind; 7] = [
        Kind::BadCredentials,
        Kind::NoBucket,
        Kind::Denied,
        Kind::WrongRegion,
        Kind::NotS3,
        Kind::Oversize,
        Kind::Http,
    ];

    /// The kind named `name` ([`FailureKind::as_str`]), as a check record keeps it.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::OWN
            .into_iter()
            .find(|k| k.as_str() == name)
            .or_else(|| crate::distribution::Kind::from_name(name).map(Kind::Transport))
    }

    /// The reason of the `ChecksPassed` condition when the storage check failed with
    /// this kind: `Check` and the name in CamelCase (`docs/internal/storage.md`).
    pub fn reason(self) -> &'static str {
        match self {
            Kind::Transport(k) => k.reason(),
            Kind::BadCredentials => "CheckBadCredentials",
            Kind::NoBucket => "CheckNoBucket",
            Kind::Denied => "CheckDenied",
            Kind::WrongRegion => "CheckWrongRegion",
            Kind::NotS3 => "CheckNotS3",
            Kind::Oversize => "CheckOversize",
            Kind::Http => "CheckHttp",
        }
    }
}

/// A classified failure: a one-line message naming the setting to fix, no secret in it
/// (the upstream check's shape, shown as `[kind] message`).
pub type Failure = crate::distribution::failure::Failure<Kind>;

/// What to check: the `s3` settings (the same [`S3Target`] the switch keeps), and the
/// check's limits.
#[derive(Clone, Debug)]
pub struct Spec {
    /// The bucket and its credentials; `Debug` hides the secret key.
    pub s3: S3Target,
    /// DNS overrides (`host`, address), as for the upstream check.
    pub resolve: Vec<(String, std::net::IpAddr)>,
    /// The whole check ends within this.
    pub budget: Duration,
    /// No single request takes longer.
    pub request_timeout: Duration,
}

/// The default `rootDirectory`.
pub const DEFAULT_ROOT_DIRECTORY: &str = "/embedded-registry";

/// Where the probe objects go, below the root directory (outside distribution's
/// `docker/registry/v2`, so its garbage collection never sees them).
pub const PROBE_DIR: &str = "_embedded-registry-check";

impl Spec {
    /// A spec with the defaults: root `/embedded-registry`, path style, no CA, the
    /// [`limits`] budget and request time.
    pub fn new(
        endpoint: &str,
        region: &str,
        bucket: &str,
        access_key: &str,
        secret_key: &str,
    ) -> Self {
        Spec::for_target(S3Target {
            endpoint: endpoint.into(),
            region: region.into(),
            bucket: bucket.into(),
            root_directory: DEFAULT_ROOT_DIRECTORY.into(),
            access_key: access_key.into(),
            secret_key: secret_key.into(),
            ca: None,
            force_path_style: true,
        })
    }

    /// A spec of `s3` with the [`limits`] budget and request time.
    pub fn for_target(s3: S3Target) -> Self {
        Spec {
            s3,
            resolve: crate::distribution::client::resolve_overrides(),
            budget: limits::BUDGET,
            request_timeout: limits::REQUEST,
        }
    }

    /// Checks the fields an admin wrote; `Err` is one line naming the field and the fix
    /// (a usage error: no request is sent). Never echoes a key.
    pub fn validate(&self) -> Result<Url, String> {
        let url = Url::parse(&self.s3.endpoint).map_err(|e| {
            format!("s3.endpoint {:?} is not a URL ({e}): write scheme://host[:port], e.g. https://s3.example.com:3900", self.s3.endpoint)
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!(
                "s3.endpoint {:?}: the scheme must be https or http",
                self.s3.endpoint
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(
                "s3.endpoint holds credentials: put them in s3.accessKey and s3.secretKey instead"
                    .into(),
            );
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(format!(
                "s3.endpoint {:?} has no host: write scheme://host[:port]",
                self.s3.endpoint
            ));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "s3.endpoint {:?} must be scheme://host[:port] without a path or query",
                self.s3.endpoint
            ));
        }
        let b = self.s3.bucket.as_bytes();
        let bucket_ok = (3..=63).contains(&b.len())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric();
        if !bucket_ok {
            return Err(format!("s3.bucket {:?} is not an S3 bucket name: 3 to 63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit", self.s3.bucket));
        }
        if self.s3.region.is_empty()
            || self.s3.region.len() > 64
            || !self
                .s3
                .region
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return Err(format!("s3.region {:?} must be a region name (letters, digits, '-', '_'), e.g. garage or us-east-1", self.s3.region));
        }
        let root = &self.s3.root_directory;
        if root.len() > 256
            || root.chars().any(char::is_control)
            || root.split('/').any(|c| c == "." || c == "..")
        {
            return Err(format!("s3.rootDirectory {root:?} must be a plain path such as /embedded-registry (no '.' or '..', at most 256 characters)"));
        }
        if self.s3.access_key.is_empty()
            || self
                .s3
                .access_key
                .chars()
                .any(|c| c.is_control() || c == ' ')
        {
            return Err(
                "s3.accessKey is empty or holds spaces or control characters: give the key id"
                    .into(),
            );
        }
        if self.s3.secret_key.is_empty() || self.s3.secret_key.chars().any(char::is_control) {
            return Err(
                "s3.secretKey is empty or holds control characters: give the secret key".into(),
            );
        }
        Ok(url)
    }

    /// The probe object's key for `nonce`: `<root>/_embedded-registry-check/<nonce>`.
    pub fn probe_key(&self, nonce: &str) -> String {
        let root = self.s3.root_directory.trim_matches('/');
        if root.is_empty() {
            format!("{PROBE_DIR}/{nonce}")
        } else {
            format!("{root}/{PROBE_DIR}/{nonce}")
        }
    }
}

/// One step's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step's name ([`Step::name`]).
    pub step: &'static str,
    /// It did what the registry needs.
    pub ok: bool,
    /// The HTTP status, when an answer came.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// The check's outcome.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The bucket is usable: credentials, bucket, write, read back and delete.
    pub ok: bool,
    /// The endpoint, as given.
    pub endpoint: String,
    /// The bucket.
    pub bucket: String,
    /// The region signed with.
    pub region: String,
    /// The first failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// The steps run, in order.
    pub steps: Vec<StepResult>,
    /// HTTP requests sent.
    pub requests: usize,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl Report {
    /// Lines for a human: a verdict, then one line per step.
    pub fn human(&self) -> String {
        let ok = || {
            format!(
                "bucket {} at {} is usable (read, write, delete)",
                self.bucket, self.endpoint
            )
        };
        let lines = self.steps.iter().map(|s| {
            let status = s.status.map(|c| format!(" (HTTP {c})")).unwrap_or_default();
            let verdict = if s.ok { "ok    " } else { "failed" };
            format!("{verdict} {}{status}", s.step)
        });
        crate::distribution::failure::human_report(self.failure.as_ref(), ok, lines)
    }
}

/// What runs a storage check: the network in production and end-to-end tests
/// ([`Network`]), a fake in unit tests.
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

/// Runs the check; never longer than `spec.budget` (plus one request's connect). An
/// invalid spec ([`Spec::validate`]) is reported as a failure of kind `not-s3` for an
/// endpoint that is no URL, without a request.
pub fn check(spec: &Spec) -> Report {
    let started = Instant::now();
    let mut report = Report {
        ok: false,
        endpoint: spec.s3.endpoint.clone(),
        bucket: spec.s3.bucket.clone(),
        region: spec.s3.region.clone(),
        failure: None,
        steps: Vec::new(),
        requests: 0,
        elapsed_ms: 0,
    };
    let outcome = match spec.validate() {
        Err(e) => Err(Failure::new(Kind::NotS3, e)),
        Ok(url) => Run::new(spec, url, started, &mut report).and_then(|run| run.all()),
    };
    report.failure = outcome.err();
    report.ok = report.failure.is_none();
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    report
}

/// An answer: status, the `x-amz-bucket-region` header, the body (capped).
struct Answer {
    status: u16,
    region: Option<String>,
    body: Vec<u8>,
}

struct Run<'a> {
    spec: &'a Spec,
    http: Http,
    endpoint: Url,
    bucket: rusty_s3::Bucket,
    deadline: Instant,
    report: &'a mut Report,
}

impl<'a> Run<'a> {
    fn new(
        spec: &'a Spec,
        endpoint: Url,
        started: Instant,
        report: &'a mut Report,
    ) -> Result<Self, Failure> {
        let tls_endpoint = crate::distribution::Endpoint {
            ca_pem: spec.s3.ca.clone(),
            ..Default::default()
        };
        let tls = crate::distribution::client::tls_config(&tls_endpoint).map_err(|f| {
            Failure::new(
                Kind::Transport(f.kind),
                f.message.replace("proxy.ca, --ca-file", "s3.ca, --ca-file"),
            )
        })?;
        let mut builder = Http::builder()
            .connect_timeout(spec.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("embedded-registry/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls);
        for (host, ip) in &spec.resolve {
            builder = builder.resolve(host, std::net::SocketAddr::new(*ip, 0));
        }
        let http = builder
            .build()
            .map_err(|e| Failure::new(Kind::Http, format!("client setup: {e}")))?;
        let style = if spec.s3.force_path_style {
            rusty_s3::UrlStyle::Path
        } else {
            rusty_s3::UrlStyle::VirtualHost
        };
        let bucket = rusty_s3::Bucket::new(endpoint.clone(), style, spec.s3.bucket.clone(), spec.s3.region.clone())
            .map_err(|e| Failure::new(Kind::NotS3, format!("s3.bucket {:?} with s3.endpoint {:?}: {e}; use forcePathStyle: true for an IP address or a dotted bucket name", spec.s3.bucket, spec.s3.endpoint)))?;
        Ok(Run {
            spec,
            http,
            endpoint,
            bucket,
            deadline: crate::distribution::client::deadline(started, spec.budget),
            report,
        })
    }

    fn all(mut self) -> Result<(), Failure> {
        // ListBuckets: 200 for any valid key. A 403 is not final: a key restricted to
        // its bucket (AWS IAM) may not list buckets; the bucket step decides.
        let list = self.send(
            Step::ListBuckets,
            reqwest::Method::GET,
            self.endpoint.clone(),
            &[],
            None,
            limits::LIST_BUCKETS_BYTES,
        )?;
        let body = String::from_utf8_lossy(&list.body);
        let proven = list.status == 200 && body.contains("ListAllMyBucketsResult");
        let not_final = list.status == 403
            && classify::error_code(&body).is_some_and(|c| !classify::is_credentials_code(c));
        if !proven && !not_final {
            return Err(self.classify(Step::ListBuckets, &list, false));
        }
        self.mark(Step::ListBuckets, proven, Some(list.status));

        let prefix = self.spec.probe_key("");
        let objects = self.send(
            Step::ListObjects,
            reqwest::Method::GET,
            self.bucket.base_url().clone(),
            &[("list-type", "2"), ("max-keys", "1"), ("prefix", &prefix)],
            None,
            limits::ANSWER_BYTES,
        )?;
        let body = String::from_utf8_lossy(&objects.body);
        if !(objects.status == 200 && body.contains("ListBucketResult")) {
            return Err(self.classify(Step::ListObjects, &objects, proven));
        }
        self.mark(Step::ListObjects, true, Some(objects.status));
        // The bucket answered the key: from here a 403 is about rights.
        let proven = true;

        let nonce = nonce();
        let key = self.spec.probe_key(&nonce);
        let data = probe_data();
        let url = self.bucket.object_url(&key);
        let put = self.send(
            Step::PutObject,
            reqwest::Method::PUT,
            url.clone(),
            &[],
            Some(data.clone()),
            limits::ANSWER_BYTES,
        )?;
        if !(200..300).contains(&put.status) {
            return Err(self.classify(Step::PutObject, &put, proven));
        }
        self.mark(Step::PutObject, true, Some(put.status));

        let got = self.send(
            Step::GetObject,
            reqwest::Method::GET,
            url.clone(),
            &[],
            None,
            limits::ANSWER_BYTES,
        );
        let read_back = match got {
            Ok(got) if got.status == 200 && got.body == data => {
                self.mark(Step::GetObject, true, Some(got.status));
                Ok(())
            }
            Ok(got) if got.status == 200 => Err(Failure::new(Kind::Http, format!("{}: the probe object read back differs from what was written ({} bytes instead of {}); the S3 server or a proxy in front of it alters objects", shown(&url), got.body.len(), data.len()))),
            Ok(got) => Err(self.classify(Step::GetObject, &got, proven)),
            Err(f) => Err(f),
        };
        // Delete even when the read failed: the check leaves nothing behind it can remove.
        let deleted = self.send(
            Step::DeleteObject,
            reqwest::Method::DELETE,
            url.clone(),
            &[],
            None,
            limits::ANSWER_BYTES,
        );
        read_back?;
        let deleted = deleted?;
        if !(200..300).contains(&deleted.status) {
            let mut f = self.classify(Step::DeleteObject, &deleted, proven);
            f.message
                .push_str(&format!(" (the probe object {key} is left in the bucket)"));
            return Err(f);
        }
        self.mark(Step::DeleteObject, true, Some(deleted.status));
        Ok(())
    }

    fn mark(&mut self, step: Step, ok: bool, status: Option<u16>) {
        self.report.steps.push(StepResult {
            step: step.name(),
            ok,
            status,
        });
    }

    fn classify(&mut self, step: Step, a: &Answer, proven: bool) -> Failure {
        self.mark(step, false, Some(a.status));
        let body = String::from_utf8_lossy(&a.body);
        classify::answer(
            step,
            a.status,
            &body,
            a.region.as_deref(),
            &self.spec.s3.region,
            &self.spec.s3.bucket,
            &self.endpoint_shown(step),
            proven,
        )
    }

    fn endpoint_shown(&self, step: Step) -> String {
        match step {
            Step::ListBuckets => shown(&self.endpoint),
            _ => shown(self.bucket.base_url()),
        }
    }

    /// Sends one presigned request and reads its body up to `cap`.
    fn send(
        &mut self,
        step: Step,
        method: reqwest::Method,
        url: Url,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        cap: u64,
    ) -> Result<Answer, Failure> {
        let at = shown(&url);
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            self.mark(step, false, None);
            return Err(Failure::new(Kind::Transport(crate::distribution::Kind::Timeout), format!("{at}: the check's time budget ran out before {}; check that the endpoint answers quickly", step.name())));
        }
        let s3_method = match method {
            reqwest::Method::PUT => rusty_s3::Method::Put,
            reqwest::Method::DELETE => rusty_s3::Method::Delete,
            reqwest::Method::HEAD => rusty_s3::Method::Head,
            _ => rusty_s3::Method::Get,
        };
        let signed = rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            s3_method,
            url,
            &self.spec.s3.access_key,
            &self.spec.s3.secret_key,
            None,
            &self.spec.s3.region,
            limits::PRESIGN.as_secs(),
            query.iter().copied(),
            std::iter::empty(),
        );
        let mut req = self
            .http
            .request(method, signed)
            .timeout(remaining.min(self.spec.request_timeout));
        if let Some(b) = body {
            req = req.body(b);
        }
        self.report.requests += 1;
        let resp = match req.send() {
            Ok(r) => r,
            Err(e) => {
                self.mark(step, false, None);
                return Err(transport(&at, e));
            }
        };
        let status = resp.status().as_u16();
        let region = resp
            .headers()
            .get("x-amz-bucket-region")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if resp.content_length().is_some_and(|n| n > cap) {
            self.mark(step, false, Some(status));
            return Err(oversize(&at, step, cap));
        }
        let mut out = Vec::new();
        if let Err(e) = resp.take(cap + 1).read_to_end(&mut out) {
            self.mark(step, false, Some(status));
            let inner = e
                .into_inner()
                .and_then(|i| i.downcast::<reqwest::Error>().ok());
            return Err(match inner {
                Some(re) => transport(&at, *re),
                None => Failure::new(
                    Kind::Http,
                    format!("{at}: reading the answer to {} failed", step.name()),
                ),
            });
        }
        if out.len() as u64 > cap {
            self.mark(step, false, Some(status));
            return Err(oversize(&at, step, cap));
        }
        Ok(Answer {
            status,
            region,
            body: out,
        })
    }
}

/// `scheme://host[:port]/path` of a URL: never its query, which holds the presigned
/// credential scope and signature.
fn shown(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

fn oversize(at: &str, step: Step, cap: u64) -> Failure {
    Failure::new(
        Kind::Oversize,
        format!(
            "{at}: the answer to {} is larger than {}, the most read for it; an S3 API does not answer this way: check s3.endpoint",
            step.name(),
            crate::untrusted::size(cap)
        ),
    )
}

/// A transport error as a failure of the upstream check's kinds, with messages that
/// name the `s3` settings. The URL (with its signature) is dropped from the error first.
fn transport(at: &str, e: reqwest::Error) -> Failure {
    use crate::distribution::Kind as D;
    let e = e.without_url();
    let upstream = crate::distribution::Failure::from_transport(at, &e);
    let chain = crate::distribution::failure::error_chain(&e);
    let detail = chain.rsplit(": ").next().unwrap_or(&chain).to_string();
    let same = Kind::Transport(upstream.kind);
    let (kind, message) = match upstream.kind {
        D::Dns => (same, format!("{at}: the host name does not resolve ({detail}); check s3.endpoint and the cluster's DNS")),
        D::Connect => (same, format!("{at}: cannot connect ({detail}); check s3.endpoint's host and port and firewalls")),
        D::Timeout => (same, format!("{at}: no answer in time; check that s3.endpoint is right and reachable from the masters")),
        D::TlsNameMismatch => (same, format!("{at}: the server's certificate does not name this host; use the name the certificate was issued for in s3.endpoint")),
        D::TlsUnknownCa => (same, format!("{at}: the server's certificate is signed by an unknown CA; put the S3 server's CA into s3.ca")),
        D::TlsExpired => (same, format!("{at}: the server's certificate has expired or is not valid yet; the S3 server must renew it (or check the clocks)")),
        D::Tls if upstream.message.contains("does not speak TLS") => (same, format!("{at}: the server does not speak TLS here; if it serves plain HTTP, write http:// in s3.endpoint")),
        D::Tls => (same, format!("{at}: TLS: {detail}")),
        _ => (Kind::Http, format!("{at}: {detail}")),
    };
    Failure::new(kind, message)
}

/// 16 random hex characters: each run probes its own object.
fn nonce() -> String {
    use rand::RngExt;
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

fn probe_data() -> Vec<u8> {
    use rand::RngExt;
    let mut rng = rand::rng();
    (0..limits::PROBE_BYTES).map(|_| rng.random()).collect()
}

#[cfg(test)]
mod tests;
