//! A test harness: build an input from objects and values, run a hook in-process or as
//! a process, read back the values after the patch, object operations and metrics.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::context::{BindingContext, ContextType, SnapshotItem};
use crate::metrics::{parse_metric_operations, MetricOperation};
use crate::objects::{parse_object_operations, ObjectOperation};
use crate::runtime::{run_in_memory, HookOutputs};
use crate::values::{apply_values_patch, parse_values_patch};
use crate::Hook;

/// A snapshot item holding only a filter result.
pub fn filtered(v: impl Into<Value>) -> SnapshotItem {
    SnapshotItem::filtered(&v.into())
}

/// A snapshot item holding only a full object.
pub fn full(object: Value) -> SnapshotItem {
    SnapshotItem::full(&object, None)
}

/// What a run produced, with the values patch already applied (strictly).
#[derive(Clone, Debug)]
pub struct TestOutput {
    /// Values after the patch.
    pub values: Value,
    /// The values patch.
    pub values_patch: Vec<Value>,
    /// Config values after their patch.
    pub config_values: Value,
    /// Object operations.
    pub objects: Vec<ObjectOperation>,
    /// Metric operations.
    pub metrics: Vec<MetricOperation>,
    /// What the process printed on stderr (empty for in-process runs).
    pub stderr: String,
}

/// Builder of one hook run.
#[derive(Clone, Debug, Default)]
pub struct HookTest {
    contexts: Vec<BindingContext>,
    values: Value,
    config_values: Value,
}

impl HookTest {
    /// An empty run: no contexts, empty values.
    pub fn new() -> Self {
        HookTest {
            contexts: vec![],
            values: json!({}),
            config_values: json!({}),
        }
    }

    /// Sets the values document.
    pub fn values(mut self, v: Value) -> Self {
        self.values = v;
        self
    }

    /// Sets the config values document.
    pub fn config_values(mut self, v: Value) -> Self {
        self.config_values = v;
        self
    }

    /// Appends a raw context.
    pub fn context(mut self, c: BindingContext) -> Self {
        self.contexts.push(c);
        self
    }

    /// Appends a lifecycle context (`onStartup`, `beforeHelm`, ...).
    pub fn lifecycle(self, binding: &str) -> Self {
        self.context(BindingContext {
            binding: binding.into(),
            ..Default::default()
        })
    }

    /// Appends a schedule context for `binding`, without snapshots (as the batch runner
    /// delivers schedules).
    pub fn schedule(self, binding: &str) -> Self {
        self.context(BindingContext {
            binding: binding.into(),
            kind: Some(ContextType::Schedule),
            ..Default::default()
        })
    }

    /// Adds a snapshot to the batch runner's `main` group context (created on first use).
    pub fn group_snapshot(mut self, binding: &str, items: Vec<SnapshotItem>) -> Self {
        let is_group = |c: &BindingContext| c.kind == Some(ContextType::Group);
        if !self.contexts.last().is_some_and(is_group) {
            self.contexts.push(BindingContext {
                binding: "main".into(),
                kind: Some(ContextType::Group),
                group_name: Some("main".into()),
                ..Default::default()
            });
        }
        self.contexts
            .last_mut()
            .expect("ensured")
            .snapshots
            .insert(binding.into(), items);
        self
    }

    /// The binding context file content this run would get.
    pub fn contexts_json(&self) -> String {
        serde_json::to_string(&self.contexts).expect("serialisable")
    }

    fn finish(&self, out: HookOutputs, stderr: String) -> Result<TestOutput> {
        let mut values = self.values.clone();
        apply_values_patch(&mut values, &out.values_patch)
            .context("the runner would refuse the values patch")?;
        let mut config_values = self.config_values.clone();
        apply_values_patch(&mut config_values, &out.config_values_patch)
            .context("the runner would refuse the config values patch")?;
        Ok(TestOutput {
            values,
            values_patch: out.values_patch,
            config_values,
            objects: out.objects,
            metrics: out.metrics,
            stderr,
        })
    }

    /// Runs the hook in-process.
    pub fn run(&self, hook: &Hook) -> Result<TestOutput> {
        let out = run_in_memory(
            hook,
            self.contexts.clone(),
            self.values.clone(),
            self.config_values.clone(),
        )?;
        self.finish(out, String::new())
    }

    /// Runs `program args...` as the runner would (files in a temporary directory, paths
    /// in the environment, nothing else inherited) and reads its output files.
    pub fn run_process(&self, program: &Path, args: &[&str]) -> Result<TestOutput> {
        let dir = tempfile_dir()?;
        let p = |n: &str| dir.join(n);
        std::fs::write(p("bc.json"), self.contexts_json())?;
        std::fs::write(p("values.json"), self.values.to_string())?;
        std::fs::write(p("config-values.json"), self.config_values.to_string())?;
        let output = Command::new(program)
            .args(args)
            .env_clear()
            .env("BINDING_CONTEXT_PATH", p("bc.json"))
            .env("VALUES_PATH", p("values.json"))
            .env("CONFIG_VALUES_PATH", p("config-values.json"))
            .env("VALUES_JSON_PATCH_PATH", p("values-patch.json"))
            .env(
                "CONFIG_VALUES_JSON_PATCH_PATH",
                p("config-values-patch.json"),
            )
            .env("KUBERNETES_PATCH_PATH", p("k8s.json"))
            .env("METRICS_PATH", p("metrics.json"))
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let read = |n: &str| std::fs::read_to_string(p(n)).unwrap_or_default();
        let result = if output.status.success() {
            let out = HookOutputs {
                values_patch: parse_values_patch(&read("values-patch.json"))?,
                config_values_patch: parse_values_patch(&read("config-values-patch.json"))?,
                objects: parse_object_operations(&read("k8s.json"))?,
                metrics: parse_metric_operations(&read("metrics.json"))?,
            };
            self.finish(out, stderr)
        } else {
            let written: Vec<_> = [
                "values-patch.json",
                "config-values-patch.json",
                "k8s.json",
                "metrics.json",
            ]
            .into_iter()
            .filter(|n| p(n).exists())
            .collect();
            if written.is_empty() {
                Err(anyhow::anyhow!(
                    "hook failed ({}): {}",
                    output.status,
                    stderr.trim()
                ))
            } else {
                Err(anyhow::anyhow!(
                    "hook failed but wrote {written:?}: {}",
                    stderr.trim()
                ))
            }
        };
        let _ = std::fs::remove_dir_all(&dir);
        result
    }
}

fn tempfile_dir() -> Result<std::path::PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "hook-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    if dir.exists() {
        bail!("{}: exists", dir.display());
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HookConfig;

    #[test]
    fn harness_applies_the_patch_like_the_runner() {
        let hook = Hook::new(
            HookConfig {
                name: "h".into(),
                before_helm: Some(1),
                ..Default::default()
            },
            |input| {
                let names: Vec<String> = input.snapshots.get("nodes")?;
                input.values.set("m.internal.names", &names)?;
                input.values.remove("m.stale")?;
                input.objects.delete("v1", "Secret", "ns", "old");
                Ok(())
            },
        );
        let out = HookTest::new()
            .values(json!({"m": {"stale": 1}}))
            .group_snapshot(
                "nodes",
                vec![filtered("a"), filtered(Value::Null), full(json!("b"))],
            )
            .run(&hook)
            .unwrap();
        assert_eq!(
            out.values,
            json!({"m": {"internal": {"names": ["a", "b"]}}})
        );
        assert_eq!(out.objects.len(), 1);
    }
}
