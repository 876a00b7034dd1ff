//! `embedded-registry check-upstream`: the module's upstream check, for an admin to run
//! before changing the ModuleConfig. Exit 0 when usable, 1 when not, 2 on bad arguments.

use std::path::PathBuf;

use crate::cli::{CheckArgs, Login};
use crate::upstream::{check, Image, Report, Spec};

/// Environment variable holding the upstream password (instead of `--password-file`).
pub const PASSWORD_ENV: &str = "EMBEDDED_REGISTRY_UPSTREAM_PASSWORD";

/// Arguments of `check-upstream`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Upstream registry `host[:port]`.
    #[arg(long)]
    pub host: String,
    /// `https` (default) or `http`.
    #[arg(long, default_value = "https", value_parser = ["https", "http"])]
    pub scheme: String,
    /// Repository path, e.g. `/deckhouse/ee`.
    #[arg(long)]
    pub path: String,
    /// `--user`, `--password-file` (else EMBEDDED_REGISTRY_UPSTREAM_PASSWORD).
    #[command(flatten)]
    pub login: Login,
    /// CA bundle (PEM) trusted beside the system roots.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Image to look for, relative to the path: NAME:TAG, NAME@sha256:..., or :TAG for
    /// the path's own repository. Repeatable.
    #[arg(long = "image", value_name = "NAME:TAG")]
    pub images: Vec<String>,
    /// Manifest requests in parallel.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// `--timeout`, `--request-timeout`, `--resolve`, `--json`.
    #[command(flatten)]
    pub check: CheckArgs,
}

/// Builds the check from arguments; `Err` is a usage error (exit 2).
pub fn spec(args: &Args) -> Result<Spec, String> {
    let mut spec = Spec::new(&args.scheme, &args.host, &args.path);
    if args.host.is_empty() || args.host.contains('/') {
        return Err(format!(
            "--host {:?} must be host[:port], without scheme or path",
            args.host
        ));
    }
    spec.credentials = args.login.credentials(PASSWORD_ENV)?;
    spec.ca_pem = crate::cli::ca_file(args.ca_file.as_ref())?;
    spec.images = args
        .images
        .iter()
        .map(|i| Image::parse(i).map_err(|e| format!("--image: {e}")))
        .collect::<Result<_, _>>()?;
    spec.concurrency = args.concurrency as usize;
    let limits = args.check.limits()?;
    spec.resolve.extend(limits.resolve);
    (spec.budget, spec.request_timeout) = (limits.budget, limits.request_timeout);
    Ok(spec)
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let human = |r: &Report| r.human();
    args.check
        .run("check-upstream", || spec(args), check, human, |r| r.ok)
}
