//! Entry points: the batch protocol (`hook list|config|run N`) and the classic one
//! (`--config`, then a run), plus the file I/O around a handler.
//!
//! A run reads every input, runs the handler, serialises every output to a temporary
//! file, and only then moves them all into place: a failing run leaves no output file.
//!
//! Longer than 400 lines for a reason: the run (`execute`) and the entry points
//! (`Registry`) share its typed error ([`RunError`], a quarter of the file: every
//! variant names the file or variable at fault) and the runner's variables; its unit
//! tests are in `runtime_tests.rs`.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{ConfigError, RunnerKind};
use crate::context::{parse_contexts, BindingContext, ContextError};
use crate::fsutil::FsError;
use crate::metrics::MetricOperation;
use crate::objects::ObjectOperation;
use crate::{Hook, HookInput};

/// Why a run, or a command of the binary, failed. Every message is one line naming the
/// file or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The handler's own error, passed through unchanged.
    #[error(transparent)]
    Handler(anyhow::Error),
    /// A hook configuration the runners would refuse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A variable the runner must pass is unset.
    #[error("{var} is not set: the runner must pass the {var} file")]
    MissingInput {
        /// The variable.
        var: &'static str,
    },
    /// An input file cannot be read.
    #[error("{var}={}: cannot read: {error}", path.display())]
    Read {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// An input file above its size limit.
    #[error("{var}={}: larger than {limit_mib} MiB, the limit for this input", path.display())]
    TooLarge {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// The limit.
        limit_mib: u64,
    },
    /// The binding context file is not what the runner writes.
    #[error("{}={}: {error}", vars::BINDING_CONTEXT, path.display())]
    Contexts {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        error: ContextError,
    },
    /// A values file is not a JSON object.
    #[error("{var}={}: {message}", path.display())]
    Values {
        /// The variable naming the file.
        var: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it (quoted values redacted).
        message: String,
    },
    /// The hook produced output the runner gave no file for.
    #[error("{var} is not set, but the hook produced output for it")]
    NoOutputPath {
        /// The variable.
        var: &'static str,
    },
    /// An output file could not be written (or `hook dump`'s file).
    #[error("{var}: {error}")]
    Write {
        /// The variable naming the file.
        var: &'static str,
        /// What failed.
        error: FsError,
    },
    /// No hook by that name.
    #[error("no hook named {name}")]
    NoHook {
        /// The name asked for.
        name: String,
    },
    /// No hook at that index.
    #[error("no hook with index {index:?}: `hook list` shows {count} hooks (0..{})", count.saturating_sub(1))]
    NoIndex {
        /// The index asked for.
        index: String,
        /// How many hooks there are.
        count: usize,
    },
    /// An environment variable that is not a bool.
    #[error("{var}={value:?} is not a bool: set it to true or false")]
    NotABool {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
    },
    /// `hook dump`'s directory is missing and may not be created.
    #[error("{HOOK_CONFIG_PATH_VAR}={}: the directory {} does not exist: create it or set {CREATE_FILES_VAR}=true", path.display(), path.parent().unwrap_or(Path::new("")).display())]
    NoDumpDir {
        /// The file asked for.
        path: PathBuf,
    },
    /// `hook dump`'s directory could not be created.
    #[error("{}: cannot create the directory: {error}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, RunError>;

/// The runner's environment variables naming a run's files: the one list the runtime
/// reads and every runner here (the local converge, [`crate::testing::HookTest`]) sets,
/// through [`IoPaths::from_env`] and [`IoPaths::vars`].
pub mod vars {
    /// The binding contexts (input, required).
    pub const BINDING_CONTEXT: &str = "BINDING_CONTEXT_PATH";
    /// The values (input, required for module hooks).
    pub const VALUES: &str = "VALUES_PATH";
    /// The config values (input, required for module hooks).
    pub const CONFIG_VALUES: &str = "CONFIG_VALUES_PATH";
    /// The values patch (output).
    pub const VALUES_PATCH: &str = "VALUES_JSON_PATCH_PATH";
    /// The config values patch (output).
    pub const CONFIG_VALUES_PATCH: &str = "CONFIG_VALUES_JSON_PATCH_PATH";
    /// The object operations (output).
    pub const KUBERNETES_PATCH: &str = "KUBERNETES_PATCH_PATH";
    /// The metric operations (output).
    pub const METRICS: &str = "METRICS_PATH";
}

/// Input and output file paths of one run, as the runner passes them in the environment
/// (the variables of [`vars`]).
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
            binding_context: var(vars::BINDING_CONTEXT),
            values: var(vars::VALUES),
            config_values: var(vars::CONFIG_VALUES),
            values_patch: var(vars::VALUES_PATCH),
            config_values_patch: var(vars::CONFIG_VALUES_PATCH),
            kubernetes_patch: var(vars::KUBERNETES_PATCH),
            metrics: var(vars::METRICS),
        }
    }

    /// The set paths as `(variable, path)` pairs: what a runner puts in a hook
    /// process's environment ([`std::process::Command::envs`]).
    pub fn vars(&self) -> Vec<(&'static str, &Path)> {
        [
            (vars::BINDING_CONTEXT, &self.binding_context),
            (vars::VALUES, &self.values),
            (vars::CONFIG_VALUES, &self.config_values),
            (vars::VALUES_PATCH, &self.values_patch),
            (vars::CONFIG_VALUES_PATCH, &self.config_values_patch),
            (vars::KUBERNETES_PATCH, &self.kubernetes_patch),
            (vars::METRICS, &self.metrics),
        ]
        .into_iter()
        .filter_map(|(var, path)| Some((var, path.as_deref()?)))
        .collect()
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
    (hook.handler)(&mut input).map_err(RunError::Handler)?;
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
fn read_json(var: &'static str, path: &Path, limit: u64) -> Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(limit + 1).read_to_string(&mut text))
        .map_err(|error| RunError::Read {
            var,
            path: path.into(),
            error,
        })?;
    if text.len() as u64 > limit {
        return Err(RunError::TooLarge {
            var,
            path: path.into(),
            limit_mib: limit >> 20,
        });
    }
    Ok(text)
}

fn read_values(var: &'static str, path: Option<&Path>, required: bool) -> Result<Value> {
    let Some(path) = path else {
        if required {
            return Err(RunError::MissingInput { var });
        }
        return Ok(json!({}));
    };
    let text = read_json(var, path, MAX_VALUES_BYTES)?;
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let bad = |message: String| RunError::Values {
        var,
        path: path.into(),
        message,
    };
    crate::context::check_json_depth(&text, crate::context::MAX_JSON_DEPTH)
        .map_err(|e| bad(e.to_string()))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| {
        bad(format!(
            "malformed JSON: {}",
            crate::log::redact(&e.to_string())
        ))
    })?;
    if !v.is_object() {
        return Err(bad("expected a JSON object".into()));
    }
    Ok(v)
}

