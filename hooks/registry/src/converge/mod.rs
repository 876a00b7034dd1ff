//! The local converge: addon-operator's lifecycle on one machine, against a
//! file-backed cluster.
//!
//! 1. validate the ModuleConfig (settings rules, then `openapi/config-values.yaml`);
//! 2. run the hooks as a batch runner would (onStartup, Synchronization, beforeHelm);
//! 3. apply values patches strictly and validate values after every hook;
//! 4. apply object operations to the cluster (in memory);
//! 5. render the chart with the Helm engine and validate every object;
//! 6. run afterHelm hooks, then write everything that changed, each file atomically.
//!
//! Nothing is written before every step succeeded.

pub mod deckhouse;
pub mod helm;
pub mod jq;
pub mod runner;
pub mod schema;
pub mod store;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use serde_json::{json, Value};

use crate::hooks::discover_masters::MASTER_LABELS;
use crate::hooks::MODULE_KEY;
use crate::internal::Master;
use crate::settings::{self, FieldError};
use schema::{deep_merge, ModuleSchemas};
use store::{Changes, Store};

/// The module's name (ModuleConfig `metadata.name`).
pub const MODULE_NAME: &str = "embedded-registry";
/// The namespace the module's objects live in.
pub const NAMESPACE: &str = "d8-system";

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

fn read_document(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("{}: not valid YAML or JSON", path.display()))
}

/// Reads the ModuleConfig; returns `(object, enabled, settings)`.
fn read_module_config(path: &Path) -> Result<(Value, bool, Value), Failure> {
    let mc = read_document(path).map_err(|e| Failure::Invalid(format!("{e:#}")))?;
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

/// Reads a node list: a YAML/JSON list, a `kind: List`, or a multi-document YAML.
fn read_nodes(path: &Path) -> Result<Vec<Value>, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Invalid(format!("--nodes {}: cannot read: {e}", path.display())))?;
    let mut nodes = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).map_err(|e| {
            Failure::Invalid(format!(
                "--nodes {}: not valid YAML or JSON: {e}",
                path.display()
            ))
        })?;
        match v {
            Value::Null => {}
            Value::Array(items) => nodes.extend(items),
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => nodes
                .extend(
                    m.get("items")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default(),
                ),
            other => nodes.push(other),
        }
    }
    for (i, n) in nodes.iter().enumerate() {
        if n.get("kind").and_then(Value::as_str) != Some("Node")
            || n.pointer("/metadata/name")
                .and_then(Value::as_str)
                .is_none()
        {
            return Err(Failure::Invalid(format!(
                "--nodes {}: item {i} is not a Node with metadata.name",
                path.display()
            )));
        }
    }
    Ok(nodes)
}

fn is_master(node: &Value) -> bool {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    labels.is_some_and(|l| {
        MASTER_LABELS
            .iter()
            .any(|(_, label)| l.contains_key(*label))
    })
}

fn global_values(opts: &Options, store: &Store) -> Result<Value> {
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
    if let Some(path) = &opts.global_values {
        let overlay = read_document(path)?;
        let overlay = overlay.get("global").cloned().unwrap_or(overlay);
        deep_merge(&mut global, &overlay);
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

    let old = Store::load(&opts.state)?;
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
    let mut global = global_values(opts, &cluster)?;
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
            let out = runner::run(&opts.hook_binary, hook, &[context], values, config_values)?;
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
        let key = store::ObjKey::of(&read_module_config(&opts.module_config)?.0)?;
        let mut mc = cluster
            .get(&key)
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

    // Everything computed: now write, each file atomically.
    let objects = cluster.diff(&old);
    cluster.save(&opts.state, &old)?;
    let values_text = serde_json::to_string_pretty(&values).expect("serialisable") + "\n";
    let values_changed = write_if_changed(&opts.state.join("values.json"), &values_text, 0o600)?;
    let metrics_text = serde_json::to_string_pretty(&metrics).expect("serialisable") + "\n";
    write_if_changed(&opts.state.join("metrics.json"), &metrics_text, 0o644)?;
    let rendered = write_rendered(&opts.state.join("rendered"), &manifests)?;

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
