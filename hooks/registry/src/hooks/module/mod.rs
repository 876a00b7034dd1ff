//! Module hooks: run by addon-operator (batch protocol), one file per hook.

#[cfg(test)]
mod cluster_yaml;
pub mod discover_masters;
pub mod gc_window;
pub mod next_release;
pub mod pki;
pub mod registry_switch;
pub mod resolve_mode;
pub mod users;

use std::collections::BTreeMap;

use hook_sdk::{KubernetesBinding, NamespaceSelector};

use crate::module::{NAMESPACE, ROLE_LABEL};
use crate::secrets::SECRET_FILTER;

/// The binding `node_status`: every master's status ConfigMap (label
/// `role=node-status`) in the module's namespace, as its name and data (`SECRET_FILTER`:
/// the same shape for a ConfigMap), objects not kept in memory, not run at
/// synchronisation. Shared by the hooks that read the masters' reports.
pub(crate) fn node_status_binding() -> KubernetesBinding {
    KubernetesBinding {
        namespace: Some(NamespaceSelector::names(&[NAMESPACE])),
        label_selector: Some(hook_sdk::config::LabelSelector {
            match_labels: BTreeMap::from([(ROLE_LABEL.to_string(), "node-status".to_string())]),
            ..Default::default()
        }),
        jq_filter: Some(SECRET_FILTER.into()),
        keep_full_objects_in_memory: Some(false),
        execute_hook_on_synchronization: Some(false),
        ..KubernetesBinding::new("node_status", "v1", "ConfigMap")
    }
}
