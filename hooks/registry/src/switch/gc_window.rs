//! The garbage-collection window of a Detached registry on S3 (pure; the `gc-window`
//! module hook runs it). distribution's `garbage-collect` must never run while any
//! registry writes to the bucket, so a collection goes:
//!
//! `Idle` → (a new request) `ReadOnly`: every master's configuration turns read-only,
//! rolled out one master at a time by the node hooks → (every master of the registry
//! reports it runs the window's read-only files and answers) `Collect`: the collector's
//! pod gets the `garbage-collect` init container and restarts → (the collector reports
//! it runs the window's collect files and answers: the init container ran before it)
//! `Back`: read-only off, rolled out → (no master reports the window any more) `Idle`.
//!
//! The bound: a window still in `ReadOnly` or `Collect` [`BOUND_SECS`] after it opened
//! goes `Back` with [`Outcome::TimedOut`] (pushes are refused for at most that long
//! plus the roll-back). A registry that stops being Detached on S3 ends the window
//! ([`Outcome::Abandoned`]). Every step is a function of its inputs: running it again
//! on the same inputs changes nothing.

use std::collections::BTreeMap;

use crate::model::gc_window::{GcWindow, Outcome, Phase, Request, COLLECT, READ_ONLY};

/// How long a window may stay read-only before it goes back without a collection.
pub const BOUND_SECS: i64 = 3600;

/// What a master reports of the window (its status ConfigMap).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// The window tag of the configuration its registry runs (`appliedGcWindow`).
    pub applied: String,
    /// Its registry answers on the installed files.
    pub ready: bool,
}

/// The inputs of one step.
#[derive(Clone, Debug)]
pub struct Inputs<'a> {
    /// The masters of the registry when it is a Detached registry on S3 (`None`
    /// otherwise: no window can be open).
    pub masters: Option<&'a [String]>,
    /// The request the `rotate` hook wrote, if any.
    pub request: Option<&'a Request>,
    /// Each master's report, by name.
    pub reports: &'a BTreeMap<String, Report>,
    /// Now (unix seconds).
    pub now: i64,
}

/// The next state from `state` and `inputs`.
pub fn step(state: &GcWindow, inputs: &Inputs) -> GcWindow {
    let Some(masters) = inputs.masters.filter(|m| !m.is_empty()) else {
        return match state.phase {
            Phase::Idle => state.clone(),
            _ => close(state, Outcome::Abandoned),
        };
    };
    let applied = |node: &str, tag: &str| {
        inputs
            .reports
            .get(node)
            .is_some_and(|r| r.ready && r.applied == format!("{}/{tag}", state.id))
    };
    let expired = inputs.now - state.opened_at >= BOUND_SECS;
    match state.phase {
        Phase::Idle => match inputs.request {
            Some(r) if r.id != state.id => GcWindow {
                phase: Phase::ReadOnly,
                id: r.id.clone(),
                collector: if masters.contains(&r.node) {
                    r.node.clone()
                } else {
                    masters[0].clone()
                },
                opened_at: inputs.now,
                outcome: state.outcome,
            },
            _ => state.clone(),
        },
        Phase::ReadOnly | Phase::Collect if expired => GcWindow {
            phase: Phase::Back,
            outcome: Some(Outcome::TimedOut),
            ..state.clone()
        },
        Phase::ReadOnly => {
            let collector_there = masters.contains(&state.collector);
            if collector_there && masters.iter().all(|m| applied(m, READ_ONLY)) {
                GcWindow {
                    phase: Phase::Collect,
                    ..state.clone()
                }
            } else {
                state.clone()
            }
        }
        Phase::Collect => {
            // The others must still run read-only (a master that restarted on other
            // files would show it); the collector ran its init container before it
            // answered on the collect files.
            let others = masters
                .iter()
                .filter(|m| **m != state.collector)
                .all(|m| applied(m, READ_ONLY));
            if others && applied(&state.collector, COLLECT) {
                GcWindow {
                    phase: Phase::Back,
                    outcome: Some(Outcome::Collected),
                    ..state.clone()
                }
            } else {
                state.clone()
            }
        }
        Phase::Back => {
            // A master that does not answer is not waited for: its Secret already
            // holds the read-write configuration it starts with.
            let prefix = format!("{}/", state.id);
            let back = masters.iter().all(|m| {
                inputs
                    .reports
                    .get(m)
                    .is_none_or(|r| !r.ready || !r.applied.starts_with(&prefix))
            });
            if back {
                close(state, state.outcome.unwrap_or(Outcome::Collected))
            } else {
                state.clone()
            }
        }
    }
}

/// The window closed with `outcome`; its id stays, so its request is served.
fn close(state: &GcWindow, outcome: Outcome) -> GcWindow {
    GcWindow {
        phase: Phase::Idle,
        id: state.id.clone(),
        collector: String::new(),
        opened_at: 0,
        outcome: Some(outcome),
    }
}

/// Seconds the window has been open at `now` (0 when idle).
pub fn open_seconds(state: &GcWindow, now: i64) -> i64 {
    match state.phase {
        Phase::Idle => 0,
        _ => (now - state.opened_at).max(0),
    }
}

#[cfg(test)]
#[path = "gc_window_tests.rs"]
mod tests;
