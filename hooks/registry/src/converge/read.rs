//! The converge's inputs as it takes them in: the ModuleConfig's envelope, the Node
//! list, the global values. The bounded parsing of the files is [`super::input`]'s.

use std::path::Path;

use anyhow::Result;
use serde_json::{json, Value};

use super::input;
use super::schema::deep_merge;
use super::store::Store;
use super::Failure;
use crate::module::{MASTER_LABELS, MODULE_NAME};

/// Reads one input document of at most `limit` bytes; errors are one line naming the
/// file (`what` is how the user passed it, e.g. `--nodes`).
fn read_input(what: &str, path: &Path, limit: u64) -> Result<Vec<Value>, Failure> {
    let fail = |e: input::InputError| {
        let prefix = if what.is_empty() {
            String::new()
        } else {
            format!("{what} ")
        };
        Failure::Invalid(format!("{prefix}{}: {e}", path.display()))
    };
    let text = input::read_bounded(path, limit).map_err(fail)?;
    input::parse_documents(&text).map_err(fail)
}

/// Reads the ModuleConfig; returns `(object, enabled, settings)`.
pub(super) fn read_module_config(path: &Path) -> Result<(Value, bool, Value), Failure> {
    let mut docs = read_input("", path, input::MODULE_CONFIG_MAX_BYTES)?;
    if docs.len() > 1 {
        return Err(Failure::Invalid(format!(
            "{}: {} YAML documents: a ModuleConfig file holds one",
            path.display(),
            docs.len()
        )));
    }
    let mc = docs.pop().unwrap_or(Value::Null);
    let invalid =
        |field: &str, msg: &str| Failure::Invalid(format!("invalid ModuleConfig: {field}: {msg}"));
    let s = |p: &str| mc.pointer(p).and_then(Value::as_str);
    if s("/apiVersion") != Some("deckhouse.io/v1alpha1") {
        return Err(invalid("apiVersion", "must be deckhouse.io/v1alpha1"));
    }
    if s("/kind") != Some("ModuleConfig") {
        return Err(invalid("kind", "must be ModuleConfig"));
    }
    if s("/metadata/name") != Some(MODULE_NAME) {
        return Err(invalid(
            "metadata.name",
            "must be embedded-registry (the module's name)",
        ));
    }
    let spec = mc.get("spec").cloned().unwrap_or_else(|| json!({}));
    if !spec.is_object() {
        return Err(invalid("spec", "must be an object"));
    }
    let enabled = match spec.get("enabled") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(invalid("spec.enabled", "must be true or false")),
    };
    match spec.get("version") {
        None | Some(Value::Null) => {}
        Some(v) if v.as_u64() == Some(1) => {}
        Some(_) => {
            return Err(invalid(
                "spec.version",
                "must be 1 (the only settings version)",
            ))
        }
    }
    let settings = spec.get("settings").cloned().unwrap_or_else(|| json!({}));
    if !settings.is_object() {
        return Err(invalid("spec.settings", "must be an object"));
    }
    Ok((mc, enabled, settings))
}

/// Reads a node list: a YAML/JSON list of Nodes, a `List`/`NodeList`, single Nodes, or
/// any of them as several YAML documents. Anything else is refused (exit 2), as the
/// API server would refuse it: the converge must not run on a cluster it misread.
pub(super) fn read_nodes(path: &Path) -> Result<Vec<Value>, Failure> {
    let docs = read_input("--nodes", path, input::NODES_MAX_BYTES)?;
    let invalid = |msg: String| Failure::Invalid(format!("--nodes {}: {msg}", path.display()));
    let mut nodes = Vec::new();
    for (d, doc) in docs.into_iter().enumerate() {
        let at = |i: usize| format!("document {d}, item {i}");
        match doc {
            Value::Null => {}
            Value::Array(items) => nodes.extend(items.into_iter().enumerate().map(|(i, n)| (at(i), n))),
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str).is_some_and(|k| k == "List" || k == "NodeList") => {
                match m.get("items") {
                    Some(Value::Array(items)) => nodes.extend(items.iter().cloned().enumerate().map(|(i, n)| (at(i), n))),
                    None | Some(Value::Null) => {}
                    Some(_) => return Err(invalid(format!("document {d}: items must be a list of Nodes"))),
                }
            }
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("Node") => {
                nodes.push((format!("document {d}"), doc))
            }
            _ => {
                return Err(invalid(format!(
                    "document {d} is not a Node, a NodeList or a list of Nodes: pass `kubectl get nodes -o yaml` output"
                )))
            }
        }
    }
    // A name listed twice keeps its last entry, as before (the soak test's generator
    // relies on it).
    let mut out = Vec::with_capacity(nodes.len());
    for (at, n) in nodes {
        check_node(&n).map_err(|msg| invalid(format!("{at}: {msg}")))?;
        out.push(n);
    }
    Ok(out)
}