/// Reads inputs from files, runs the handler, writes outputs atomically.
///
/// `module` requires `VALUES_PATH` and `CONFIG_VALUES_PATH` (addon-operator always
/// passes them); plain shell-operator passes neither.
pub fn execute(hook: &Hook, io: &IoPaths, module: bool) -> Result<HookOutputs> {
    let bc_path = io
        .binding_context
        .as_deref()
        .ok_or(RunError::MissingInput {
            var: vars::BINDING_CONTEXT,
        })?;
    let text = read_json(
        vars::BINDING_CONTEXT,
        bc_path,
        crate::context::MAX_CONTEXT_BYTES,
    )?;
    let contexts = parse_contexts(&text).map_err(|error| RunError::Contexts {
        path: bc_path.into(),
        error,
    })?;
    let values = read_values(vars::VALUES, io.values.as_deref(), module)?;
    let config_values = read_values(vars::CONFIG_VALUES, io.config_values.as_deref(), module)?;

    let out = run_in_memory(hook, contexts, values, config_values)?;

    let jsonl = |items: Vec<String>| items.into_iter().map(|l| l + "\n").collect::<String>();
    let files = [
        (
            vars::VALUES_PATCH,
            &io.values_patch,
            !out.values_patch.is_empty(),
            if out.values_patch.is_empty() {
                String::new()
            } else {
                Value::from(out.values_patch.clone()).to_string()
            },
        ),
        (
            vars::CONFIG_VALUES_PATCH,
            &io.config_values_patch,
            !out.config_values_patch.is_empty(),
            if out.config_values_patch.is_empty() {
                String::new()
            } else {
                Value::from(out.config_values_patch.clone()).to_string()
            },
        ),
        (
            vars::KUBERNETES_PATCH,
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
            vars::METRICS,
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
            Some(p) => staged.push((
                var,
                crate::fsutil::stage_with(p, content.as_bytes(), Some(0o600), false)
                    .map_err(|error| RunError::Write { var, error })?,
            )),
            None if produced => return Err(RunError::NoOutputPath { var }),
            None => {}
        }
    }
    for (var, s) in staged {
        s.commit().map_err(|error| RunError::Write { var, error })?;
    }
    Ok(out)
}

