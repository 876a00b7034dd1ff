//! `embedded-registry check-storage`: the module's S3 storage check, for an admin to run
//! before setting `storageMode: S3`. Exit 0 when usable, 1 when not, 2 on bad arguments
//! (the same codes and output shape as `check-upstream`).

use std::path::PathBuf;

use crate::cli::CheckArgs;
use crate::storage::{check, Report, Spec, DEFAULT_ROOT_DIRECTORY};

/// Arguments of `check-storage`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// S3 API endpoint, `scheme://host[:port]` (s3.endpoint).
    #[arg(long)]
    pub endpoint: String,
    /// Bucket (s3.bucket).
    #[arg(long)]
    pub bucket: String,
    /// Region the S3 server is configured with (s3.region; Garage: s3_region).
    #[arg(long)]
    pub region: String,
    /// File holding the access key id (s3.accessKey).
    #[arg(long)]
    pub access_key_file: PathBuf,
    /// File holding the secret key (s3.secretKey).
    #[arg(long)]
    pub secret_key_file: PathBuf,
    /// CA bundle (PEM) trusted beside the system roots (s3.ca).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Distribution's root directory in the bucket; the probe object goes below it.
    #[arg(long, default_value = DEFAULT_ROOT_DIRECTORY)]
    pub root_directory: String,
    /// Path-style URLs (s3.forcePathStyle).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub force_path_style: bool,
    /// `--timeout`, `--request-timeout`, `--resolve`, `--json`.
    #[command(flatten)]
    pub check: CheckArgs,
}

/// The key in `path` (one trailing newline dropped); `Err` names the flag, never the key.
fn key_file(flag: &str, path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{flag} {}: {}",
            path.display(),
            std::io::Error::from(e.kind())
        )
    })?;
    let key = text.trim_end_matches(['\r', '\n']).to_string();
    if key.is_empty() {
        return Err(format!(
            "{flag} {} is empty: put the key in the file",
            path.display()
        ));
    }
    Ok(key)
}

/// Builds the check from arguments; `Err` is a usage error (exit 2).
pub fn spec(args: &Args) -> Result<Spec, String> {
    let access_key = key_file("--access-key-file", &args.access_key_file)?;
    let secret_key = key_file("--secret-key-file", &args.secret_key_file)?;
    let mut spec = Spec::new(
        &args.endpoint,
        &args.region,
        &args.bucket,
        &access_key,
        &secret_key,
    );
    spec.s3.root_directory = args.root_directory.clone();
    spec.s3.force_path_style = args.force_path_style;
    spec.s3.ca = crate::cli::ca_file(args.ca_file.as_ref())?;
    let limits = args.check.limits()?;
    spec.resolve.extend(limits.resolve);
    (spec.budget, spec.request_timeout) = (limits.budget, limits.request_timeout);
    // The settings' names in the message, the flags' in the help: say both.
    spec.validate().map_err(|e| {
        e.replacen("s3.endpoint", "--endpoint (s3.endpoint)", 1)
            .replacen("s3.bucket", "--bucket (s3.bucket)", 1)
            .replacen("s3.region", "--region (s3.region)", 1)
            .replacen("s3.rootDirectory", "--root-directory (s3.rootDirectory)", 1)
            .replacen("s3.accessKey", "--access-key-file (s3.accessKey)", 1)
            .replacen("s3.secretKey", "--secret-key-file (s3.secretKey)", 1)
    })?;
    Ok(spec)
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let human = |r: &Report| r.human();
    args.check
        .run("check-storage", || spec(args), check, human, |r| r.ok)
}
