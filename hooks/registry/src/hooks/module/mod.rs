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
