//! `embedded-registry check-upstream`: the module's upstream check, for an admin to run
//! before changing the ModuleConfig. Exit 0 when usable, 1 when not, 2 on bad arguments.

use std::path::PathBuf;

use crate::cli::{duration, Zero};
use crate::upstream::{check, Image, Spec};

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
    /// Upstream user.
    #[arg(long)]
    pub user: Option<String>,
    /// File holding the password (else the EMBEDDED_REGISTRY_UPSTREAM_PASSWORD variable).
    #[arg(long, requires = "user")]
    pub password_file: Option<PathBuf>,
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

/// Builds the check from arguments; `Err` is a usage error (exit 2).
pub fn spec(args: &Args) -> Result<Spec, String> {
    let mut spec = Spec::new(&args.scheme, &args.host, &args.path);
    if args.host.is_empty() || args.host.contains('/') {
        return Err(format!(
            "--host {:?} must be host[:port], without scheme or path",
            args.host
        ));
    }
    spec.credentials = crate::cli::credentials(
        args.user.as_ref(),
        args.password_file.as_ref(),
        PASSWORD_ENV,
    )?;
    spec.ca_pem = crate::cli::ca_file(args.ca_file.as_ref())?;
    spec.images = args
        .images
        .iter()
        .map(|i| Image::parse(i).map_err(|e| format!("--image: {e}")))
        .collect::<Result<_, _>>()?;
    spec.resolve.extend(crate::cli::resolve(&args.resolve)?);
    spec.concurrency = args.concurrency as usize;
    spec.budget = duration("--timeout", &args.timeout, Zero::Refused)?;
    spec.request_timeout =
        duration("--request-timeout", &args.request_timeout, Zero::Refused)?.min(spec.budget);
    Ok(spec)
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    crate::cli::run(
        "check-upstream",
        || spec(args),
        check,
        |r| r.human(),
        |r| r.ok,
        args.json,
    )
}
