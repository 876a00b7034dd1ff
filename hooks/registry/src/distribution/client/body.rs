//! Reading an answer's body within a cap that depends on what it holds.

use std::io::Read;

use reqwest::blocking::Response;

use crate::distribution::failure::{Failure, Kind};

/// What an answer's body holds, and so the most of it that is read: a registry (or
/// something posing as one) may answer without end, and nothing here streams a body it
/// keeps. Image layers are not read through this (rotation streams them through a tar
/// reader, bounded by the size the manifest declares).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// The answer to `GET /v2/` (distribution sends `{}`): 64 KiB.
    ApiRoot,
    /// A token endpoint's JSON (a JWT, sometimes with its certificate chain): 1 MiB.
    Token,
    /// One page of a tag list: 8 MiB. A page of `n=1000` tags of at most 128
    /// characters is about 130 KiB; the rest is room for a registry that ignores `n`.
    TagPage,
    /// A manifest or an index, the referrers API's index included: 4 MiB, the limit
    /// distribution itself puts on a manifest it accepts.
    Manifest,
    /// An image configuration blob (read for its `created` time): 4 MiB.
    Config,
    /// An error answer, read to tell one error code from another: 64 KiB.
    Error,
}

impl Body {
    /// The most bytes read of such a body.
    pub const fn limit(self) -> u64 {
        match self {
            Body::ApiRoot | Body::Error => 64 << 10,
            Body::Token => 1 << 20,
            Body::TagPage => 8 << 20,
            Body::Manifest | Body::Config => 4 << 20,
        }
    }

    /// What the body is, for messages.
    pub const fn what(self) -> &'static str {
        match self {
            Body::ApiRoot => "API answer",
            Body::Token => "token answer",
            Body::TagPage => "tag list page",
            Body::Manifest => "manifest",
            Body::Config => "image configuration",
            Body::Error => "error answer",
        }
    }
}

/// The `oversize` failure of an answer at `path` larger than `body` allows.
fn oversize(path: &str, body: Body) -> Failure {
    Failure::new(
        Kind::Oversize,
        format!(
            "{path}: the {} is larger than {}, the most read for it; a registry does not answer this way: check the registry address",
            body.what(),
            crate::untrusted::size(body.limit())
        ),
    )
}

/// Reads the body of `resp`, at most [`Body::limit`] bytes: a longer answer (by its
/// `Content-Length`, or by what arrives) is an [`Kind::Oversize`] failure naming the
/// URL path and the limit, and nothing past the limit is read. Every response body
/// the module keeps is read here.
pub fn read_body(resp: Response, body: Body) -> Result<Vec<u8>, Failure> {
    let limit = body.limit();
    let path = resp.url().path().to_string();
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(oversize(&path, body));
    }
    let mut out = Vec::with_capacity(resp.content_length().unwrap_or(0).min(limit) as usize);
    let read = resp.take(limit + 1).read_to_end(&mut out);
    if let Err(e) = read {
        let inner = e.get_ref().and_then(|i| i.downcast_ref::<reqwest::Error>());
        return Err(match inner {
            Some(re) => Failure::from_transport(&path, re),
            None => Failure::new(
                Kind::Http,
                format!("{path}: reading the {}: {e}", body.what()),
            ),
        });
    }
    if out.len() as u64 > limit {
        return Err(oversize(&path, body));
    }
    Ok(out)
}
