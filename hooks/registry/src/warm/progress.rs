//! The warm process's progress: a small JSON file it writes atomically on the host
//! after every pass, and which the node hook reads (as input: size-capped, validated)
//! into the master's status ConfigMap.

use serde::{Deserialize, Serialize};

/// The file's name in the warm directory.
pub const FILE: &str = "progress.json";
/// The most bytes the node hook reads of it.
pub const MAX_BYTES: u64 = 64 << 10;
/// Images named as missing, at most.
pub const MISSING_SHOWN: usize = 5;

/// One pass's outcome.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Progress {
    /// The hash of the list it warmed ([`super::list::WantedList::hash`]).
    pub list_hash: String,
    /// Images of the list.
    pub wanted: u64,
    /// Images whose manifests and blobs are all in the cache.
    pub cached: u64,
    /// Bytes of the list's content in the cache (each blob once).
    pub bytes: u64,
    /// The first images not cached (`@sha256:…` or `:tag`), at most [`MISSING_SHOWN`].
    pub missing: Vec<String>,
    /// Of the images not cached, how many the proxying registry answered as unknown
    /// (404: its upstream lacks them); no warm-up can cache them.
    pub unavailable: u64,
    /// When the pass ended (unix seconds).
    pub at: i64,
}

/// Why a progress file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgressError {
    /// Larger than [`MAX_BYTES`].
    #[error("warm progress file: larger than {MAX_BYTES} bytes")]
    TooLarge,
    /// Not the warm process's JSON.
    #[error("warm progress file: not the warm process's JSON (line {0}, column {1})")]
    NotJson(usize, usize),
    /// A field's value is impossible.
    #[error("warm progress file: {0}")]
    Invalid(String),
}

fn name_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 140
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":@._-".contains(&b))
}

impl Progress {
    /// Every image of the list is cached. Images the upstream lacks keep it
    /// incomplete: a release the cache cannot hold is not one to switch to.
    pub fn complete(&self) -> bool {
        self.wanted > 0 && self.cached == self.wanted
    }

    /// Reads and validates a progress file's bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProgressError> {
        if bytes.len() as u64 > MAX_BYTES {
            return Err(ProgressError::TooLarge);
        }
        let p: Progress = serde_json::from_slice(bytes)
            .map_err(|e| ProgressError::NotJson(e.line(), e.column()))?;
        let bad = |m: &str| Err(ProgressError::Invalid(m.into()));
        if p.list_hash.len() != 16 || !p.list_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return bad("listHash is not 16 hexadecimal digits");
        }
        if p.cached > p.wanted || p.unavailable > p.wanted - p.cached {
            return bad("cached and unavailable images exceed the wanted ones");
        }
        if p.wanted > super::list::MAX_IMAGES as u64 + 1 {
            return bad("wanted exceeds the most images a list may name");
        }
        if p.missing.len() > MISSING_SHOWN || !p.missing.iter().all(|m| name_ok(m)) {
            return bad("missing holds more than 5 names or one that is not an image reference");
        }
        if p.at < 0 {
            return bad("at is negative");
        }
        Ok(p)
    }

    /// The file's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> Progress {
        Progress {
            list_hash: "0123456789abcdef".into(),
            wanted: 10,
            cached: 7,
            bytes: 1234,
            missing: vec!["@sha256:aa".into(), ":v1.2.3".into()],
            unavailable: 1,
            at: 5,
        }
    }

    #[test]
    fn round_trip() {
        let p = good();
        assert_eq!(Progress::parse(&p.to_bytes()).unwrap(), p);
        assert!(!p.complete());
        let unavailable = Progress {
            cached: 9,
            ..p.clone()
        };
        assert!(!unavailable.complete());
        let done = Progress {
            cached: 10,
            unavailable: 0,
            ..p
        };
        assert!(done.complete());
    }

    #[test]
    fn hostile_files_are_refused_in_one_line() {
        let mut cases: Vec<Vec<u8>> = vec![
            b"".to_vec(),
            b"[]".to_vec(),
            vec![b' '; MAX_BYTES as usize + 1],
            br#"{"listHash":"x"}"#.to_vec(),
        ];
        for p in [
            Progress {
                cached: 11,
                ..good()
            },
            Progress {
                unavailable: 4,
                ..good()
            },
            Progress {
                list_hash: "zz".into(),
                ..good()
            },
            Progress {
                missing: vec!["a\nb".into()],
                ..good()
            },
            Progress {
                missing: vec!["a".into(); 6],
                ..good()
            },
            Progress { at: -1, ..good() },
            Progress {
                wanted: u64::MAX,
                cached: 0,
                unavailable: 0,
                ..good()
            },
        ] {
            cases.push(p.to_bytes());
        }
        let mut extra = serde_json::to_value(good()).unwrap();
        extra["password"] = "x".into();
        cases.push(extra.to_string().into_bytes());
        for c in cases {
            let e = Progress::parse(&c).unwrap_err().to_string();
            assert!(
                e.starts_with("warm progress file: ") && !e.contains('\n'),
                "{e}"
            );
        }
    }
}
