//! Why a registry request failed, in words an administrator can act on.

use serde::Serialize;

/// The class of a failure; stable names for JSON output, metrics and conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// The host name does not resolve.
    Dns,
    /// Nothing accepts connections at the address.
    Connect,
    /// No answer within the time allowed.
    Timeout,
    /// The certificate does not name the host.
    TlsNameMismatch,
    /// The certificate does not chain to a trusted CA.
    TlsUnknownCa,
    /// The certificate expired (or is not valid yet).
    TlsExpired,
    /// Another TLS failure (e.g. the server does not speak TLS).
    Tls,
    /// The registry or token server refused the credentials.
    BadCredentials,
    /// Authenticated, but not allowed to pull.
    Denied,
    /// The repository does not exist: wrong path or edition.
    NameUnknown,
    /// The repository exists, the tag or digest does not.
    ManifestUnknown,
    /// Rate limited beyond the time budget.
    RateLimited,
    /// The token realm is on another domain than the registry.
    TokenRealmOtherDomain,
    /// The token realm's scheme is weaker than the registry's (`http` for an `https`
    /// registry): the password would travel in clear text.
    TokenRealmInsecure,
    /// An answer larger than this client reads for its kind (a token, a tag page, a
    /// manifest, ...): see [`super::client::Body`].
    Oversize,
    /// A tag list whose `Link` pages do not advance (a page seen before, the same
    /// `last=` again, an empty page with a next one) or never end.
    BadPagination,
    /// The server does not behave as a registry.
    NotARegistry,
    /// Any other unexpected answer.
    Http,
}

/// A classified failure with a one-line message that holds no secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The class.
    pub kind: Kind,
    /// What happened and what to do about it.
    pub message: String,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }

    /// Classifies a transport error of a request to `url`.
    pub fn from_transport(url: &str, e: &reqwest::Error) -> Self {
        let chain = error_chain(e);
        if let Some(tls) = find_rustls_error(e) {
            return tls_failure(url, tls, &chain);
        }
        let lower = chain.to_ascii_lowercase();
        if e.is_timeout() || lower.contains("timed out") {
            return Failure::new(
                Kind::Timeout,
                format!("{url}: no answer in time; check that the host and port are right and reachable from the cluster"),
            );
        }
        if lower.contains("dns error") || lower.contains("failed to lookup address") {
            return Failure::new(
                Kind::Dns,
                format!("{url}: the host name does not resolve ({}); check proxy.host and the cluster's DNS", last(&chain)),
            );
        }
        if lower.contains("invalid http version")
            || lower.contains("corrupt message")
            || lower.contains("invalidcontenttype")
        {
            return Failure::new(
                Kind::Tls,
                format!("{url}: the server does not speak TLS here; if it serves plain HTTP, set proxy.scheme: http"),
            );
        }
        if e.is_connect() {
            return Failure::new(
                Kind::Connect,
                format!(
                    "{url}: cannot connect ({}); check the host, the port and firewalls",
                    last(&chain)
                ),
            );
        }
        Failure::new(Kind::Http, format!("{url}: {chain}"))
    }
}

fn tls_failure(url: &str, e: &rustls::Error, chain: &str) -> Failure {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::NotValidForName | C::NotValidForNameContext { .. } => Failure::new(
                Kind::TlsNameMismatch,
                format!("{url}: the server's certificate does not name this host; use the name the certificate was issued for"),
            ),
            C::UnknownIssuer | C::BadSignature => Failure::new(
                Kind::TlsUnknownCa,
                format!("{url}: the server's certificate is signed by an unknown CA; put the registry's CA into proxy.ca"),
            ),
            C::Expired | C::ExpiredContext { .. } => Failure::new(
                Kind::TlsExpired,
                format!("{url}: the server's certificate has expired; the registry must renew it"),
            ),
            C::NotValidYet | C::NotValidYetContext { .. } => Failure::new(
                Kind::TlsExpired,
                format!("{url}: the server's certificate is not valid yet; check the clocks"),
            ),
            other => Failure::new(Kind::Tls, format!("{url}: TLS: invalid certificate ({other:?})")),
        },
        rustls::Error::InvalidMessage(_) => Failure::new(
            Kind::Tls,
            format!("{url}: the server does not speak TLS here; if it serves plain HTTP, set proxy.scheme: http"),
        ),
        _ => Failure::new(Kind::Tls, format!("{url}: TLS: {}", last(chain))),
    }
}

/// The rustls error inside a reqwest error, if any (io::Error hides its inner error
/// from `source()`, so look inside it explicitly).
fn find_rustls_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<rustls::Error>() {
            return Some(r);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(r) = find_rustls_error(inner) {
                    return Some(r);
                }
            }
        }
        cur = err.source();
    }
    None
}

/// `e` and its sources joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s = s.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = cur.and_then(|c| c.source());
    }
    out
}

fn last(chain: &str) -> &str {
    chain.rsplit(": ").next().unwrap_or(chain)
}
