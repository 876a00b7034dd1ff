//! Go durations (`time.ParseDuration`): the one parser for every duration the module
//! reads — the `proxy.ttl` and `detached.rotation.minAge` settings (distribution and the
//! rotation hook read them), and the `--timeout`, `--request-timeout` and `--min-age`
//! arguments of the admin commands.
//!
//! The grammar and the arithmetic are Go's: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+` or `0`,
//! units `ns`, `us` (`µs`, `μs`), `ms`, `s`, `m`, `h`, exact integer nanoseconds, at most
//! `i64::MAX` nanoseconds ([`MAX`], about 292 years). Go refuses a larger value, and so
//! does this parser, before any conversion can overflow. A negative duration is refused
//! too: nothing here takes one. Input is read once, left to right, and longer than
//! [`MAX_LEN`] bytes is refused without being parsed.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A Go duration as the settings and values hold it (`proxy.ttl`,
/// `proxy.upstreamHysteresis`, `detached.rotation.minAge`,
/// `nodeAcknowledgementTimeout`): the text as written, which the chart renders as is,
/// parsed by [`GoDuration::get`]. The settings rules check it first
/// (`settings::check`), so a bad value is refused there with the field's name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// The text as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The duration it names.
    pub fn get(&self) -> Result<Duration, DurationError> {
        parse(&self.0)
    }
}

impl From<&str> for GoDuration {
    fn from(text: &str) -> Self {
        GoDuration(text.to_string())
    }
}

/// The largest Go duration: `i64::MAX` nanoseconds.
pub const MAX: Duration = Duration::new(9_223_372_036, 854_775_807);

/// [`MAX`] as Go prints it.
pub const MAX_TEXT: &str = "2562047h47m16.854775807s";

/// The longest text accepted; the longest useful one ([`MAX_TEXT`]) has 24 bytes.
pub const MAX_LEN: usize = 64;

/// Why a text is not a Go duration. `Display` is a phrase that follows the value in a
/// message (`--timeout "10d" has the unknown unit "d" ...`); it never repeats the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// The text is empty.
    Empty,
    /// The text is longer than [`MAX_LEN`] bytes.
    TooLong,
    /// Not the Go grammar (a stray character, a sign in the middle, no digits).
    Invalid,
    /// A number without a unit (`10`).
    MissingUnit,
    /// A unit Go does not know (`d`, `w`).
    UnknownUnit(String),
    /// A negative duration.
    Negative,
    /// Beyond Go's range ([`MAX`]).
    OutOfRange,
}

impl std::fmt::Display for DurationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DurationError::Empty => write!(f, "is empty: give a Go duration such as 30s, 2m or 1h30m"),
            DurationError::TooLong => write!(
                f,
                "is longer than {MAX_LEN} characters: give a Go duration such as 30s, 2m or 1h30m"
            ),
            DurationError::Invalid => write!(
                f,
                "is not a Go duration: use numbers with units (ns, us, ms, s, m, h), e.g. 30s, 2m or 1h30m"
            ),
            DurationError::MissingUnit => write!(
                f,
                "has a number without a unit: add one of ns, us, ms, s, m, h (e.g. 30s)"
            ),
            DurationError::UnknownUnit(u) => write!(
                f,
                "has the unknown unit {u:?}: use ns, us, ms, s, m or h (a day is 24h)"
            ),
            DurationError::Negative => write!(f, "is negative: give a duration of 0 or more"),
            DurationError::OutOfRange => write!(
                f,
                "is beyond the range of a Go duration (at most {MAX_TEXT}, about 292 years)"
            ),
        }
    }
}

impl std::error::Error for DurationError {}

/// `text` quoted for a message, cut after [`MAX_LEN`] characters (an argument can be
/// anything, and the message stays one short line).
pub fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_LEN) {
        Some((cut, _)) => format!("{:?}...", &text[..cut]),
        None => format!("{text:?}"),
    }
}

