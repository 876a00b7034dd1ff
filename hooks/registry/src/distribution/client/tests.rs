//! Unit tests of `client`.

use super::*;

#[test]
fn realm_site_rules() {
    assert!(same_site("auth.example.com", "registry.example.com"));
    assert!(same_site("example.co.uk", "r.example.co.uk"));
    assert!(!same_site("auth.other.com", "registry.example.com"));
    assert!(!same_site("a.co.uk", "b.co.uk"));
    assert!(!same_site("127.0.0.2", "127.0.0.1"));
    assert!(same_site("127.0.0.1", "127.0.0.1"));
}

#[test]
fn a_weaker_realm_scheme_is_refused() {
    let f = check_realm(
        "https://r.example.com:5000",
        "http://r.example.com:5001/token",
    )
    .unwrap_err();
    assert_eq!(f.kind, Kind::TokenRealmInsecure);
    assert!(
        f.message.contains("http://r.example.com:5001/token")
            && f.message.contains("https token realm"),
        "{}",
        f.message
    );
    assert_eq!(
        check_realm("https://r.example.com", "ftp://r.example.com/t")
            .unwrap_err()
            .kind,
        Kind::TokenRealmInsecure
    );
    // As strong or stronger is fine; another domain is still its own failure.
    assert!(check_realm("https://r.example.com", "https://auth.example.com/t").is_ok());
    assert!(check_realm("http://127.0.0.1:5000", "http://127.0.0.1:5001/t").is_ok());
    assert!(check_realm("http://127.0.0.1:5000", "https://127.0.0.1:5001/t").is_ok());
    assert_eq!(
        check_realm("https://r.example.com", "https://auth.other.com/t")
            .unwrap_err()
            .kind,
        Kind::TokenRealmOtherDomain
    );
    assert_eq!(
        check_realm("https://r.example.com", "not a url")
            .unwrap_err()
            .kind,
        Kind::NotARegistry
    );
}

#[test]
fn retries_back_off_from_one_second_doubling_to_a_cap() {
    let waits: Vec<u64> = (0..8).map(|n| retry_wait(n, None).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    // Retry-After: 0 does not shorten the back-off; a longer one is honoured.
    assert_eq!(retry_wait(0, Some(Duration::ZERO)), BACKOFF_MIN);
    assert_eq!(
        retry_wait(2, Some(Duration::from_secs(1))),
        Duration::from_secs(4)
    );
    assert_eq!(
        retry_wait(7, Some(Duration::from_secs(300))),
        Duration::from_secs(300)
    );
    assert_eq!(retry_wait(u32::MAX, None), BACKOFF_MAX);
}

#[test]
fn a_deadline_past_the_clock_does_not_panic() {
    let now = Instant::now();
    assert!(deadline(now, crate::model::duration::MAX) > now);
    assert!(deadline(now, Duration::MAX) >= now);
    assert_eq!(
        deadline(now, Duration::from_secs(5)),
        now + Duration::from_secs(5)
    );
}

/// Hostile registries on 127.0.0.1: answers without end, 429 without a pause.
mod hostile {
    use super::super::*;
    use crate::distribution::testserver::{assert_oversize, Reply, Server, ENDLESS_CAP};

    const PASSWORD: &str = "Hostile-Pa55word-never-shown";

    fn connect(server: &Server, budget: Duration) -> Result<Client, Failure> {
        let mut endpoint = server.endpoint();
        endpoint.credentials = Some(Credentials {
            user: "puller".into(),
            password: PASSWORD.into(),
        });
        Client::connect(endpoint, Duration::from_secs(5), Instant::now() + budget)
    }

    fn clean(f: &Failure) {
        assert!(!f.message.contains(PASSWORD), "{}", f.message);
        assert!(
            !f.message.contains("AAAA"),
            "the body is not shown: {}",
            f.message
        );
        assert!(!f.message.contains('\n'), "{}", f.message);
    }

    #[test]
    fn an_endless_api_answer_is_oversize() {
        let server = Server::start(|_| Reply::endless(200));
        let f = connect(&server, Duration::from_secs(20))
            .err()
            .expect("refused");
        assert_oversize(&f, "/v2/", "64 KiB");
        clean(&f);
        // The client stopped reading: the server never reached its cap.
        assert!(server.sent() < ENDLESS_CAP, "{} bytes sent", server.sent());
    }

    #[test]
    fn a_declared_length_past_the_limit_is_oversize_unread() {
        let server = Server::start(|r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            _ => Reply::endless(200).header("Content-Length", "10000000000"),
        });
        let client = connect(&server, Duration::from_secs(20)).expect("connects");
        let resp = client
            .send(Method::GET, "p", "manifests/v1", "pull", None)
            .unwrap();
        let f = read_body(resp, Body::Manifest).unwrap_err();
        assert_oversize(&f, "/v2/p/manifests/v1", "4 MiB");
        clean(&f);
    }

    #[test]
    fn an_endless_token_answer_is_oversize() {
        // The token realm answers without end; the registry in front names it.
        let server = Server::start(|_| Reply::endless(200));
        let realm_host = server.host();
        let front = Server::start(move |r| match r.path() {
            "/v2/" => Reply::json(401, "{}").header(
                "WWW-Authenticate",
                &format!("Bearer realm=\"http://{realm_host}/token\",service=\"s\""),
            ),
            _ => Reply::json(404, "{}"),
        });
        let client = connect(&front, Duration::from_secs(20)).expect("connects");
        let f = client.token("repository:p:pull").unwrap_err();
        assert_oversize(&f, "/token", "1 MiB");
        clean(&f);
        assert!(server.sent() < ENDLESS_CAP, "{} bytes sent", server.sent());
        // The realm (same host, same scheme) got the credentials, once.
        let sent = server.requests();
        assert_eq!(sent.len(), 1);
        assert!(sent[0]
            .headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("authorization") && v.starts_with("Basic ")));
    }

    #[test]
    fn retry_after_zero_backs_off_and_is_rate_limited() {
        let server = Server::start(|r| match r.path() {
            "/v2/" => Reply::json(200, "{}"),
            _ => Reply::json(429, "{}").header("Retry-After", "0"),
        });
        let client = connect(&server, Duration::from_secs(4)).expect("connects");
        let f = client
            .send(Method::HEAD, "p", "manifests/v1", "pull", None)
            .expect_err("rate limited");
        assert_eq!(f.kind, Kind::RateLimited, "{}", f.message);
        clean(&f);
        // Back-off 1 s, 2 s, then 4 s does not fit in 4 s: three requests, not thousands.
        let n = server.count("/manifests/");
        assert!((2..=4).contains(&n), "{n} requests");
    }
}

#[test]
fn credentials_debug_hides_the_password() {
    let c = super::Credentials {
        user: "u".into(),
        password: "hunter2-secret".into(),
    };
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn resolve_overrides_parse_and_name_the_bad_pair() {
    let ok = parse_resolve("Reg.Example=127.0.0.2, other=::1").unwrap();
    assert_eq!(
        ok[0],
        ("reg.example".to_string(), "127.0.0.2".parse().unwrap())
    );
    assert_eq!(ok[1].1, "::1".parse::<std::net::IpAddr>().unwrap());
    assert_eq!(
        parse_resolve("reg").unwrap_err().to_string(),
        "\"reg\" is not HOST=IP"
    );
    assert_eq!(
        parse_resolve("reg=10.0.0").unwrap_err().to_string(),
        "\"reg=10.0.0\": \"10.0.0\" is not an IP address"
    );
}
