//! Plays addon-operator for a batch hook binary: learns the hooks from `hook list` and
//! `hook config`, builds binding contexts from the file-backed cluster, runs
//! `hook run N` with the runner's environment, and reads the output files back.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use hook_sdk::bindings;
use hook_sdk::metrics::parse_metric_operations;
use hook_sdk::objects::parse_object_operations;
use hook_sdk::runtime::{HookOutputs, IoPaths};
use hook_sdk::values::parse_values_patch;
use hook_sdk::{BindingContext, ContextType, KubernetesBinding, SnapshotItem};
use serde::Deserialize;
use serde_json::Value;

use super::store::Store;

#[derive(Clone, Debug, Deserialize)]
struct Metadata {
    name: String,
}

/// A hook as the batch config states it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchHook {
    metadata: Metadata,
    /// Its index for `hook run`.
    #[serde(skip)]
    pub index: usize,
    #[serde(default)]
    kubernetes: Vec<KubernetesBinding>,
    on_startup: Option<u32>,
    before_helm: Option<u32>,
    after_helm: Option<u32>,
    after_delete_helm: Option<u32>,
}

impl BatchHook {
    /// The hook's name.
    pub fn name(&self) -> &str {
        &self.metadata.name
    }

    /// Its order for a lifecycle binding (`onStartup`, `beforeHelm`, `afterHelm`,
    /// `afterDeleteHelm`).
    pub fn order(&self, binding: &str) -> Option<u32> {
        match binding {
            "onStartup" => self.on_startup,
            "beforeHelm" => self.before_helm,
            "afterHelm" => self.after_helm,
            "afterDeleteHelm" => self.after_delete_helm,
            _ => None,
        }
    }

    /// Whether the initial Synchronization runs the hook.
    pub fn runs_on_synchronization(&self) -> bool {
        self.kubernetes
            .iter()
            .any(|b| b.execute_hook_on_synchronization != Some(false))
    }

    /// Snapshots of every binding, built from the cluster by the SDK's bindings code
    /// (the same that builds a hook's snapshots in its unit tests).
    pub fn snapshots(
        &self,
        store: &Store,
    ) -> Result<std::collections::BTreeMap<String, Vec<SnapshotItem>>> {
        let objects: Vec<&Value> = store.iter().map(|(_, o)| o).collect();
        Ok(bindings::snapshots(&self.kubernetes, &objects)?)
    }

    /// The Group context the batch runner sends on Synchronization.
    pub fn synchronization_context(&self, store: &Store) -> Result<BindingContext> {
        Ok(BindingContext {
            binding: "main".into(),
            kind: Some(ContextType::Group),
            group_name: Some("main".into()),
            snapshots: self.snapshots(store)?,
            ..Default::default()
        })
    }

    /// A lifecycle context (`beforeHelm`, ...) carrying all snapshots.
    pub fn lifecycle_context(&self, binding: &str, store: &Store) -> Result<BindingContext> {
        Ok(BindingContext {
            binding: binding.into(),
            snapshots: if binding == "onStartup" {
                Default::default()
            } else {
                self.snapshots(store)?
            },
            ..Default::default()
        })
    }
}

/// Asks the binary for its hooks exactly as addon-operator does (empty environment).
pub fn discover(exe: &Path) -> Result<Vec<BatchHook>> {
    let list = Command::new(exe)
        .args(["hook", "list"])
        .env_clear()
        .output()
        .context("cannot run `hook list`")?;
    let text = String::from_utf8_lossy(&list.stdout);
    let count: usize = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("Found "))
        .and_then(|l| l.strip_suffix(" items:"))
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("`hook list` did not print `Found N items:`: {text:?}"))?;
    let config = Command::new(exe)
        .args(["hook", "config"])
        .env_clear()
        .output()
        .context("cannot run `hook config`")?;
    if !config.status.success() {
        bail!(
            "`hook config` failed: {}",
            String::from_utf8_lossy(&config.stderr).trim()
        );
    }
    #[derive(Deserialize)]
    struct Doc {
        version: String,
        hooks: Vec<BatchHook>,
    }
    let doc: Doc = serde_json::from_slice(&config.stdout)
        .context("`hook config` is not the batch document")?;
    if doc.version != "v1" || doc.hooks.len() != count {
        bail!(
            "`hook config` lists {} hooks (version {}), `hook list` {count}",
            doc.hooks.len(),
            doc.version
        );
    }
    Ok(doc
        .hooks
        .into_iter()
        .enumerate()
        .map(|(i, mut h)| {
            h.index = i;
            h
        })
        .collect())
}

