//! `embeddedRegistry.internal`: everything the hooks compute.
//!
//! `openapi/values.yaml` describes the same tree; a test keeps the two from drifting.

use serde::{Deserialize, Serialize};

use crate::settings::Mode;

/// A master node that runs the registry.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Master {
    /// Node name.
    pub name: String,
    /// The node's InternalIP: the registry binds to it.
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
}

/// The computed values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Internal {
    /// Masters, sorted by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masters: Option<Vec<Master>>,
    /// The mode the chart renders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Registry on every master (Proxy only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_availability: Option<bool>,
}
