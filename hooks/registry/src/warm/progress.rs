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
    /// The next releases' warm-up ([`super::next`]), oldest first; absent when none
    /// is announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub next: Vec<NextProgress>,
}

/// Why a next release's list is not known (yet).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NextProblem {
    /// Its platform image is not in the cache (the upstream lacks it, or failed).
    PlatformImage,
    /// Its platform image holds no readable `deckhouse/modules/images_digests.json`
    /// (none, too large, not a map of digests, or a layer beyond the bounds).
    DigestsFile,
}

impl NextProblem {
    /// As the status ConfigMap names it.
    pub fn as_str(self) -> &'static str {
        match self {
            NextProblem::PlatformImage => "platform-image",
            NextProblem::DigestsFile => "digests-file",
        }
    }
}

/// One next release's warm-up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NextProgress {
    /// The release tag.
    pub version: String,
    /// The hash of its list (empty while the list is not known: see `problem`).
    pub list_hash: String,
    /// Images of its list (the platform image alone while the list is not known).
    pub wanted: u64,
    /// Of those, cached.
    pub cached: u64,
    /// Bytes of its list's content in the cache.
    pub bytes: u64,
    /// The first images not cached, at most [`MISSING_SHOWN`].
    pub missing: Vec<String>,
    /// Of the images not cached, how many the upstream does not have.
    pub unavailable: u64,
    /// Why its list is not known; absent once it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<NextProblem>,
    /// When its pass ended (unix seconds).
    pub at: i64,
}

impl NextProgress {
    /// Every image of its list is cached.
    pub fn complete(&self) -> bool {
        self.problem.is_none()
            && !self.list_hash.is_empty()
            && self.wanted > 0
            && self.cached == self.wanted
    }

    /// From a pass's progress over the release's list (or its platform image alone,
    /// with the `problem` that kept the list unknown).
    pub fn from_pass(version: &str, p: &Progress, problem: Option<NextProblem>) -> Self {
        NextProgress {
            version: version.to_string(),
            list_hash: if problem.is_none() {
                p.list_hash.clone()
            } else {
                String::new()
            },
            wanted: p.wanted,
            cached: p.cached,
            bytes: p.bytes,
            missing: p.missing.clone(),
            unavailable: p.unavailable,
            problem,
            at: p.at,
        }
    }
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
        if p.next.len() > super::next::MAX_NEXT {
            return bad("next names more releases than are warmed");
        }
        for n in &p.next {
            if super::next::Version::parse(&n.version).is_none() {
                return bad("next: a version is not a release tag vX.Y.Z");
            }
            let hash_ok = n.list_hash.is_empty()
                || (n.list_hash.len() == 16 && n.list_hash.bytes().all(|b| b.is_ascii_hexdigit()));
            if !hash_ok
                || n.cached > n.wanted
                || n.unavailable > n.wanted - n.cached
                || n.wanted > super::list::MAX_IMAGES as u64 + 1
                || n.at < 0
            {
                return bad("next: a listHash or counts that are impossible");
            }
            if n.missing.len() > MISSING_SHOWN || !n.missing.iter().all(|m| name_ok(m)) {
                return bad(
                    "next: missing holds more than 5 names or one that is not an image reference",
                );
            }
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
            next: vec![NextProgress {
                version: "v1.3.0".into(),
                list_hash: "fedcba9876543210".into(),
                wanted: 4,
                cached: 4,
                bytes: 9,
                at: 6,
                ..NextProgress::default()
            }],
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
        assert!(done.next[0].complete());
        let unknown = NextProgress {
            problem: Some(NextProblem::DigestsFile),
            ..done.next[0].clone()
        };
        assert!(!unknown.complete(), "a list not known is not warm");
        // A file without `next` (an older warm process) still reads.
        let mut old = serde_json::to_value(&done).unwrap();
        old.as_object_mut().unwrap().remove("next");
        assert!(Progress::parse(old.to_string().as_bytes())
            .unwrap()
            .next
            .is_empty());
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
                next: vec![NextProgress {
                    version: "v1.3.0;rm".into(),
                    ..good().next[0].clone()
                }],
                ..good()
            },
            Progress {
                next: vec![NextProgress {
                    cached: 5,
                    ..good().next[0].clone()
                }],
                ..good()
            },
            Progress {
                next: vec![good().next[0].clone(); 3],
                ..good()
            },
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