/// The fields of a Node the converge and the hooks read, checked as the API server
/// would: a wrong type here would otherwise be read as "absent".
fn check_node(n: &Value) -> Result<(), String> {
    let Some(obj) = n.as_object() else {
        return Err("is not a Node (not a mapping)".into());
    };
    if obj.get("kind").and_then(Value::as_str) != Some("Node") {
        return Err("is not a Node: kind must be Node".into());
    }
    match obj.get("apiVersion") {
        None => {}
        Some(v) if v.as_str() == Some("v1") => {}
        Some(_) => return Err("apiVersion must be v1".into()),
    }
    let Some(meta) = obj.get("metadata").and_then(Value::as_object) else {
        return Err("is not a Node with metadata.name: metadata must be a mapping".into());
    };
    let name = match meta.get("name") {
        Some(Value::String(s)) => s,
        _ => return Err("is not a Node with metadata.name: metadata.name must be a string".into()),
    };
    if !is_dns_subdomain(name) {
        return Err(
            "metadata.name must be a DNS subdomain (lowercase letters, digits, '-' and '.', at most 253 characters)"
                .into(),
        );
    }
    match meta.get("labels") {
        None | Some(Value::Null) => {}
        Some(Value::Object(l)) if l.values().all(Value::is_string) => {}
        Some(_) => {
            return Err(format!(
                "Node {name}: metadata.labels must map names to strings"
            ))
        }
    }
    match obj.get("status") {
        None | Some(Value::Null) => {}
        Some(Value::Object(st)) => match st.get("addresses") {
            None | Some(Value::Null) => {}
            Some(Value::Array(a))
                if a.iter().all(|x| {
                    x.get("type").is_some_and(Value::is_string)
                        && x.get("address").is_some_and(Value::is_string)
                }) => {}
            Some(_) => {
                return Err(format!(
                    "Node {name}: status.addresses must be a list of {{type, address}} strings"
                ))
            }
        },
        Some(_) => return Err(format!("Node {name}: status must be a mapping")),
    }
    Ok(())
}

/// Kubernetes' rule for object names such as a Node's (RFC 1123 subdomain).
fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Reads `--global-values`: a mapping, optionally under a `global` key.
pub(super) fn read_global_values(path: &Path) -> Result<Value, Failure> {
    let mut docs = read_input("--global-values", path, input::GLOBAL_VALUES_MAX_BYTES)?;
    let invalid =
        |msg: &str| Failure::Invalid(format!("--global-values {}: {msg}", path.display()));
    if docs.len() > 1 {
        return Err(invalid("holds several YAML documents: keep one"));
    }
    let doc = docs.pop().unwrap_or_else(|| json!({}));
    let overlay = match doc.get("global") {
        Some(g) => g.clone(),
        None => doc,
    };
    if !overlay.is_object() {
        return Err(invalid("must be a mapping of global values"));
    }
    Ok(overlay)
}

fn is_master(node: &Value) -> bool {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    labels.is_some_and(|l| {
        MASTER_LABELS
            .iter()
            .any(|(_, label)| l.contains_key(*label))
    })
}

pub(super) fn global_values(overlay: Option<&Value>, store: &Store) -> Result<Value> {
    let mut global: Value =
        serde_yaml_ng::from_str(include_str!("global-defaults.yaml")).expect("built-in YAML");
    let masters = store
        .iter()
        .filter(|(k, v)| k.kind == "Node" && is_master(v))
        .count();
    deep_merge(
        &mut global,
        &json!({"discovery": {"clusterMasterCount": masters, "clusterControlPlaneIsHighlyAvailable": masters > 1}}),
    );
    if let Some(overlay) = overlay {
        deep_merge(&mut global, overlay);
    }
    Ok(global)
}
