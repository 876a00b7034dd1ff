//! The current time, replaceable for tests and the converge.

use std::cell::Cell;

/// Variable that overrides the clock: unix seconds. Used to step time through
/// certificate renewals; the converge passes it through to the hooks.
pub const NOW_VAR: &str = "EMBEDDED_REGISTRY_NOW";

thread_local! {
    static FIXED: Cell<Option<i64>> = const { Cell::new(None) };
}

/// Unix seconds now: a time fixed by [`with_now`] on this thread, else [`NOW_VAR`],
/// else the system clock.
pub fn now() -> anyhow::Result<i64> {
    if let Some(t) = FIXED.with(Cell::get) {
        return Ok(t);
    }
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

/// Runs `f` with the clock of this thread fixed at `t` (tests run in parallel threads).
pub fn with_now<T>(t: i64, f: impl FnOnce() -> T) -> T {
    let before = FIXED.with(|c| c.replace(Some(t)));
    let out = f();
    FIXED.with(|c| c.set(before));
    out
}
