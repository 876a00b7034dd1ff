//! A test harness: build an input from objects and values, run a hook in-process or as
//! a process, read back the values after the patch, object operations and metrics.
//!
//! A little over 400 lines: [`HookTest`]'s builders, in-process and process runs share
//! the input it holds and the output check it applies; its unit tests are in
//! `testing_tests.rs`.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::bindings::BindingError;
use crate::context::{BindingContext, ContextType, SnapshotItem};
use crate::metrics::{parse_metric_operations, MetricOperation, MetricsError};
use crate::objects::{parse_object_operations, ObjectOperation, ObjectsError};
use crate::runtime::{run_in_memory, HookOutputs, IoPaths, RunError};
use crate::values::{apply_values_patch, parse_values_patch, PatchError};
use crate::Hook;

/// Why a test run failed.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The cluster state is not a list of objects.
    #[error(transparent)]
    ClusterState(#[from] ClusterStateError),
    /// A binding could not build its snapshot (selector operator, jqFilter).
    #[error(transparent)]
    Binding(#[from] BindingError),
    /// The run failed (the handler's error passes through unchanged).
    #[error(transparent)]
    Run(#[from] RunError),
    /// The runner would refuse the hook's values or config values patch.
    #[error("the runner would refuse the {which} patch: {error}")]
    Patch {
        /// `values` or `config values`.
        which: &'static str,
        /// What the runner would say.
        error: PatchError,
    },
    /// An output file of a process run does not parse.
    #[error("{file}: {message}")]
    Output {
        /// The output file.
        file: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A process run needs the hook's bindings for its cluster state.
    #[error("run_process cannot apply a cluster state (it has no hook's bindings): build the contexts with contexts_for(&hook) and pass them with context()")]
    ClusterStateInProcess,
    /// The process could not be started, or its files prepared.
    #[error("{what}: {error}")]
    Io {
        /// What was attempted.
        what: String,
        /// What the system said.
        error: std::io::Error,
    },
    /// The process failed.
    #[error("hook failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
    /// The process failed and yet wrote output files (the runner would read them).
    #[error("hook failed but wrote {written:?}: {stderr}")]
    FailedWithOutput {
        /// The output files it wrote.
        written: Vec<&'static str>,
        /// What it printed on stderr (trimmed).
        stderr: String,
    },
}

type Result<T> = std::result::Result<T, TestError>;

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

/// Why a cluster state given to [`HookTest::cluster_state`] is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cluster state, document {document}: {message}")]
pub struct ClusterStateError {
    /// The YAML document (0-based) at fault.
    pub document: usize,
    /// What is wrong with it (quoted values redacted).
    pub message: String,
}

/// Parses a multi-document YAML of Kubernetes objects (`kind: List` documents are
/// flattened, empty documents skipped) into objects sorted by namespace, kind and name,
/// the order of the converge's cluster; a later object with the same identity replaces
/// an earlier one, as a second apply would.
pub fn parse_cluster_state(yaml: &str) -> std::result::Result<Vec<Value>, ClusterStateError> {
    use serde::Deserialize as _;
    let mut objects = std::collections::BTreeMap::new();
    for (document, doc) in serde_yaml_ng::Deserializer::from_str(yaml).enumerate() {
        let fail = |message: String| ClusterStateError {
            document,
            message: crate::log::redact(&message),
        };
        let value = Value::deserialize(doc).map_err(|e| fail(e.to_string()))?;
        let items = match value {
            Value::Null => continue,
            Value::Object(ref o) if o.get("kind").and_then(Value::as_str) == Some("List") => {
                match o.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => return Err(fail("a List without items".into())),
                }
            }
            Value::Object(_) => vec![value],
            _ => return Err(fail("not an object: expected a Kubernetes object".into())),
        };
        for obj in items {
            let s = |p: &str| obj.pointer(p).and_then(Value::as_str).map(str::to_owned);
            let (Some(kind), Some(name)) = (s("/kind"), s("/metadata/name")) else {
                return Err(fail(
                    "an object needs kind and metadata.name (add them)".into(),
                ));
            };
            if s("/apiVersion").is_none() {
                return Err(fail(format!("{kind} {name}: no apiVersion (add it)")));
            }
            let namespace = s("/metadata/namespace").unwrap_or_default();
            objects.insert((namespace, kind, name), obj);
        }
    }
    Ok(objects.into_values().collect())
}

/// Builder of one hook run.
#[derive(Clone, Debug, Default)]
pub struct HookTest {
    contexts: Vec<BindingContext>,
    values: Value,
    config_values: Value,
    cluster: Option<std::result::Result<Vec<Value>, ClusterStateError>>,
}

impl HookTest {
    /// An empty run: no contexts, empty values.
    pub fn new() -> Self {
        HookTest {
            contexts: vec![],
            values: json!({}),
            config_values: json!({}),
            cluster: None,
        }
    }

    /// Sets the cluster's objects, a multi-document YAML (as `kubectl get -o yaml`
    /// prints them, or written by hand). At [`HookTest::run`] every binding's snapshot
    /// is built from them through the hook's own bindings (kind, selectors and
    /// `jqFilter`, run by the real `jq`): the code the converge uses
    /// ([`crate::bindings`]). The snapshots go into every lifecycle context but
    /// `onStartup` and into every `Group` context, for the bindings the test did not
    /// give by hand ([`HookTest::group_snapshot`] wins); with no context at all, the run
    /// gets the batch runner's Synchronization (a `Group` context `main`). A YAML
    /// error is reported by `run`, naming the document.
    ///
    /// ```
    /// use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, LabelSelector};
    ///
    /// fn handler(input: &mut HookInput) -> anyhow::Result<()> {
    ///     let masters: Vec<String> = input.snapshots.get("masters")?;
    ///     input.values.set("m.internal.masters", &masters)?;
    ///     Ok(())
    /// }
    /// let hook = Hook::new(
    ///     HookConfig {
    ///         name: "masters".into(),
    ///         kubernetes: vec![KubernetesBinding {
    ///             label_selector: Some(LabelSelector::exists("node-role.kubernetes.io/control-plane")),
    ///             jq_filter: Some(".metadata.name".into()),
    ///             ..KubernetesBinding::new("masters", "v1", "Node")
    ///         }],
    ///         ..HookConfig::default()
    ///     },
    ///     handler,
    /// );
    /// let out = hook_sdk::testing::HookTest::new()
    ///     .values(serde_json::json!({"m": {"internal": {}}}))
    ///     .cluster_state(r#"
    /// apiVersion: v1
    /// kind: Node
    /// metadata: {name: master-0, labels: {node-role.kubernetes.io/control-plane: ""}}
    /// ---
    /// apiVersion: v1
    /// kind: Node
    /// metadata: {name: worker-0}
    /// "#)
    ///     .run(&hook)
    ///     .unwrap();
    /// assert_eq!(out.values["m"]["internal"]["masters"], serde_json::json!(["master-0"]));
    /// ```
    pub fn cluster_state(mut self, yaml: &str) -> Self {
        self.cluster = Some(parse_cluster_state(yaml));
        self
    }

    /// The contexts `hook` gets: the ones given, with the cluster state's snapshots
    /// added as [`HookTest::cluster_state`] describes.
    pub fn contexts_for(&self, hook: &Hook) -> Result<Vec<BindingContext>> {
        let Some(cluster) = &self.cluster else {
            return Ok(self.contexts.clone());
        };
        let objects = cluster.clone()?;
        let refs: Vec<&Value> = objects.iter().collect();
        let snapshots = crate::bindings::snapshots(&hook.config.kubernetes, &refs)?;
        let mut contexts = self.contexts.clone();
        if contexts.is_empty() {
            contexts.push(BindingContext {
                binding: "main".into(),
                kind: Some(ContextType::Group),
                group_name: Some("main".into()),
                ..Default::default()
            });
        }
        for c in &mut contexts {
            let takes = match c.kind {
                Some(ContextType::Group) => true,
                None => c.binding != "onStartup",
                _ => false,
            };
            if takes {
                for (name, items) in &snapshots {
                    c.snapshots
                        .entry(name.clone())
                        .or_insert_with(|| items.clone());
                }
            }
        }
        Ok(contexts)
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
        apply_values_patch(&mut values, &out.values_patch).map_err(|error| TestError::Patch {
            which: "values",
            error,
        })?;
        let mut config_values = self.config_values.clone();
        apply_values_patch(&mut config_values, &out.config_values_patch).map_err(|error| {
            TestError::Patch {
                which: "config values",
                error,
            }
        })?;
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
            self.contexts_for(hook)?,
            self.values.clone(),
            self.config_values.clone(),
        )?;
        self.finish(out, String::new())
    }

    /// Runs `program args...` as the runner would (files in a temporary directory, paths
    /// in the environment, nothing else inherited) and reads its output files.
    /// Runs `program args...` as the runner would (files in a temporary directory, paths
    /// in the environment, nothing else inherited) and reads its output files.
    ///
    /// The cluster state needs the hook's bindings: use [`HookTest::contexts_for`]
    /// and [`HookTest::context`] to pass its snapshots to a process.
    pub fn run_process(&self, program: &Path, args: &[&str]) -> Result<TestOutput> {
        if self.cluster.is_some() {
            return Err(TestError::ClusterStateInProcess);
        }
        let io = |what: String| move |error| TestError::Io { what, error };
        let dir = tempfile::Builder::new()
            .prefix("hook-test-")
            .tempdir()
            .map_err(io("cannot create a temporary directory".into()))?;
        let p = |n: &str| dir.path().join(n);
        let write = |n: &str, text: String| {
            std::fs::write(p(n), text).map_err(io(format!("cannot write {}", p(n).display())))
        };
        write("bc.json", self.contexts_json())?;
        write("values.json", self.values.to_string())?;
        write("config-values.json", self.config_values.to_string())?;
        let paths = IoPaths {
            binding_context: Some(p("bc.json")),
            values: Some(p("values.json")),
            config_values: Some(p("config-values.json")),
            values_patch: Some(p("values-patch.json")),
            config_values_patch: Some(p("config-values-patch.json")),
            kubernetes_patch: Some(p("k8s.json")),
            metrics: Some(p("metrics.json")),
        };
        let output = Command::new(program)
            .args(args)
            .env_clear()
            .envs(paths.vars())
            .output()
            .map_err(io(format!("cannot run {}", program.display())))?;
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let read = |n: &str| std::fs::read_to_string(p(n)).unwrap_or_default();
        if output.status.success() {
            let bad = |file: &'static str| {
                move |e: &dyn std::fmt::Display| TestError::Output {
                    file,
                    message: e.to_string(),
                }
            };
            let out = HookOutputs {
                values_patch: parse_values_patch(&read("values-patch.json"))
                    .map_err(|e: PatchError| bad("values-patch.json")(&e))?,
                config_values_patch: parse_values_patch(&read("config-values-patch.json"))
                    .map_err(|e: PatchError| bad("config-values-patch.json")(&e))?,
                objects: parse_object_operations(&read("k8s.json"))
                    .map_err(|e: ObjectsError| bad("k8s.json")(&e))?,
                metrics: parse_metric_operations(&read("metrics.json"))
                    .map_err(|e: MetricsError| bad("metrics.json")(&e))?,
            };
            return self.finish(out, stderr);
        }
        let written: Vec<&'static str> = [
            "values-patch.json",
            "config-values-patch.json",
            "k8s.json",
            "metrics.json",
        ]
        .into_iter()
        .filter(|n| p(n).exists())
        .collect();
        let stderr = stderr.trim().to_string();
        if written.is_empty() {
            Err(TestError::Failed {
                status: output.status,
                stderr,
            })
        } else {
            Err(TestError::FailedWithOutput { written, stderr })
        }
        // The directory is removed when `dir` drops.
    }
}

#[cfg(test)]
#[path = "testing_tests.rs"]
mod tests;
