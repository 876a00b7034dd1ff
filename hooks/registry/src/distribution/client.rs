//! A blocking client for the distribution API: it learns the auth scheme from `/v2/`,
//! fetches one token per scope (shared by every thread, fetched once), retries `429`
//! with a back-off within the time budget, reads every answer through [`read_body`]
//! (capped by its [`Body`] kind), and turns every failure into a [`Failure`].

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::Method;

use super::challenge::{self, Challenge};
use super::failure::{Failure, Kind};

/// What an answer's body holds, and so the most of it that is read: a registry (or
/// something posing as one) may answer without end, and nothing here streams a body it
/// keeps. Image layers are not read through this (rotation streams them through a tar
/// reader, bounded by the size the manifest declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The answer to `GET /v2/` (distribution sends `{}`): 64 KiB.
    ApiRoot,
    /// A token endpoint's JSON (a JWT, sometimes with its certificate chain): 1 MiB.
    Token,
    /// One page of a tag list: 8 MiB. A page of `n=1000` tags of at most 128
    /// characters is about 130 KiB; the rest is room for a registry that ignores `n`.
    TagPage,
    /// A manifest or an index, the referrers API's index included: 4 MiB, the limit
    /// distribution itself puts on a manifest it accepts.
    Manifest,
    /// An image configuration blob (read for its `created` time): 4 MiB.
    Config,
    /// An error answer, read to tell one error code from another: 64 KiB.
    Error,
}

impl Body {
    /// The most bytes read of such a body.
    pub const fn limit(self) -> u64 {
        match self {
            Body::ApiRoot | Body::Error => 64 << 10,
            Body::Token => 1 << 20,
            Body::TagPage => 8 << 20,
            Body::Manifest | Body::Config => 4 << 20,
        }
    }

    /// What the body is, for messages.
    pub const fn what(self) -> &'static str {
        match self {
            Body::ApiRoot => "API answer",
            Body::Token => "token answer",
            Body::TagPage => "tag list page",
            Body::Manifest => "manifest",
            Body::Config => "image configuration",
            Body::Error => "error answer",
        }
    }
}

/// The `oversize` failure of an answer at `path` larger than `body` allows.
fn oversize(path: &str, body: Body) -> Failure {
    Failure::new(
        Kind::Oversize,
        format!(
            "{path}: the {} is larger than {}, the most read for it; a registry does not answer this way: check the registry address",
            body.what(),
            crate::untrusted::size(body.limit())
        ),
    )
}

/// Reads the body of `resp`, at most [`Body::limit`] bytes: a longer answer (by its
/// `Content-Length`, or by what arrives) is an [`Kind::Oversize`] failure naming the
/// URL path and the limit, and nothing past the limit is read. Every response body
/// the module keeps is read here.
pub fn read_body(resp: Response, body: Body) -> Result<Vec<u8>, Failure> {
    let limit = body.limit();
    let path = resp.url().path().to_string();
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(oversize(&path, body));
    }
    let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
    let read = resp.take(limit + 1).read_to_end(&mut out);
    if let Err(e) = read {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>());
        return Err(match inner {
            Some(re) => Failure::from_transport(&path, re),
            None => Failure::new(
                Kind::Http,
                format!("{path}: reading the {}: {e}", body.what()),
            ),
        });
    }
    if out.len() as u64 > limit {
        return Err(oversize(&path, body));
    }
    Ok(out)
}

