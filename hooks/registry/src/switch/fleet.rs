//! The fleet of nodes the switch waits for: what each node acknowledged (its mirror
//! configuration hash, its containerd preflight verdict), and the summary a step reads.

/// The verdict of a node whose containerd reads `hosts.toml` from `registry.d`.
pub const PREFLIGHT_OK: &str = "registry.d";

/// The verdicts a node's script may report: [`PREFLIGHT_OK`], no `config.toml`, no
/// `config_path` naming `registry.d`, containerd v1 `mirrors` in `config.toml`,
/// containerd v2 pulling through the transfer service (which may skip `hosts.toml`).
pub const PREFLIGHT_VERDICTS: [&str; 5] = [
    PREFLIGHT_OK,
    "no-config",
    "no-config-path",
    "v1-mirrors",
    "v2-transfer",
];

/// Default seconds a Ready node may take to acknowledge a configuration before it is
/// reported overdue (the switch keeps waiting either way).
pub const DEFAULT_ACK_TIMEOUT_SECS: i64 = 900;

/// Node names shown in a condition's message, per list.
pub const NAMES_SHOWN: usize = 5;

/// What one node said about its mirror configuration (its annotations, labels and
/// Ready condition), already checked by the hook.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeAck {
    /// Node name.
    pub name: String,
    /// Its Ready condition is `True`.
    pub ready: bool,
    /// The configuration hash it acknowledged (empty: none).
    pub hash: String,
    /// Its containerd verdict (one of [`PREFLIGHT_VERDICTS`], `invalid`, or empty).
    pub containerd: String,
    /// Deckhouse labelled its containerd registry configuration `custom`.
    pub custom_registry: bool,
    /// The administrator excluded it ([`crate::module::EXCLUDE_LABEL`]).
    pub excluded: bool,
}

/// The hash of the nodes' mirror configuration listing the given masters.
pub type ConfigHash = Box<dyn Fn(&[String]) -> String>;

/// The nodes as the switch sees them, and what it needs to judge them.
pub struct Fleet {
    /// Every node.
    pub nodes: Vec<NodeAck>,
    /// Seconds after which a Ready node that has not acknowledged is overdue.
    pub timeout_secs: i64,
    /// The pull Secret is seen restored and the Deckhouse Deployment (when there is
    /// one) runs with references that do not name the embedded registry.
    pub deckhouse_restored: bool,
    /// The hash of the nodes' mirror configuration listing these masters.
    pub config_hash: ConfigHash,
}

impl Fleet {
    /// How the nodes stand with configuration `hash`.
    pub fn summary(&self, hash: &str) -> AckSummary {
        let mut out = AckSummary {
            hash: hash.to_string(),
            total: self.nodes.len(),
            ..Default::default()
        };
        for n in &self.nodes {
            if n.excluded {
                out.excluded.push(n.name.clone());
                continue;
            }
            let verdict = if n.custom_registry {
                "custom-registry-label"
            } else {
                n.containerd.as_str()
            };
            if !verdict.is_empty() && verdict != PREFLIGHT_OK {
                out.preflight.push(format!("{} ({verdict})", n.name));
            }
            if !n.ready {
                out.not_ready.push(n.name.clone());
                continue;
            }
            out.ready += 1;
            if n.hash == hash {
                out.acked += 1;
            } else {
                out.laggards.push(n.name.clone());
            }
        }
        for l in [
            &mut out.excluded,
            &mut out.preflight,
            &mut out.not_ready,
            &mut out.laggards,
        ] {
            l.sort();
        }
        out
    }
}

/// How the nodes stand with one configuration hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AckSummary {
    /// The configuration.
    pub hash: String,
    /// Nodes in the cluster.
    pub total: usize,
    /// Ready nodes not excluded.
    pub ready: usize,
    /// Ready nodes not excluded that acknowledged `hash`.
    pub acked: usize,
    /// Ready nodes not excluded that did not, sorted.
    pub laggards: Vec<String>,
    /// NotReady nodes (not waited for), sorted.
    pub not_ready: Vec<String>,
    /// Excluded nodes, sorted.
    pub excluded: Vec<String>,
    /// Nodes whose containerd does not read `registry.d`, with the verdict, sorted.
    pub preflight: Vec<String>,
}

impl AckSummary {
    /// Every Ready node acknowledged, and at least one did.
    pub fn proven(&self) -> bool {
        self.laggards.is_empty() && self.acked > 0
    }

    /// The message of the `NodesAcknowledged` condition.
    pub fn describe(&self, waited: i64, overdue: bool) -> String {
        let mut out = format!(
            "{} of {} Ready nodes acknowledged configuration {} ({} nodes in total)",
            self.acked, self.ready, self.hash, self.total
        );
        if !self.laggards.is_empty() {
            out += &format!(
                "; {} {}: {}; waited {waited}s",
                if overdue { "overdue" } else { "waiting for" },
                self.laggards.len(),
                first(&self.laggards)
            );
        }
        if !self.not_ready.is_empty() {
            out += &format!("; NotReady, not waited for: {}", first(&self.not_ready));
        }
        if !self.excluded.is_empty() {
            out += &format!("; excluded: {}", first(&self.excluded));
        }
        out
    }
}

pub(super) fn first(names: &[String]) -> String {
    let mut out = names
        .iter()
        .take(NAMES_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMES_SHOWN {
        out += &format!(" and {} more", names.len() - NAMES_SHOWN);
    }
    out
}
