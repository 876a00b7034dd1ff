//! Time budgets and the back-off of retried `429` answers.

use std::time::{Duration, Instant};

use reqwest::blocking::Response;
use reqwest::header::RETRY_AFTER;

use crate::distribution::failure::{Failure, Kind};

/// The instant `budget` after `start`; a budget beyond what the clock holds (a Go
/// duration may be 292 years) ends a year after `start`.
pub fn deadline(start: Instant, budget: Duration) -> Instant {
    start
        .checked_add(budget)
        .or_else(|| start.checked_add(Duration::from_secs(365 * 86_400)))
        .unwrap_or(start)
}

/// The first wait after a `429` (unless `Retry-After` asks for more); it doubles with
/// every retry of the same request up to [`BACKOFF_MAX`].
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// The longest wait the back-off grows to; a longer `Retry-After` is still honoured
/// while it fits in the time budget.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Retries of one request answered `429`; then it is reported `rate-limited`.
pub const MAX_RETRIES: u32 = 8;

/// The wait before retry number `retries + 1` of a request answered `429`, which asked
/// for `asked` (`Retry-After`): the back-off, or longer when the registry asks so.
pub fn retry_wait(retries: u32, asked: Option<Duration>) -> Duration {
    let backoff = BACKOFF_MIN
        .saturating_mul(1u32 << retries.min(16))
        .min(BACKOFF_MAX);
    asked.map_or(backoff, |a| a.max(backoff))
}

/// `Retry-After` as seconds or an HTTP date.
pub(super) fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .to_string();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at =
        time::OffsetDateTime::parse(&v, &time::format_description::well_known::Rfc2822).ok()?;
    let secs = (at - time::OffsetDateTime::now_utc())
        .whole_seconds()
        .max(0);
    Some(Duration::from_secs(secs as u64))
}

pub(super) fn rate_limited(url: &str, what: &str) -> Failure {
    Failure::new(
        Kind::RateLimited,
        format!("{url}: rate limited ({what}); try later or use credentials with a higher limit"),
    )
}
