//! The mode switch's serde types: what the `registry-state` Secret keeps and what
//! `internal.switch` holds for the chart.
//!
//! Just above 400 lines: the targets (Proxy, S3) and the keyed generation that covers
//! them are one type family; splitting it would split the generation from what it covers.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use super::duration::GoDuration;
use super::settings::Mode;
use super::values::Master;

/// The nodes' mirror configuration the switch renders, and since when.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeConfig {
    /// Its hash (what nodes acknowledge).
    pub hash: String,
    /// When it was first rendered (unix seconds).
    pub since: i64,
}

/// The upstream a Proxy registry pulls through.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxyTarget {
    /// `https` or `http`.
    pub scheme: String,
    /// `host[:port]`.
    pub host: String,
    /// Repository path.
    pub path: String,
    /// Upstream user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Upstream password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// Upstream CA bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Cache TTL.
    pub ttl: GoDuration,
}

/// The S3 bucket a registry keeps its data in (`storageMode: S3`), as the switch
/// checked it: the chart renders distribution's `storage.s3` from this, never from the
/// settings, so a bucket that failed its check is never rendered.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// The S3 API URL with its scheme.
    pub endpoint: String,
    /// The bucket's region.
    pub region: String,
    /// The bucket.
    pub bucket: String,
    /// The key prefix of the registry's data.
    pub root_directory: String,
    /// Access key ID.
    pub access_key: String,
    /// Secret access key (in the generation only through its HMAC, like the upstream
    /// password; never printed: `Debug` hides it).
    pub secret_key: String,
    /// PEM CA bundle of the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Path-style requests.
    pub force_path_style: bool,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .field("root_directory", &self.root_directory)
            .field("secret_key", &"<hidden>")
            .finish_non_exhaustive()
    }
}

impl S3Target {
    /// Where the data lives (endpoint, bucket, root directory): two targets with the
    /// same place hold the same data, whatever their keys.
    pub fn place(&self) -> (&str, &str, &str) {
        (
            self.endpoint.as_str(),
            self.bucket.as_str(),
            self.root_directory.trim_end_matches('/'),
        )
    }
}

/// What the masters' static pods run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistryTarget {
    /// `Proxy` or `Detached`.
    pub mode: Mode,
    /// The upstream (Proxy only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyTarget>,
    /// The S3 bucket of `storageMode: S3`; absent: the master's disk (`Fs`). Absent
    /// from the hashed text too, so an Fs target keeps the generation it had before
    /// S3 existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// Masters that run a registry, in mirror order.
    pub nodes: Vec<String>,
    /// Hash of everything above: masters report which generation they run.
    pub generation: String,
}

impl RegistryTarget {
    /// A target with its generation computed. `key` is a secret of the module (the
    /// registries' shared `http.secret`): the generation covers the upstream password,
    /// so that a new password restarts the registries, and it is printed and stored in
    /// ConfigMaps, so it must not let anyone test guesses of that password offline. An
    /// HMAC under a key only the cluster's Secrets hold does both. The S3 secret key
    /// is covered the same way: a new secret key is a new generation, checked by the
    /// storage check before any master renders it.
    pub fn new(mode: Mode, proxy: Option<ProxyTarget>, nodes: Vec<String>, key: &[u8]) -> Self {
        Self::with_s3(mode, proxy, None, nodes, key)
    }

    /// [`RegistryTarget::new`] with the S3 bucket of `storageMode: S3` (`None`: Fs).
    pub fn with_s3(
        mode: Mode,
        proxy: Option<ProxyTarget>,
        s3: Option<S3Target>,
        nodes: Vec<String>,
        key: &[u8],
    ) -> Self {
        let mut t = RegistryTarget {
            mode,
            proxy,
            s3,
            nodes,
            generation: String::new(),
        };
        let text = serde_json::to_string(&t).expect("serialisable");
        let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        t.generation = mac.finalize().into_bytes()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        t
    }
}

/// Where nodes pull from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum ClusterTarget {
    /// Straight from the upstream registry (no mirror configuration on nodes).
    #[default]
    Upstream,
    /// Through the masters' registries (containerd mirror configuration).
    Embedded,
}

/// A check's outcome for one registry generation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRecord {
    /// `storage` (S3, before the masters run the target), `upstream` (Proxy) or
    /// `mirror` (Detached).
    pub what: String,
    /// The generation checked.
    pub generation: String,
    /// Passed.
    pub ok: bool,
    /// Failure kind, empty when ok.
    #[serde(default)]
    pub kind: String,
    /// What was found.
    pub message: String,
    /// When this outcome was first seen (unix seconds).
    pub since: i64,
}

/// A condition's type, in the order conditions are listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    /// The mode asked for is in place.
    Ready,
    /// The storage, upstream or mirror check passed.
    ChecksPassed,
    /// Every listed master runs the registry and it answers.
    NodeServicesReady,
    /// Every node's containerd reads `registry.d`.
    NodesPreflight,
    /// Every Ready node acknowledged the mirror configuration.
    NodesAcknowledged,
    /// The pull Secret names where the mode says nodes pull from.
    ClusterSwitched,
    /// What the previous mode left is removed.
    CleanupDone,
    /// Every master of a Proxy registry caches every image of the running release.
    CacheWarm,
}

impl ConditionType {
    /// The name, as in the state Secret.
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionType::Ready => "Ready",
            ConditionType::ChecksPassed => "ChecksPassed",
            ConditionType::NodeServicesReady => "NodeServicesReady",
            ConditionType::NodesPreflight => "NodesPreflight",
            ConditionType::NodesAcknowledged => "NodesAcknowledged",
            ConditionType::ClusterSwitched => "ClusterSwitched",
            ConditionType::CleanupDone => "CleanupDone",
            ConditionType::CacheWarm => "CacheWarm",
        }
    }
}

