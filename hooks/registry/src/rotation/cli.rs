//! `embedded-registry rotate`: plan (and apply) the rotation of old releases in a
//! mirror. Exit 0 on success, 1 when it stopped on an error, 2 on bad arguments.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::apply::{self, Applied};
use super::plan::{self, Plan, Policy};
use super::scan::{Scanner, Stats};
use crate::distribution::{Client, Endpoint, Failure, Kind};

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
    /// User with the delete right.
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password (else the EMBEDDED_REGISTRY_ROTATE_PASSWORD variable).
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
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

/// `--flag`'s Go duration; 0 is allowed here (`--min-age 0`: no age guard).
fn parse_duration(flag: &str, s: &str) -> Result<Duration, String> {
    crate::model::duration::parse(s)
        .map_err(|e| format!("{flag} {} {e}", crate::model::duration::quoted(s)))
}

/// What to do, checked.
#[derive(Debug, Clone)]
pub struct Job {
    /// Where.
    pub endpoint: Endpoint,
    /// Root repository, without slashes around it.
    pub path: String,
    /// What to keep.
    pub policy: Policy,
    /// Delete, or only plan.
    pub apply: bool,
    /// Time budget.
    pub timeout: Duration,
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
    let valid = !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    if !valid {
        return Err(format!(
            "--path {:?} must be a repository path such as /deckhouse/ee",
            args.path
        ));
    }
    let credentials = crate::cli::credentials(
        args.user.as_ref(),
        args.password_file.as_ref(),
        PASSWORD_ENV,
    )?;
    let ca_pem = crate::cli::ca_file(args.ca_file.as_ref())?;
    for r in &args.keep_releases {
        if super::model::release_version(r).is_none() {
            return Err(format!(
                "--keep-release {r:?} is not a release version such as v1.66.3"
            ));
        }
    }
    let min_age = parse_duration("--min-age", &args.min_age)?;
    let timeout = parse_duration("--timeout", &args.timeout)?;
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

/// The report of a run (JSON with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Whether the run did everything it was asked to.
    pub ok: bool,
    /// `dry-run` or `apply`.
    pub mode: String,
    /// The plan (absent when none could be made).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    /// What the apply did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub applied: Option<Applied>,
    /// Why the run stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<Stop>,
    /// What the scan cost.
    pub stats: Stats,
    /// Releases in the mirror.
    pub releases: usize,
}

/// Where and why a run stopped.
#[derive(Debug, Clone, Serialize)]
pub struct Stop {
    /// `connect`, `scan`, `plan` or `apply`.
    pub stage: &'static str,
    /// The registry failure's class, when the registry failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// One line: what happened and what to do.
    pub message: String,
}

fn stop(stage: &'static str, f: Failure, prefix: &str) -> Stop {
    Stop {
        stage,
        kind: Some(f.kind),
        message: format!("{prefix}{}", f.message),
    }
}

/// Runs a job: scan, plan, and (if asked) apply.
pub fn execute(job: &Job) -> Report {
    let mut report = Report {
        mode: if job.apply { "apply" } else { "dry-run" }.into(),
        ..Default::default()
    };
    let deadline = crate::distribution::client::deadline(Instant::now(), job.timeout);
    let request_timeout = Duration::from_secs(60).min(job.timeout);
    let client = match Client::connect(job.endpoint.clone(), request_timeout, deadline) {
        Ok(c) => c,
        Err(f) => {
            report.failure = Some(stop("connect", f, "nothing was deleted: "));
            return report;
        }
    };
    let mut scanner = Scanner::new(&client);
    let scanned = scanner.scan(&job.path);
    report.stats = scanner.stats();
    let cat = match scanned {
        Ok(c) => c,
        Err(f) => {
            report.failure = Some(stop("scan", f, "scanning stopped, nothing was deleted: "));
            return report;
        }
    };
    report.releases = cat.releases.len();
    let plan = match plan::plan(&cat, &job.policy) {
        Ok(p) => p,
        Err(e) => {
            report.failure = Some(Stop {
                stage: "plan",
                kind: None,
                message: e.message,
            });
            return report;
        }
    };
    if job.apply {
        let applied = apply::apply(&client, &plan, |_, _| {});
        if let Some(f) = &applied.failed {
            report.failure = Some(Stop {
                stage: "apply",
                kind: Some(f.failure.kind),
                message: format!(
                    "stopped after {} of {} deletions: {}; run again to resume",
                    applied.deleted + applied.already_gone,
                    plan.deletions.len(),
                    f.failure.message
                ),
            });
        }
        report.applied = Some(applied);
    }
    report.stats.requests = client.requests();
    report.ok = report.failure.is_none();
    report.plan = Some(plan);
    report
}

fn human_bytes(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

impl Report {
    /// The report for people.
    pub fn human(&self) -> String {
        let mut s = String::new();
        if let Some(p) = &self.plan {
            for k in &p.kept {
                s += &format!("keep    {} ({})\n", k.tag, k.reasons.join(", "));
            }
            for d in &p.dropped {
                s += &format!("drop    {d}\n");
            }
            for d in &p.deletions {
                let tags = if d.tags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", d.tags.join(", "))
                };
                s += &format!(
                    "delete  {}@{}{tags} ({}, {})\n",
                    d.repository,
                    d.digest,
                    serde_json::to_value(d.what)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    human_bytes(d.bytes)
                );
            }
            for w in &p.warnings {
                s += &format!("warning {w}\n");
            }
            s += &format!(
                "plan: keep {} of {} releases, delete {} manifests, frees about {} after garbage collection\n",
                p.kept.len(),
                self.releases,
                p.deletions.len(),
                human_bytes(p.freed_bytes)
            );
        }
        if let Some(a) = &self.applied {
            s += &format!(
                "applied: {} deleted, {} already gone, {} not attempted\n",
                a.deleted, a.already_gone, a.not_attempted
            );
        }
        if let Some(f) = &self.failure {
            s += &format!("FAILED: {}\n", f.message);
        } else if self.mode == "dry-run" {
            s += "dry run: nothing was deleted\n";
        }
        s
    }
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let job = match job(args) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("rotate: {e}");
            return 2;
        }
    };
    let report = execute(&job);
    crate::cli::finish(&report, || report.human(), report.ok, args.json)
}
