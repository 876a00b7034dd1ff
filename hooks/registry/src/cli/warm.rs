//! `embedded-registry warm`: the warm-up process of a Proxy registry's static pod
//! ([`crate::warm`]). Exit 2 on bad arguments or pod files; with `--once`, 0 when every
//! wanted image is cached and 1 when not; otherwise it runs until killed.

use std::path::PathBuf;

use crate::cli::{duration, Zero};
use crate::warm::{Options, DEFAULT_CONCURRENCY, MAX_CONCURRENCY};

/// Arguments of `warm`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// distribution's configuration (address, token issuer and service, data directory).
    #[arg(long, default_value = "/config/distribution.yaml")]
    pub config: PathBuf,
    /// The wanted list the node hook writes.
    #[arg(long, default_value = "/config/warm-images.json")]
    pub list: PathBuf,
    /// The PKI directory: ca.crt, token.key, token.crt.
    #[arg(long, default_value = "/pki")]
    pub pki: PathBuf,
    /// Where the progress is written after each pass.
    #[arg(long, default_value = "/warm/progress.json")]
    pub progress: PathBuf,
    /// Requests to the registry at a time (1 to 32).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY as u16, value_parser = clap::value_parser!(u16).range(1..=MAX_CONCURRENCY as i64))]
    pub concurrency: u16,
    /// Time between passes (Go duration).
    #[arg(long, default_value = "10m")]
    pub interval: String,
    /// One pass, then exit: 0 when every image is cached, 1 when not.
    #[arg(long)]
    pub once: bool,
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let interval = match duration("--interval", &args.interval, Zero::Refused) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("warm: {e}");
            return 2;
        }
    };
    crate::warm::run(&Options {
        config: args.config.clone(),
        list: args.list.clone(),
        pki: args.pki.clone(),
        progress: args.progress.clone(),
        concurrency: args.concurrency as usize,
        interval,
        once: args.once,
    })
}
