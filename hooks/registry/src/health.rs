//! Is a registry answering? `GET https://<addr>/v2/` over TLS verified against the
//! registry's CA: 200 or 401 (token auth asks for credentials) means it serves.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// A rustls client configuration trusting exactly the certificates in `ca_pem`.
pub fn tls_config(ca_pem: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| anyhow::anyhow!("CA bundle: {e}"))?)
            .map_err(|e| anyhow::anyhow!("CA bundle: {e}"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("CA bundle holds no certificate");
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

/// `Ok(())` when the registry at `addr` (`host:port`) answers `/v2/` as a registry does.
pub fn check_registry(addr: &str, ca_pem: &str, timeout: Duration) -> Result<(), String> {
    let config = tls_config(ca_pem).map_err(|e| e.to_string())?;
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

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}
