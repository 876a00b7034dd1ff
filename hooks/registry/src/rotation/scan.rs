//! Fetches the [`Catalogue`] of a mirror through the registry API. Every request is
//! made at most once: manifests are memoised per repository and digest, configs and
//! layers per digest, and the referrers API is probed once (distribution 2.8 has none).
//!
//! Layout under the root path `P`: releases are semver tags of `P`; module images live
//! in `P` by digest; `P/install` and `P/install-standalone` carry one tag per release;
//! `P/release-channel` carries one tag per channel whose image holds `version.json`.
//!
//! Longer than 400 lines for a reason: [`Scanner`] is one walker whose methods share
//! its memo tables and request counters (the "at most once" above); split across
//! files they would only pass the same `&mut self` around. The documents it reads
//! (tags, pages, manifests) are in `documents`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Read;

use reqwest::blocking::Response;
use reqwest::Method;
use serde::Serialize;

use super::layer;
use super::model::{
    is_digest, release_version, signature_subject, Blob, Catalogue, Channel, Digest, ManifestKind,
    Release, Repository,
};
use crate::distribution::client::{read_body, Body, MANIFEST_ACCEPT};
use crate::distribution::{Client, Failure, Kind};

mod documents;
use documents::{collect_digests, is_tag, next_tail};
pub use documents::{parse_manifest, sha256, ManifestError, Pages};

/// Repositories beside the root whose tags follow the releases.
pub const SIBLINGS: [&str; 2] = ["install", "install-standalone"];
/// The repository of release channels.
pub const CHANNELS: &str = "release-channel";
/// The most manifests one scan accepts (a guard against a runaway registry).
pub const MAX_MANIFESTS: usize = 2_000_000;
/// The most pages one tag list may have: ten million tags at `n=1000`.
pub const MAX_TAG_PAGES: usize = 10_000;
/// The most tags one repository may have (each would be a manifest to fetch).
pub const MAX_TAGS: usize = MAX_MANIFESTS;
/// The longest tag (the distribution and OCI grammar).
pub const MAX_TAG_LEN: usize = 128;

/// What a scan cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Requests sent (token requests included).
    pub requests: usize,
    /// Requests sent twice with the same method and URL (the target is 0).
    pub repeated_requests: usize,
    /// Manifests fetched.
    pub manifests: usize,
    /// Layers read to find a file.
    pub layers_read: usize,
    /// Whether the registry serves the referrers API.
    pub referrers_api: bool,
}

/// Reads a mirror.
pub struct Scanner<'a> {
    client: &'a Client,
    sent: HashSet<(Method, String)>,
    repeated: usize,
    referrers_api: Option<bool>,
    configs: HashMap<Digest, Option<i64>>,
    layers: HashMap<Digest, Vec<(String, Vec<u8>)>>,
    manifests: usize,
}

fn failure(message: String) -> Failure {
    Failure::new(Kind::Http, message)
}

impl<'a> Scanner<'a> {
    /// A scanner over a connected client.
    pub fn new(client: &'a Client) -> Self {
        Scanner {
            client,
            sent: HashSet::new(),
            repeated: 0,
            referrers_api: None,
            configs: HashMap::new(),
            layers: HashMap::new(),
            manifests: 0,
        }
    }

    /// What the scan cost so far.
    pub fn stats(&self) -> Stats {
        Stats {
            requests: self.client.requests(),
            repeated_requests: self.repeated,
            manifests: self.manifests,
            layers_read: self.layers.len(),
            referrers_api: self.referrers_api == Some(true),
        }
    }

    fn get(&mut self, repo: &str, tail: &str, accept: Option<&str>) -> Result<Response, Failure> {
        if !self.sent.insert((Method::GET, format!("{repo}/{tail}"))) {
            self.repeated += 1;
        }
        let resp = self.client.send(Method::GET, repo, tail, "pull", accept)?;
        match resp.status().as_u16() {
            401 => Err(Failure::new(
                Kind::BadCredentials,
                format!(
                    "{repo}: the registry refused the credentials; check --user and the password"
                ),
            )),
            403 => Err(Failure::new(
                Kind::Denied,
                format!("{repo}: the user may not pull from this repository"),
            )),
            _ => Ok(resp),
        }
    }

