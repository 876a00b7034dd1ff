//! Input the module does not control: data from the cluster (node names, node
//! addresses), checked before it reaches a template, an object name, a file name or a
//! node's script; and any value quoted in an error or a log, shown safely.
//!
//! Whoever can patch one Node's `status` or name a Node controls these strings, and the
//! chart puts them into the static pods, the object names and the script bashible runs
//! as root on every node. So a value is used only after it parsed as what it claims to
//! be; a master whose data does not is skipped (the hook logs and counts it).

use std::fmt;
use std::net::IpAddr;

use serde_json::Value;

/// The longest node name the module accepts. The name is a label value on the
/// `registry-node-<node>-config` Secret (`embedded-registry.deckhouse.io/node`), and a
/// label value holds at most 63 characters; every object and file name built from it
/// (`registry-node-<node>-status`, `<node>.json`) is shorter than its own limit then.
pub const NODE_NAME_MAX: usize = 63;

/// Why a value from the cluster was refused. `Display` never prints the value itself
/// (it may hold anything); [`shown`] gives a bounded, escaped form for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Invalid {
    /// A node name that is not a DNS-1123 subdomain of at most [`NODE_NAME_MAX`] characters.
    NodeName,
    /// An InternalIP that is not an IPv4 or IPv6 address in its canonical text form.
    Address,
}

impl Invalid {
    /// The metric label and the log's `reason`.
    pub fn as_str(self) -> &'static str {
        match self {
            Invalid::NodeName => "invalid-name",
            Invalid::Address => "invalid-address",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Invalid::NodeName => write!(
                f,
                "the node name is not a DNS-1123 subdomain of at most {NODE_NAME_MAX} characters \
                 (lower-case letters, digits, '-' and '.', starting and ending alphanumeric)"
            ),
            Invalid::Address => write!(f, "the InternalIP is not an IPv4 or IPv6 address"),
        }
    }
}

/// Checks a node name: a DNS-1123 subdomain (as Kubernetes requires of Node names) no
/// longer than [`NODE_NAME_MAX`].
pub fn node_name(name: &str) -> Result<&str, Invalid> {
    let labels_ok = name.split('.').all(|label| {
        let b = label.as_bytes();
        !b.is_empty()
            && b.first().is_some_and(u8::is_ascii_alphanumeric)
            && b.last().is_some_and(u8::is_ascii_alphanumeric)
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
    });
    if name.is_empty() || name.len() > NODE_NAME_MAX || !labels_ok {
        return Err(Invalid::NodeName);
    }
    Ok(name)
}

/// Checks a node address: an IPv4 or IPv6 address (no surrounding space, no zone, no
/// port, no leading zeros). Callers keep its canonical text (`to_string`), so what
/// reaches a template is the address and nothing else.
pub fn address(text: &str) -> Result<IpAddr, Invalid> {
    text.parse().map_err(|_| Invalid::Address)
}

/// A value from the cluster as it may appear in a log line: escaped and cut to 80
/// characters, so a hostile value neither breaks the line nor floods it.
pub fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let escaped: String = value.chars().flat_map(char::escape_default).collect();
    match escaped.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &escaped[..cut]),
        None => escaped,
    }
}

/// A size limit as messages name it: whole MiB, whole KiB, else bytes.
pub fn size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{} MiB", b >> 20),
        b if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{} KiB", b >> 10),
        b => format!("{b} bytes"),
    }
}

/// What a value is, without the value: said in its place in error messages, so that
/// no value (a password in a mistyped field, control characters) is echoed.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::Number(_) => "a number".into(),
        Value::String(s) => format!("a string of {} characters", s.chars().count()),
        Value::Array(a) => format!("an array of {} items", a.len()),
        Value::Object(_) => "an object".into(),
    }
}

/// Text with its control characters (newlines, ESC, NUL, ...) escaped, so that it
/// stays one line on a terminal and in a log, whatever input it quotes.
pub fn escape_controls(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

/// Whether `path` is a repository path as the registry API names one: `/`-separated
/// components of lowercase letters, digits, `.`, `_` and `-`, none empty. The caller
/// trims leading and trailing slashes first.
pub fn repository_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names() {
        for good in ["m1", "master-0", "a.b-c.d", &"a".repeat(63), "0"] {
            assert_eq!(node_name(good), Ok(good), "{good}");
        }
        for bad in [
            "",
            "M1",
            "-m",
            "m-",
            "a..b",
            ".a",
            "a.",
            "m_1",
            "m 1",
            "m\nEMBEDDED_REGISTRY_HOSTS",
            "m;id",
            "../etc",
            &"a".repeat(64),
            &"a".repeat(242),
        ] {
            assert_eq!(node_name(bad), Err(Invalid::NodeName), "{bad:?}");
        }
    }

    #[test]
    fn addresses() {
        for good in ["10.0.0.1", "127.0.0.1", "::1", "fd00::1", "2001:db8::2"] {
            assert_eq!(address(good).unwrap().to_string(), good);
        }
        assert_eq!(address("FD00:0::1").unwrap().to_string(), "fd00::1");
        for bad in [
            "",
            " 10.0.0.1",
            "10.0.0.1\n",
            "10.0.0.1\nEMBEDDED_REGISTRY_HOSTS\ntouch /pwned\n",
            "010.0.0.1",
            "10.0.0.256",
            "10.0.0",
            "fe80::1%eth0",
            "[::1]",
            "10.0.0.1:5001",
            "node.example",
            "$(id)",
        ] {
            assert_eq!(address(bad), Err(Invalid::Address), "{bad:?}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size(4 << 20), "4 MiB");
        assert_eq!(size(64 << 10), "64 KiB");
        assert_eq!(size(1000), "1000 bytes");
    }

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_controls("a\nb\u{1b}[31m\0 é \""),
            "a\\nb\\u{1b}[31m\\u{0} é \""
        );
        assert_eq!(escape_controls("plain"), "plain");
    }

    #[test]
    fn shown_is_escaped_and_bounded() {
        assert_eq!(shown("a\nb\u{1b}"), "a\\nb\\u{1b}");
        let long = shown(&"x".repeat(1000));
        assert_eq!(long.chars().count(), 81);
        assert!(long.ends_with('…'));
    }
}
