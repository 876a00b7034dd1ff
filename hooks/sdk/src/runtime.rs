//! Entry points: the batch protocol (`hook list|config|run N`) and the classic one
//! (`--config`, then a run), plus the file I/O around a handler.
//!
//! A run reads every input, runs the handler, serialises every output to a temporary
//! file, and only then moves them all into place: a failing run leaves no output file.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};

use crate::config::RunnerKind;
use crate::context::{parse_contexts, BindingContext};
use crate::metrics::MetricOperation;
use crate::objects::ObjectOperation;
use crate::{Hook, HookInput};

/// Input and output file paths of one run, as the runner passes them in the environment.
#[derive(Clone, Debug, Default)]
pub struct IoPaths {
    /// `BINDING_CONTEXT_PATH` (required).
    pub binding_context: Option<PathBuf>,
    /// `VALUES_PATH` (required for module hooks).
    pub values: Option<PathBuf>,
    /// `CONFIG_VALUES_PATH` (required for module hooks).
    pub config_values: Option<PathBuf>,
    /// `VALUES_JSON_PATCH_PATH`.
    pub values_patch: Option<PathBuf>,
    /// `CONFIG_VALUES_JSON_PATCH_PATH`.
    pub config_values_patch: Option<PathBuf>,
    /// `KUBERNETES_PATCH_PATH`.
    pub kubernetes_patch: Option<PathBuf>,
    /// `METRICS_PATH`.
    pub metrics: Option<PathBuf>,
}

impl IoPaths {
    /// Reads the paths from the process environment (empty values count as unset).
    pub fn from_env() -> Self {
        let var = |k: &str| {
            std::env::var_os(k)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        IoPaths {
            binding_context: var("BINDING_CONTEXT_PATH"),
            values: var("VALUES_PATH"),
            config_values: var("CONFIG_VALUES_PATH"),
            values_patch: var("VALUES_JSON_PATCH_PATH"),
            config_values_patch: var("CONFIG_VALUES_JSON_PATCH_PATH"),
            kubernetes_patch: var("KUBERNETES_PATCH_PATH"),
            metrics: var("METRICS_PATH"),
        }
    }
}

/// Everything a run produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HookOutputs {
    /// Values patch operations.
    pub values_patch: Vec<Value>,
    /// Config values patch operations.
    pub config_values_patch: Vec<Value>,
    /// Kubernetes object operations.
    pub objects: Vec<ObjectOperation>,
    /// Metric operations.
    pub metrics: Vec<MetricOperation>,
}

/// Runs a handler on parsed inputs, without touching any file.
pub fn run_in_memory(
    hook: &Hook,
    contexts: Vec<BindingContext>,
    values: Value,
    config_values: Value,
) -> Result<HookOutputs> {
    let mut input = HookInput::new(&hook.config.name, contexts, values, config_values);
    (hook.handler)(&mut input)?;
    Ok(HookOutputs {
        values_patch: input.values.patch().to_vec(),
        config_values_patch: input.config_values.patch().to_vec(),
        objects: input.objects.operations().to_vec(),
        metrics: input.metrics.operations().to_vec(),
    })
}

/// Largest values or config values file a hook reads: 64 MiB (a module's values are
/// a few hundred KiB, Deckhouse's global values included).
pub const MAX_VALUES_BYTES: u64 = 64 << 20;

/// Reads an input file of at most `limit` bytes; a larger one is refused unread.
fn read_json(var: &str, path: &Path, limit: u64) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .with_context(|| format!("{var}={}: cannot read", path.display()))?;
    if text.len() as u64 > limit {
        bail!(
            "{var}={}: larger than {} MiB, the limit for this input",
            path.display(),
            limit >> 20
        );
    }
    Ok(text)
}

fn read_values(var: &str, path: Option<&Path>, required: bool) -> Result<Value> {
    let Some(path) = path else {
        if required {
            bail!("{var} is not set: the runner must pass the {var} file");
        }
        return Ok(json!({}));
    };
    let text = read_json(var, path, MAX_VALUES_BYTES)?;
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    crate::context::check_json_depth(&text, crate::context::MAX_JSON_DEPTH)
        .with_context(|| format!("{var}={}", path.display()))?;
    let v: Value = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{var}={}: malformed JSON: {e}", path.display()))?;
    if !v.is_object() {
        bail!("{var}={}: expected a JSON object", path.display());
    }
    Ok(v)
}

