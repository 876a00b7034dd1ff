//! The embedded-registry Deckhouse module: its hooks, settings and the local converge.
//!
//! The binary `embedded-registry` serves the module hooks to addon-operator (batch
//! protocol), node hooks to shell-operator (classic protocol, by the name it is invoked
//! under), and runs the local converge.

pub mod cache_only;
pub mod cli;
pub mod clock;
pub mod converge;
pub mod distribution;
pub mod health;
pub mod hooks;
pub mod model;
pub mod module;
pub mod pki;
pub mod rotation;
pub mod secrets;
pub mod storage;
pub mod switch;
pub mod untrusted;
pub mod upstream;
pub mod warm;

/// The batch registry of module hooks, as addon-operator sees it.
pub fn module_registry() -> hook_sdk::runtime::Registry {
    hook_sdk::runtime::Registry::new(module::MODULE_NAME, hooks::module_hooks())
}

/// Every hook that can run under the classic protocol, with its runner kind.
pub fn classic_hooks() -> Vec<(hook_sdk::Hook, hook_sdk::config::RunnerKind)> {
    use hook_sdk::config::RunnerKind;
    hooks::module_hooks()
        .into_iter()
        .map(|h| (h, RunnerKind::Module))
        .chain(
            hooks::node_hooks()
                .into_iter()
                .map(|h| (h, RunnerKind::Shell)),
        )
        .collect()
}
