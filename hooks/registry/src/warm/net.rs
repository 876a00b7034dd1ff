//! [`Fetch`] over the network: requests to this master's own registry, with tokens
//! the warm process signs itself.
//!
//! Credentials: the registry accepts tokens signed by the token key of its
//! `rootcertbundle`, which the pod already holds for docker_auth (`/pki/token.key`).
//! The warm process signs, per request, a pull-only token for the one repository it
//! warms, valid [`TOKEN_SECONDS`], carrying the token certificate as `x5c` (what
//! docker_auth sends, and what distribution 2.8 and v3 verify against the bundle).
//! So no password reaches the container: nothing to put in a file, an environment
//! variable or a log.

use std::io::Read;
use std::time::Duration;

use base64::Engine as _;
use reqwest::blocking::Client as Http;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::json;

use super::pass::{Fetch, FetchError};
use crate::distribution::client::{
    read_body, retry_wait, tls_config, Body, Endpoint, MANIFEST_ACCEPT,
};

/// How long a token is valid.
pub const TOKEN_SECONDS: i64 = 300;
/// Tries of one request (transport errors, `5xx`, `429`, a digest mismatch), with the
/// `429` back-off of the registry client between them (1 s doubling up to 30 s).
pub const ATTEMPTS: u32 = 4;
/// Time limit of a manifest request.
pub const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A blob request may take this long plus one second per [`BLOB_RATE_FLOOR`] bytes.
pub const BLOB_TIMEOUT_BASE: Duration = Duration::from_secs(60);
/// The slowest transfer (bytes per second) a blob request is given time for.
pub const BLOB_RATE_FLOOR: u64 = 256 << 10;

/// The token signer and the registry's address, from the pod's files.
pub struct Registry {
    http: Http,
    base: String,
    issuer: String,
    service: String,
    key: EcdsaKeyPair,
    x5c: String,
    rng: ring::rand::SystemRandom,
}

/// Why the registry cannot be reached (bad pod files): one line naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl Registry {
    /// A client of the registry at `addr` (`host:port`, TLS trusting `ca_pem` alone),
    /// signing with `key_pem` (PKCS#8 P-256) whose certificate is `cert_pem`.
    pub fn new(
        addr: &str,
        ca_pem: &str,
        key_pem: &str,
        cert_pem: &str,
        issuer: &str,
        service: &str,
    ) -> Result<Self, SetupError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
        let endpoint = Endpoint {
            scheme: "https".into(),
            host: addr.into(),
            ca_pem: Some(ca_pem.into()),
            ca_only: true,
            ..Endpoint::default()
        };
        let tls =
            tls_config(&endpoint).map_err(|e| SetupError(format!("pki/ca.crt: {}", e.message)))?;
        let http = Http::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "embedded-registry-warm/",
                env!("CARGO_PKG_VERSION")
            ))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| SetupError(format!("HTTP client setup: {e}")))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| SetupError("pki/token.key: not a PKCS#8 PEM private key".into()))?;
        let rng = ring::rand::SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            key.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|_| {
            SetupError("pki/token.key: not a P-256 key (the token signer is ES256)".into())
        })?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| SetupError("pki/token.crt: not a PEM certificate".into()))?;
        Ok(Registry {
            http,
            base: format!("https://{addr}"),
            issuer: issuer.into(),
            service: service.into(),
            key,
            x5c: base64::engine::general_purpose::STANDARD.encode(cert.as_ref()),
            rng,
        })
    }

    /// A pull token for `repo`.
    fn token(&self, repo: &str) -> Result<String, FetchError> {
        let now = crate::clock::now().map_err(|e| FetchError::Failed(e.to_string()))?;
        let mut jti = [0u8; 12];
        ring::rand::SecureRandom::fill(&self.rng, &mut jti)
            .map_err(|_| FetchError::Failed("no randomness for a token id".into()))?;
        let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]});
        let claims = json!({
            "iss": self.issuer, "sub": "embedded-registry-warm", "aud": self.service,
            "exp": now + TOKEN_SECONDS, "nbf": now - 10, "iat": now, "jti": b64url(&jti),
            "access": [{"type": "repository", "name": repo, "actions": ["pull"]}],
        });
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = self
            .key
            .sign(&self.rng, signing_input.as_bytes())
            .map_err(|_| FetchError::Failed("signing a token failed".into()))?;
        Ok(format!("{signing_input}.{}", b64url(sig.as_ref())))
    }

    /// Sends a GET, retried [`ATTEMPTS`] times with a back-off; `read` turns a `200`
    /// into the result (its `Err` is retried too).
    fn get<T>(
        &self,
        repo: &str,
        tail: &str,
        timeout: Duration,
        accept: Option<&str>,
        read: impl Fn(reqwest::blocking::Response) -> Result<T, String>,
    ) -> Result<T, FetchError> {
        let url = format!("{}/v2/{repo}/{tail}", self.base);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(retry_wait(attempt - 1, None));
            }
            let mut req = self
                .http
                .get(&url)
                .bearer_auth(self.token(repo)?)
                .timeout(timeout);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            let resp = match req.send() {
                Ok(r) => r,
                Err(e) => {
                    last = crate::distribution::Failure::from_transport(&url, &e).message;
                    continue;
                }
            };
            match resp.status().as_u16() {
                200 => match read(resp) {
                    Ok(v) => return Ok(v),
                    Err(m) => last = m,
                },
                404 => return Err(FetchError::NotFound),
                401 | 403 => {
                    return Err(FetchError::Failed(format!(
                        "{url}: the registry refused the warm process's token (HTTP {}); check that pki/token.crt is in the registry's token bundle",
                        resp.status().as_u16()
                    )))
                }
                code => last = format!("{url}: HTTP {code}"),
            }
        }
        Err(FetchError::Failed(format!(
            "{last} (after {ATTEMPTS} tries)"
        )))
    }
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Fetch for Registry {
    fn manifest(&self, repo: &str, reference: &str) -> Result<(String, Vec<u8>), FetchError> {
        self.get(
            repo,
            &format!("manifests/{reference}"),
            MANIFEST_TIMEOUT,
            Some(MANIFEST_ACCEPT),
            |resp| {
                let body = read_body(resp, Body::Manifest).map_err(|e| e.message)?;
                let digest = format!("sha256:{}", sha256_hex(&body));
                if reference.starts_with("sha256:") && digest != reference {
                    return Err(format!(
                        "manifest {reference}: the registry answered content of digest {digest}"
                    ));
                }
                Ok((digest, body))
            },
        )
    }

    fn blob(&self, repo: &str, digest: &str, size: u64) -> Result<u64, FetchError> {
        use sha2::{Digest, Sha256};
        let timeout = BLOB_TIMEOUT_BASE + Duration::from_secs(size / BLOB_RATE_FLOOR);
        self.get(repo, &format!("blobs/{digest}"), timeout, None, |resp| {
            // Read to the end (the registry stores a proxied blob only then), at most
            // the size the manifest declares, hashing as it comes.
            let mut hasher = Sha256::new();
            let mut reader = resp.take(size + 1);
            let mut buf = vec![0u8; 256 << 10];
            let mut n = 0u64;
            loop {
                let k = reader.read(&mut buf).map_err(|e| format!("blob {digest}: reading: {e}"))?;
                if k == 0 {
                    break;
                }
                n += k as u64;
                hasher.update(&buf[..k]);
            }
            let got: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if n != size || format!("sha256:{got}") != digest {
                return Err(format!("blob {digest}: {n} bytes of digest sha256:{got}, not the {size} bytes the manifest declares"));
            }
            Ok(n)
        })
    }
}