/// One line for stderr from an error (runners take stderr as the error text): an
/// `anyhow::Error` shows its whole chain, a typed error its message.
pub fn error_line(hook: &str, err: &dyn std::fmt::Display) -> String {
    let msg = format!("{err:#}").replace(['\n', '\r'], " ");
    crate::log::Logger::new(hook).line("error", &msg, &[])
}

/// The variable naming the file `hook dump` writes (module-sdk's name).
pub const HOOK_CONFIG_PATH_VAR: &str = "HOOK_CONFIG_PATH";
/// Where `hook dump` writes when [`HOOK_CONFIG_PATH_VAR`] is unset or empty: relative to
/// the working directory, as module-sdk's batch binary does.
pub const DEFAULT_HOOK_CONFIG_PATH: &str = "out/hook_config.json";
/// The variable that lets `hook dump` create the missing directories of its file
/// (module-sdk's `CREATE_FILES`, a Go bool: `1`, `t`, `true`, ... or `0`, `f`, `false`, ...).
pub const CREATE_FILES_VAR: &str = "CREATE_FILES";

/// Reads a Go `strconv.ParseBool` value.
fn go_bool(var: &'static str, v: &str) -> Result<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(RunError::NotABool {
            var,
            value: v.into(),
        }),
    }
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
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(json!({"version": "v1", "hooks": hooks}))
    }

    /// Writes the [`Registry::batch_config`] document, one JSON line, to `path` (module-sdk's
    /// `hook dump`): atomically (a reader sees the old file or the new one), mode 0644
    /// (it holds no secret: the same text `hook config` prints). `create_dirs` creates the
    /// missing parent directories; otherwise a missing one is an error naming it.
    /// Writing twice the same hooks leaves the same file.
    pub fn dump(&self, path: &Path, create_dirs: bool) -> Result<()> {
        let config = self.batch_config()?;
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty());
        if let Some(dir) = parent {
            if create_dirs {
                std::fs::create_dir_all(dir).map_err(|error| RunError::CreateDir {
                    dir: dir.into(),
                    error,
                })?;
            } else if !dir.is_dir() {
                return Err(RunError::NoDumpDir { path: path.into() });
            }
        }
        let text = format!("{config}\n");
        crate::fsutil::stage_with(path, text.as_bytes(), Some(0o644), true)
            .and_then(|s| s.commit())
            .map_err(|error| RunError::Write {
                var: HOOK_CONFIG_PATH_VAR,
                error,
            })
    }

    /// `hook dump`: [`Registry::dump`] to `$HOOK_CONFIG_PATH` (default
    /// [`DEFAULT_HOOK_CONFIG_PATH`]), creating directories when `$CREATE_FILES` is true;
    /// prints `dump successfully` as module-sdk does. Returns the exit code (errors: one
    /// JSON line on stderr, 1).
    pub fn run_dump(&self) -> i32 {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let path = var(HOOK_CONFIG_PATH_VAR).unwrap_or_else(|| DEFAULT_HOOK_CONFIG_PATH.into());
        let result = var(CREATE_FILES_VAR)
            .map_or(Ok(false), |v| go_bool(CREATE_FILES_VAR, &v))
            .and_then(|create| self.dump(Path::new(&path), create));
        match result {
            Ok(()) => {
                println!("dump successfully");
                0
            }
            Err(e) => {
                eprintln!("{}", error_line(&self.prefix, &e));
                1
            }
        }
    }

    /// The classic `--config` output of the hook named `name`.
    pub fn classic_config(&self, name: &str, runner: RunnerKind) -> Result<Value> {
        Ok(self
            .find(name)
            .ok_or_else(|| RunError::NoHook { name: name.into() })?
            .config
            .classic_json(runner)?)
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
                        &RunError::NoIndex {
                            index: index.into(),
                            count: self.hooks.len(),
                        }
                    )
                );
                return 1;
            }
        };
        run_batch_hook(hook)
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
                    error_line(&self.prefix, &RunError::NoHook { name: name.into() })
                );
                1
            }
        }
    }
}

/// Runs `hook` as `hook run N` does ([`Registry::run_batch`]) with files from the
/// environment, for a binary that builds only the hook it runs; returns the exit code.
pub fn run_batch_hook(hook: &Hook) -> i32 {
    report(hook, execute(hook, &IoPaths::from_env(), true))
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
#[path = "runtime_tests.rs"]
mod tests;
