//! The module's data: serde types only (settings, computed values, the switch's
//! state, the node status protocol) and the Go durations they hold.
//!
//! The model imports nothing from the crate but [`crate::module`] and itself.

pub mod duration;
pub mod gc_window;
pub mod node_status;
pub mod settings;
pub mod switch;
pub mod values;
