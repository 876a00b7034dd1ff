//! The current time, replaceable for tests and the converge.

/// Variable that overrides the clock: unix seconds. Used by tests to step time through
/// certificate renewals; the converge passes it through to the hooks.
pub const NOW_VAR: &str = "EMBEDDED_REGISTRY_NOW";

/// Unix seconds now, or the value of [`NOW_VAR`] when it is set.
pub fn now() -> anyhow::Result<i64> {
    match std::env::var(NOW_VAR) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{NOW_VAR}={v:?}: expected unix seconds")),
        Err(_) => Ok(std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)),
    }
}
