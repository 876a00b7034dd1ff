//! Unit tests of `upstream`.

use super::*;
use crate::distribution::testserver::{Reply, Server};

#[test]
fn an_endless_error_answer_is_oversize_not_a_missing_image() {
    let server = Server::start(|r| match (r.method.as_str(), r.path()) {
        (_, "/v2/") => Reply::json(200, "{}"),
        ("HEAD", _) => Reply::json(404, ""),
        _ => Reply::endless(404),
    });
    let mut spec = Spec::new("http", &server.host(), "/p");
    spec.images = vec![Image::parse(":v1").unwrap()];
    spec.budget = Duration::from_secs(10);
    let report = check(&spec);
    let f = report.failure.expect("fails");
    assert_eq!(f.kind, Kind::Oversize, "{}", f.message);
    assert!(f.message.contains("/v2/p/tags/list"), "{}", f.message);
}

#[test]
fn image_references() {
    let i = Image::parse(":v1.65.3").unwrap();
    assert_eq!(i.repository("/deckhouse/ee"), "deckhouse/ee");
    let i = Image::parse("install:v1.65.3").unwrap();
    assert_eq!(i.repository("/deckhouse/ee/"), "deckhouse/ee/install");
    let d = format!("@sha256:{}", "a".repeat(64));
    let i = Image::parse(&d).unwrap();
    assert_eq!(i.reference, format!("sha256:{}", "a".repeat(64)));
    assert_eq!(i.shown("/p"), format!("p@sha256:{}", "a".repeat(64)));
    assert_eq!(
        Image::parse("noref"),
        Err(ImageError::NoReference("noref".into()))
    );
    assert!(Image::parse("noref")
        .unwrap_err()
        .to_string()
        .starts_with("image \"noref\" needs a tag or digest: NAME:TAG"));
    assert_eq!(
        Image::parse("UPPER:tag").unwrap_err().to_string(),
        "image \"UPPER:tag\" is not NAME:TAG or NAME@DIGEST"
    );
    assert!(Image::parse("a//b:tag").is_err());
}
