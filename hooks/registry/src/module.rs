//! The module's identity, in one place: its names, namespace, ports, labels,
//! annotations, the names of the objects it owns and the service address.
//!
//! The bottom layer: it imports nothing from the crate, and every other module takes
//! these names from here instead of spelling them again.

/// The module's name (ModuleConfig `metadata.name`, the `module` label of its objects).
pub const MODULE_NAME: &str = "embedded-registry";
/// The module's key in values (`embedded-registry` in lowerCamel).
pub const MODULE_KEY: &str = "embeddedRegistry";
/// The namespace the module's objects live in.
pub const NAMESPACE: &str = "d8-system";
/// The Service in front of the masters' registries.
pub const SERVICE: &str = "embedded-registry";

/// The port distribution listens on, on each master's InternalIP and on the Service.
pub const REGISTRY_PORT: u16 = 5001;

/// The address nodes pull from: the Service name containerd's mirror configuration
/// maps to the masters (`embedded-registry.d8-system.svc:5001`).
pub fn service_address() -> String {
    format!("{SERVICE}.{NAMESPACE}.svc:{REGISTRY_PORT}")
}

/// Labels that mark a master node, each with the binding that selects it.
pub const MASTER_LABELS: [(&str, &str); 2] = [
    ("masters", "node-role.kubernetes.io/control-plane"),
    ("legacy_masters", "node-role.kubernetes.io/master"),
];

/// The label that says what a module object is for (`pki`, `user`, `node-status`...).
pub const ROLE_LABEL: &str = "embedded-registry.deckhouse.io/role";
/// The label (and Secret annotation) naming the master an object belongs to.
pub const NODE_LABEL: &str = "embedded-registry.deckhouse.io/node";
/// The label (value `true`) with which an administrator excludes a node from the
/// switch: it is neither waited for nor checked.
pub const EXCLUDE_LABEL: &str = "embedded-registry.deckhouse.io/exclude";
/// Deckhouse's label for nodes whose containerd carries custom registry settings.
pub const CUSTOM_REGISTRY_LABEL: &str = "node.deckhouse.io/containerd-config-registry";

/// The annotation a node's mirror script sets on its own Node once its files are
/// written and checked: the hash of the mirror configuration it applied.
pub const ACK_ANNOTATION: &str = "embedded-registry.deckhouse.io/mirror-config";
/// The annotation the same script sets with what it found in the node's containerd
/// configuration.
pub const CONTAINERD_ANNOTATION: &str = "embedded-registry.deckhouse.io/containerd";
/// The node config Secret's annotation: the hash of every key, computed in the template
/// with each secret replaced by its revision (`embedded_registry.node_files` with
/// `redact`): it changes with any file, and is derived from no secret.
pub const CONFIG_HASH_ANNOTATION: &str = "embedded-registry.deckhouse.io/config-hash";
/// The node config Secret's annotation: the registry generation it renders.
pub const GENERATION_ANNOTATION: &str = "embedded-registry.deckhouse.io/generation";
/// The annotation naming which `ro` password a registry configuration accepts: the `ro`
/// user's revision (random; `registry-user-ro`'s `revision`), never derived from it.
pub const RO_USER_ANNOTATION: &str = "embedded-registry.deckhouse.io/ro-user";
/// The node config Secret's annotation with the upstream hysteresis (a Go duration).
pub const HYSTERESIS_ANNOTATION: &str = "embedded-registry.deckhouse.io/upstream-hysteresis";
/// The pod annotation that marks a cache-only registry.
pub const CACHE_ONLY_ANNOTATION: &str = "embedded-registry.deckhouse.io/cache-only";
/// The node config Secret's annotation: the garbage-collection window its files belong
/// to (`<id>/read-only`, `<id>/collect`; empty outside a window), reported back by the
/// node hook once the registry runs them (`appliedGcWindow`).
pub const GC_WINDOW_ANNOTATION: &str = "embedded-registry.deckhouse.io/gc-window";
/// The ConfigMap where the `rotate` node hook asks for a collection on S3.
pub const GC_REQUEST_CONFIG_MAP: &str = "registry-gc-request";
/// The ConfigMap holding the garbage-collection window's state.
pub const GC_STATE_CONFIG_MAP: &str = "registry-gc-window";

/// The cluster's pull Secret, Deckhouse's: where the cluster pulls from.
pub const PULL_SECRET: &str = "deckhouse-registry";
/// The upstream's copy of [`PULL_SECRET`], kept while it names the embedded registry.
pub const SAVED_PULL_SECRET: &str = "registry-upstream-pull";
/// The type of a pull Secret.
pub const PULL_SECRET_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// The `ro` user's pull Secret for the masters' own addresses.
pub const RO_PULL_SECRET: &str = "registry-ro-pull";
/// The Secret holding the mode switch's state.
pub const STATE_SECRET: &str = "registry-state";
/// The cluster-wide PKI Secret.
pub const PKI_SECRET: &str = "registry-pki";

/// A registry user's role: `ro` pulls, `rw` also pushes and deletes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Pull only.
    Ro,
    /// Pull, push and delete.
    Rw,
}

impl Role {
    /// The role's name, as in the Secret name and the user's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ro => "ro",
            Role::Rw => "rw",
        }
    }
}

/// The Secret of a registry user: `registry-user-ro`, `registry-user-rw`.
pub fn user_secret(role: Role) -> String {
    format!("registry-user-{}", role.as_str())
}

/// The chart's per-master Secret with the registry's files: `registry-node-<node>-config`.
pub fn node_config_secret(node: &str) -> String {
    format!("registry-node-{node}-config")
}

/// A master's PKI Secret: `registry-node-<node>-pki`.
pub fn node_pki_secret(node: &str) -> String {
    format!("registry-node-{node}-pki")
}

/// A master's status ConfigMap, written by its node hook: `registry-node-<node>-status`.
pub fn node_status_config_map(node: &str) -> String {
    format!("registry-node-{node}-status")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_charts() {
        assert_eq!(service_address(), "embedded-registry.d8-system.svc:5001");
        assert_eq!(user_secret(Role::Rw), "registry-user-rw");
        assert_eq!(node_config_secret("m1"), "registry-node-m1-config");
        assert_eq!(node_pki_secret("m1"), "registry-node-m1-pki");
        assert_eq!(node_status_config_map("m1"), "registry-node-m1-status");
    }
}
