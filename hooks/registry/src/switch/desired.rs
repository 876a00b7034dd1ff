//! The desired target: what the settings ask the masters to run, and the hash of the
//! nodes' mirror configuration. Pure.

use serde_json::json;

use super::Desired;
use crate::model::settings::{Mode, ProxySettings};
use crate::model::switch::{ProxyTarget, RegistryTarget};
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

/// The registry the settings ask for: Proxy on every master with HA, else on the first.
pub fn desired(
    mode: Mode,
    proxy: Option<&ProxySettings>,
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
        Mode::Proxy if ha => masters.iter().map(|m| m.name.clone()).collect(),
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
    // The generation's key: the registries' shared secret, computed by the pki hook
    // before this one.
    let key = key.ok_or(DesiredError::NoKey)?;
    Ok(Desired {
        mode,
        registry: Some(RegistryTarget::new(mode, proxy, nodes, key.as_bytes())),
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