    /// Tags of `repo`, following pagination; `None` when the repository does not exist.
    /// Pagination that does not advance or never ends is a `bad-pagination` failure
    /// (see [`Pages`]); a tag that is not a tag is `not-a-registry`.
    pub fn tags(&mut self, repo: &str) -> Result<Option<Vec<String>>, Failure> {
        let mut tail = "tags/list?n=1000".to_string();
        let mut pages = Pages::new(repo, &tail, MAX_TAG_PAGES, MAX_TAGS);
        let mut out = Vec::new();
        loop {
            let resp = self.get(repo, &tail, None)?;
            match resp.status().as_u16() {
                200 => {}
                404 => return Ok(None),
                code => {
                    return Err(failure(format!(
                        "{repo}: listing tags answered HTTP {code}"
                    )))
                }
            }
            let next = resp
                .headers()
                .get(reqwest::header::LINK)
                .and_then(|v| v.to_str().ok())
                .and_then(|l| next_tail(l, repo));
            #[derive(serde::Deserialize)]
            struct TagList {
                tags: Option<Vec<String>>,
            }
            let body: TagList = json(resp, Body::TagPage, |e| {
                failure(format!("{repo}: the tag list is not JSON ({e})"))
            })?;
            let page = body.tags.unwrap_or_default();
            if let Some(bad) = page.iter().find(|t| !is_tag(t)) {
                return Err(Failure::new(
                    Kind::NotARegistry,
                    format!(
                        "{repo}: the tag list holds {}, which is not a tag (at most {MAX_TAG_LEN} of A-Z, a-z, 0-9, '_', '.', '-'); check the registry address",
                        crate::model::duration::quoted(bad)
                    ),
                ));
            }
            pages.page(page.len())?;
            out.extend(page);
            match next {
                Some(t) => {
                    pages.next(&t)?;
                    tail = t;
                }
                None => break,
            }
        }
        out.sort();
        out.dedup();
        Ok(Some(out))
    }