/// Reads inputs from files, runs the handler, writes outputs atomically.
///
/// `module` requires `VALUES_PATH` and `CONFIG_VALUES_PATH` (addon-operator always
/// passes them); plain shell-operator passes neither.
pub fn execute(hook: &Hook, io: &IoPaths, module: bool) -> Result<HookOutputs> {
    let bc_path = io.binding_context.as_deref().context(
        "BINDING_CONTEXT_PATH is not set: the runner must pass the binding context file",
    )?;
    let text = read_json(
        "BINDING_CONTEXT_PATH",
        bc_path,
        crate::context::MAX_CONTEXT_BYTES,
    )?;
    let contexts = parse_contexts(&text)
        .map_err(|e| anyhow::anyhow!("BINDING_CONTEXT_PATH={}: {e:#}", bc_path.display()))?;
    let values = read_values("VALUES_PATH", io.values.as_deref(), module)?;
    let config_values = read_values("CONFIG_VALUES_PATH", io.config_values.as_deref(), module)?;

    let out = run_in_memory(hook, contexts, values, config_values)?;

    let jsonl = |items: Vec<String>| items.into_iter().map(|l| l + "\n").collect::<String>();
    let files = [
        (
            "VALUES_JSON_PATCH_PATH",
            &io.values_patch,
            !out.values_patch.is_empty(),
            if out.values_patch.is_empty() {
                String::new()
            } else {
                Value::from(out.values_patch.clone()).to_string()
            },
        ),
        (
            "CONFIG_VALUES_JSON_PATCH_PATH",
            &io.config_values_patch,
            !out.config_values_patch.is_empty(),
            if out.config_values_patch.is_empty() {
                String::new()
            } else {
                Value::from(out.config_values_patch.clone()).to_string()
            },
        ),
        (
            "KUBERNETES_PATCH_PATH",
            &io.kubernetes_patch,
            !out.objects.is_empty(),
            jsonl(
                out.objects
                    .iter()
                    .map(|o| serde_json::to_string(o).expect("serialisable"))
                    .collect(),
            ),
        ),
        (
            "METRICS_PATH",
            &io.metrics,
            !out.metrics.is_empty(),
            jsonl(
                out.metrics
                    .iter()
                    .map(|o| serde_json::to_string(o).expect("serialisable"))
                    .collect(),
            ),
        ),
    ];
    let mut staged = Vec::new();
    for (var, path, produced, content) in files {
        match path {
            // Nothing to say and nothing stale to overwrite (absent or empty, as the
            // runner creates it): an empty file means "no output", so leave it.
            Some(p)
                if content.is_empty() && std::fs::metadata(p).map_or(true, |m| m.len() == 0) => {}
            // The runner reads these right after the process exits: the rename keeps
            // them whole; a flush to disk would only cost time.
            Some(p) => staged.push(
                crate::fsutil::stage_with(p, content.as_bytes(), Some(0o600), false)
                    .context(var)?,
            ),
            None if produced => bail!("{var} is not set, but the hook produced output for it"),
            None => {}
        }
    }
    for s in staged {
        s.commit()?;
    }
    Ok(out)
}

/// One line for stderr from an error chain (runners take stderr as the error text).
pub fn error_line(hook: &str, err: &anyhow::Error) -> String {
    let msg = format!("{err:#}").replace(['\n', '\r'], " ");
    crate::log::Logger::new(hook).line("error", &msg, &[])
}

/// A set of hooks served by one binary.
pub struct Registry {
    prefix: String,
    hooks: Vec<Hook>,
}

impl Registry {
    /// `prefix` names the binary in each hook's `metadata.path` (`<prefix>/<name>`).
    pub fn new(prefix: &str, hooks: Vec<Hook>) -> Self {
        Registry {
            prefix: prefix.into(),
            hooks,
        }
    }

    /// The hooks, in index order.
    pub fn hooks(&self) -> &[Hook] {
        &self.hooks
    }

    /// A hook by name.
    pub fn find(&self, name: &str) -> Option<&Hook> {
        self.hooks.iter().find(|h| h.config.name == name)
    }

    /// `hook list` output: `Found N items:` then `i - name` lines.
    pub fn list_text(&self) -> String {
        let mut s = format!("Found {} items:\n", self.hooks.len());
        for (i, h) in self.hooks.iter().enumerate() {
            s.push_str(&format!("{i} - {}\n", h.config.name));
        }
        s
    }

