//! `embedded-registry`: hook binary (batch and classic protocols) and local converge.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use embedded_registry::converge::{self, Failure, Options};
use embedded_registry::module::MODULE_NAME;
use hook_sdk::runtime::{error_line, Registry};

#[derive(Parser)]
#[command(
    name = "embedded-registry",
    version,
    about = "The embedded-registry Deckhouse module: hooks and local converge"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The module-sdk batch protocol addon-operator speaks.
    #[command(alias = "hooks")]
    Hook {
        #[command(subcommand)]
        action: HookAction,
    },
    /// Run one hook under the classic protocol (as when invoked under its own name).
    Classic {
        /// Hook name.
        name: String,
        /// Print the hook's configVersion v1 configuration.
        #[arg(long)]
        config: bool,
    },
    /// Check that an upstream registry is usable for Proxy mode (exit 0: usable, 1: not).
    CheckUpstream(embedded_registry::cli::check_upstream::Args),
    /// Check that an S3 bucket is usable as the registry's storage (exit 0: usable, 1: not).
    CheckStorage(embedded_registry::cli::check_storage::Args),
    /// Rotate old releases in a mirror: plan (--dry-run) or delete (--apply).
    Rotate(embedded_registry::cli::rotate::Args),
    /// Keep the running release's images in this master's cache (the static pod's warm container).
    Warm(embedded_registry::cli::warm::Args),
    /// Play the module lifecycle against a file-backed cluster and render the chart.
    Converge {
        /// The ModuleConfig (YAML or JSON).
        #[arg(long)]
        module_config: PathBuf,
        /// State directory: objects/, values.json, metrics.json, rendered/.
        #[arg(long, default_value = ".state")]
        state: PathBuf,
        /// Node list (YAML or JSON) that replaces the cluster's Nodes.
        #[arg(long)]
        nodes: Option<PathBuf>,
        /// Global values merged over the built-in defaults.
        #[arg(long)]
        global_values: Option<PathBuf>,
        /// Module directory (default: found upward from the current directory, then from this binary).
        #[arg(long)]
        module_dir: Option<PathBuf>,
        /// Python with helm-python-sdk and kubernetes-validate (default: .venv of the module, then python3).
        #[arg(long)]
        python: Option<PathBuf>,
        /// Kubernetes version to validate rendered objects against.
        #[arg(long, default_value = "1.30")]
        kube_version: String,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum HookAction {
    /// `Found N items:` and one `i - name` line per hook.
    List,
    /// The batch configuration document.
    Config,
    /// Write the batch configuration document to $HOOK_CONFIG_PATH (default
    /// out/hook_config.json; CREATE_FILES=true creates its directory).
    Dump,
    /// Run hook number N with files from the environment.
    Run {
        /// Index from `hook list`.
        index: String,
    },
}

fn print_json(v: &serde_json::Value) -> ExitCode {
    println!("{v}");
    ExitCode::SUCCESS
}

fn classic(name: &str, config: bool) -> ExitCode {
    let hooks = embedded_registry::classic_hooks();
    let Some((hook, kind)) = hooks.into_iter().find(|(h, _)| h.config.name == name) else {
        eprintln!(
            "{}",
            error_line(name, &anyhow::anyhow!("no hook named {name}"))
        );
        return ExitCode::from(1);
    };
    classic_run(hook, kind, config)
}

fn classic_run(hook: hook_sdk::Hook, kind: hook_sdk::config::RunnerKind, config: bool) -> ExitCode {
    let name = hook.config.name.clone();
    let name = name.as_str();
    let registry = Registry::new(MODULE_NAME, vec![hook]);
    if config {
        return match registry.classic_config(name, kind) {
            Ok(v) => print_json(&v),
            Err(e) => {
                eprintln!("{}", error_line(name, &e));
                ExitCode::from(1)
            }
        };
    }
    ExitCode::from(registry.run_classic(name, kind) as u8)
}

fn main() -> ExitCode {
    // Invoked under a hook's own name (a symlink in shell-operator's hooks dir):
    // the classic protocol, `--config` or a run.
    let argv0 = std::env::args_os().next().map(PathBuf::from);
    let invoked_as = argv0
        .as_deref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // The hooks are built once, and the one invoked is run.
    if invoked_as != "embedded-registry" {
        let hook = embedded_registry::classic_hooks()
            .into_iter()
            .find(|(h, _)| h.config.name == invoked_as);
        if let Some((hook, kind)) = hook {
            let config = std::env::args().nth(1).as_deref() == Some("--config");
            return classic_run(hook, kind, config);
        }
    }

    let cli = Cli::parse();
    match cli.command {
        Cmd::Hook { action } => {
            // A run builds only its own hook; the other actions need them all.
            if let HookAction::Run { index } = &action {
                let hook = index
                    .parse::<usize>()
                    .ok()
                    .and_then(embedded_registry::hooks::module_hook);
                if let Some(hook) = hook {
                    return ExitCode::from(hook_sdk::runtime::run_batch_hook(&hook) as u8);
                }
            }
            let registry = embedded_registry::module_registry();
            match action {
                HookAction::List => {
                    print!("{}", registry.list_text());
                    ExitCode::SUCCESS
                }
                HookAction::Config => match registry.batch_config() {
                    Ok(v) => print_json(&v),
                    Err(e) => {
                        eprintln!("{}", error_line(MODULE_NAME, &e));
                        ExitCode::from(1)
                    }
                },
                HookAction::Dump => ExitCode::from(registry.run_dump() as u8),
                HookAction::Run { index } => ExitCode::from(registry.run_batch(&index) as u8),
            }
        }
        Cmd::Classic { name, config } => classic(&name, config),
        Cmd::CheckUpstream(args) => {
            ExitCode::from(embedded_registry::cli::check_upstream::run(&args))
        }
        Cmd::CheckStorage(args) => {
            ExitCode::from(embedded_registry::cli::check_storage::run(&args))
        }
        Cmd::Rotate(args) => ExitCode::from(embedded_registry::cli::rotate::run(&args)),
        Cmd::Warm(args) => ExitCode::from(embedded_registry::cli::warm::run(&args)),
        Cmd::Converge {
            module_config,
            state,
            nodes,
            global_values,
            module_dir,
            python,
            kube_version,
            json,
        } => {
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: cannot locate this executable: {e}");
                    return ExitCode::from(1);
                }
            };
            let module_dir = module_dir.or_else(|| {
                std::env::current_dir()
                    .ok()
                    .and_then(|d| converge::find_module_dir(&d))
                    .or_else(|| converge::find_module_dir(&exe))
            });
            let Some(module_dir) = module_dir else {
                eprintln!("error: module directory not found (no module.yaml, Chart.yaml and openapi/ above the current directory): pass --module-dir");
                return ExitCode::from(2);
            };
            let opts = Options {
                module_config,
                state,
                nodes,
                global_values,
                module_dir,
                hook_binary: exe,
                python,
                kube_version,
            };
            match converge::converge(&opts) {
                Ok(summary) => {
                    if json {
                        println!("{}", serde_json::to_string(&summary).expect("serialisable"));
                    } else {
                        print!("{}", converge::render_summary(&summary));
                    }
                    ExitCode::SUCCESS
                }
                Err(Failure::Invalid(msg)) => {
                    eprintln!("error: {msg}");
                    ExitCode::from(2)
                }
                Err(Failure::Failed(e)) => {
                    eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
                    ExitCode::from(1)
                }
            }
        }
    }
}