/// Runs `hook run N` with its input and output files in `dir`, which the caller makes
/// private (0700; the files here are 0600: values hold passwords and private keys).
pub fn run(
    exe: &Path,
    hook: &BatchHook,
    dir: &Path,
    contexts: &[BindingContext],
    values: &Value,
    config_values: &Value,
) -> Result<HookOutputs> {
    let p = |n: &str| dir.join(n);
    let write = |n: &str, content: &[u8]| -> Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(p(n))
            .and_then(|mut f| f.write_all(content))
            .with_context(|| format!("hook {}: cannot write {n}", hook.name()))
    };
    write("binding-context.json", &serde_json::to_vec(contexts)?)?;
    write("values.json", &serde_json::to_vec(values)?)?;
    write("config-values.json", &serde_json::to_vec(config_values)?)?;
    let outputs = [
        "values-patch.json",
        "config-values-patch.json",
        "kubernetes-patch.json",
        "metrics.json",
    ];
    for o in outputs {
        write(o, b"")?;
    }
    let mut cmd = Command::new(exe);
    cmd.args(["hook", "run", &hook.index.to_string()])
        .env_clear();
    // Variables a converge passes through: a fixed clock, to step time, and DNS
    // overrides for the registry checks.
    for var in [
        crate::clock::NOW_VAR,
        crate::distribution::client::RESOLVE_VAR,
    ] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let paths = IoPaths {
        binding_context: Some(p("binding-context.json")),
        values: Some(p("values.json")),
        config_values: Some(p("config-values.json")),
        values_patch: Some(p(outputs[0])),
        config_values_patch: Some(p(outputs[1])),
        kubernetes_patch: Some(p(outputs[2])),
        metrics: Some(p(outputs[3])),
    };
    let out = cmd
        .envs(paths.vars())
        .output()
        .with_context(|| format!("cannot run hook {}", hook.name()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The last JSON error line carries the message; fall back to raw stderr.
        let msg = stderr
            .lines()
            .rev()
            .find_map(|l| {
                serde_json::from_str::<Value>(l)
                    .ok()?
                    .get("msg")?
                    .as_str()
                    .map(String::from)
            })
            .unwrap_or_else(|| stderr.trim().to_string());
        bail!("hook {} failed: {msg}", hook.name());
    }
    let read = |n: &str| {
        std::fs::read_to_string(p(n)).with_context(|| format!("hook {}: {n}", hook.name()))
    };
    Ok(HookOutputs {
        values_patch: parse_values_patch(&read(outputs[0])?)
            .with_context(|| format!("hook {}: values patch", hook.name()))?,
        config_values_patch: parse_values_patch(&read(outputs[1])?)
            .with_context(|| format!("hook {}: config values patch", hook.name()))?,
        objects: parse_object_operations(&read(outputs[2])?)
            .with_context(|| format!("hook {}: kubernetes patch", hook.name()))?,
        metrics: parse_metric_operations(&read(outputs[3])?)
            .with_context(|| format!("hook {}: metrics", hook.name()))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner reads the bindings back from `hook config` with the SDK's own type:
    /// every field of every binding of the module survives the batch document.
    #[test]
    fn bindings_survive_the_batch_document() {
        let registry = crate::module_registry();
        let doc = registry.batch_config().unwrap();
        let hooks: Vec<BatchHook> = serde_json::from_value(doc["hooks"].clone()).unwrap();
        assert_eq!(hooks.len(), registry.hooks().len());
        let mut bindings = 0;
        for (read, hook) in hooks.iter().zip(registry.hooks()) {
            assert_eq!(read.name(), hook.config.name);
            assert_eq!(read.kubernetes, hook.config.kubernetes, "{}", read.name());
            bindings += read.kubernetes.len();
        }
        assert!(bindings > 0, "the module has kubernetes bindings");
    }
}
