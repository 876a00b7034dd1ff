//! The I/O `node-files` is given ([`super::handle_with`]): the network through a
//! [`Probe`], and the [`Node`] it runs on (name, host root, files' owner) from the
//! DaemonSet's environment. The filesystem below the host root is reached only through
//! the SDK's `fsutil` directory handles ([`super::files`]).

use std::path::PathBuf;

use anyhow::{bail, Context as _};

use crate::health::HealthError;
use crate::hooks::node_name;

/// Host root variable.
pub const HOST_ROOT_VAR: &str = "EMBEDDED_REGISTRY_HOST_ROOT";
/// `uid:gid` owning the registry's files (the static pod's user), or `none`.
pub const OWNER_VAR: &str = "EMBEDDED_REGISTRY_FILE_OWNER";
/// Default owner: the static pod's `runAsUser`.
pub const DEFAULT_OWNER: (u32, u32) = (64535, 64535);
/// How long the probe of this node's registry may take.
pub const REGISTRY_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the probe of a Proxy registry's upstream may take.
pub const UPSTREAM_PROBE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the handler asks the network: [`Network`] in production and end-to-end tests, a
/// fake in unit tests, so that the handler does no network I/O of its own.
pub trait Probe {
    /// `Ok` when the registry at `addr` (`host:port`) answers `/v2/` over TLS trusting
    /// `ca_pem`; else why not (its message is one line).
    fn registry(&self, addr: &str, ca_pem: &str) -> Result<(), HealthError>;
    /// [`Probe::registry`], and which files the registry runs: the
    /// [`crate::health::CONFIG_ID_HEADER`] of its answer (`Ok(None)`: none sent).
    fn registry_config(&self, addr: &str, ca_pem: &str) -> Result<Option<String>, HealthError> {
        self.registry(addr, ca_pem).map(|()| None)
    }
    /// Whether a Proxy registry's upstream (`scheme`, `host[:port]`) answers `/v2/`,
    /// trusting `ca_pem` alone when given.
    fn upstream(&self, scheme: &str, host: &str, ca_pem: Option<&str>) -> bool;
}

/// The real probes, over the network ([`crate::health`]), each bounded by its timeout
/// ([`REGISTRY_PROBE_TIMEOUT`], [`UPSTREAM_PROBE_TIMEOUT`]).
#[derive(Clone, Copy, Debug, Default)]
pub struct Network;

impl Probe for Network {
    fn registry(&self, addr: &str, ca_pem: &str) -> Result<(), HealthError> {
        crate::health::probe_registry(addr, ca_pem, REGISTRY_PROBE_TIMEOUT)
    }

    fn registry_config(&self, addr: &str, ca_pem: &str) -> Result<Option<String>, HealthError> {
        crate::health::probe_registry_config(addr, ca_pem, REGISTRY_PROBE_TIMEOUT)
    }

    fn upstream(&self, scheme: &str, host: &str, ca_pem: Option<&str>) -> bool {
        crate::health::upstream_answers(scheme, host, ca_pem, UPSTREAM_PROBE_TIMEOUT)
    }
}

/// The node the handler runs for: its name, the host root its files go under, and
/// their owner; from the DaemonSet's environment ([`Node::from_env`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `NODE_NAME`.
    pub name: String,
    /// The host root ([`HOST_ROOT_VAR`], `/` when unset).
    pub root: PathBuf,
    /// The files' `uid:gid` ([`OWNER_VAR`]), `None` to leave it.
    pub owner: Option<(u32, u32)>,
}

impl Node {
    /// Reads `NODE_NAME`, [`HOST_ROOT_VAR`] and [`OWNER_VAR`].
    pub fn from_env() -> anyhow::Result<Node> {
        let name = node_name();
        if name.is_empty() {
            bail!("NODE_NAME is not set: the DaemonSet passes it from spec.nodeName");
        }
        Ok(Node {
            name,
            root: PathBuf::from(std::env::var(HOST_ROOT_VAR).unwrap_or_else(|_| "/".into())),
            owner: owner()?,
        })
    }
}

fn owner() -> anyhow::Result<Option<(u32, u32)>> {
    match std::env::var(OWNER_VAR) {
        Err(_) => Ok(Some(DEFAULT_OWNER)),
        Ok(v) if v == "none" => Ok(None),
        Ok(v) => {
            let (u, g) = v
                .split_once(':')
                .with_context(|| format!("{OWNER_VAR}={v:?}: expected uid:gid or none"))?;
            Ok(Some((u.parse()?, g.parse()?)))
        }
    }
}
