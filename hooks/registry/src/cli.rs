//! What the admin commands (`check-upstream`, `rotate`) share: how a report is printed
//! and what the exit code says.

use serde::Serialize;

/// Prints `report` as one JSON line, or its `human` text; returns 0 when `ok`, else 1
/// (2 is for bad arguments, decided before a report exists).
pub fn finish<R: Serialize>(
    report: &R,
    human: impl FnOnce() -> String,
    ok: bool,
    json: bool,
) -> u8 {
    if json {
        println!("{}", serde_json::to_string(report).unwrap_or_default());
    } else {
        print!("{}", human());
    }
    if ok {
        0
    } else {
        1
    }
}
