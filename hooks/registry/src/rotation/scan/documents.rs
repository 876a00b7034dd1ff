//! The documents a scan reads, apart from the requests: digests, tags, the pages of a
//! tag list, and manifests.

use std::collections::HashSet;

use sha2::{Digest as _, Sha256};

use super::MAX_TAG_LEN;
use crate::distribution::{Failure, Kind};
use crate::rotation::model::{is_digest, Blob, Digest, Manifest, ManifestKind};

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> Digest {
    let mut s = String::with_capacity(71);
    s.push_str("sha256:");
    for b in Sha256::digest(bytes) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A tag as distribution and OCI define it: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`.
pub(super) fn is_tag(t: &str) -> bool {
    let b = t.as_bytes();
    let ok = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    !b.is_empty()
        && b.len() <= MAX_TAG_LEN
        && ok(&b[0])
        && b[1..].iter().all(|c| ok(c) || *c == b'.' || *c == b'-')
}

/// The pages of one tag list: refuses a `Link` to a page already read, a `last=` given
/// before (the list does not advance), an empty page that links to another, more than
/// `max_pages` pages or more than `max_tags` tags.
pub struct Pages {
    repo: String,
    seen: HashSet<String>,
    lasts: HashSet<String>,
    pages: usize,
    tags: usize,
    last_page_empty: bool,
    max_pages: usize,
    max_tags: usize,
}

impl Pages {
    /// The pages of `repo`'s tag list, starting at `first` (a `tags/list?...` tail).
    pub fn new(repo: &str, first: &str, max_pages: usize, max_tags: usize) -> Self {
        Pages {
            repo: repo.to_string(),
            seen: HashSet::from([first.to_string()]),
            lasts: HashSet::new(),
            pages: 0,
            tags: 0,
            last_page_empty: false,
            max_pages,
            max_tags,
        }
    }

    fn bad(&self, what: String) -> Failure {
        Failure::new(
            Kind::BadPagination,
            format!(
                "{}: the tag list {what}; the registry's pagination is broken (its Link header), the scan cannot trust this list",
                self.repo
            ),
        )
    }

    /// A page of `n` tags arrived.
    pub fn page(&mut self, n: usize) -> Result<(), Failure> {
        self.pages += 1;
        self.tags = self.tags.saturating_add(n);
        self.last_page_empty = n == 0;
        if self.tags > self.max_tags {
            return Err(self.bad(format!("has more than {} tags", self.max_tags)));
        }
        Ok(())
    }

    /// The page read last links to `tail`: may it be read?
    pub fn next(&mut self, tail: &str) -> Result<(), Failure> {
        if self.seen.contains(tail) {
            return Err(self.bad(format!(
                "links back to a page already read ({})",
                crate::model::duration::quoted(tail)
            )));
        }
        if self.last_page_empty {
            return Err(self.bad("gave an empty page that links to another".into()));
        }
        if self.pages >= self.max_pages {
            return Err(self.bad(format!("goes on past {} pages", self.max_pages)));
        }
        let last = reqwest::Url::parse(&format!("http://registry/{tail}"))
            .ok()
            .and_then(|u| {
                u.query_pairs()
                    .find(|(k, _)| k == "last")
                    .map(|(_, v)| v.into_owned())
            });
        if let Some(last) = last {
            if !self.lasts.insert(last.clone()) {
                return Err(self.bad(format!(
                    "does not advance: it asks for the tags after {} again",
                    crate::model::duration::quoted(&last)
                )));
            }
        }
        self.seen.insert(tail.to_string());
        Ok(())
    }
}

/// The `tags/list` tail of an RFC 5988 `Link: <...>; rel="next"` header.
pub(super) fn next_tail(link: &str, repo: &str) -> Option<String> {
    let url = link
        .split(';')
        .next()?
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>');
    let prefix = format!("/v2/{repo}/");
    let at = url.find(&prefix)?;
    Some(url[at + prefix.len()..].to_string())
}

/// Every `sha256:` digest among the string values of `v`.
pub(super) fn collect_digests(v: &serde_json::Value, out: &mut Vec<Digest>) {
    match v {
        serde_json::Value::String(s) if is_digest(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        serde_json::Value::Object(o) => o.values().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

/// Why a manifest document could not be read; the caller prefixes the repository and
/// the reference.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// The body is not JSON.
    #[error("not JSON ({0})")]
    NotJson(#[from] serde_json::Error),
    /// A config, layer or child descriptor has no `sha256:` digest.
    #[error("a descriptor without a sha256 digest")]
    DescriptorDigest,
    /// A Docker schema 1 manifest, which the rotation does not read.
    #[error("a schema 1 manifest: not supported")]
    Schema1,
}

/// Parses a manifest document.
pub fn parse_manifest(
    digest: &str,
    body: &[u8],
    content_type: &str,
) -> Result<Manifest, ManifestError> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let media = v["mediaType"].as_str().unwrap_or(content_type);
    let descriptor = |d: &serde_json::Value| -> Result<Blob, ManifestError> {
        let digest = d["digest"]
            .as_str()
            .filter(|x| is_digest(x))
            .ok_or(ManifestError::DescriptorDigest)?;
        Ok(Blob {
            digest: digest.to_string(),
            size: d["size"].as_u64().unwrap_or(0),
        })
    };
    let subject = v
        .get("subject")
        .and_then(|s| s["digest"].as_str())
        .map(str::to_owned);
    let (kind, children, blobs) = if let Some(list) = v["manifests"].as_array() {
        let children = list
            .iter()
            .map(|d| descriptor(d).map(|b| b.digest))
            .collect::<Result<_, _>>()?;
        (ManifestKind::Index, children, vec![])
    } else if v.get("config").is_some() {
        let mut blobs = vec![descriptor(&v["config"])?];
        for l in v["layers"].as_array().into_iter().flatten() {
            blobs.push(descriptor(l)?);
        }
        (ManifestKind::Image, vec![], blobs)
    } else if media.contains("manifest.v1") && v.get("fsLayers").is_some() {
        return Err(ManifestError::Schema1);
    } else {
        (ManifestKind::Other, vec![], vec![])
    };
    Ok(Manifest {
        digest: digest.to_string(),
        kind,
        size: body.len() as u64,
        children,
        blobs,
        subject,
    })
}
