//! Why a registry request failed, in words an administrator can act on.

use serde::Serialize;

/// A check's failure class: the shape the upstream check's [`Kind`] and the storage
/// check's (`storage::Kind`) share.
pub trait FailureKind: Copy + std::fmt::Debug {
    /// The stable kebab-case name (JSON `kind`, the metric's `kind` label).
    fn as_str(self) -> &'static str;
}

/// The class of a failure; stable names for JSON output, metrics and conditions
/// ([`Kind::as_str`], [`Kind::reason`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, strum::EnumIter, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
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

impl FailureKind for Kind {
    fn as_str(self) -> &'static str {
        self.into()
    }
}

impl Kind {
    /// The kebab-case name ([`FailureKind::as_str`]).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The kind named `name` ([`Kind::as_str`]), as a check record keeps it.
    pub fn from_name(name: &str) -> Option<Kind> {
        use strum::IntoEnumIterator as _;
        Kind::iter().find(|k| k.as_str() == name)
    }

    /// The reason of the `ChecksPassed` condition when a check failed with this kind:
    /// `Check` and the name in CamelCase (`docs/internal/mode-switching.md` lists them).
    pub fn reason(self) -> &'static str {
        match self {
            Kind::Dns => "CheckDns",
            Kind::Connect => "CheckConnect",
            Kind::Timeout => "CheckTimeout",
            Kind::TlsNameMismatch => "CheckTlsNameMismatch",
            Kind::TlsUnknownCa => "CheckTlsUnknownCa",
            Kind::TlsExpired => "CheckTlsExpired",
            Kind::Tls => "CheckTls",
            Kind::BadCredentials => "CheckBadCredentials",
            Kind::Denied => "CheckDenied",
            Kind::NameUnknown => "CheckNameUnknown",
            Kind::ManifestUnknown => "CheckManifestUnknown",
            Kind::RateLimited => "CheckRateLimited",
            Kind::TokenRealmOtherDomain => "CheckTokenRealmOtherDomain",
            Kind::TokenRealmInsecure => "CheckTokenRealmInsecure",
            Kind::Oversize => "CheckOversize",
            Kind::BadPagination => "CheckBadPagination",
            Kind::NotARegistry => "CheckNotARegistry",
            Kind::Http => "CheckHttp",
        }
    }
}

/// A classified failure with a one-line message that holds no secret: the shape of
/// both checks' failures (`K` = [`Kind`] for the registry API, `storage::Kind`
/// for S3). Shown as `[kind] message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure<K = Kind> {
    /// The class.
    pub kind: K,
    /// What happened and what to do about it.
    pub message: String,
}

impl<K> Failure<K> {
    /// A failure of `kind` with `message`.
    pub fn new(kind: K, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
        }
    }
}

impl<K: FailureKind> std::fmt::Display for Failure<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.kind.as_str(), self.message)
    }
}

impl<K: FailureKind> std::error::Error for Failure<K> {}

/// A check's report for people, the same for both checks: a verdict line (`OK: ` and
/// what `ok` says, or `FAILED [kind]: message`), then `lines`, each indented by two.
pub fn human_report<K: FailureKind>(
    failure: Option<&Failure<K>>,
    ok: impl FnOnce() -> String,
    lines: impl IntoIterator<Item = String>,
) -> String {
    let mut out = match failure {
        None => format!("OK: {}\n", ok()),
        Some(f) => format!("FAILED [{}]: {}\n", f.kind.as_str(), f.message),
    };
    for line in lines {
        out.push_str("  ");
        out.push_str(&line);
        out.push('\n');
    }
    out
}

impl Failure {
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

#[cfg(test)]
mod kind_tests {
    use super::*;
    use strum::IntoEnumIterator as _;

    /// Every kind has a distinct name (the one its JSON carries, no round trip through
    /// it in the code) and a distinct `Check…` reason, and the mode-switching document
    /// lists both; a name reads back as its kind.
    #[test]
    fn every_kind_has_a_distinct_documented_reason() {
        let doc = include_str!("../../../../docs/internal/mode-switching.md");
        let mut names = std::collections::BTreeSet::new();
        let mut reasons = std::collections::BTreeSet::new();
        for kind in Kind::iter() {
            let name = kind.as_str();
            assert_eq!(serde_json::to_value(kind).unwrap(), name, "{kind:?}");
            assert_eq!(Kind::from_name(name), Some(kind));
            let reason = kind.reason();
            assert!(
                reason.starts_with("Check")
                    && reason[5..].starts_with(|c: char| c.is_ascii_uppercase())
                    && reason.chars().all(|c| c.is_ascii_alphanumeric()),
                "{kind:?}: {reason}"
            );
            assert!(doc.contains(&format!("`{name}`")), "{name} not documented");
            assert!(
                doc.contains(&format!("`{reason}`")),
                "{reason} not documented"
            );
            assert!(names.insert(name), "{name} twice");
            assert!(reasons.insert(reason), "{reason} twice");
        }
        assert_eq!(Kind::from_name("pending"), None);
        assert_eq!(names.len(), 18);
    }
}
