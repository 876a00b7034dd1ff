//! What the commands (`check-upstream`, `check-storage`, `rotate`, `warm`) share: how credentials and a
//! CA file are read, how a report is printed and what the exit code says.

pub mod check_storage;
pub mod check_upstream;
pub mod rotate;
pub mod warm;

use std::path::PathBuf;

use serde::Serialize;

use crate::distribution::Credentials;

/// `--user U [--password-file F]`, shared by the commands that talk to a registry.
#[derive(clap::Args, Debug)]
pub struct Login {
    /// Registry user.
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password (else the command's password variable:
    /// EMBEDDED_REGISTRY_UPSTREAM_PASSWORD for check-upstream,
    /// EMBEDDED_REGISTRY_ROTATE_PASSWORD for rotate).
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
}

impl Login {
    /// The credentials: the password from the file (one trailing newline dropped) or
    /// else from the variable `password_env`; `Err` is a usage error (exit 2). No user:
    /// no credentials.
    pub fn credentials(&self, password_env: &str) -> Result<Option<Credentials>, String> {
        credentials(
            self.user.as_ref(),
            self.password_file.as_ref(),
            password_env,
        )
    }
}

/// The limits and output of a check command (`check-upstream`, `check-storage`).
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Time budget for the whole check (Go duration: 30s, 2m).
    #[arg(long, default_value = "30s")]
    pub timeout: String,
    /// Time limit of one request (Go duration).
    #[arg(long, default_value = "10s")]
    pub request_timeout: String,
    /// Answer HOST with IP instead of DNS, like curl's --resolve (HOST=IP, repeatable).
    #[arg(long, value_name = "HOST=IP")]
    pub resolve: Vec<String>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// A check's limits from [`CheckArgs`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckLimits {
    /// `--timeout`: the whole check.
    pub budget: std::time::Duration,
    /// `--request-timeout`, never above the budget.
    pub request_timeout: std::time::Duration,
    /// `--resolve`'s overrides.
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

impl CheckArgs {
    /// The limits; `Err` is a usage error (exit 2) naming the flag.
    pub fn limits(&self) -> Result<CheckLimits, String> {
        let budget = duration("--timeout", &self.timeout, Zero::Refused)?;
        Ok(CheckLimits {
            budget,
            request_timeout: duration("--request-timeout", &self.request_timeout, Zero::Refused)?
                .min(budget),
            resolve: resolve(&self.resolve)?,
        })
    }

    /// Runs check command `command` ([`run`]): `spec` builds the check, `check` runs it.
    pub fn run<S, R: Serialize>(
        &self,
        command: &str,
        spec: impl FnOnce() -> Result<S, String>,
        check: impl FnOnce(&S) -> R,
        human: impl FnOnce(&R) -> String,
        ok: impl FnOnce(&R) -> bool,
    ) -> u8 {
        run(command, spec, check, human, ok, self.json)
    }
}

fn credentials(
    user: Option<&String>,
    password_file: Option<&PathBuf>,
    password_env: &str,
) -> Result<Option<Credentials>, String> {
    let Some(user) = user else {
        return Ok(None);
    };
    let password = match password_file {
        Some(f) => std::fs::read_to_string(f)
            .map_err(|e| format!("--password-file {}: {e}", f.display()))?
            .trim_end_matches(['\r', '\n'])
            .to_string(),
        None => std::env::var(password_env).map_err(|_| {
            format!("--user needs --password-file FILE or the {password_env} variable")
        })?,
    };
    if password.is_empty() {
        return Err("the password is empty: put it in --password-file or the variable".into());
    }
    Ok(Some(Credentials {
        user: user.clone(),
        password,
    }))
}

/// The PEM text of `--ca-file F`, if given; `Err` is a usage error (exit 2).
pub fn ca_file(path: Option<&PathBuf>) -> Result<Option<String>, String> {
    path.map(|f| std::fs::read_to_string(f).map_err(|e| format!("--ca-file {}: {e}", f.display())))
        .transpose()
}

/// The host → address overrides of repeated `--resolve HOST=IP[,HOST=IP]`; `Err` is a
/// usage error (exit 2).
fn resolve(flags: &[String]) -> Result<Vec<(String, std::net::IpAddr)>, String> {
    let mut out = Vec::new();
    for r in flags {
        out.extend(
            crate::distribution::client::parse_resolve(r).map_err(|e| format!("--resolve {e}"))?,
        );
    }
    Ok(out)
}

/// Whether a duration argument may be zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zero {
    /// `0` means "none" (`--min-age 0`: no age guard).
    Allowed,
    /// No time at all is no check: `0` is refused.
    Refused,
}

/// `--flag`'s Go duration; `Err` is a usage error (exit 2) naming the flag.
pub fn duration(flag: &str, s: &str, zero: Zero) -> Result<std::time::Duration, String> {
    let shown = crate::model::duration::quoted(s);
    match crate::model::duration::parse(s) {
        Ok(d) if d.is_zero() && zero == Zero::Refused => Err(format!(
            "{flag} {shown} is zero: give a positive Go duration such as 30s or 2m"
        )),
        Ok(d) => Ok(d),
        Err(e) => Err(format!("{flag} {shown} {e}")),
    }
}

/// Runs a command: `build` turns the arguments into a job (`Err`: a usage error, printed
/// as `<command>: <error>`, exit 2), `execute` runs it, and the report is printed as
/// [`finish`] does (`json`: one JSON line); returns the exit code.
pub fn run<J, R: Serialize>(
    command: &str,
    build: impl FnOnce() -> Result<J, String>,
    execute: impl FnOnce(&J) -> R,
    human: impl FnOnce(&R) -> String,
    ok: impl FnOnce(&R) -> bool,
    json: bool,
) -> u8 {
    let job = match build() {
        Ok(j) => j,
        Err(e) => {
            eprintln!("{command}: {e}");
            return 2;
        }
    };
    let report = execute(&job);
    let ok = ok(&report);
    finish(&report, || human(&report), ok, json)
}

/// Prints `report` as one JSON line, or its `human` text; returns 0 when `ok`, else 1
/// (2 is for bad arguments, decided before a report exists).
pub fn finish<R: Serialize>(
    report: &R,
    human: impl FnOnce() -> String,
    ok: bool,
    json: bool,
) -> u8 {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", human());
    }
    if ok {
        0
    } else {
        1
    }
}
