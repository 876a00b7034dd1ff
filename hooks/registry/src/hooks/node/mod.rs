//! Node hooks: run by shell-operator in the manager DaemonSet on each master (classic
//! protocol), one file per hook.

pub mod node_files;
pub mod rotate;
