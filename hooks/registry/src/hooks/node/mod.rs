//! Node hooks: run by shell-operator in the manager DaemonSet on each master (classic
//! protocol), one file per hook.

#[cfg(test)]
mod cluster;
pub mod node_files;
pub mod rotate;