    /// Fetches `reference` (a tag or digest) of `repo` unless already known; returns
    /// its digest, `None` when the registry does not hold it.
    pub fn manifest(
        &mut self,
        repo: &mut Repository,
        reference: &str,
    ) -> Result<Option<Digest>, Failure> {
        if is_digest(reference) {
            if repo.manifests.contains_key(reference) {
                return Ok(Some(reference.to_string()));
            }
            if repo.missing.contains(reference) {
                return Ok(None);
            }
        }
        if self.manifests >= MAX_MANIFESTS {
            return Err(failure(format!(
                "more than {MAX_MANIFESTS} manifests: refusing to plan on a catalogue this large"
            )));
        }
        let name = repo.name.clone();
        let resp = self.get(
            &name,
            &format!("manifests/{reference}"),
            Some(MANIFEST_ACCEPT),
        )?;
        match resp.status().as_u16() {
            200 => {}
            404 => {
                if is_digest(reference) {
                    repo.missing.insert(reference.to_string());
                }
                return Ok(None);
            }
            code => {
                return Err(failure(format!(
                    "{name}: GET manifest {reference} answered HTTP {code}"
                )))
            }
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = read_body(resp, Body::Manifest)?;
        let computed = sha256(&body);
        if is_digest(reference) && computed != reference {
            return Err(failure(format!(
                "{name}: manifest {reference} has content of digest {computed}: the registry is inconsistent"
            )));
        }
        let digest = header_digest.filter(|d| is_digest(d)).unwrap_or(computed);
        self.manifests += 1;
        if !repo.manifests.contains_key(&digest) {
            let m = parse_manifest(&digest, &body, &content_type)
                .map_err(|e| failure(format!("{name}: manifest {reference}: {e}")))?;
            repo.manifests.insert(digest.clone(), m);
        }
        Ok(Some(digest))
    }

    /// Fetches `digests` and everything they lead to (children).
    fn close(&mut self, repo: &mut Repository, digests: Vec<Digest>) -> Result<(), Failure> {
        let mut stack = digests;
        let mut done: HashSet<Digest> = HashSet::new();
        while let Some(d) = stack.pop() {
            if !done.insert(d.clone()) {
                continue;
            }
            if self.manifest(repo, &d)?.is_some() {
                stack.extend(repo.manifests[&d].children.iter().cloned());
            }
        }
        Ok(())
    }

    /// Reads every tag of `repo` (digests, closure, signature tags as referrers).
    fn read_repository(&mut self, name: &str) -> Result<Option<Repository>, Failure> {
        let Some(tags) = self.tags(name)? else {
            return Ok(None);
        };
        let mut repo = Repository::new(name);
        for tag in tags {
            if let Some(d) = self.manifest(&mut repo, &tag)? {
                if let Some(subject) = signature_subject(&tag) {
                    repo.add_referrer(&subject, &d);
                }
                repo.tags.insert(tag, d);
            }
        }
        let all: Vec<Digest> = repo.tags.values().cloned().collect();
        self.close(&mut repo, all)?;
        Ok(Some(repo))
    }

    /// The `created` time of an image config, memoised per digest.
    fn created(&mut self, repo: &str, config: &Blob) -> Result<Option<i64>, Failure> {
        if let Some(c) = self.configs.get(&config.digest) {
            return Ok(*c);
        }
        let resp = self.get(repo, &format!("blobs/{}", config.digest), None)?;
        if resp.status().as_u16() != 200 {
            return Err(failure(format!(
                "{repo}: config blob {} answered HTTP {}",
                config.digest,
                resp.status().as_u16()
            )));
        }
        #[derive(serde::Deserialize)]
        struct Config {
            created: Option<String>,
        }
        let c: Config = json(resp, Body::Config, |e| {
            failure(format!(
                "{repo}: config {} is not JSON ({e})",
                config.digest
            ))
        })?;
        let t = c.created.and_then(|s| {
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .ok()
                .map(|t| t.unix_timestamp())
        });
        self.configs.insert(config.digest.clone(), t);
        Ok(t)
    }

    /// Files `wanted` accepts from the topmost layer of `image` that has any.
    fn files(
        &mut self,
        repo: &Repository,
        image: &Digest,
        wanted: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<(String, Vec<u8>)>, Failure> {
        let Some(m) = repo.manifests.get(image) else {
            return Ok(vec![]);
        };
        // blobs = [config, layers...]; read layers from the top.
        for l in m.blobs.iter().skip(1).rev() {
            if !self.layers.contains_key(&l.digest) {
                let resp = self.get(&repo.name, &format!("blobs/{}", l.digest), None)?;
                if resp.status().as_u16() != 200 {
                    return Err(failure(format!(
                        "{}: layer {} answered HTTP {}",
                        repo.name,
                        l.digest,
                        resp.status().as_u16()
                    )));
                }
                let found =
                    layer::find_files(resp.take(l.size.saturating_add(1)), |p| wanted(p), 16)
                        .map_err(|e| failure(format!("{}: layer {}: {e}", repo.name, l.digest)))?;
                self.layers.insert(l.digest.clone(), found);
            }
            let found = &self.layers[&l.digest];
            if !found.is_empty() {
                return Ok(found.clone());
            }
        }
        Ok(vec![])
    }

    /// The images of `digest`: itself, or an index's children.
    fn images(repo: &Repository, digest: &Digest) -> Vec<Digest> {
        match repo.manifests.get(digest) {
            Some(m) if m.kind == ManifestKind::Index => m.children.clone(),
            Some(_) => vec![digest.clone()],
            None => vec![],
        }
    }

    fn release(
        &mut self,
        repo: &Repository,
        tag: &str,
        digest: &Digest,
    ) -> Result<Release, Failure> {
        let version = release_version(tag).expect("called for release tags");
        let mut created: Option<i64> = None;
        let mut modules: Option<Vec<Digest>> = None;
        for image in Self::images(repo, digest) {
            let Some(m) = repo.manifests.get(&image) else {
                continue;
            };
            if let Some(config) = m.blobs.first().cloned() {
                if let Some(t) = self.created(&repo.name, &config)? {
                    created = Some(created.map_or(t, |c: i64| c.max(t)));
                }
            }
            if modules.is_none() {
                let files = self.files(repo, &image, &|p: &str| {
                    p.starts_with("deckhouse/") && p.ends_with("/images_digests.json")
                })?;
                if !files.is_empty() {
                    let mut list = Vec::new();
                    for (path, content) in files {
                        let v: serde_json::Value = serde_json::from_slice(&content).map_err(|e| {
                            failure(format!("release {tag} ({digest}): {path} is not JSON ({e}); nothing was deleted"))
                        })?;
                        collect_digests(&v, &mut list);
                    }
                    list.sort();
                    list.dedup();
                    modules = Some(list);
                }
            }
        }
        Ok(Release {
            tag: tag.to_string(),
            version,
            digest: digest.clone(),
            modules,
            created,
        })
    }

    fn channel(
        &mut self,
        repo: &Repository,
        tag: &str,
        digest: &Digest,
    ) -> Result<Channel, Failure> {
        let mut version = None;
        for image in Self::images(repo, digest) {
            let files = self.files(repo, &image, &|p: &str| p == "version.json")?;
            if let Some((_, content)) = files.first() {
                #[derive(serde::Deserialize)]
                struct V {
                    version: Option<String>,
                }
                version = serde_json::from_slice::<V>(content)
                    .ok()
                    .and_then(|v| v.version)
                    .filter(|v| release_version(v).is_some());
                break;
            }
        }
        Ok(Channel {
            name: tag.to_string(),
            version,
        })
    }

    /// Fetches the catalogue under `path` (`deckhouse/ee`, no leading slash).
    pub fn scan(&mut self, path: &str) -> Result<Catalogue, Failure> {
        let Some(mut root) = self.read_repository(path)? else {
            return Err(Failure::new(
                Kind::NameUnknown,
                format!("repository {path} does not exist in the registry; check --path"),
            ));
        };
        let release_tags: Vec<(String, Digest)> = root
            .tags
            .iter()
            .filter(|(t, _)| release_version(t).is_some())
            .map(|(t, d)| (t.clone(), d.clone()))
            .collect();
        let mut releases = Vec::new();
        for (tag, digest) in &release_tags {
            releases.push(self.release(&root, tag, digest)?);
        }
        let modules: Vec<Digest> = releases
            .iter()
            .flat_map(|r| r.modules.iter().flatten().cloned())
            .collect();
        self.close(&mut root, modules)?;
        self.referrers(&mut root)?;
        let mut siblings = Vec::new();
        for s in SIBLINGS {
            if let Some(mut repo) = self.read_repository(&format!("{path}/{s}"))? {
                self.referrers(&mut repo)?;
                siblings.push(repo);
            }
        }
        let mut others = Vec::new();
        let mut channels = Vec::new();
        if let Some(repo) = self.read_repository(&format!("{path}/{CHANNELS}"))? {
            let tags: BTreeMap<String, Digest> = repo.tags.clone();
            for (tag, digest) in &tags {
                channels.push(self.channel(&repo, tag, digest)?);
            }
            others.push(repo);
        }
        Ok(Catalogue {
            root,
            siblings,
            others,
            releases,
            channels,
        })
    }

    /// Asks the referrers API about every manifest of `repo` (once, if the registry
    /// has the API) and fetches what it names.
    fn referrers(&mut self, repo: &mut Repository) -> Result<(), Failure> {
        if self.referrers_api == Some(false) {
            return Ok(());
        }
        let mut todo: Vec<Digest> = repo.manifests.keys().cloned().collect();
        todo.sort();
        let mut asked: HashSet<Digest> = HashSet::new();
        while let Some(d) = todo.pop() {
            if !asked.insert(d.clone()) {
                continue;
            }
            let name = repo.name.clone();
            let resp = self.get(
                &name,
                &format!("referrers/{d}"),
                Some("application/vnd.oci.image.index.v1+json"),
            )?;
            match resp.status().as_u16() {
                200 => self.referrers_api = Some(true),
                404 if self.referrers_api.is_none() => {
                    self.referrers_api = Some(false);
                    return Ok(());
                }
                404 => continue,
                code => {
                    return Err(failure(format!(
                        "{name}: referrers of {d} answered HTTP {code}"
                    )))
                }
            }
            let index: serde_json::Value = json(resp, Body::Manifest, |e| {
                failure(format!("{name}: referrers of {d}: not JSON ({e})"))
            })?;
            let found: Vec<Digest> = index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| m["digest"].as_str())
                .filter(|x| is_digest(x))
                .map(str::to_owned)
                .collect();
            for r in found {
                repo.add_referrer(&d, &r);
                self.close(repo, vec![r.clone()])?;
                todo.push(r);
            }
        }
        Ok(())
    }
}

/// A JSON response body of kind `body` (capped by [`read_body`]); `not_json` makes the
/// failure of a body that is not the JSON expected.
fn json<T: serde::de::DeserializeOwned>(
    resp: Response,
    body: Body,
    not_json: impl FnOnce(String) -> Failure,
) -> Result<T, Failure> {
    let bytes = read_body(resp, body)?;
    serde_json::from_slice(&bytes).map_err(|e| not_json(e.to_string()))
}

#[cfg(test)]
mod tests;
