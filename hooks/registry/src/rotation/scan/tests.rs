//! Unit tests of `scan`.

use super::*;

#[test]
fn pages_must_advance_and_end() {
    let kind = |r: Result<(), Failure>| r.unwrap_err().kind;
    let mut p = Pages::new("r", "tags/list?n=2", 3, 100);
    p.page(2).unwrap();
    p.next("tags/list?last=b&n=2").unwrap();
    p.page(2).unwrap();
    // Back to a page already read, or the same `last=` with another `n`.
    assert_eq!(kind(p.next("tags/list?n=2")), Kind::BadPagination);
    assert_eq!(kind(p.next("tags/list?last=b&n=3")), Kind::BadPagination);
    p.next("tags/list?last=d&n=2").unwrap();
    p.page(2).unwrap();
    // Three pages read: a fourth is past the bound.
    let f = p.next("tags/list?last=f&n=2").unwrap_err();
    assert_eq!(f.kind, Kind::BadPagination);
    assert!(
        f.message.starts_with("r: ") && f.message.contains("3 pages"),
        "{}",
        f.message
    );
    // An empty page that links on; too many tags.
    let mut p = Pages::new("r", "tags/list?n=2", 10, 3);
    p.page(0).unwrap();
    assert_eq!(kind(p.next("tags/list?last=a&n=2")), Kind::BadPagination);
    assert_eq!(kind(p.page(4)), Kind::BadPagination);
}

#[test]
fn tags_are_tags() {
    for t in [
        "v1.66.3",
        "latest",
        "_x",
        "sha256-abc.sig",
        &"a".repeat(128),
    ] {
        assert!(is_tag(t), "{t}");
    }
    for t in [
        "",
        ".x",
        "-x",
        "a/b",
        "../x",
        "a b",
        "a:b",
        &"a".repeat(129),
    ] {
        assert!(!is_tag(t), "{t}");
    }
}

/// Hostile registries on 127.0.0.1 against the scan.
mod hostile {
    use super::super::*;
    use crate::distribution::testserver::{assert_oversize, Reply, Server, ENDLESS_CAP};
    use std::time::{Duration, Instant};

    fn client(server: &Server) -> Client {
        // A short budget: without the guards under test, the scan would run into
        // it (and fail the test with another kind), not run on.
        Client::connect(
            server.endpoint(),
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(5),
        )
        .expect("connects")
    }

    fn tags_with_link(link: fn(&str) -> Option<String>) -> (Server, Failure) {
        let server = Server::start(move |r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            "/v2/p/tags/list" => {
                let reply = Reply::json(200, r#"{"name":"p","tags":["v1.0.0"]}"#);
                match link(&r.target) {
                    Some(l) => reply.header("Link", &format!("<{l}>; rel=\"next\"")),
                    None => reply,
                }
            }
            _ => Reply::json(404, "{}"),
        });
        let c = client(&server);
        let f = Scanner::new(&c).tags("p").unwrap_err();
        (server, f)
    }

    #[test]
    fn a_link_back_to_the_same_page_stops_at_once() {
        let (server, f) = tags_with_link(|target| Some(target.to_string()));
        assert_eq!(f.kind, Kind::BadPagination, "{}", f.message);
        assert!(f.message.contains("already read"), "{}", f.message);
        assert_eq!(server.count("/tags/list"), 1);
    }

    #[test]
    fn a_last_that_does_not_advance_stops() {
        // Every page says "after v1.0.0", each time with another `n`.
        let (server, f) = tags_with_link(|target| {
            let n = target.len();
            Some(format!("/v2/p/tags/list?last=v1.0.0&n={n}"))
        });
        assert_eq!(f.kind, Kind::BadPagination, "{}", f.message);
        assert!(f.message.contains("does not advance"), "{}", f.message);
        assert_eq!(server.count("/tags/list"), 2);
    }

