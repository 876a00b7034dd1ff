//! Each transition of the GC window, the bound, and idempotence.

use super::*;

fn masters() -> Vec<String> {
    vec!["m1".into(), "m2".into(), "m3".into()]
}

fn reports(tags: &[(&str, &str, bool)]) -> BTreeMap<String, Report> {
    tags.iter()
        .map(|(n, t, ready)| {
            (
                n.to_string(),
                Report {
                    applied: t.to_string(),
                    ready: *ready,
                },
            )
        })
        .collect()
}

fn request(id: &str, node: &str) -> Request {
    Request {
        id: id.into(),
        node: node.into(),
    }
}

fn open(phase: Phase) -> GcWindow {
    GcWindow {
        phase,
        id: "100".into(),
        collector: "m2".into(),
        opened_at: 100,
        outcome: None,
    }
}

/// Runs a step, and the same step again on its result: nothing more may change.
fn run(state: &GcWindow, inputs: &Inputs) -> GcWindow {
    let next = step(state, inputs);
    if next.phase == state.phase || next.phase == Phase::Idle && state.phase == Phase::Idle {
        assert_eq!(step(&next, inputs), next, "a second run changes nothing");
    }
    next
}

#[test]
fn a_new_request_opens_a_window_collected_by_the_master_that_asked() {
    let m = masters();
    let r = request("100", "m2");
    let none = BTreeMap::new();
    let idle = GcWindow::default();
    let inputs = Inputs {
        masters: Some(&m),
        request: Some(&r),
        reports: &none,
        now: 100,
    };
    let next = run(&idle, &inputs);
    assert_eq!(next, open(Phase::ReadOnly));
    // The same request once its window closed asks for nothing.
    let closed = close(&next, Outcome::Collected);
    assert_eq!(step(&closed, &inputs), closed);
    // A request from a master that runs no registry: the first master collects.
    let other = request("200", "m9");
    let next = step(
        &closed,
        &Inputs {
            request: Some(&other),
            ..inputs.clone()
        },
    );
    assert_eq!(
        (next.phase, next.collector.as_str()),
        (Phase::ReadOnly, "m1")
    );
    // No request: nothing.
    let quiet = Inputs {
        request: None,
        ..inputs
    };
    assert_eq!(step(&idle, &quiet), idle);
}

#[test]
fn collect_starts_only_once_every_master_runs_read_only_and_answers() {
    let m = masters();
    let ro = "100/read-only";
    let state = open(Phase::ReadOnly);
    for (tags, want) in [
        (vec![("m1", ro, true), ("m2", ro, true)], Phase::ReadOnly),
        (
            vec![("m1", ro, true), ("m2", ro, true), ("m3", ro, false)],
            Phase::ReadOnly,
        ),
        (
            vec![
                ("m1", ro, true),
                ("m2", ro, true),
                ("m3", "99/read-only", true),
            ],
            Phase::ReadOnly,
        ),
        (
            vec![("m1", ro, true), ("m2", ro, true), ("m3", "", true)],
            Phase::ReadOnly,
        ),
        (
            vec![("m1", ro, true), ("m2", ro, true), ("m3", ro, true)],
            Phase::Collect,
        ),
    ] {
        let rep = reports(&tags);
        let inputs = Inputs {
            masters: Some(&m),
            request: None,
            reports: &rep,
            now: 200,
        };
        assert_eq!(run(&state, &inputs).phase, want, "{tags:?}");
    }
}

#[test]
fn the_collection_ends_when_the_collector_answers_on_its_collect_files() {
    let m = masters();
    let ro = "100/read-only";
    let state = open(Phase::Collect);
    let waiting = reports(&[("m1", ro, true), ("m2", ro, true), ("m3", ro, true)]);
    let restarting = reports(&[
        ("m1", ro, true),
        ("m2", "100/collect", false),
        ("m3", ro, true),
    ]);
    let collected = reports(&[
        ("m1", ro, true),
        ("m2", "100/collect", true),
        ("m3", ro, true),
    ]);
    let other_left = reports(&[
        ("m1", "", true),
        ("m2", "100/collect", true),
        ("m3", ro, true),
    ]);
    for (rep, want) in [
        (&waiting, Phase::Collect),
        (&restarting, Phase::Collect),
        (&other_left, Phase::Collect),
        (&collected, Phase::Back),
    ] {
        let inputs = Inputs {
            masters: Some(&m),
            request: None,
            reports: rep,
            now: 300,
        };
        assert_eq!(run(&state, &inputs).phase, want, "{rep:?}");
    }
    let inputs = Inputs {
        masters: Some(&m),
        request: None,
        reports: &collected,
        now: 300,
    };
    assert_eq!(step(&state, &inputs).outcome, Some(Outcome::Collected));
}

