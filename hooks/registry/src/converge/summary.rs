//! What a converge did: the [`Summary`] it returns and its human text. Never holds a
//! secret.

use serde::Serialize;

use super::store::Changes;
use crate::model::switch::{ClusterTarget, SwitchValues};
use crate::model::values::Master;

/// What a converge did. Never holds a secret.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Whether the module is enabled.
    pub enabled: bool,
    /// The rendered mode.
    pub mode: String,
    /// HA decision.
    pub high_availability: bool,
    /// Masters found.
    pub masters: Vec<Master>,
    /// Hook runs in order, as `binding:hook`.
    pub hook_runs: Vec<String>,
    /// Object changes in the cluster.
    pub objects: Changes,
    /// Whether values.json changed.
    pub values_changed: bool,
    /// Rendered manifest file changes.
    pub rendered: Changes,
    /// Number of rendered manifest files.
    pub manifests: usize,
    /// Whether anything at all changed.
    pub changed: bool,
    /// Where the mode switch stands (no secret in it).
    pub switch: SwitchSummary,
}

/// The mode switch in a summary: what the masters run, where nodes pull from, the last
/// check.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SwitchSummary {
    /// `Proxy`/`Detached` and the generation, or `none`.
    pub registry: String,
    /// Masters running it.
    pub nodes: Vec<String>,
    /// `Upstream` or `Embedded`.
    pub cluster: String,
    /// The registry and path the pull Secret `d8-system/deckhouse-registry` names.
    pub pull_secret: String,
    /// The last check: `ok` or `<kind>: <message>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub check: Option<String>,
}

/// The switch part of the summary, read through the typed `internal.switch`
/// ([`SwitchValues`]); absent or unreadable: no registry, nodes pull from the upstream.
pub(super) fn switch_summary(sw: Option<&SwitchValues>, pull_secret: String) -> SwitchSummary {
    let default = SwitchValues::default();
    let sw = sw.unwrap_or(&default);
    SwitchSummary {
        registry: match &sw.registry {
            Some(r) => format!("{} (generation {})", r.mode, r.generation),
            None => "none".into(),
        },
        nodes: sw
            .registry
            .as_ref()
            .map(|r| r.nodes.clone())
            .unwrap_or_default(),
        cluster: match sw.cluster {
            ClusterTarget::Upstream => "Upstream",
            ClusterTarget::Embedded => "Embedded",
        }
        .to_string(),
        pull_secret,
        check: sw.check.as_ref().map(|c| {
            if c.ok {
                format!("{} ok", c.what)
            } else {
                format!("{} failed [{}]: {}", c.what, c.kind, c.message)
            }
        }),
    }
}

/// Human summary lines (no secrets: only mode, masters and change counts).
pub fn render_summary(s: &Summary) -> String {
    let mut out = String::new();
    if !s.enabled {
        out.push_str("embedded-registry: module disabled: nothing rendered\n");
    } else {
        out.push_str(&format!(
            "embedded-registry: mode {}{}, {} master(s)",
            s.mode,
            if s.high_availability { " (HA)" } else { "" },
            s.masters.len()
        ));
        if !s.masters.is_empty() {
            let list: Vec<String> = s
                .masters
                .iter()
                .map(|m| format!("{} {}", m.name, m.internal_ip))
                .collect();
            out.push_str(&format!(": {}", list.join(", ")));
        }
        out.push('\n');
    }
    if s.enabled {
        out.push_str(&format!(
            "registry: {}{}; nodes pull from: {} ({})\n",
            s.switch.registry,
            if s.switch.nodes.is_empty() {
                String::new()
            } else {
                format!(" on {}", s.switch.nodes.join(", "))
            },
            s.switch.cluster,
            s.switch.pull_secret
        ));
        if let Some(c) = &s.switch.check {
            out.push_str(&format!("check: {c}\n"));
        }
    }
    out.push_str(&format!("hooks: {}\n", s.hook_runs.join(", ")));
    let c = |c: &Changes| {
        format!(
            "{} created, {} updated, {} deleted",
            c.created.len(),
            c.updated.len(),
            c.deleted.len()
        )
    };
    out.push_str(&format!("objects: {}\n", c(&s.objects)));
    out.push_str(&format!(
        "rendered: {} manifest file(s); {}\n",
        s.manifests,
        c(&s.rendered)
    ));
    out.push_str(if s.changed {
        "result: changed\n"
    } else {
        "result: no changes\n"
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_switch_summary_reads_the_typed_values() {
        let none = switch_summary(None, "upstream.example/p".into());
        assert_eq!(
            (none.registry.as_str(), none.cluster.as_str(), none.check),
            ("none", "Upstream", None)
        );
        let sw: SwitchValues = serde_json::from_value(serde_json::json!({
            "registry": {"mode": "Proxy", "nodes": ["m1", "m2"], "generation": "ab12"},
            "cluster": "Embedded",
            "mirrors": [],
            "manager": true,
            "check": {"what": "upstream", "ok": false, "kind": "auth", "message": "401"}
        }))
        .unwrap();
        let s = switch_summary(Some(&sw), String::new());
        assert_eq!(s.registry, "Proxy (generation ab12)");
        assert_eq!(s.nodes, ["m1", "m2"]);
        assert_eq!(s.cluster, "Embedded");
        assert_eq!(s.check.as_deref(), Some("upstream failed [auth]: 401"));
    }
}