/// The instant `budget` after `start`; a budget beyond what the clock holds (a Go
/// duration may be 292 years) ends a year after `start`.
pub fn deadline(start: Instant, budget: Duration) -> Instant {
    start
        .checked_add(budget)
        .or_else(|| start.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(start)
}

/// The first wait after a `429` (unless `Retry-After` asks for more); it doubles with
/// every retry of the same request up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait the back-off grows to; a longer `Retry-After` is still honoured
/// while it fits in the time budget.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retries of one request answered `429`; then it is reported `rate-limited`.
pub const MAX_RETRIES: u32 = 8;

/// The wait before retry number `retries + 1` of a request answered `429`, which asked
/// for `asked` (`Retry-After`): the back-off, or longer when the registry asks so.
pub fn retry_wait(retries: u32, asked: Option<Duration>) -> Duration {
    let backoff = BACKOFF_MIN
        .saturating_mul(1u32 << retries.min(16))
        .min(BACKOFF_MAX);
    asked.map_or(backoff, |a| a.max(backoff))
}

/// Manifest media types a pull accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// User and password; `Debug` never prints the password.
#[derive(Clone)]
pub struct Credentials {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <hidden>)", self.user)
    }
}

/// Where and how to reach a registry.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Credentials, if any.
    pub credentials: Option<Credentials>,
    /// Extra CA certificates (PEM) trusted beside the system roots.
    pub ca_pem: Option<String>,
    /// Use only `ca_pem`, not the system roots (the module's own registries).
    pub ca_only: bool,
    /// Host names answered with these addresses instead of DNS (like curl's
    /// `--resolve`); see [`resolve_overrides`].
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

/// Variable with `host=ip[,host=ip...]` overrides of DNS for registry requests: to check
/// an upstream before its DNS record exists, and to keep tests on loopback.
pub const RESOLVE_VAR: &str = "EMBEDDED_REGISTRY_RESOLVE";

/// Parses `host=ip[,host=ip...]`.
pub fn parse_resolve(s: &str) -> Result<Vec<(String, std::net::IpAddr)>, String> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (host, ip) = p
                .split_once('=')
                .ok_or_else(|| format!("{p:?} is not HOST=IP"))?;
            let ip = ip
                .trim()
                .parse()
                .map_err(|_| format!("{p:?}: {ip:?} is not an IP address"))?;
            Ok((host.trim().to_ascii_lowercase(), ip))
        })
        .collect()
}

/// The overrides from [`RESOLVE_VAR`] (none when unset or malformed).
pub fn resolve_overrides() -> Vec<(String, std::net::IpAddr)> {
    std::env::var(RESOLVE_VAR)
        .ok()
        .and_then(|v| parse_resolve(&v).ok())
        .unwrap_or_default()
}

/// How the registry authenticates, learnt from `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    /// `/v2/` answered 200 without credentials.
    Anonymous,
    /// Basic auth on every request.
    Basic,
    /// Token auth.
    Bearer {
        /// Token endpoint.
        realm: String,
        /// `service` parameter.
        service: String,
    },
}

impl Auth {
    /// `anonymous`, `basic` or `bearer`.
    pub fn name(&self) -> &'static str {
        match self {
            Auth::Anonymous => "anonymous",
            Auth::Basic => "basic",
            Auth::Bearer { .. } => "bearer",
        }
    }
}

type TokenCell = Arc<OnceLock<Result<String, Failure>>>;

/// A connected registry client.
pub struct Client {
    http: Http,
    endpoint: Endpoint,
    base: String,
    auth: Auth,
    deadline: Instant,
    request_timeout: Duration,
    tokens: Mutex<HashMap<String, TokenCell>>,
    requests: AtomicUsize,
    token_requests: AtomicUsize,
}

