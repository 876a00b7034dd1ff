//! Unit tests of the storage check.

use super::*;

fn spec() -> Spec {
    Spec::new(
        "http://127.0.0.1:3900",
        "garage",
        "registry",
        "GKabc",
        "s3cr3t",
    )
}

#[test]
fn bad_fields_are_one_line_naming_the_field_and_never_the_keys() {
    type Case = (fn(&mut Spec), &'static str);
    let cases: Vec<Case> = vec![
        (|s| s.s3.endpoint = "127.0.0.1:3900".into(), "s3.endpoint"),
        (|s| s.s3.endpoint = "ftp://h".into(), "s3.endpoint"),
        (
            |s| s.s3.endpoint = "http://GKabc:s3cr3t@h".into(),
            "s3.endpoint",
        ),
        (|s| s.s3.endpoint = "http://h/path".into(), "s3.endpoint"),
        (|s| s.s3.bucket = "UP".into(), "s3.bucket"),
        (|s| s.s3.region = String::new(), "s3.region"),
        (
            |s| s.s3.root_directory = "/a/../b".into(),
            "s3.rootDirectory",
        ),
        (|s| s.s3.secret_key = String::new(), "s3.secretKey"),
        (|s| s.s3.access_key = "a b".into(), "s3.accessKey"),
    ];
    for (change, field) in cases {
        let mut s = spec();
        change(&mut s);
        let e = s.validate().expect_err(field);
        assert!(e.starts_with(field), "{e}");
        assert!(
            !e.contains('\n') && !e.contains("s3cr3t") && !e.contains("GKabc"),
            "{e}"
        );
    }
    assert!(spec().validate().is_ok());
    assert!(!format!("{:?}", spec()).contains("s3cr3t"));
}

#[test]
fn the_probe_lives_under_the_root_directory() {
    let mut s = spec();
    assert_eq!(
        s.probe_key("n"),
        "embedded-registry/_embedded-registry-check/n"
    );
    s.s3.root_directory = "/".into();
    assert_eq!(s.probe_key("n"), "_embedded-registry-check/n");
    assert_ne!(nonce(), nonce());
}

/// Every kind of the check's own reads back from its name and has a distinct `Check…`
/// reason that `docs/internal/storage.md` lists; a transport kind keeps the upstream
/// check's reason.
#[test]
fn every_own_kind_has_a_distinct_documented_reason() {
    let doc = include_str!("../../../../docs/internal/storage.md");
    let mut reasons = std::collections::BTreeSet::new();
    for kind in Kind::OWN {
        let name = kind.as_str();
        assert_eq!(serde_json::to_value(kind).unwrap(), name, "{kind:?}");
        assert_eq!(Kind::from_name(name), Some(kind));
        let reason = kind.reason();
        assert!(doc.contains(&format!("`{name}`")), "{name} not documented");
        assert!(
            doc.contains(&format!("`{reason}`")),
            "{reason} not documented"
        );
        assert!(reasons.insert(reason), "{reason} twice");
    }
    let dns = crate::distribution::Kind::Dns;
    assert_eq!(Kind::from_name("dns"), Some(Kind::Transport(dns)));
    assert_eq!(Kind::Transport(dns).reason(), dns.reason());
    assert_eq!(Kind::from_name("pending"), None);
}
