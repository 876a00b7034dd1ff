//! Certificates of the registry: issue with rcgen, inspect with x509-parser.
//!
//! Keys are ECDSA P-256: generated in microseconds (a hook issuing for 100 masters stays
//! fast), small, and accepted by rustls, Go's crypto/tls (distribution, docker_auth,
//! containerd) and by distribution's token verification (ES256).

pub mod renewal;

use std::collections::BTreeSet;

use anyhow::{bail, Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use rustls::pki_types::pem::{self, PemObject as _};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;

pub use crate::model::values::Pair;

/// Renew anything with less than this left (seconds): 30 days, the same horizon as the
/// expiry alert.
pub const MIN_REMAINING: i64 = 30 * 86_400;

/// What the checks read from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// basicConstraints CA:TRUE.
    pub is_ca: bool,
    /// DNS names and IP addresses.
    pub sans: BTreeSet<String>,
    /// Subject public key bits (to match keys and find issuers).
    pub public_key: Vec<u8>,
}

impl CertInfo {
    /// Seconds left at `now` (negative once expired).
    pub fn remaining(&self, now: i64) -> i64 {
        self.not_after - now
    }

    /// Whether it must be renewed at `now`: less than `percent` of its lifetime left,
    /// or less than [`MIN_REMAINING`] whatever its lifetime (a short-lived certificate
    /// put in place by hand is not left to expire).
    pub fn due(&self, now: i64, percent: u32) -> bool {
        let lifetime = (self.not_after - self.not_before).max(1);
        let left = self.remaining(now);
        left * 100 < lifetime * i64::from(percent) || left < MIN_REMAINING
    }
}

/// The DER of one PEM certificate.
pub fn der_of(pem: &str) -> Result<Vec<u8>> {
    let (_, p) = parse_x509_pem(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("not a PEM certificate: {e}"))?;
    if p.label != "CERTIFICATE" {
        bail!("PEM block is {:?}, not CERTIFICATE", p.label);
    }
    Ok(p.contents)
}

/// The certificates of a PEM bundle, in order (blocks of other labels skipped), as
/// `rustls-pki-types` reads them; `Err` when a block is not valid PEM.
pub fn bundle_certs(bundle: &str) -> Result<Vec<CertificateDer<'static>>, pem::Error> {
    CertificateDer::pem_slice_iter(bundle.as_bytes()).collect()
}

/// Reads a certificate's validity, CA flag, SANs and public key.
pub fn inspect(cert_pem: &str) -> Result<CertInfo> {
    inspect_der(&der_of(cert_pem)?)
}

/// [`inspect`] of a certificate in DER.
pub fn inspect_der(der: &[u8]) -> Result<CertInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| anyhow::anyhow!("not an X.509 certificate: {e}"))?;
    let mut sans = BTreeSet::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => {
                    sans.insert(d.to_string());
                }
                GeneralName::IPAddress(ip) => {
                    let addr = match ip.len() {
                        4 => std::net::IpAddr::from(<[u8; 4]>::try_from(*ip).expect("4 bytes"))
                            .to_string(),
                        16 => std::net::IpAddr::from(<[u8; 16]>::try_from(*ip).expect("16 bytes"))
                            .to_string(),
                        _ => continue,
                    };
                    sans.insert(addr);
                }
                _ => {}
            }
        }
    }
    Ok(CertInfo {
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
        sans,
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// Whether `key_pem` is the private key of `cert_pem`.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> bool {
    match (inspect(cert_pem), KeyPair::from_pem(key_pem)) {
        (Ok(info), Ok(key)) => info.public_key == key.public_key_raw(),
        _ => false,
    }
}

/// Whether `cert_pem` carries a valid signature by the key of `issuer_pem`.
pub fn signed_by(cert_pem: &str, issuer_pem: &str) -> bool {
    match (der_of(cert_pem), der_of(issuer_pem)) {
        (Ok(der), Ok(issuer_der)) => signed_by_der(&der, &issuer_der),
        _ => false,
    }
}

/// [`signed_by`] of certificates in DER.
pub fn signed_by_der(der: &[u8], issuer_der: &[u8]) -> bool {
    let (Ok((_, cert)), Ok((_, issuer))) = (
        x509_parser::parse_x509_certificate(der),
        x509_parser::parse_x509_certificate(issuer_der),
    ) else {
        return false;
    };
    cert.verify_signature(Some(issuer.public_key())).is_ok()
}

fn timestamp(t: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t).context("time out of range")
}

