//! Rollover without downtime of a signing pair (the CA, the token signer).
//!
//! A pair has up to three generations: `active` signs; `pending` is trusted but does not
//! sign yet; `previous` (a certificate only) is still trusted but signs nothing. Every
//! consumer trusts the bundle of all three. One run makes at most one transition, and
//! each phase lasts at least `overlap`, so trust reaches every consumer before anything
//! signed by the new key is used, and the old key is dropped only after everything it
//! signed has been replaced:
//!
//! ```text
//! Stable ──active due──► Introduced (trust old+new, old signs)
//!        ◄──overlap───── Retiring (trust old+new, new signs; leaves reissued)
//!                        ◄──overlap── Switched
//! ```
//!
//! A broken or expired active pair cannot be rolled over gently: it is replaced at once.

use std::collections::BTreeMap;

use anyhow::Result;

use super::{inspect, key_matches, Pair};

/// The generations of a rotating pair.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rollover {
    /// Signs now.
    pub active: Pair,
    /// Trusted, signs after the next transition.
    pub pending: Option<Pair>,
    /// Trusted until the next transition, signs nothing.
    pub previous: Option<String>,
    /// When the last transition happened (unix seconds).
    pub since: i64,
}

/// How a pair is issued and renewed.
pub struct Spec {
    /// Lifetime of a new pair, seconds.
    pub validity: i64,
    /// Start a rollover when less than this percentage of the lifetime is left.
    pub renew_percent: u32,
    /// Minimum time between transitions, seconds.
    pub overlap: i64,
    /// Whether the certificate must be a CA.
    pub ca: bool,
    /// Issues a new pair valid from `now` for `validity`.
    pub issue: fn(now: i64, validity: i64) -> Result<Pair>,
}

fn defect(pair: &Pair, now: i64, ca: bool) -> Option<String> {
    match inspect(&pair.cert) {
        Err(e) => Some(format!("unreadable: {e}")),
        Ok(_) if !key_matches(&pair.cert, &pair.key) => Some("key does not match".into()),
        Ok(i) if i.is_ca != ca => Some(if ca { "not a CA" } else { "is a CA" }.into()),
        Ok(i) if i.remaining(now) <= 0 => Some("expired".into()),
        Ok(_) => None,
    }
}

impl Rollover {
    /// Every certificate to trust, active first.
    pub fn bundle(&self) -> String {
        let mut out = self.active.cert.trim_end().to_string() + "\n";
        for c in self
            .pending
            .iter()
            .map(|p| &p.cert)
            .chain(self.previous.iter())
        {
            out.push_str(c.trim_end());
            out.push('\n');
        }
        out
    }

    /// Reads the generations stored under `prefix` (`ca.crt`, `ca-pending.key`, ...).
    pub fn from_data(data: &BTreeMap<String, String>, prefix: &str) -> Option<Self> {
        let get = |k: &str| {
            data.get(&format!("{prefix}{k}"))
                .filter(|v| !v.is_empty())
                .cloned()
        };
        let pair = |c: &str, k: &str| {
            Some(Pair {
                cert: get(c)?,
                key: get(k)?,
            })
        };
        Some(Rollover {
            active: pair(".crt", ".key")?,
            pending: pair("-pending.crt", "-pending.key"),
            previous: get("-previous.crt"),
            since: get("-since").and_then(|s| s.parse().ok()).unwrap_or(0),
        })
    }

    /// Writes the generations under `prefix`.
    pub fn to_data(&self, prefix: &str, data: &mut BTreeMap<String, String>) {
        data.insert(format!("{prefix}.crt"), self.active.cert.clone());
        data.insert(format!("{prefix}.key"), self.active.key.clone());
        if let Some(p) = &self.pending {
            data.insert(format!("{prefix}-pending.crt"), p.cert.clone());
            data.insert(format!("{prefix}-pending.key"), p.key.clone());
        }
        if let Some(c) = &self.previous {
            data.insert(format!("{prefix}-previous.crt"), c.clone());
        }
        data.insert(format!("{prefix}-since"), self.since.to_string());
    }
}