/// Nanoseconds per unit, as Go's `unitMap`.
fn unit(u: &str) -> Option<u64> {
    Some(match u {
        "ns" => 1,
        "us" | "µs" | "μs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    })
}

/// `1 << 63`: Go's bound while it accumulates (the magnitude of `i64::MIN`).
const LIMIT: u64 = 1 << 63;

/// Parses a Go duration into a non-negative [`Duration`] of at most [`MAX`].
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.len() > MAX_LEN {
        return Err(DurationError::TooLong);
    }
    let mut s = text.as_bytes();
    let mut neg = false;
    if let Some((&c, rest)) = s.split_first() {
        if c == b'-' || c == b'+' {
            neg = c == b'-';
            s = rest;
        }
    }
    if s == b"0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(if text.is_empty() {
            DurationError::Empty
        } else {
            DurationError::Invalid
        });
    }
    let mut total: u64 = 0;
    while !s.is_empty() {
        if !(s[0] == b'.' || s[0].is_ascii_digit()) {
            return Err(DurationError::Invalid);
        }
        // [0-9]*
        let (v, rest) = leading_int(s)?;
        let pre = rest.len() != s.len();
        s = rest;
        // (\.[0-9]*)?
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if s.first() == Some(&b'.') {
            s = &s[1..];
            let (x, sc, rest) = leading_fraction(s);
            post = rest.len() != s.len();
            (f, scale, s) = (x, sc, rest);
        }
        if !pre && !post {
            return Err(DurationError::Invalid);
        }
        // The unit: everything up to the next number.
        let end = s
            .iter()
            .position(|c| *c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if end == 0 {
            return Err(DurationError::MissingUnit);
        }
        // `end` is at an ASCII byte or the end, so a char boundary of `text`.
        let u = std::str::from_utf8(&s[..end]).map_err(|_| DurationError::Invalid)?;
        s = &s[end..];
        let per = unit(u).ok_or_else(|| DurationError::UnknownUnit(u.to_string()))?;
        if v > LIMIT / per {
            return Err(DurationError::OutOfRange);
        }
        let mut v = v * per;
        if f > 0 {
            // As Go: float64 is exact to the nanosecond for fractions of an hour.
            v += (f as f64 * (per as f64 / scale)) as u64;
            if v > LIMIT {
                return Err(DurationError::OutOfRange);
            }
        }
        // Go's sum may wrap here (2^63 + 2^63); this one may not.
        total = total
            .checked_add(v)
            .filter(|t| *t <= LIMIT)
            .ok_or(DurationError::OutOfRange)?;
    }
    if total > LIMIT - 1 {
        return Err(DurationError::OutOfRange);
    }
    if neg && total > 0 {
        return Err(DurationError::Negative);
    }
    Ok(Duration::new(
        total / 1_000_000_000,
        (total % 1_000_000_000) as u32,
    ))
}

/// Go's `leadingInt`: the leading digits, refused when they pass `1 << 63`.
fn leading_int(s: &[u8]) -> Result<(u64, &[u8]), DurationError> {
    let mut x: u64 = 0;
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if x > LIMIT / 10 {
            return Err(DurationError::OutOfRange);
        }
        x = x * 10 + u64::from(s[i] - b'0');
        if x > LIMIT {
            return Err(DurationError::OutOfRange);
        }
        i += 1;
    }
    Ok((x, &s[i..]))
}

/// Go's `leadingFraction`: the digits after the point as `x / scale`; digits beyond
/// what a `u64` holds are read and ignored.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    let mut i = 0;
    while i < s.len() && s[i].is_ascii_digit() {
        if !overflow {
            if x > (LIMIT - 1) / 10 {
                overflow = true;
            } else {
                let y = x * 10 + u64::from(s[i] - b'0');
                if y > LIMIT {
                    overflow = true;
                } else {
                    x = y;
                    scale *= 10.0;
                }
            }
        }
        i += 1;
    }
    (x, scale, &s[i..])
}

#[cfg(test)]
mod tests;
