//! One rotation run of release cleanup in a mirror: scan, plan, and (when asked) apply,
//! within a time budget, into a [`Report`]. Used by the `rotate` command and the node hook.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::apply::{self, Applied};
use super::plan::{self, Plan, Policy};
use super::scan::{Scanner, Stats};
use crate::distribution::{Client, Endpoint, Failure, Kind};

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

/// What the `rotate` hook asks the registry: [`Network`] in production and end-to-end
/// tests, a fake in unit tests, so that the hook's handler does no network I/O of its own.
pub trait Registry {
    /// Runs `job` against the registry ([`execute`]).
    fn execute(&self, job: &Job) -> Report;
    /// Whether the registry at `addr` (`host:port`) answers `/v2/` over TLS trusting
    /// `ca_pem` alone (200 or 401), within [`ANSWER_TIMEOUT`].
    fn answers(&self, addr: &str, ca_pem: &str) -> bool;
}

/// How long one "does it answer?" probe of [`Network::answers`] may take.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(2);

pub use crate::distribution::Network;

/// The real registry, over the network ([`execute`], [`crate::health::probe_registry`]).
impl Registry for Network {
    fn execute(&self, job: &Job) -> Report {
        execute(job)
    }

    fn answers(&self, addr: &str, ca_pem: &str) -> bool {
        crate::health::probe_registry(addr, ca_pem, ANSWER_TIMEOUT).is_ok()
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