impl PartialEq<&str> for ConditionType {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Ready`, `ChecksPassed`, `NodeServicesReady`, `ClusterSwitched`, `CleanupDone`.
    #[serde(rename = "type")]
    pub type_: ConditionType,
    /// `True` or `False`.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// For humans.
    pub message: String,
    /// When `status` last changed (unix seconds).
    pub last_transition_time: i64,
}

/// A secret's revision as the switch keeps it (`secrets::Revision`): random, with the
/// check that binds it to the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredRevision {
    /// 16 hex digits.
    pub revision: String,
    /// SHA-256 of the revision and the value (kept in the Secret, beside the value).
    pub check: String,
}

/// The revisions of the secrets of the registry the masters run: what the chart hashes
/// in their place (`docs/internal/mode-switching.md`, "The config hash").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRevisions {
    /// Of `registry.proxy.password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_password: Option<StoredRevision>,
    /// Of `registry.s3.secretKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3_secret_key: Option<StoredRevision>,
}

impl SecretRevisions {
    /// Neither secret has one.
    pub fn is_empty(&self) -> bool {
        self.upstream_password.is_none() && self.s3_secret_key.is_none()
    }
}

/// The switch's state, kept in the `registry-state` Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    /// What the masters run (`None`: no static pods).
    #[serde(default)]
    pub registry: Option<RegistryTarget>,
    /// Where nodes pull from.
    #[serde(default)]
    pub cluster: ClusterTarget,
    /// Masters listed in the nodes' mirror configuration, proven to serve.
    #[serde(default)]
    pub mirrors: Vec<String>,
    /// When the mirror configuration was first rendered (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors_since: Option<i64>,
    /// When the cluster last moved back to the upstream (unix seconds).
    #[serde(default)]
    pub switched_to_upstream_at: Option<i64>,
    /// The nodes' mirror configuration rendered now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_config: Option<NodeConfig>,
    /// The last check.
    #[serde(default)]
    pub check: Option<CheckRecord>,
    /// Conditions, by type. A condition this version does not know (written by a
    /// newer one) is dropped when read, so a downgrade reads the state; conditions are
    /// recomputed on every run.
    #[serde(default, deserialize_with = "known_conditions")]
    pub conditions: Vec<Condition>,
    /// The revisions of `registry`'s secrets (set by the hook after each step).
    #[serde(default, skip_serializing_if = "SecretRevisions::is_empty")]
    pub revisions: SecretRevisions,
}

/// Reads the conditions, leaving out those of an unknown type or shape.
fn known_conditions<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Condition>, D::Error> {
    let raw: Vec<serde_json::Value> = Deserialize::deserialize(d)?;
    Ok(raw
        .into_iter()
        .filter_map(|c| serde_json::from_value(c).ok())
        .collect())
}

/// `internal.switch`: what the chart renders.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SwitchValues {
    /// What the masters run (absent: no static pods).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistryTarget>,
    /// Where nodes pull from.
    pub cluster: ClusterTarget,
    /// Masters in the nodes' mirror configuration, in order.
    pub mirrors: Vec<Master>,
    /// The registry name the mirror configuration is for (the pull Secret's address
    /// while the cluster pulls through the masters).
    #[serde(default)]
    pub pull_address: String,
    /// The manager DaemonSet runs (a registry runs, or a master still has its static pod).
    pub manager: bool,
    /// The revision of `registry.proxy.password` (empty: no password): what the chart
    /// hashes in the password's place.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream_password_revision: String,
    /// The revision of `registry.s3.secretKey` (empty: no S3): what the chart hashes in
    /// the key's place.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub s3_secret_key_revision: String,
    /// The hash of the nodes' mirror configuration, which each node's script sets as
    /// its acknowledgement ([`crate::module::ACK_ANNOTATION`]).
    #[serde(default)]
    pub node_config_hash: String,
    /// The last check's outcome (no password in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckStatus>,
    /// The last scheduled recheck of the upstream in use (no password in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recheck: Option<Recheck>,
}

/// A scheduled recheck's outcome, as `internal.switch.recheck`: written by the
/// schedule (which has no snapshots) only when it changes, taken in by the next
/// `beforeHelm`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Recheck {
    /// The registry generation checked.
    pub generation: String,
    /// Passed.
    pub ok: bool,
    /// Failure kind; empty when it passed.
    pub kind: String,
    /// What was found.
    pub message: String,
}

/// The last upstream or mirror check, as `internal.switch.check`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckStatus {
    /// `storage`, `upstream` or `mirror`.
    pub what: String,
    /// Passed.
    pub ok: bool,
    /// Failure kind; empty when it passed.
    pub kind: String,
    /// What was found.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state written by a newer version (a condition type this one does not know)
    /// still reads: the unknown condition is left out, the known ones and the rest kept.
    #[test]
    fn a_condition_of_an_unknown_type_is_left_out_when_read() {
        let text = r#"{"mirrors": ["m1"], "conditions": [
            {"type": "Ready", "status": "True", "reason": "Done", "message": "", "lastTransitionTime": 1},
            {"type": "SomethingNewer", "status": "False", "reason": "X", "message": "", "lastTransitionTime": 2}
        ]}"#;
        let s: State = serde_json::from_str(text).unwrap();
        assert_eq!(s.mirrors, vec!["m1".to_string()]);
        assert_eq!(s.conditions.len(), 1);
        assert_eq!(s.conditions[0].type_, ConditionType::Ready);
    }
}
