//! The local converge: addon-operator's lifecycle on one machine, against a
//! file-backed cluster.
//!
//! 1. validate the ModuleConfig (settings rules, then `openapi/config-values.yaml`);
//! 2. run the hooks as a batch runner would (onStartup, Synchronization, beforeHelm);
//! 3. apply values patches strictly and validate values after every hook;
//! 4. apply object operations to the cluster (in memory);
//! 5. render the chart with the Helm engine and validate every object;
//! 6. run afterHelm hooks, then build the new state beside the old one and switch to it
//!    in one step ([`state`]).
//!
//! Nothing is written before every step succeeded; one converge at a time holds the
//! state directory.

pub mod deckhouse;
pub mod helm;
pub mod input;
pub mod jq;
pub mod runner;
pub mod schema;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::model::settings::{self, FieldError};
use crate::model::values::Master;
use crate::module::{MASTER_LABELS, MODULE_KEY, MODULE_NAME, NAMESPACE};
use schema::{deep_merge, ModuleSchemas};
use store::{Changes, Store};

/// Converge options.
#[derive(Clone, Debug)]
pub struct Options {
    /// The ModuleConfig file (YAML or JSON).
    pub module_config: PathBuf,
    /// The state directory.
    pub state: PathBuf,
    /// Node list that replaces the cluster's Nodes.
    pub nodes: Option<PathBuf>,
    /// Global values merged over the defaults.
    pub global_values: Option<PathBuf>,
    /// The module directory (holds `Chart.yaml`, `openapi/`, `templates/`).
    pub module_dir: PathBuf,
    /// The hook binary (normally this executable).
    pub hook_binary: PathBuf,
    /// Python for the renderer.
    pub python: Option<PathBuf>,
    /// Kubernetes version the rendered objects are validated against.
    pub kube_version: String,
}

/// Why a converge stopped.
#[derive(Debug)]
pub enum Failure {
    /// The input is wrong (exit 2): one line naming the field and the fix.
    Invalid(String),
    /// Something failed on the way (exit 1).
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Failed(e)
    }
}

impl From<FieldError> for Failure {
    fn from(e: FieldError) -> Self {
        Failure::Invalid(format!("invalid ModuleConfig: {e}"))
    }
}

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