#[test]
fn back_closes_once_no_answering_master_runs_the_window() {
    let m = masters();
    let state = GcWindow {
        outcome: Some(Outcome::Collected),
        ..open(Phase::Back)
    };
    let still = reports(&[
        ("m1", "", true),
        ("m2", "100/collect", true),
        ("m3", "", true),
    ]);
    let down = reports(&[
        ("m1", "", true),
        ("m2", "100/collect", false),
        ("m3", "", true),
    ]);
    let done = reports(&[("m1", "", true), ("m2", "", true)]);
    let inputs = |rep| Inputs {
        masters: Some(&m),
        request: None,
        reports: rep,
        now: 400,
    };
    assert_eq!(run(&state, &inputs(&still)).phase, Phase::Back);
    for rep in [&down, &done] {
        let next = run(&state, &inputs(rep));
        assert_eq!(
            next,
            GcWindow {
                phase: Phase::Idle,
                id: "100".into(),
                collector: String::new(),
                opened_at: 0,
                outcome: Some(Outcome::Collected),
            }
        );
        assert_eq!(open_seconds(&next, 400), 0);
    }
    // A new request during Back waits for Idle.
    let r = request("500", "m1");
    let next = step(
        &state,
        &Inputs {
            request: Some(&r),
            ..inputs(&still)
        },
    );
    assert_eq!(next.phase, Phase::Back);
}

#[test]
fn the_bound_sends_a_window_back_without_collecting() {
    let m = masters();
    let none = BTreeMap::new();
    for phase in [Phase::ReadOnly, Phase::Collect] {
        let state = open(phase);
        let at = |now| Inputs {
            masters: Some(&m),
            request: None,
            reports: &none,
            now,
        };
        assert_eq!(step(&state, &at(100 + BOUND_SECS - 1)).phase, phase);
        assert_eq!(open_seconds(&state, 100 + BOUND_SECS - 1), BOUND_SECS - 1);
        let next = run(&state, &at(100 + BOUND_SECS));
        assert_eq!(
            (next.phase, next.outcome),
            (Phase::Back, Some(Outcome::TimedOut))
        );
        // Back is not bounded again: it waits for the masters, then closes TimedOut.
        let closed = step(&next, &at(100 + 2 * BOUND_SECS));
        assert_eq!(
            (closed.phase, closed.outcome),
            (Phase::Idle, Some(Outcome::TimedOut))
        );
    }
}

#[test]
fn a_registry_that_is_no_longer_detached_on_s3_ends_the_window() {
    let none = BTreeMap::new();
    let empty: Vec<String> = Vec::new();
    for masters in [None, Some(empty.as_slice())] {
        for phase in [Phase::ReadOnly, Phase::Collect, Phase::Back] {
            let inputs = Inputs {
                masters,
                request: None,
                reports: &none,
                now: 200,
            };
            let next = run(&open(phase), &inputs);
            assert_eq!(
                (next.phase, next.outcome),
                (Phase::Idle, Some(Outcome::Abandoned))
            );
        }
        let r = request("300", "m1");
        let inputs = Inputs {
            masters,
            request: Some(&r),
            reports: &none,
            now: 200,
        };
        assert_eq!(step(&GcWindow::default(), &inputs), GcWindow::default());
    }
}

#[test]
fn a_whole_window_from_request_to_idle() {
    let m = masters();
    let r = request("100", "m1");
    let mut state = GcWindow::default();
    let mut phases = vec![state.phase];
    let tags = |s: &GcWindow| -> BTreeMap<String, Report> {
        m.iter()
            .map(|n| {
                (
                    n.clone(),
                    Report {
                        applied: s.tag(n),
                        ready: true,
                    },
                )
            })
            .collect()
    };
    // Each round: the masters run what the previous state rendered, then a step.
    for now in 100..110 {
        let rep = tags(&state);
        let inputs = Inputs {
            masters: Some(&m),
            request: Some(&r),
            reports: &rep,
            now,
        };
        state = step(&state, &inputs);
        if phases.last() != Some(&state.phase) {
            phases.push(state.phase);
        }
    }
    assert_eq!(
        phases,
        [
            Phase::Idle,
            Phase::ReadOnly,
            Phase::Collect,
            Phase::Back,
            Phase::Idle
        ]
    );
    assert_eq!(state.outcome, Some(Outcome::Collected));
    assert_eq!(state.id, "100");
}
