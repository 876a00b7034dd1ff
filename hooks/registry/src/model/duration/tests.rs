//! Unit tests of `duration`.

use super::*;
use proptest::prelude::*;

fn ns(n: u64) -> Duration {
    Duration::new(n / 1_000_000_000, (n % 1_000_000_000) as u32)
}

#[test]
fn examples_as_go_parses_them() {
    let ok = [
        ("0", 0),
        ("-0", 0),
        ("+0", 0),
        ("72h", 259_200_000_000_000),
        ("1h30m", 5_400_000_000_000),
        ("1.5s", 1_500_000_000),
        (".5s", 500_000_000),
        ("5.s", 5_000_000_000),
        ("+5s", 5_000_000_000),
        ("1µs", 1_000),
        ("1μs", 1_000),
        ("1us1ns", 1_001),
        ("0.000000001s", 1),
        ("0.0000000001s", 0),
        ("1.0000000000000000000001h", 3_600_000_000_000),
        ("5m0s", 300_000_000_000),
        ("00005s", 5_000_000_000),
        (MAX_TEXT, i64::MAX as u64),
        ("9223372036854775807ns", i64::MAX as u64),
        ("2562047h", 2_562_047 * 3_600_000_000_000),
    ];
    for (text, n) in ok {
        assert_eq!(parse(text), Ok(ns(n)), "{text}");
    }
    assert_eq!(parse(MAX_TEXT), Ok(MAX));
    let bad = [
        ("", DurationError::Empty),
        ("-", DurationError::Invalid),
        ("+", DurationError::Invalid),
        (".", DurationError::Invalid),
        (".s", DurationError::Invalid),
        ("h", DurationError::Invalid),
        ("abc", DurationError::Invalid),
        ("1h-3m", DurationError::UnknownUnit("h-".into())),
        ("1h 3m", DurationError::UnknownUnit("h ".into())),
        ("1h+", DurationError::UnknownUnit("h+".into())),
        ("1h.", DurationError::Invalid),
        ("10", DurationError::MissingUnit),
        ("00", DurationError::MissingUnit),
        ("10d", DurationError::UnknownUnit("d".into())),
        ("7D", DurationError::UnknownUnit("D".into())),
        ("-1s", DurationError::Negative),
        ("-1ns", DurationError::Negative),
        ("2562047h47m16.854775808s", DurationError::OutOfRange),
        ("9223372036854775808ns", DurationError::OutOfRange),
        ("2562048h", DurationError::OutOfRange),
        ("99999999999999999999999h", DurationError::OutOfRange),
        ("9223372036854775807h", DurationError::OutOfRange),
        ("2562047h2562047h", DurationError::OutOfRange),
        (
            "9223372036854775808ns9223372036854775808ns",
            DurationError::OutOfRange,
        ),
    ];
    for (text, e) in bad {
        assert_eq!(parse(text), Err(e), "{text}");
    }
    assert_eq!(parse(&"1".repeat(65)), Err(DurationError::TooLong));
}

#[test]
fn messages_are_one_line_and_name_the_fix() {
    for e in [
        DurationError::Empty,
        DurationError::TooLong,
        DurationError::Invalid,
        DurationError::MissingUnit,
        DurationError::UnknownUnit("d".into()),
        DurationError::Negative,
        DurationError::OutOfRange,
    ] {
        let m = e.to_string();
        assert!(!m.contains('\n') && m.len() > 10, "{m}");
    }
    assert!(DurationError::OutOfRange.to_string().contains(MAX_TEXT));
    assert_eq!(quoted("1h"), "\"1h\"");
    assert_eq!(quoted(&"9".repeat(1000)).len(), MAX_LEN + 5);
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]

    /// Any text: an error or a duration within Go's range, never a panic.
    #[test]
    fn any_text_is_parsed_or_refused(s in "\\PC{0,40}|[-+]?[0-9.]{0,24}(ns|us|µs|ms|s|m|h|d|){0,4}") {
        if let Ok(d) = parse(&s) {
            prop_assert!(d <= MAX, "{s}: {d:?}");
        }
    }

    /// Every count of nanoseconds in range round-trips, as `Nns` and as Go prints it.
    #[test]
    fn every_value_in_range_round_trips(n in 0u64..=i64::MAX as u64) {
        prop_assert_eq!(parse(&format!("{n}ns")), Ok(ns(n)));
        let (h, rest) = (n / 3_600_000_000_000, n % 3_600_000_000_000);
        let (m, rest) = (rest / 60_000_000_000, rest % 60_000_000_000);
        let (s, frac) = (rest / 1_000_000_000, rest % 1_000_000_000);
        let go = format!("{h}h{m}m{s}.{frac:09}s");
        prop_assert_eq!(parse(&go), Ok(ns(n)), "{}", go);
    }

    /// Past `i64::MAX` nanoseconds, however it is written, is out of range.
    #[test]
    fn every_value_past_the_range_is_refused(
        extra in 1u128..=u64::MAX as u128 * 1_000,
        unit in prop::sample::select(vec![("ns", 1u128), ("us", 1_000), ("ms", 1_000_000), ("s", 1_000_000_000), ("m", 60_000_000_000), ("h", 3_600_000_000_000)]),
    ) {
        // The smallest count of `unit` past the range, plus `extra - 1`.
        let (name, per) = unit;
        let first = (i64::MAX as u128) / per + 1;
        let count = first + extra - 1;
        prop_assert_eq!(parse(&format!("{count}{name}")), Err(DurationError::OutOfRange));
    }

    /// Concatenation adds, as in Go, while the sum stays in range.
    #[test]
    fn parts_add_up(
        a in 0u64..=4_000_000_000_000_000_000,
        b in 0u64..=4_000_000_000_000_000_000,
        ua in prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h"]),
        ub in prop::sample::select(vec!["ns", "us", "ms", "s", "m", "h"]),
    ) {
        let (pa, pb) = (parse(&format!("{a}{ua}")), parse(&format!("{b}{ub}")));
        let both = parse(&format!("{a}{ua}{b}{ub}"));
        match (pa, pb) {
            (Ok(x), Ok(y)) if x + y <= MAX => prop_assert_eq!(both, Ok(x + y)),
            _ => prop_assert_eq!(both, Err(DurationError::OutOfRange)),
        }
    }

    /// Up to nine decimals of a second are exact.
    #[test]
    fn decimal_seconds_are_exact(whole in 0u64..1_000_000_000, frac in 0u64..1_000_000_000, digits in 1usize..=9) {
        let frac = frac % 10u64.pow(digits as u32);
        let text = format!("{whole}.{frac:0digits$}s");
        let want = whole * 1_000_000_000 + frac * 10u64.pow(9 - digits as u32);
        prop_assert_eq!(parse(&text), Ok(ns(want)), "{}", text);
    }
}
