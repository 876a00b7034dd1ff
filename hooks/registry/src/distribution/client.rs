//! A blocking client for the distribution API: it learns the auth scheme from `/v2/`,
//! fetches one token per scope (shared by every thread, fetched once), retries `429`
//! with a back-off within the time budget, reads every answer through [`read_body`]
//! (capped by its [`Body`] kind), and turns every failure into a [`Failure`].
//!
//! A little over 400 lines for a reason: [`Client`]'s connect, token and request paths
//! share its token cache, deadline and counters. Bodies (`body`), the endpoint and its
//! DNS overrides (`endpoint`) and the retry policy (`retry`) are beside it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client as Http, RequestBuilder, Response};
use reqwest::header::{ACCEPT, WWW_AUTHENTICATE};
use reqwest::Method;

use super::challenge::{self, Challenge};
use super::failure::{Failure, Kind};

mod body;
mod endpoint;
mod retry;
pub use body::{read_body, Body};
pub use endpoint::{
    parse_resolve, resolve_overrides, Credentials, Endpoint, ResolveError, RESOLVE_VAR,
};
pub use retry::{deadline, retry_wait, BACKOFF_MAX, BACKOFF_MIN, MAX_RETRIES};
use retry::{rate_limited, retry_after};

/// Manifest media types a pull accepts.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

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
