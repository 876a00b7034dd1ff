//! The desired target: what the settings ask the masters to run, and the hash of the
//! nodes' mirror configuration. Pure.

use serde_json::json;

use super::Desired;
use crate::model::settings::{Mode, ProxySettings, S3Settings};
use crate::model::switch::{ProxyTarget, RegistryTarget, S3Target};
use crate::model::values::Master;

/// Why the settings name no target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DesiredError {
    /// A registry mode and no master to run it.
    #[error("mode {0} needs at least one master node with an InternalIP; none found")]
    NoMaster(Mode),
    /// Proxy without its settings.
    #[error("spec.settings.proxy is required in mode Proxy")]
    NoProxy,
    /// The generation's key is not computed yet.
    #[error("internal.pki.httpSecret is not set: the pki hook must run before registry-switch")]
    NoKey,
}

/// The registry the settings ask for: Proxy, or Detached on S3, on every master with
/// HA, else on the first. `s3`: the bucket of the mode's section when its
/// `storageMode` is S3 (`None`: Fs).
pub fn desired(
    mode: Mode,
    proxy: Option<&ProxySettings>,
    s3: Option<&S3Settings>,
    masters: &[Master],
    ha: bool,
    current: Option<&RegistryTarget>,
    key: Option<&str>,
) -> Result<Desired, DesiredError> {
    // One registry stays on the master it runs on while that is a master: moving it
    // would leave a Detached mirror's content behind, and nodes with no master to
    // pull from in between.
    let staying = current
        .and_then(|r| r.nodes.first())
        .filter(|n| masters.iter().any(|m| &&m.name == n));
    let nodes: Vec<String> = match mode {
        Mode::Direct => {
            return Ok(Desired {
                mode,
                registry: None,
                warm_list: None,
            })
        }
        // On S3 every master serves the same bucket: nothing is left behind on a disk.
        Mode::Proxy if ha => masters.iter().map(|m| m.name.clone()).collect(),
        Mode::Detached if ha && s3.is_some() => masters.iter().map(|m| m.name.clone()).collect(),
        _ => match staying {
            Some(n) => vec![n.clone()],
            None => masters.iter().take(1).map(|m| m.name.clone()).collect(),
        },
    };
    if nodes.is_empty() {
        return Err(DesiredError::NoMaster(mode));
    }
    let proxy = match mode {
        Mode::Proxy => {
            let p = proxy.ok_or(DesiredError::NoProxy)?;
            Some(ProxyTarget {
                scheme: p.scheme.clone(),
                host: p.host.clone(),
                path: p.path.clone().unwrap_or_default(),
                user: p.user.clone(),
                password: p.password.clone(),
                ca: p.ca.clone(),
                ttl: p.ttl.clone(),
            })
        }
        _ => None,
    };
    let s3 = s3.map(|b| S3Target {
        endpoint: b.endpoint.clone(),
        region: b.region.clone(),
        bucket: b.bucket.clone(),
        root_directory: b.root_directory.clone(),
        access_key: b.access_key.clone(),
        secret_key: b.secret_key.clone(),
        ca: b.ca.clone(),
        force_path_style: b.force_path_style,
    });
    // The generation's key: the registries' shared secret, computed by the pki hook
    // before this one.
    let key = key.ok_or(DesiredError::NoKey)?;
    Ok(Desired {
        mode,
        registry: Some(RegistryTarget::with_s3(
            mode,
            proxy,
            s3,
            nodes,
            key.as_bytes(),
        )),
        warm_list: None,
    })
}

/// The hash of the nodes' mirror configuration: the pull address, the listed masters
/// (name and address, in order) and the CA, under a format version. No secret goes in.
pub fn node_config_hash(address: &str, mirrors: &[Master], ca: &str) -> String {
    use sha2::{Digest, Sha256};
    let text = json!([
        "embedded-registry mirror configuration v2",
        address,
        mirrors
            .iter()
            .map(|m| [m.name.as_str(), m.internal_ip.as_str()])
            .collect::<Vec<_>>(),
        ca.trim(),
    ])
    .to_string();
    Sha256::digest(text.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