/// One step of the rollover; returns the new state and what happened (if anything).
pub fn step(
    current: Option<Rollover>,
    now: i64,
    spec: &Spec,
) -> Result<(Rollover, Option<String>)> {
    let fresh = |reason: String| -> Result<(Rollover, Option<String>)> {
        let active = (spec.issue)(now, spec.validity)?;
        Ok((
            Rollover {
                active,
                pending: None,
                previous: None,
                since: now,
            },
            Some(reason),
        ))
    };
    let Some(mut r) = current else {
        return fresh("issued".into());
    };
    if let Some(d) = defect(&r.active, now, spec.ca) {
        return fresh(format!("replaced at once (active {d})"));
    }
    if r.pending
        .as_ref()
        .is_some_and(|p| defect(p, now, spec.ca).is_some())
    {
        r.pending = None;
    }
    if r.previous.as_ref().is_some_and(|c| inspect(c).is_err()) {
        r.previous = None;
    }
    let phase_over = now - r.since >= spec.overlap;
    if r.previous.is_some() {
        if phase_over {
            r.previous = None;
            r.since = now;
            return Ok((r, Some("retired the previous generation".into())));
        }
    } else if let Some(next) = r.pending.take() {
        if phase_over {
            r.previous = Some(std::mem::replace(&mut r.active, next).cert);
            r.since = now;
            return Ok((r, Some("switched to the new generation".into())));
        }
        r.pending = Some(next);
    } else if inspect(&r.active.cert)?.due(now, spec.renew_percent) {
        r.pending = Some((spec.issue)(now, spec.validity)?);
        r.since = now;
        return Ok((r, Some("introduced a new generation".into())));
    }
    Ok((r, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400;
    const T0: i64 = 1_800_000_000;

    fn spec() -> Spec {
        Spec {
            validity: 90 * DAY,
            renew_percent: 33,
            overlap: DAY,
            ca: true,
            issue: |now, validity| super::super::new_ca("ca", now, validity),
        }
    }

    #[test]
    fn full_cycle_with_overlaps() {
        let s = spec();
        let (r, ev) = step(None, T0, &s).unwrap();
        assert_eq!(ev.as_deref(), Some("issued"));
        let a = r.active.clone();
        let (r, ev) = step(Some(r), T0 + 10 * DAY, &s).unwrap();
        assert_eq!(ev, None, "not due: nothing changes");
        // 30 of 90 days left is 33 %: due.
        let (r, ev) = step(Some(r), T0 + 61 * DAY, &s).unwrap();
        assert_eq!(ev.as_deref(), Some("introduced a new generation"));
        assert_eq!(r.active, a, "the old one still signs");
        let b = r.pending.clone().unwrap();
        assert!(r.bundle().contains(b.cert.trim_end()) && r.bundle().contains(a.cert.trim_end()));
        let (r, ev) = step(Some(r), T0 + 61 * DAY + 3600, &s).unwrap();
        assert_eq!(ev, None, "the overlap has not passed");
        let (r, ev) = step(Some(r), T0 + 62 * DAY, &s).unwrap();
        assert_eq!(ev.as_deref(), Some("switched to the new generation"));
        assert_eq!(r.active, b);
        assert_eq!(
            r.previous.as_deref(),
            Some(a.cert.as_str()),
            "the old one is still trusted"
        );
        let (r, ev) = step(Some(r), T0 + 63 * DAY, &s).unwrap();
        assert_eq!(ev.as_deref(), Some("retired the previous generation"));
        assert_eq!(r.bundle(), b.cert.trim_end().to_string() + "\n");
        let (_, ev) = step(Some(r), T0 + 64 * DAY, &s).unwrap();
        assert_eq!(ev, None);
    }

    #[test]
    fn broken_or_expired_is_replaced_at_once() {
        let s = spec();
        let (r, _) = step(None, T0, &s).unwrap();
        let (r2, ev) = step(Some(r.clone()), T0 + 91 * DAY, &s).unwrap();
        assert!(ev.unwrap().contains("expired"));
        assert!(r2.pending.is_none() && r2.previous.is_none() && r2.active != r.active);
        let mut broken = r.clone();
        broken.active.key = super::super::new_ca("x", T0, DAY).unwrap().key;
        let (_, ev) = step(Some(broken), T0, &s).unwrap();
        assert!(ev.unwrap().contains("key does not match"));
    }

    #[test]
    fn data_round_trip() {
        let s = spec();
        let (r, _) = step(None, T0, &s).unwrap();
        let (r, _) = step(Some(r), T0 + 61 * DAY, &s).unwrap();
        let mut data = BTreeMap::new();
        r.to_data("ca", &mut data);
        assert_eq!(Rollover::from_data(&data, "ca"), Some(r));
        assert_eq!(Rollover::from_data(&BTreeMap::new(), "ca"), None);
    }
}
