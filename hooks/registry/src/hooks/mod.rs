//! The module's hooks: one file per hook, each a config and a handler; `module/` for
//! addon-operator, `node/` for shell-operator on the masters. The top layer: only
//! `lib.rs`, `converge` and `cli` import it.

pub mod module;
pub mod node;

// Every hook also by its short name (`hooks::discover_masters`), as `hook list` names it.
pub use module::{
    discover_masters, gc_window, next_release, pki, registry_switch, resolve_mode, users,
};
pub use node::{node_files, rotate};

use std::collections::BTreeMap;

use hook_sdk::{Hook, KubernetesBinding, NamespaceSelector};
use serde::Deserialize;

use crate::module::NAMESPACE;

/// The module hooks' constructors, in the batch protocol's order (indexes are its hook
/// ids).
const MODULE_HOOKS: [fn() -> Hook; 7] = [
    discover_masters::hook,
    resolve_mode::hook,
    pki::hook,
    users::hook,
    registry_switch::hook,
    gc_window::hook,
    next_release::hook,
];

/// Hooks run by addon-operator (listed by `hook list`, run by `hook run N`).
/// Order matters: indexes are the batch protocol's hook ids.
pub fn module_hooks() -> Vec<Hook> {
    MODULE_HOOKS.iter().map(|hook| hook()).collect()
}

/// Module hook number `index` of [`module_hooks`], built alone: `hook run N` needs no
/// other hook's configuration (building them all cost a small run about 5% of its
/// instructions).
pub fn module_hook(index: usize) -> Option<Hook> {
    MODULE_HOOKS.get(index).map(|hook| hook())
}

/// Hooks run by shell-operator inside the manager DaemonSet (classic protocol only).
pub fn node_hooks() -> Vec<Hook> {
    vec![node_files::hook(), rotate::hook()]
}

/// The node a node hook runs for: `NODE_NAME`, set by the manager DaemonSet.
pub(crate) fn node_name() -> String {
    std::env::var("NODE_NAME").unwrap_or_default()
}

/// A node hook's binding to one object of the module namespace, by name.
pub(crate) fn named_binding(binding: &str, kind: &str, name: String) -> KubernetesBinding {
    KubernetesBinding {
        namespace: Some(NamespaceSelector::names(&[NAMESPACE])),
        name_selector: Some(hook_sdk::config::NameSelector {
            match_names: vec![name],
        }),
        ..KubernetesBinding::new(binding, "v1", kind)
    }
}

/// A snapshot item that carries an object's `data` (a ConfigMap's, or a Secret's still
/// in base64).
#[derive(Deserialize)]
pub(crate) struct DataSnap {
    #[serde(default)]
    pub data: BTreeMap<String, String>,
}

#[cfg(test)]
mod list_tests {
    use super::*;

    /// `hook run N` builds hook N alone: it is the list's entry N, configuration and all,
    /// and an index past the list names none.
    #[test]
    fn a_hook_built_alone_is_the_lists_entry() {
        let all = module_hooks();
        for (i, hook) in all.iter().enumerate() {
            let alone = module_hook(i).unwrap();
            let path = |h: &Hook| format!("embedded-registry/{}", h.config.name);
            assert_eq!(
                alone.config.batch_json(&path(&alone)).unwrap(),
                hook.config.batch_json(&path(hook)).unwrap(),
                "hook {i}"
            );
        }
        assert!(module_hook(all.len()).is_none());
    }
}
