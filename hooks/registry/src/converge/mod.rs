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
mod output;
mod read;
pub mod runner;
pub mod schema;
pub mod state;
pub mod store;
mod summary;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::model::settings::{self, FieldError};
use crate::model::switch::SwitchValues;
use crate::model::values::Master;
use crate::module::{MODULE_KEY, NAMESPACE};
use output::{write_if_changed, write_rendered};
use read::{global_values, read_global_values, read_module_config, read_nodes};
use schema::ModuleSchemas;
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

pub use summary::{render_summary, Summary, SwitchSummary};

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
        switch: summary::switch_summary(
            serde_json::from_value::<SwitchValues>(internal["switch"].clone())
                .ok()
                .as_ref(),
            deckhouse::registry_values(&cluster)?
                .and_then(|r| r["base"].as_str().map(str::to_owned))
                .unwrap_or_default(),
        ),
    })
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
