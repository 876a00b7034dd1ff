//! `embedded-registry rotate`: plan (and apply) the rotation of old releases in a
//! mirror. Exit 0 on success, 1 when it stopped on an error, 2 on bad arguments.

use std::path::PathBuf;

use crate::cli::{duration, Login, Zero};
use crate::distribution::Endpoint;
use crate::rotation::plan::Policy;
use crate::rotation::run::{execute, Job};

/// Environment variable holding the password (instead of `--password-file`).
pub const PASSWORD_ENV: &str = "EMBEDDED_REGISTRY_ROTATE_PASSWORD";

/// Arguments of `rotate`.
#[derive(clap::Args, Debug)]
#[command(group = clap::ArgGroup::new("action").required(true).args(["dry_run", "apply"]))]
pub struct Args {
    /// The mirror: `https://HOST:PORT` (or `http://`).
    #[arg(long)]
    pub registry: String,
    /// The root repository of releases, e.g. `/deckhouse/ee`.
    #[arg(long)]
    pub path: String,
    /// How many latest releases (by semver) to keep.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: u32,
    /// A release that must stay (the running release). Repeatable.
    #[arg(long = "keep-release", value_name = "vX.Y.Z")]
    pub keep_releases: Vec<String>,
    /// `--user` (with the delete right), `--password-file` (else
    /// EMBEDDED_REGISTRY_ROTATE_PASSWORD).
    #[command(flatten)]
    pub login: Login,
    /// CA bundle (PEM) of the registry; only it is trusted when given.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Releases built less than this long ago stay (Go duration: 24h, 30m; 0 = none).
    #[arg(long, default_value = "24h")]
    pub min_age: String,
    /// Print the plan, delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Delete what the plan says.
    #[arg(long)]
    pub apply: bool,
    /// Time budget for the whole run (Go duration).
    #[arg(long, default_value = "10m")]
    pub timeout: String,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Builds the job from arguments; `Err` is a usage error (exit 2).
pub fn job(args: &Args) -> Result<Job, String> {
    let (scheme, rest) = args
        .registry
        .split_once("://")
        .filter(|(s, _)| *s == "https" || *s == "http")
        .ok_or_else(|| {
            format!(
                "--registry {:?} must be https://HOST:PORT or http://HOST:PORT",
                args.registry
            )
        })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains('/') {
        return Err(format!(
            "--registry {:?} must be scheme://HOST[:PORT] without a path: put the path into --path",
            args.registry
        ));
    }
    let path = args.path.trim_matches('/').to_string();
    if !crate::untrusted::repository_path(&path) {
        return Err(format!(
            "--path {:?} must be a repository path such as /deckhouse/ee",
            args.path
        ));
    }
    let credentials = args.login.credentials(PASSWORD_ENV)?;
    let ca_pem = crate::cli::ca_file(args.ca_file.as_ref())?;
    for r in &args.keep_releases {
        if crate::rotation::model::release_version(r).is_none() {
            return Err(format!(
                "--keep-release {r:?} is not a release version such as v1.66.3"
            ));
        }
    }
    let min_age = duration("--min-age", &args.min_age, Zero::Allowed)?;
    let timeout = duration("--timeout", &args.timeout, Zero::Allowed)?;
    let now = crate::clock::now().map_err(|e| format!("clock: {e}"))?;
    Ok(Job {
        endpoint: Endpoint {
            scheme: scheme.to_string(),
            host: host.to_string(),
            credentials,
            ca_only: ca_pem.is_some(),
            ca_pem,
            resolve: crate::distribution::client::resolve_overrides(),
        },
        path,
        policy: Policy {
            keep: args.keep as usize,
            keep_releases: args.keep_releases.clone(),
            min_age_secs: min_age.as_secs() as i64,
            now,
        },
        apply: args.apply,
        timeout,
    })
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    crate::cli::run(
        "rotate",
        || job(args),
        execute,
        |r| r.human(),
        |r| r.ok,
        args.json,
    )
}