/// The rustls configuration for an endpoint: its CA, plus system roots unless `ca_only`.
pub fn tls_config(endpoint: &Endpoint) -> Result<rustls::ClientConfig, Failure> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |m: String| Failure::new(Kind::Tls, m);
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = endpoint.ca_pem.as_deref().filter(|p| !p.trim().is_empty()) {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            let cert = cert.map_err(|e| {
                bad(format!(
                    "the CA bundle is not valid PEM ({e}); check the CA given (proxy.ca, --ca-file)"
                ))
            })?;
            roots.add(cert).map_err(|e| {
                bad(format!(
                    "the CA bundle holds an unusable certificate ({e}); check the CA given (proxy.ca, --ca-file)"
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(bad(
                "the CA bundle holds no certificate; check the CA given (proxy.ca, --ca-file)"
                    .into(),
            ));
        }
    }
    if endpoint.ca_only && roots.is_empty() {
        return Err(bad("no CA certificate to trust for this registry".into()));
    }
    if !endpoint.ca_only {
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS setup: {e}")))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

impl Client {
    /// Connects: `GET /v2/` to learn the auth scheme. Every request, this one included,
    /// ends by `deadline`; none takes longer than `request_timeout`.
    pub fn connect(
        endpoint: Endpoint,
        request_timeout: Duration,
        deadline: Instant,
    ) -> Result<Self, Failure> {
        let builder = Http::builder()
            .connect_timeout(request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::limited(5))
            .user_agent(concat!("embedded-registry/", env!("CARGO_PKG_VERSION")));
        // Also for `http`: a token realm or a redirect may still be https, and reqwest
        // needs a configured TLS backend either way.
        let mut builder = builder.tls_backend_preconfigured(tls_config(&endpoint)?);
        for (host, ip) in &endpoint.resolve {
            // The port comes from the URL; reqwest ignores this one.
            builder = builder.resolve(host, std::net::SocketAddr::new(*ip, 0));
        }
        let http = builder
            .build()
            .map_err(|e| Failure::new(Kind::Http, format!("client setup: {e}")))?;
        let base = format!("{}://{}", endpoint.scheme, endpoint.host);
        let mut client = Client {
            http,
            endpoint,
            base,
            auth: Auth::Anonymous,
            deadline,
            request_timeout,
            tokens: Mutex::new(HashMap::new()),
            requests: AtomicUsize::new(0),
            token_requests: AtomicUsize::new(0),
        };
        client.auth = client.discover_auth()?;
        Ok(client)
    }

    /// The auth scheme the registry asked for.
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// Requests sent so far (token requests included).
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    /// Token requests sent so far.
    pub fn token_requests(&self) -> usize {
        self.token_requests.load(Ordering::Relaxed)
    }

    fn discover_auth(&self) -> Result<Auth, Failure> {
        let url = format!("{}/v2/", self.base);
        let resp = self.execute(&url, || self.http.get(&url))?;
        let status = resp.status().as_u16();
        let api_header = resp
            .headers()
            .contains_key("docker-distribution-api-version");
        let challenge = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        match status {
            200 => {
                let body = read_body(resp, Body::ApiRoot)?;
                let json_body = serde_json::from_slice::<serde_json::Value>(&body).is_ok();
                if api_header || json_body {
                    Ok(Auth::Anonymous)
                } else {
                    Err(not_a_registry(
                        &url,
                        "answered 200 but not as a registry API",
                    ))
                }
            }
            401 => match challenge.as_deref().and_then(challenge::parse) {
                Some(Challenge::Basic) => Ok(Auth::Basic),
                Some(Challenge::Bearer { realm, service, .. }) => {
                    if self.endpoint.credentials.is_some() {
                        check_realm(&self.base, &realm)?;
                    }
                    Ok(Auth::Bearer { realm, service })
                }
                None => Err(not_a_registry(
                    &url,
                    "answered 401 without a Bearer or Basic challenge",
                )),
            },
            code => Err(not_a_registry(&url, &format!("answered HTTP {code}"))),
        }
    }

    /// Sends `method` to `/v2/<repo>/<tail>` with auth for `scope_actions` (e.g. `pull`).
    pub fn send(
        &self,
        method: Method,
        repo: &str,
        tail: &str,
        scope_actions: &str,
        accept: Option<&str>,
    ) -> Result<Response, Failure> {
        let url = format!("{}/v2/{repo}/{tail}", self.base);
        let token = match &self.auth {
            Auth::Bearer { .. } => Some(self.token(&format!("repository:{repo}:{scope_actions}"))?),
            _ => None,
        };
        self.execute(&url, || {
            let mut req = self.http.request(method.clone(), &url);
            if let Some(a) = accept {
                req = req.header(ACCEPT, a);
            }
            match (&token, &self.auth, &self.endpoint.credentials) {
                (Some(t), _, _) => req.bearer_auth(t),
                (None, Auth::Basic, Some(c)) => req.basic_auth(&c.user, Some(&c.password)),
                _ => req,
            }
        })
    }

    /// `GET /v2/` with the credentials: proves Basic credentials.
    pub fn login_basic(&self) -> Result<(), Failure> {
        let url = format!("{}/v2/", self.base);
        let c = self.endpoint.credentials.as_ref();
        let resp = self.execute(&url, || {
            let req = self.http.get(&url);
            match c {
                Some(c) => req.basic_auth(&c.user, Some(&c.password)),
                None => req,
            }
        })?;
        match resp.status().as_u16() {
            200 => Ok(()),
            401 | 403 => Err(self.bad_credentials(&url)),
            code => Err(Failure::new(
                Kind::Http,
                format!("{url}: HTTP {code} with credentials"),
            )),
        }
    }

    fn bad_credentials(&self, url: &str) -> Failure {
        match &self.endpoint.credentials {
            Some(c) => Failure::new(
                Kind::BadCredentials,
                format!("{url}: the credentials of user {} were refused; check proxy.user and proxy.password", c.user),
            ),
            None => Failure::new(
                Kind::BadCredentials,
                format!("{url}: the registry requires credentials; set proxy.user and proxy.password"),
            ),
        }
    }

    /// The token for `scope`, fetched once and shared by every thread.
    pub fn token(&self, scope: &str) -> Result<String, Failure> {
        let cell = {
            let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
            tokens.entry(scope.to_string()).or_default().clone()
        };
        cell.get_or_init(|| self.fetch_token(scope)).clone()
    }

    fn fetch_token(&self, scope: &str) -> Result<String, Failure> {
        let Auth::Bearer { realm, service } = &self.auth else {
            return Err(Failure::new(
                Kind::Http,
                "token requested without token auth",
            ));
        };
        self.token_requests.fetch_add(1, Ordering::Relaxed);
        let mut url = reqwest::Url::parse(realm)
            .map_err(|_| not_a_registry(realm, "is not a valid token realm URL"))?;
        {
            let mut q = url.query_pairs_mut();
            if !service.is_empty() {
                q.append_pair("service", service);
            }
            q.append_pair("scope", scope);
        }
        let shown = realm.clone();
        let resp = self.execute(&shown, || {
            let req = self.http.get(url.clone());
            match &self.endpoint.credentials {
                Some(c) => req.basic_auth(&c.user, Some(&c.password)),
                None => req,
            }
        })?;
        match resp.status().as_u16() {
            200 => {
                #[derive(serde::Deserialize)]
                struct TokenResponse {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let body = read_body(resp, Body::Token)?;
                let body: TokenResponse = serde_json::from_slice(&body).map_err(|_| {
                    not_a_registry(&shown, "token endpoint answered without a JSON token")
                })?;
                body.token
                    .or(body.access_token)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        not_a_registry(&shown, "token endpoint answered without a token")
                    })
            }
            401 | 403 => Err(self.bad_credentials(&shown)),
            code => Err(Failure::new(
                Kind::Http,
                format!("{shown}: token endpoint answered HTTP {code}"),
            )),
        }
    }

    /// Sends a request; a `429` is retried after [`retry_wait`] (at least the back-off,
    /// longer when `Retry-After` asks so) while the budget allows, at most
    /// [`MAX_RETRIES`] times, and is reported `rate-limited` when either runs out.
    fn execute(&self, url: &str, build: impl Fn() -> RequestBuilder) -> Result<Response, Failure> {
        let mut retries = 0;
        loop {
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(if retries > 0 {
                    rate_limited(
                        url,
                        &format!(
                            "still HTTP 429 after {retries} retries when the time budget ran out"
                        ),
                    )
                } else {
                    Failure::new(Kind::Timeout, format!("{url}: the time budget is spent"))
                });
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = build()
                .timeout(self.request_timeout.min(remaining))
                .send()
                .map_err(|e| Failure::from_transport(url, &e))?;
            if resp.status().as_u16() != 429 {
                return Ok(resp);
            }
            if retries >= MAX_RETRIES {
                return Err(rate_limited(
                    url,
                    &format!("still HTTP 429 after {retries} retries"),
                ));
            }
            let wait = retry_wait(retries, retry_after(&resp));
            drop(resp);
            let remaining = self.deadline.saturating_duration_since(Instant::now());
            if wait >= remaining {
                return Err(rate_limited(
                    url,
                    &format!(
                        "HTTP 429, the next try in {}s is past the time left",
                        wait.as_secs()
                    ),
                ));
            }
            retries += 1;
            std::thread::sleep(wait);
        }
    }
}

/// `Retry-After` as seconds or an HTTP date.
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (at - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    Some(Duration::from_secs(secs as u64))
}

fn rate_limited(url: &str, what: &str) -> Failure {
    Failure::new(
        Kind::RateLimited,
        format!("{url}: rate limited ({what}); try later or use credentials with a higher limit"),
    )
}

/// A scheme's strength: `https` over `http` over anything else.
fn scheme_rank(scheme: &str) -> u8 {
    match scheme {
        "https" => 2,
        "http" => 1,
        _ => 0,
    }
}

/// Where a registry at `base` (`scheme://host[:port]`) may send credentials for a
/// token: a realm with a scheme at least as strong (an `http` realm of an `https`
/// registry would get the password in clear text), and, since distribution v3.1 sends
/// upstream credentials only there, on the registry's host or registrable domain
/// (anywhere else its proxy would pull anonymously).
pub fn check_realm(base: &str, realm: &str) -> Result<(), Failure> {
    let registry = reqwest::Url::parse(base).ok();
    let host = registry
        .as_ref()
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
        .unwrap_or_default();
    let scheme = registry.as_ref().map_or("", |u| u.scheme());
    let parsed = reqwest::Url::parse(realm).ok();
    let Some((realm_scheme, realm_host)) = parsed
        .as_ref()
        .and_then(|u| Some((u.scheme(), u.host_str()?.to_ascii_lowercase())))
    else {
        return Err(not_a_registry(
            &format!("{base}/v2/"),
            &format!("sent a token realm that is not a URL ({realm})"),
        ));
    };
    if scheme_rank(realm_scheme) < scheme_rank(scheme) {
        return Err(Failure::new(
            Kind::TokenRealmInsecure,
            format!("the token realm {realm} is {realm_scheme} while the registry is {scheme}: the password would travel in clear text, so none was sent; the registry must announce an {scheme} token realm"),
        ));
    }
    if same_site(&realm_host, &host) {
        return Ok(());
    }
    Err(Failure::new(
        Kind::TokenRealmOtherDomain,
        format!("the token realm {realm} is not on {host}'s domain: a distribution v3.1+ proxy would send no credentials there and pull anonymously; use the registry address on the realm's domain"),
    ))
}

fn not_a_registry(url: &str, what: &str) -> Failure {
    Failure::new(
        Kind::NotARegistry,
        format!(
            "{url} {what}: this is not a container registry; check proxy.host and proxy.scheme"
        ),
    )
}

/// Same host, or the same registrable domain (public suffix list); IPs must be equal.
fn same_site(a: &str, b: &str) -> bool {
    if a == b {
        return true;
    }
    if a.parse::<std::net::IpAddr>().is_ok() || b.parse::<std::net::IpAddr>().is_ok() {
        return false;
    }
    match (psl::domain_str(a), psl::domain_str(b)) {
        (Some(x), Some(y)) => x == y,
        _ => false,
    }
}

#[cfg(test)]
mod tests;
