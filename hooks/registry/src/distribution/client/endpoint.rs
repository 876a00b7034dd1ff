//! Where and how to reach a registry: address, credentials, trust and DNS overrides.

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

/// Why a `host=ip` override was refused; the message quotes the pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// No `=` in the pair.
    #[error("{0:?} is not HOST=IP")]
    NotPair(String),
    /// The address does not parse.
    #[error("{pair:?}: {ip:?} is not an IP address")]
    NotIp {
        /// The pair as given.
        pair: String,
        /// The address part.
        ip: String,
    },
}

/// Parses `host=ip[,host=ip...]`.
pub fn parse_resolve(s: &str) -> Result<Vec<(String, std::net::IpAddr)>, ResolveError> {
    s.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let (host, ip) = p
                .split_once('=')
                .ok_or_else(|| ResolveError::NotPair(p.to_string()))?;
            let ip = ip.trim().parse().map_err(|_| ResolveError::NotIp {
                pair: p.to_string(),
                ip: ip.to_string(),
            })?;
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