fn random_serial() -> SerialNumber {
    use rand::RngExt;
    let mut bytes: [u8; 16] = rand::rng().random();
    bytes[0] &= 0x7f; // positive
    SerialNumber::from_slice(&bytes)
}

fn params(cn: &str, not_before: i64, not_after: i64) -> Result<CertificateParams> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "deckhouse");
    p.distinguished_name = dn;
    // Backdated a little: clocks of nodes differ.
    p.not_before = timestamp(not_before - 300)?;
    p.not_after = timestamp(not_after)?;
    p.serial_number = Some(random_serial());
    Ok(p)
}

/// A self-signed CA (CA:TRUE, pathlen 0) valid from `now` for `validity` seconds.
pub fn new_ca(cn: &str, now: i64, validity: i64) -> Result<Pair> {
    let key = KeyPair::generate().context("key generation")?;
    let mut p = params(cn, now, now + validity)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).context("CA certificate")?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A self-signed, CA:FALSE signing certificate (the token signer: trusted by being
/// pinned in distribution's `rootcertbundle`, not by a chain).
pub fn new_signer(cn: &str, now: i64, validity: i64) -> Result<Pair> {
    let key = KeyPair::generate().context("key generation")?;
    let mut p = params(cn, now, now + validity)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = p.self_signed(&key).context("signing certificate")?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A CA:FALSE server certificate for `sans`, signed by `ca`, ending at the earlier of
/// `now + validity` and the CA's own end.
pub fn new_server(
    ca: &Pair,
    cn: &str,
    sans: &BTreeSet<String>,
    now: i64,
    validity: i64,
) -> Result<Pair> {
    let ca_key = KeyPair::from_pem(&ca.key).context("CA key")?;
    let ca_end = inspect(&ca.cert)?.not_after;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).context("CA certificate")?;
    let key = KeyPair::generate().context("key generation")?;
    let mut p = params(cn, now, (now + validity).min(ca_end))?;
    p.subject_alt_names = CertificateParams::new(sans.iter().cloned().collect::<Vec<_>>())
        .context("subject alternative names")?
        .subject_alt_names;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let cert = p.signed_by(&key, &issuer).context("server certificate")?;
    Ok(Pair {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// Why a server certificate must be reissued; `None` when it is fine.
pub fn server_defect(
    pair: &Pair,
    ca_cert: &str,
    sans: &BTreeSet<String>,
    now: i64,
    renew_percent: u32,
) -> Option<String> {
    let info = match inspect(&pair.cert) {
        Ok(i) => i,
        Err(e) => return Some(format!("unreadable: {e}")),
    };
    if !key_matches(&pair.cert, &pair.key) {
        return Some("key does not match".into());
    }
    if info.is_ca {
        return Some("is a CA".into());
    }
    if !signed_by(&pair.cert, ca_cert) {
        return Some("not signed by the current CA".into());
    }
    let missing: Vec<&String> = sans.difference(&info.sans).collect();
    if !missing.is_empty() {
        return Some(format!("does not cover {missing:?}"));
    }
    if info.due(now, renew_percent) {
        return Some(format!("{} s left", info.remaining(now)));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn sans(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_fresh_chain_passes_every_check() {
        let ca = new_ca("test-ca", NOW, 3650 * DAY).unwrap();
        let ca_info = inspect(&ca.cert).unwrap();
        assert!(ca_info.is_ca && key_matches(&ca.cert, &ca.key));
        let want = sans(&["127.0.0.1", "localhost", "node-1", "10.0.0.1"]);
        let leaf = new_server(&ca, "node-1", &want, NOW, 365 * DAY).unwrap();
        let info = inspect(&leaf.cert).unwrap();
        assert!(!info.is_ca);
        assert_eq!(info.sans, want);
        assert!(signed_by(&leaf.cert, &ca.cert));
        assert_eq!(server_defect(&leaf, &ca.cert, &want, NOW, 33), None);
    }

    /// A bundle reads as its certificates in order, whatever blank lines or other PEM
    /// blocks lie between them; a certificate block that is not base64 is an error.
    #[test]
    fn bundles_read_as_their_certificates() {
        let a = new_ca("a", NOW, 3650 * DAY).unwrap();
        let b = new_ca("b", NOW, 3650 * DAY).unwrap();
        let bundle = format!("\n{}\n{}\n\n{}", a.cert.trim(), a.key, b.cert);
        let certs = bundle_certs(&bundle).unwrap();
        let ders: Vec<&[u8]> = certs.iter().map(|c| c.as_ref()).collect();
        assert_eq!(ders, [der_of(&a.cert).unwrap(), der_of(&b.cert).unwrap()]);
        assert!(signed_by_der(ders[1], ders[1]) && !signed_by_der(ders[1], ders[0]));
        assert_eq!(inspect_der(ders[0]).unwrap(), inspect(&a.cert).unwrap());
        assert!(bundle_certs("").unwrap().is_empty());
        let broken = "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n";
        assert!(bundle_certs(&format!("{}{broken}", a.cert)).is_err());
    }

    #[test]
    fn defects_are_found() {
        let ca = new_ca("ca", NOW, 3650 * DAY).unwrap();
        let other = new_ca("other", NOW, 3650 * DAY).unwrap();
        let want = sans(&["127.0.0.1", "n"]);
        let leaf = new_server(&ca, "n", &want, NOW, 365 * DAY).unwrap();
        assert!(server_defect(&leaf, &other.cert, &want, NOW, 33)
            .unwrap()
            .contains("not signed"));
        let more = sans(&["127.0.0.1", "n", "10.9.9.9"]);
        assert!(server_defect(&leaf, &ca.cert, &more, NOW, 33)
            .unwrap()
            .contains("10.9.9.9"));
        assert!(server_defect(&leaf, &ca.cert, &want, NOW + 250 * DAY, 33)
            .unwrap()
            .contains("s left"));
        assert_eq!(
            server_defect(&leaf, &ca.cert, &want, NOW + 200 * DAY, 33),
            None
        );
        let swapped = Pair {
            cert: leaf.cert.clone(),
            key: ca.key.clone(),
        };
        assert!(server_defect(&swapped, &ca.cert, &want, NOW, 33)
            .unwrap()
            .contains("key"));
        let garbage = Pair {
            cert: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".into(),
            key: leaf.key.clone(),
        };
        assert!(server_defect(&garbage, &ca.cert, &want, NOW, 33)
            .unwrap()
            .contains("unreadable"));
        let ca_as_leaf = ca.clone();
        assert!(server_defect(&ca_as_leaf, &ca.cert, &sans(&[]), NOW, 33)
            .unwrap()
            .contains("CA"));
    }

    #[test]
    fn leaves_never_outlive_their_ca() {
        let ca = new_ca("ca", NOW, 100 * DAY).unwrap();
        let leaf = new_server(&ca, "n", &sans(&["n"]), NOW, 365 * DAY).unwrap();
        assert!(inspect(&leaf.cert).unwrap().not_after <= inspect(&ca.cert).unwrap().not_after);
    }

    #[test]
    fn signer_is_self_signed_and_not_a_ca() {
        let t = new_signer("token", NOW, 365 * DAY).unwrap();
        let info = inspect(&t.cert).unwrap();
        assert!(!info.is_ca && signed_by(&t.cert, &t.cert) && key_matches(&t.cert, &t.key));
    }
}
