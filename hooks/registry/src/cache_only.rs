//! A Proxy registry through an upstream outage: when to serve from the cache alone.
//!
//! distribution exits at start when its proxy's upstream does not answer, so a Proxy
//! registry that restarts during an outage (a node reboot, a certificate or `ro`
//! rotation, a new generation) would serve nothing exactly when the cluster needs its
//! cache. The chart therefore renders, beside a Proxy registry's configuration, a
//! cache-only variant (no `proxy` section, read-only storage: what is cached is served,
//! nothing expires, a never-cached image is `404 manifest unknown` at once), and the node
//! hook installs one or the other from what it sees of the upstream, with hysteresis so
//! that a flapping upstream does not restart the registry in a loop. Pure: the node hook
//! probes, calls [`decide`] and records the result in its status ConfigMap.

pub use crate::model::node_status::UpstreamState;

/// The Secret key of the cache-only variant of `config.distribution.yaml`.
pub const CACHE_ONLY_KEY: &str = "config.distribution-cache-only.yaml";
/// The Secret key the registry's configuration is installed from.
pub const CONFIG_KEY: &str = "config.distribution.yaml";
/// The hysteresis when the Secret names none.
pub const DEFAULT_HYSTERESIS_SECS: i64 = 60;

/// One probe's inputs.
#[derive(Clone, Copy, Debug)]
pub struct Seen {
    /// The upstream answered `/v2/` now.
    pub answers: bool,
    /// The registry on this master answered `/v2/` before this run changed anything.
    pub serving: bool,
    /// Now (unix seconds).
    pub now: i64,
    /// Seconds an outcome must last before a running registry is switched.
    pub hysteresis: i64,
}

/// The next state. A registry goes cache-only when the upstream has failed for the
/// hysteresis, or at once when it fails and the registry does not serve (it cannot
/// start against a dead upstream: waiting only prolongs the outage). It goes back to
/// pulling through only once the upstream has answered for the hysteresis.
pub fn decide(prev: Option<UpstreamState>, seen: Seen) -> UpstreamState {
    let prev = prev.unwrap_or(UpstreamState {
        answers: seen.answers,
        since: seen.now,
        cache_only: false,
        cache_only_since: seen.now,
    });
    let since = if prev.answers == seen.answers {
        prev.since
    } else {
        seen.now
    };
    let lasted = seen.now.saturating_sub(since) >= seen.hysteresis;
    let cache_only = match (prev.cache_only, seen.answers) {
        (false, false) => lasted || !seen.serving,
        (true, true) => !lasted,
        (stay, _) => stay,
    };
    UpstreamState {
        answers: seen.answers,
        since,
        cache_only,
        cache_only_since: if cache_only == prev.cache_only {
            prev.cache_only_since
        } else {
            seen.now
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(answers: bool, serving: bool, now: i64) -> Seen {
        Seen {
            answers,
            serving,
            now,
            hysteresis: 60,
        }
    }

    #[test]
    fn a_serving_registry_waits_out_a_short_outage() {
        let s = decide(None, seen(true, true, 0));
        assert!(!s.cache_only && s.answers);
        let s = decide(Some(s), seen(false, true, 10));
        assert!(!s.cache_only, "a blip does not restart the registry");
        assert_eq!(s.since, 10);
        let s = decide(Some(s), seen(false, true, 69));
        assert!(!s.cache_only);
        let s = decide(Some(s), seen(false, true, 70));
        assert!(s.cache_only, "an outage that lasted switches");
        assert_eq!(s.cache_only_since, 70);
    }

    #[test]
    fn a_registry_that_cannot_start_goes_cache_only_at_once() {
        let s = decide(None, seen(true, true, 0));
        let s = decide(Some(s), seen(false, false, 5));
        assert!(s.cache_only && s.cache_only_since == 5);
    }

    #[test]
    fn back_to_proxying_only_after_the_upstream_answered_for_the_hysteresis() {
        let mut s = decide(None, seen(false, false, 0));
        assert!(s.cache_only);
        // Flapping: every answer restarts the count.
        for t in [30, 50, 80] {
            s = decide(Some(s), seen(true, true, t));
            s = decide(Some(s), seen(false, true, t + 5));
            assert!(s.cache_only, "{t}");
        }
        s = decide(Some(s), seen(true, true, 100));
        assert!(s.cache_only);
        s = decide(Some(s), seen(true, true, 159));
        assert!(s.cache_only);
        s = decide(Some(s), seen(true, true, 160));
        assert!(!s.cache_only && s.cache_only_since == 160);
    }

    #[test]
    fn status_round_trip_and_a_second_run_changes_nothing() {
        let s = decide(None, seen(false, false, 7));
        let mut status = crate::model::node_status::NodeStatus {
            upstream: Some(s),
            ..Default::default()
        }
        .to_data();
        assert_eq!(UpstreamState::from_data(&status), Some(s));
        let again = decide(UpstreamState::from_data(&status), seen(false, true, 8));
        assert_eq!(again, s, "same outcome, same state");
        status.insert("upstream".into(), "maybe".into());
        assert_eq!(UpstreamState::from_data(&status), None);
    }
}