    /// `hook config` output: `{"version":"v1","hooks":[...]}`.
    pub fn batch_config(&self) -> Result<Value> {
        let hooks = self
            .hooks
            .iter()
            .map(|h| {
                h.config
                    .batch_json(&format!("{}/{}", self.prefix, h.config.name))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(json!({"version": "v1", "hooks": hooks}))
    }

    /// The classic `--config` output of the hook named `name`.
    pub fn classic_config(&self, name: &str, runner: RunnerKind) -> Result<Value> {
        self.find(name)
            .with_context(|| format!("no hook named {name}"))?
            .config
            .classic_json(runner)
    }

    /// Runs hook `index` with files from the environment; returns the exit code.
    pub fn run_batch(&self, index: &str) -> i32 {
        let hook = match index.parse::<usize>().ok().and_then(|i| self.hooks.get(i)) {
            Some(h) => h,
            None => {
                eprintln!(
                    "{}",
                    error_line(
                        &self.prefix,
                        &anyhow::anyhow!(
                            "no hook with index {index:?}: `hook list` shows {} hooks (0..{})",
                            self.hooks.len(),
                            self.hooks.len().saturating_sub(1)
                        )
                    )
                );
                return 1;
            }
        };
        report(hook, execute(hook, &IoPaths::from_env(), true))
    }

    /// Runs the hook named `name` under the classic protocol; returns the exit code.
    pub fn run_classic(&self, name: &str, runner: RunnerKind) -> i32 {
        match self.find(name) {
            Some(hook) => report(
                hook,
                execute(hook, &IoPaths::from_env(), runner == RunnerKind::Module),
            ),
            None => {
                eprintln!(
                    "{}",
                    error_line(&self.prefix, &anyhow::anyhow!("no hook named {name}"))
                );
                1
            }
        }
    }
}

fn report(hook: &Hook, result: Result<HookOutputs>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("{}", error_line(&hook.config.name, &e));
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::HookConfig;
    use std::fs;

    fn setting_hook() -> Hook {
        Hook::new(
            HookConfig {
                name: "setter".into(),
                before_helm: Some(1),
                ..Default::default()
            },
            |input| {
                if input.values.get("m.fail").is_some() {
                    anyhow::bail!("asked to fail");
                }
                input.values.set("m.internal.x", &1)?;
                input.metrics.set("", "m_x", 1.0, &[]);
                Ok(())
            },
        )
    }

    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new(values: &str) -> (Self, IoPaths) {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("bc.json"), r#"[{"binding":"beforeHelm"}]"#).unwrap();
            fs::write(dir.path().join("values.json"), values).unwrap();
            fs::write(dir.path().join("config.json"), "{}").unwrap();
            let p = |n: &str| Some(dir.path().join(n));
            let io = IoPaths {
                binding_context: p("bc.json"),
                values: p("values.json"),
                config_values: p("config.json"),
                values_patch: p("values-patch.json"),
                config_values_patch: p("config-patch.json"),
                kubernetes_patch: p("k8s.json"),
                metrics: p("metrics.json"),
            };
            (Dir { dir }, io)
        }

        fn outputs(&self) -> Vec<String> {
            let mut names: Vec<String> = fs::read_dir(self.dir.path())
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| !["bc.json", "values.json", "config.json"].contains(&n.as_str()))
                .collect();
            names.sort();
            names
        }
    }

    #[test]
    fn a_successful_run_writes_its_outputs_and_clears_stale_ones() {
        let (d, io) = Dir::new(r#"{"m":{}}"#);
        fs::write(io.kubernetes_patch.as_ref().unwrap(), "stale").unwrap();
        execute(&setting_hook(), &io, true).unwrap();
        assert_eq!(
            d.outputs(),
            ["k8s.json", "metrics.json", "values-patch.json"]
        );
        assert_eq!(
            fs::read_to_string(io.kubernetes_patch.as_ref().unwrap()).unwrap(),
            ""
        );
        let patch = fs::read_to_string(io.values_patch.unwrap()).unwrap();
        let ops: Value = serde_json::from_str(&patch).unwrap();
        assert_eq!(
            ops[1],
            json!({"op": "add", "path": "/m/internal/x", "value": 1})
        );
    }

    #[test]
    fn failures_write_nothing() {
        let hook = setting_hook();
        let (d, io) = Dir::new(r#"{"m":{"fail":true}}"#);
        let e = execute(&hook, &io, true).unwrap_err();
        assert!(e.to_string().contains("asked to fail"));
        assert!(d.outputs().is_empty());

        let (d, io) = Dir::new(r#"{"m": "#);
        let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
        assert!(
            e.contains("VALUES_PATH=") && e.contains("malformed JSON"),
            "{e}"
        );
        assert!(d.outputs().is_empty());

        let (d, mut io) = Dir::new(r#"{"m":{}}"#);
        io.binding_context = Some(d.dir.path().join("missing.json"));
        let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
        assert!(
            e.contains("BINDING_CONTEXT_PATH=") && e.contains("missing.json"),
            "{e}"
        );
        assert!(d.outputs().is_empty());

        let (d, mut io) = Dir::new(r#"{"m":{}}"#);
        io.values = None;
        let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
        assert!(e.contains("VALUES_PATH is not set"), "{e}");
        assert!(d.outputs().is_empty());

        let (d, mut io) = Dir::new(r#"{"m":{}}"#);
        io.values_patch = None;
        let e = format!("{:#}", execute(&hook, &io, true).unwrap_err());
        assert!(e.contains("VALUES_JSON_PATCH_PATH is not set"), "{e}");
        assert!(
            d.outputs().is_empty(),
            "metrics were staged but not committed"
        );
    }

    #[test]
    fn list_and_config_shapes() {
        let r = Registry::new("embedded-registry", vec![setting_hook()]);
        assert_eq!(r.list_text(), "Found 1 items:\n0 - setter\n");
        let c = r.batch_config().unwrap();
        assert_eq!(c["version"], "v1");
        assert_eq!(
            c["hooks"][0]["metadata"]["path"],
            "embedded-registry/setter"
        );
        assert_eq!(c["hooks"][0]["beforeHelm"], 1);
    }

    #[test]
    fn error_lines_are_single_json_lines() {
        let l = error_line("h", &anyhow::anyhow!("a\nb").context("ctx"));
        assert!(!l.contains('\n'));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["msg"], "ctx: a b");
    }
}
