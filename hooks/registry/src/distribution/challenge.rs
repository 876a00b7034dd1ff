//! `WWW-Authenticate` challenges (RFC 7235) as registries send them.

/// What a registry asks for on `401`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Token auth: fetch a token from `realm` for `service` and a scope.
    Bearer {
        /// The token endpoint.
        realm: String,
        /// The `service` query parameter (may be empty).
        service: String,
        /// `error` parameter, e.g. `insufficient_scope` when a token lacked rights.
        error: Option<String>,
    },
    /// HTTP Basic auth on every request.
    Basic,
}

/// Parses the first challenge of a `WWW-Authenticate` value; `None` when it is neither
/// a Bearer challenge with a realm nor a Basic one.
pub fn parse(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let params = params(rest);
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.clone())
    };
    let realm = get("realm").filter(|r| !r.is_empty())?;
    Some(Challenge::Bearer {
        realm,
        service: get("service").unwrap_or_default(),
        error: get("error"),
    })
}

/// `name=value` pairs, values quoted (with `\` escapes) or bare tokens.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=' && *c != ','))
            .collect::<String>()
            .trim()
            .to_string();
        if name.is_empty() {
            return out;
        }
        if chars.next_if_eq(&'=').is_none() {
            continue;
        }
        let mut value = String::new();
        if chars.next_if_eq(&'"').is_some() {
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = std::iter::from_fn(|| chars.next_if(|c| *c != ','))
                .collect::<String>()
                .trim()
                .to_string();
        }
        out.push((name, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_quoted_commas_and_error() {
        let c = parse(
            r#"Bearer realm="https://auth.example/token?a=1,b=2",service="registry.example",scope="repository:a/b:pull",error="insufficient_scope""#,
        );
        assert_eq!(
            c,
            Some(Challenge::Bearer {
                realm: "https://auth.example/token?a=1,b=2".into(),
                service: "registry.example".into(),
                error: Some("insufficient_scope".into()),
            })
        );
    }

    #[test]
    fn basic_and_bare_tokens() {
        assert_eq!(
            parse(r#"Basic realm="Registry Realm""#),
            Some(Challenge::Basic)
        );
        assert_eq!(
            parse("bearer realm=https://a/t, service=s"),
            Some(Challenge::Bearer {
                realm: "https://a/t".into(),
                service: "s".into(),
                error: None
            })
        );
    }

    #[test]
    fn not_a_registry_challenge() {
        assert_eq!(parse("Negotiate"), None);
        assert_eq!(parse(r#"Bearer service="s""#), None);
        assert_eq!(parse(""), None);
    }
}
