//! Is a registry answering? `GET https://<addr>/v2/` over TLS verified against the
//! registry's CA: 200 or 401 (token auth asks for credentials) means it serves.

use std::time::Duration;

use crate::distribution::client::{tls_config, Endpoint};
use crate::distribution::failure::error_chain;

/// Why a registry does not answer as one: each message names the address probed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// The module CA could not be turned into a TLS configuration.
    #[error("{0}")]
    Trust(String),
    /// The HTTP client could not be built.
    #[error("client: {0}")]
    Client(String),
    /// The request failed (connection, TLS, timeout).
    #[error("GET https://{addr}/v2/: {chain}")]
    Request {
        /// The `host:port` probed.
        addr: String,
        /// The error and its causes, in one line.
        chain: String,
    },
    /// The registry answered with another status than 200 or 401.
    #[error("GET https://{addr}/v2/: HTTP {code}")]
    Status {
        /// The `host:port` probed.
        addr: String,
        /// The HTTP status code.
        code: u16,
    },
}

/// `Ok(())` when the registry at `addr` (`host:port`) answers `/v2/` as a registry does.
pub fn probe_registry(addr: &str, ca_pem: &str, timeout: Duration) -> Result<(), HealthError> {
    probe_registry_config(addr, ca_pem, timeout).map(|_| ())
}

/// The header in which a registry announces which files it runs (the chart renders it
/// into distribution's `http.headers`).
pub const CONFIG_ID_HEADER: &str = "X-Embedded-Registry-Config";

/// The longest [`CONFIG_ID_HEADER`] value taken: longer ones read as none.
pub const CONFIG_ID_MAX: usize = 64;

/// [`probe_registry`], and the [`CONFIG_ID_HEADER`] the registry sent with its answer
/// (`None` when it sent none, or one that is not at most [`CONFIG_ID_MAX`] printable
/// ASCII characters).
pub fn probe_registry_config(
    addr: &str,
    ca_pem: &str,
    timeout: Duration,
) -> Result<Option<String>, HealthError> {
    let config = tls_config(&Endpoint {
        ca_pem: Some(ca_pem.to_string()),
        ca_only: true,
        ..Endpoint::default()
    })
    .map_err(|f| HealthError::Trust(f.message))?;
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| HealthError::Client(e.to_string()))?;
    let resp = client
        .get(format!("https://{addr}/v2/"))
        .send()
        .map_err(|e| HealthError::Request {
            addr: addr.to_string(),
            chain: error_chain(&e),
        })?;
    match resp.status().as_u16() {
        200 | 401 => Ok(resp
            .headers()
            .get(CONFIG_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= CONFIG_ID_MAX && v.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_string)),
        code => Err(HealthError::Status {
            addr: addr.to_string(),
            code,
        }),
    }
}

/// Whether a Proxy registry's upstream answers `/v2/` as a registry does (any auth
/// scheme): what distribution needs to start its proxy. Trust as distribution's: the
/// upstream CA alone when given (`SSL_CERT_FILE`), else the system roots; DNS overrides
/// from `EMBEDDED_REGISTRY_RESOLVE`.
pub fn upstream_answers(scheme: &str, host: &str, ca_pem: Option<&str>, timeout: Duration) -> bool {
    let endpoint = Endpoint {
        scheme: scheme.to_string(),
        host: host.to_string(),
        ca_pem: ca_pem.map(str::to_string),
        ca_only: ca_pem.is_some(),
        resolve: crate::distribution::client::resolve_overrides(),
        ..Endpoint::default()
    };
    crate::distribution::client::Client::connect(
        endpoint,
        timeout,
        std::time::Instant::now() + timeout,
    )
    .is_ok()
}
