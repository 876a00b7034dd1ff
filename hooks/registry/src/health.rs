//! Is a registry answering? `GET https://<addr>/v2/` over TLS verified against the
//! registry's CA: 200 or 401 (token auth asks for credentials) means it serves.

use std::time::Duration;

use crate::distribution::client::{tls_config, Endpoint};
use crate::distribution::failure::error_chain;

/// `Ok(())` when the registry at `addr` (`host:port`) answers `/v2/` as a registry does.
pub fn check_registry(addr: &str, ca_pem: &str, timeout: Duration) -> Result<(), String> {
    let config = tls_config(&Endpoint {
        ca_pem: Some(ca_pem.to_string()),
        ca_only: true,
        ..Endpoint::default()
    })
    .map_err(|f| f.message)?;
    let client = reqwest::blocking::Client::builder()
        .tls_backend_preconfigured(config)
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| format!("client: {e}"))?;
    let resp = client
        .get(format!("https://{addr}/v2/"))
        .send()
        .map_err(|e| format!("GET https://{addr}/v2/: {}", error_chain(&e)))?;
    match resp.status().as_u16() {
        200 | 401 => Ok(()),
        code => Err(format!("GET https://{addr}/v2/: HTTP {code}")),
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