    #[test]
    fn an_endless_tag_page_or_manifest_is_oversize() {
        let server = Server::start(|r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            "/v2/p/tags/list" => Reply::endless(200),
            "/v2/q/tags/list" => Reply::json(200, r#"{"name":"q","tags":["v1.0.0"]}"#),
            _ => Reply::endless(200),
        });
        let c = client(&server);
        let mut scanner = Scanner::new(&c);
        let f = scanner.tags("p").unwrap_err();
        assert_oversize(&f, "/v2/p/tags/list", "8 MiB");
        let f = scanner.scan("q").unwrap_err();
        assert_oversize(&f, "/v2/q/manifests/v1.0.0", "4 MiB");
        assert!(!f.message.contains("AAAA"));
        assert!(
            server.sent() < 2 * ENDLESS_CAP,
            "{} bytes sent",
            server.sent()
        );
    }

    #[test]
    fn a_tag_that_is_not_a_tag_is_refused() {
        let server = Server::start(|r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            _ => Reply::json(
                200,
                r#"{"name":"p","tags":["v1","../../other/manifests/x"]}"#,
            ),
        });
        let c = client(&server);
        let f = Scanner::new(&c).tags("p").unwrap_err();
        assert_eq!(f.kind, Kind::NotARegistry, "{}", f.message);
        assert_eq!(server.count("/manifests/"), 0);
    }

    #[test]
    fn an_endless_error_answer_to_a_delete_is_oversize() {
        let server = Server::start(|r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            _ => Reply::endless(404),
        });
        let c = client(&server);
        let d = crate::rotation::plan::Deletion {
            repository: "p".into(),
            digest: format!("sha256:{}", "a".repeat(64)),
            tags: vec![],
            what: crate::rotation::plan::What::ModuleImage,
            bytes: 0,
        };
        let f = crate::rotation::apply::delete(&c, &d).unwrap_err();
        assert_eq!(f.kind, Kind::Oversize, "{}", f.message);
        assert!(f.message.contains("64 KiB"), "{}", f.message);
    }
}

#[test]
fn parses_indexes_images_and_links() {
    let h = |c: char| format!("sha256:{}", c.to_string().repeat(64));
    let idx = serde_json::json!({"schemaVersion": 2, "manifests": [{"digest": h('a'), "size": 1}, {"digest": h('b'), "size": 2}]});
    let m = parse_manifest(&h('c'), idx.to_string().as_bytes(), "").unwrap();
    assert_eq!((m.kind, m.children.len()), (ManifestKind::Index, 2));
    let img = serde_json::json!({"config": {"digest": h('d'), "size": 5}, "layers": [{"digest": h('e'), "size": 7}], "subject": {"digest": h('f')}});
    let m = parse_manifest(&h('c'), img.to_string().as_bytes(), "").unwrap();
    assert_eq!(m.blobs.iter().map(|b| b.size).collect::<Vec<_>>(), [5, 7]);
    assert_eq!(m.subject, Some(h('f')));
    let err = |body: &[u8]| parse_manifest("x", body, "").unwrap_err().to_string();
    assert_eq!(
        err(b"{\"config\": {}}"),
        "a descriptor without a sha256 digest"
    );
    assert!(err(b"{").starts_with("not JSON ("));
    assert_eq!(
        err(b"{\"mediaType\": \"application/vnd.docker.distribution.manifest.v1+json\", \"fsLayers\": []}"),
        "a schema 1 manifest: not supported"
    );
    assert_eq!(
        next_tail("</v2/a/b/tags/list?last=x&n=2>; rel=\"next\"", "a/b").as_deref(),
        Some("tags/list?last=x&n=2")
    );
    let mut out = vec![];
    collect_digests(
        &serde_json::json!({"m": {"i": h('a'), "n": "x"}, "l": [h('b')]}),
        &mut out,
    );
    out.sort();
    assert_eq!(out, [h('a'), h('b')]);
}