fn switch_summary(sw: &Value, pull_secret: String) -> SwitchSummary {
    let registry = &sw["registry"];
    SwitchSummary {
        registry: match registry["mode"].as_str() {
            Some(m) => format!(
                "{m} (generation {})",
                registry["generation"].as_str().unwrap_or("")
            ),
            None => "none".into(),
        },
        nodes: registry["nodes"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
        cluster: sw["cluster"].as_str().unwrap_or("Upstream").to_string(),
        pull_secret,
        check: sw.get("check").filter(|c| c.is_object()).map(|c| {
            if c["ok"].as_bool() == Some(true) {
                format!("{} ok", c["what"].as_str().unwrap_or(""))
            } else {
                format!(
                    "{} failed [{}]: {}",
                    c["what"].as_str().unwrap_or(""),
                    c["kind"].as_str().unwrap_or(""),
                    c["message"].as_str().unwrap_or("")
                )
            }
        }),
    }
}

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
fn read_module_config(path: &Path) -> Result<(Value, bool, Value), Failure> {
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
fn read_nodes(path: &Path) -> Result<Vec<Value>, Failure> {
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
fn read_global_values(path: &Path) -> Result<Value, Failure> {
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

fn global_values(overlay: Option<&Value>, store: &Store) -> Result<Value> {
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

/// Runs the converge; writes the state directory only when every step succeeded.
pub fn converge(opts: &Options) -> Result<Summary, Failure> {
    let (mc, enabled, raw_settings) = read_module_config(&opts.module_config)?;
    let schemas = ModuleSchemas::load(&opts.module_dir)?;
    let mut settings = raw_settings.clone();
    schemas.config.apply_defaults(&mut settings);
    settings::check(&settings)?;
    schemas.config.validate(&settings)?;
    let nodes = opts.nodes.as_deref().map(read_nodes).transpose()?;
    let global_overlay = opts
        .global_values
        .as_deref()
        .map(read_global_values)
        .transpose()?;
    let mc_key = store::ObjKey::of(&mc)?;

    // Every input is valid: from here on this converge owns the state directory.
    let state = state::StateDir::open(&opts.state, state::LOCK_WAIT)?;
    let old = Store::load(state.path())?;
    let mut cluster = old.clone();
    if let Some(nodes) = nodes {
        cluster.remove_kind("Node");
        for n in nodes {
            cluster.put(n)?;
        }
    }
    cluster.put(mc)?;

    let mut module_values = settings.clone();
    schemas.values.apply_defaults(&mut module_values);
    let mut global = global_values(global_overlay.as_ref(), &cluster)?;
    deckhouse::seed_pull_secret(&mut cluster, &global["modulesImages"]["registry"])?;
    if let Some(registry) = deckhouse::registry_values(&cluster)? {
        global["modulesImages"]["registry"] = registry;
    }
    let mut values = json!({"global": global, MODULE_KEY: module_values});
    let mut config_values = json!({ MODULE_KEY: raw_settings });

    let hooks = runner::discover(&opts.hook_binary)?;
    let mut hook_runs = Vec::new();
    let mut metrics: BTreeMap<String, Value> = BTreeMap::new();

    // Runs `hooks` in order for `binding`, each with a context built from the cluster as
    // the hooks before it left it.
    let mut run = |binding: &str,
                   hooks: Vec<&runner::BatchHook>,
                   values: &mut Value,
                   config_values: &mut Value,
                   cluster: &mut Store|
     -> Result<()> {
        for hook in hooks {
            let context = if binding == "Synchronization" {
                hook.synchronization_context(cluster)?
            } else {
                hook.lifecycle_context(binding, cluster)?
            };
            let dir = state.hook_dir()?;
            let out = runner::run(
                &opts.hook_binary,
                hook,
                dir.path(),
                &[context],
                values,
                config_values,
            )?;
            dir.close().with_context(|| {
                format!("hook {}: cannot remove its input directory", hook.name())
            })?;
            let name = hook.name();
            hook_sdk::values::apply_values_patch(values, &out.values_patch)
                .with_context(|| format!("hook {name}: the runner refuses its values patch"))?;
            schemas.values.validate(&values[MODULE_KEY]).map_err(|e| {
                anyhow::anyhow!("hook {name}: values fail openapi/values.yaml: {e}")
            })?;
            hook_sdk::values::apply_values_patch(config_values, &out.config_values_patch)
                .with_context(|| {
                    format!("hook {name}: the runner refuses its config values patch")
                })?;
            for op in &out.objects {
                if let Err(e) = cluster.apply(op) {
                    if !op.ignore_hook_error {
                        return Err(e.context(format!("hook {name}: object operation")));
                    }
                }
            }
            if !out.metrics.is_empty() {
                metrics.insert(
                    name.to_string(),
                    serde_json::to_value(&out.metrics).expect("serialisable"),
                );
            }
            hook_runs.push(format!("{binding}:{name}"));
        }
        Ok(())
    };

    let ordered = |binding: &str| {
        let mut hs: Vec<&runner::BatchHook> = hooks
            .iter()
            .filter(|h| h.order(binding).is_some())
            .collect();
        hs.sort_by_key(|h| (h.order(binding), h.name().to_string()));
        hs
    };

    run(
        "onStartup",
        ordered("onStartup"),
        &mut values,
        &mut config_values,
        &mut cluster,
    )?;
    if enabled {
        let syncing = hooks
            .iter()
            .filter(|h| h.runs_on_synchronization())
            .collect();
        run(
            "Synchronization",
            syncing,
            &mut values,
            &mut config_values,
            &mut cluster,
        )?;
        run(
            "beforeHelm",
            ordered("beforeHelm"),
            &mut values,
            &mut config_values,
            &mut cluster,
        )?;
    } else {
        // A disabled module: its release is gone; afterDeleteHelm hooks tidy up (they
        // are idempotent, so running them on every disabled converge is harmless).
        run(
            "afterDeleteHelm",
            ordered("afterDeleteHelm"),
            &mut values,
            &mut config_values,
            &mut cluster,
        )?;
    }
    // Config values patches land in the ModuleConfig, as addon-operator does.
    if config_values[MODULE_KEY] != raw_settings {
        let mut mc = cluster
            .get(&mc_key)
            .cloned()
            .context("ModuleConfig vanished")?;
        mc["spec"]["settings"] = config_values[MODULE_KEY].clone();
        cluster.put(mc)?;
    }

    let manifests = if enabled {
        let python = helm::python(opts.python.as_deref(), &opts.module_dir);
        helm::render(
            &python,
            &opts.module_dir,
            &values,
            NAMESPACE,
            &opts.kube_version,
        )?
    } else {
        BTreeMap::new()
    };
    if enabled {
        run(
            "afterHelm",
            ordered("afterHelm"),
            &mut values,
            &mut config_values,
            &mut cluster,
        )?;
    }

    // Everything computed: build the new state beside the old one and switch to it in
    // one step (see `state`), or leave everything as it was.
    let objects = cluster.diff(&old);
    let values_text = serde_json::to_string_pretty(&values).expect("serialisable") + "\n";
    let metrics_text = serde_json::to_string_pretty(&metrics).expect("serialisable") + "\n";
    let mut values_changed = false;
    let mut rendered = Changes::default();
    state.commit(|dir| {
        cluster.save(dir, &old)?;
        values_changed = write_if_changed(&dir.join("values.json"), &values_text, 0o600)?;
        let metrics_changed = write_if_changed(&dir.join("metrics.json"), &metrics_text, 0o644)?;
        rendered = write_rendered(&dir.join("rendered"), &manifests)?;
        Ok(!objects.is_empty() || values_changed || metrics_changed || !rendered.is_empty())
    })?;

    let internal = &values[MODULE_KEY]["internal"];
    let masters: Vec<Master> =
        serde_json::from_value(internal["masters"].clone()).unwrap_or_default();
    let changed = !objects.is_empty() || values_changed || !rendered.is_empty();
    Ok(Summary {
        enabled,
        mode: internal["mode"].as_str().unwrap_or("Direct").to_string(),
        high_availability: internal["highAvailability"].as_bool().unwrap_or(false),
        masters,
        hook_runs,
        objects,
        values_changed,
        rendered,
        manifests: manifests.len(),
        changed,
        switch: switch_summary(
            &internal["switch"],
            deckhouse::registry_values(&cluster)?
                .and_then(|r| r["base"].as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
    })
}

fn write_if_changed(path: &Path, text: &str, mode: u32) -> Result<bool> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(text) {
        return Ok(false);
    }
    std::fs::create_dir_all(path.parent().expect("has parent"))
        .with_context(|| format!("{}: cannot create its directory", path.display()))?;
    hook_sdk::fsutil::stage(path, text.as_bytes(), Some(mode))?.commit()?;
    Ok(true)
}

fn write_rendered(dir: &Path, manifests: &BTreeMap<String, String>) -> Result<Changes> {
    let mut changes = Changes::default();
    let mut existing = Vec::new();
    collect_files(dir, dir, &mut existing)?;
    existing.sort();
    for (rel, text) in manifests {
        if rel.split('/').any(|s| s == ".." || s.is_empty()) {
            bail!("rendered path {rel:?} escapes the rendered directory");
        }
        let path = dir.join(rel);
        let before = std::fs::read_to_string(&path).ok();
        if write_if_changed(&path, text, 0o600)? {
            if before.is_some() {
                changes.updated.push(rel.clone());
            } else {
                changes.created.push(rel.clone());
            }
        }
    }
    for rel in existing {
        if !manifests.contains_key(&rel) {
            std::fs::remove_file(dir.join(&rel))
                .with_context(|| format!("rendered/{rel}: cannot remove"))?;
            changes.deleted.push(rel);
        }
    }
    Ok(changes)
}

fn collect_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries {
        let path = e?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else if let Ok(rel) = path.strip_prefix(root) {
            out.push(rel.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

/// Finds the module directory: the first ancestor of `start` with `module.yaml`,
/// `Chart.yaml` and `openapi/`.
pub fn find_module_dir(start: &Path) -> Option<PathBuf> {
    start.ancestors().find_map(|d| {
        (d.join("module.yaml").is_file()
            && d.join("Chart.yaml").is_file()
            && d.join("openapi").is_dir())
        .then(|| d.to_path_buf())
    })
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
