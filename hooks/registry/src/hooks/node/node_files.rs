//! Node hook (shell-operator in the manager DaemonSet, classic protocol): writes this
//! master's registry files from its `registry-node-<node>-config` Secret and reports
//! what it applied.
//!
//! Files go under a host root (`EMBEDDED_REGISTRY_HOST_ROOT`, `/host` in the DaemonSet):
//! configs and PKI first, each atomically (temporary file, fsync, rename), mode 0600,
//! owned by the registry's user, skipped when unchanged; the static pod manifest last,
//! so kubelet never starts a pod whose files are not there. When the Secret is gone
//! (mode Direct, or the master left) the manifest goes first, then the files; the data
//! directory is kept (a cache or mirror survives a mode round-trip).
//!
//! The Secret is not trusted: only the keys the chart renders are accepted (one
//! manifest, [`MANIFEST_FILE`]; [`CONFIG_FILES`]; [`PKI_FILES`]), any other refuses it
//! whole. Below the host root no link is followed: directories are opened with
//! `O_NOFOLLOW`, files written through `O_EXCL` temporaries and removed only when they
//! are regular files; a link on the way is refused with one line naming it.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use hook_sdk::fsutil::{Dir, Kind};
use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, ScheduleBinding};
use serde::Deserialize;

use crate::cache_only;
use crate::hooks::{named_binding, node_name};
use crate::model::node_status::{NodeStatus, RegistryHealth, StaticPod, UpstreamState};
use crate::module::{
    node_config_secret, node_status_config_map, CACHE_ONLY_ANNOTATION, CONFIG_HASH_ANNOTATION,
    GENERATION_ANNOTATION, HYSTERESIS_ANNOTATION, MODULE_NAME, NAMESPACE, NODE_LABEL, ROLE_LABEL,
    RO_USER_ANNOTATION,
};
use crate::secrets;

/// Host root variable.
pub const HOST_ROOT_VAR: &str = "EMBEDDED_REGISTRY_HOST_ROOT";
/// `uid:gid` owning the registry's files (the static pod's user), or `none`.
pub const OWNER_VAR: &str = "EMBEDDED_REGISTRY_FILE_OWNER";
/// Default owner: the static pod's `runAsUser`.
pub const DEFAULT_OWNER: (u32, u32) = (64535, 64535);
/// Config files, relative to the host root.
pub const CONFIG_DIR: &str = "etc/kubernetes/registry/config";
/// PKI files, relative to the host root.
pub const PKI_DIR: &str = "etc/kubernetes/registry/pki";
/// Static pod manifests, relative to the host root.
pub const MANIFEST_DIR: &str = "etc/kubernetes/manifests";
/// Registry data, relative to the host root.
pub const DATA_DIR: &str = "opt/deckhouse/registry/data";

/// The hook; its bindings name this node's objects, so it reads `NODE_NAME`.
pub fn hook() -> Hook {
    let node = node_name();
    Hook::new(
        HookConfig {
            name: "node-files".into(),
            kubernetes: vec![
                named_binding("node_config", "Secret", node_config_secret(&node)),
                KubernetesBinding {
                    execute_hook_on_event: Some(vec![]),
                    execute_hook_on_synchronization: Some(false),
                    ..named_binding("node_status", "ConfigMap", node_status_config_map(&node))
                },
            ],
            schedule: vec![ScheduleBinding {
                include_snapshots_from: vec!["node_config".into(), "node_status".into()],
                // Re-checks health and re-applies files (repairs manual edits).
                ..ScheduleBinding::new("resync", "* * * * *")
            }],
            ..Default::default()
        },
        handle,
    )
}

#[derive(Deserialize)]
struct ObjectMeta {
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct SecretObject {
    metadata: ObjectMeta,
    #[serde(default)]
    data: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct ConfigMapObject {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// The registry's own static pod manifest, in [`MANIFEST_DIR`]: the only one the hook
/// writes or removes there (Secret key `manifest.embedded-registry.yaml`).
pub const MANIFEST_FILE: &str = "embedded-registry.yaml";
/// The files of [`CONFIG_DIR`] a Secret may carry (keys `config.<file>`), as the chart
/// renders them (`templates/registry-node-config.yaml`).
pub const CONFIG_FILES: &[&str] = &["auth.yaml", "distribution.yaml"];
/// The files of [`PKI_DIR`] a Secret may carry (keys `pki.<file>`), as the chart renders
/// them; `upstream-ca.crt` only with `proxy.ca`.
pub const PKI_FILES: &[&str] = &[
    "auth.crt",
    "auth.key",
    "ca.crt",
    "distribution.crt",
    "distribution.key",
    "token-bundle.crt",
    "token.crt",
    "token.key",
    "upstream-ca.crt",
];

/// Which directory a Secret key writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Config,
    Pki,
    Manifest,
}

impl Place {
    fn dir(self) -> &'static str {
        match self {
            Place::Config => CONFIG_DIR,
            Place::Pki => PKI_DIR,
            Place::Manifest => MANIFEST_DIR,
        }
    }
}

/// Where a Secret key lands: `config.<file>`, `pki.<file>` or `manifest.<file>`, each
/// only with the file names the chart renders.
fn target(key: &str) -> anyhow::Result<(Place, &str)> {
    let (dir, file) = key.split_once('.').unwrap_or(("", key));
    let (place, known): (Place, &[&str]) = match dir {
        "config" => (Place::Config, CONFIG_FILES),
        "pki" => (Place::Pki, PKI_FILES),
        "manifest" => (Place::Manifest, &[MANIFEST_FILE]),
        _ => bail!(
            "Secret key {key:?}: not config.*, pki.* or manifest.*: refusing the whole Secret"
        ),
    };
    let plain = !file.is_empty()
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if !plain {
        bail!(
            "Secret key {key:?}: file name would escape {}: refusing the whole Secret",
            place.dir()
        );
    }
    if !known.contains(&file) {
        bail!(
            "Secret key {key:?}: not a file the registry uses ({dir}.* takes {}): refusing the whole Secret",
            known.join(", ")
        );
    }
    Ok((place, file))
}

fn owner() -> anyhow::Result<Option<(u32, u32)>> {
    match std::env::var(OWNER_VAR) {
        Err(_) => Ok(Some(DEFAULT_OWNER)),
        Ok(v) if v == "none" => Ok(None),
        Ok(v) => {
            let (u, g) = v
                .split_once(':')
                .with_context(|| format!("{OWNER_VAR}={v:?}: expected uid:gid or none"))?;
            Ok(Some((u.parse()?, g.parse()?)))
        }
    }
}

/// The directories the hook changes, opened below the host root without following a
/// link (`None`: not there yet).
struct Found {
    config: Option<Dir>,
    pki: Option<Dir>,
    manifests: Option<Dir>,
}

/// Checks, before anything changes, that no directory on the way to the registry's
/// files below the host root is a link, that the hook's own directories (config, PKI)
/// hold only regular files, and that the manifest's name is a regular file or free.
fn preflight(host: &Dir) -> anyhow::Result<Found> {
    let own = |rel: &str| -> anyhow::Result<Option<Dir>> {
        let dir = host.walk(rel, false)?;
        if let Some(d) = &dir {
            for (name, kind) in d.entries()? {
                if kind != Kind::File {
                    bail!(
                        "{}: {} in the registry's own directory, where only its files belong: refusing to follow or remove it (remove it by hand)",
                        d.join(&name).display(),
                        kind.describe()
                    );
                }
            }
        }
        Ok(dir)
    };
    let config = own(CONFIG_DIR)?;
    let pki = own(PKI_DIR)?;
    let manifests = host.walk(MANIFEST_DIR, false)?;
    if let Some(m) = &manifests {
        match m.kind(MANIFEST_FILE)? {
            None | Some(Kind::File) => {}
            Some(kind) => bail!(
                "{}: {} where the registry's static pod manifest belongs: refusing to follow or replace it (remove it by hand)",
                m.join(MANIFEST_FILE).display(),
                kind.describe()
            ),
        }
    }
    Ok(Found {
        config,
        pki,
        manifests,
    })
}

/// The directories distribution's filesystem driver keeps its content in, relative to
/// the data directory. `registry garbage-collect` (the Detached pod's init container)
/// exits 1 when either is missing, so on a fresh master kubelet would never start the
/// registry: they are created with the data directory.
pub const STORAGE_DIRS: [&str; 2] = [
    "docker/registry/v2/repositories",
    "docker/registry/v2/blobs",
];

/// Creates the data directory when it is missing (no link followed below the host
/// root; the owner set on the new directory's descriptor). An existing one is used as
/// it is, even reached through a link the administrator placed (a larger disk): the
/// hook never changes what is in it, and only adds the [`STORAGE_DIRS`] it lacks.
fn ensure_data_dir(root: &Path, host: &Dir, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let data = if root.join(DATA_DIR).is_dir() {
        Dir::open(&root.join(DATA_DIR))?
    } else {
        let (parent, name) = DATA_DIR.rsplit_once('/').expect("a path below the root");
        let parent = host
            .walk(parent, true)?
            .with_context(|| format!("{}: cannot create", root.join(parent).display()))?;
        let (data, created) = parent.create_subdir(name)?;
        if let (true, Some((u, g))) = (created, owner) {
            data.chown(u, g)?;
        }
        data
    };
    for rel in STORAGE_DIRS {
        let mut here: Option<Dir> = None;
        for name in rel.split('/') {
            let (next, created) = here.as_ref().unwrap_or(&data).create_subdir(name)?;
            if let (true, Some((u, g))) = (created, owner) {
                next.chown(u, g)?;
            }
            here = Some(next);
        }
    }
    Ok(())
}

/// What a run did to the node.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Files written (host-root relative).
    pub written: Vec<String>,
    /// Files removed.
    pub removed: Vec<String>,
    /// The config hash now in place ("" when the registry was removed).
    pub config_hash: String,
}

/// Makes the host match the Secret (or its absence). Every key is checked, and the
/// host's directories are checked for links, before anything changes; every file is
/// then reached through directories opened without following links, written to an
/// `O_EXCL` temporary file and renamed into place, and removed only when it is a
/// regular file.
pub fn apply(
    root: &Path,
    secret: Option<&BTreeMap<String, String>>,
    hash: &str,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Applied> {
    let rel = |dir: &str, file: &OsStr| format!("{dir}/{}", file.to_string_lossy());
    let plan = match secret {
        Some(files) => {
            let mut plan: Vec<(Place, &str, &String)> = files
                .iter()
                .map(|(k, v)| target(k).map(|(place, file)| (place, file, v)))
                .collect::<anyhow::Result<_>>()?;
            if !plan.iter().any(|(p, _, _)| *p == Place::Manifest) {
                bail!("the Secret has no manifest.{MANIFEST_FILE}");
            }
            // Configs and PKI first, the manifest last.
            plan.sort();
            Some(plan)
        }
        None => None,
    };
    // The host root is trusted as given (it may be a link); only what lies below it is
    // opened without following links.
    match (&plan, root.exists()) {
        (None, false) => return Ok(Applied::default()),
        (Some(_), false) => std::fs::create_dir_all(root)
            .with_context(|| format!("{}: cannot create", root.display()))?,
        _ => {}
    }
    let host = Dir::open(root)?;
    let found = preflight(&host)?;
    let mut done = Applied::default();
    let Some(plan) = plan else {
        // Manifest first: kubelet stops the pod before its files go.
        if let Some(m) = &found.manifests {
            if m.remove_file(MANIFEST_FILE)? {
                done.removed.push(rel(MANIFEST_DIR, MANIFEST_FILE.as_ref()));
            }
        }
        for (dir, d) in [(CONFIG_DIR, &found.config), (PKI_DIR, &found.pki)] {
            if let Some(d) = d {
                for (name, _) in d.entries()? {
                    if d.remove_file(&name)? {
                        done.removed.push(rel(dir, &name));
                    }
                }
            }
        }
        return Ok(done);
    };
    ensure_data_dir(root, &host, owner)?;
    let mut dirs = BTreeMap::new();
    for (place, file, content) in &plan {
        let d = match dirs.entry(*place) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(host.walk(place.dir(), true)?.with_context(|| {
                    format!("{}: cannot create", root.join(place.dir()).display())
                })?)
            }
        };
        if d.holds(file, content.as_bytes())? {
            continue;
        }
        let staged = d.stage(file, content.as_bytes(), Some(0o600), true)?;
        if let Some((u, g)) = owner {
            staged.chown(u, g)?;
        }
        staged.commit()?;
        done.written.push(rel(place.dir(), file.as_ref()));
    }
    for place in [Place::Config, Place::Pki] {
        let Some(d) = host.walk(place.dir(), false)? else {
            continue;
        };
        let keep = |name: &OsStr| plan.iter().any(|(p, f, _)| *p == place && name == *f);
        for (name, _) in d.entries()? {
            // Not ours to keep: an old file or a temporary left by an interrupted run.
            if !keep(&name) && d.remove_file(&name)? {
                done.removed.push(rel(place.dir(), &name));
            }
        }
    }
    done.config_hash = hash.to_string();
    Ok(done)
}

/// The registry's `host:port` on this node: `http.addr` of the distribution config among
/// the node's files.
pub(crate) fn registry_addr(files: &BTreeMap<String, String>) -> Option<String> {
    #[derive(Deserialize)]
    struct Http {
        addr: String,
    }
    #[derive(Deserialize)]
    struct Dist {
        http: Http,
    }
    files
        .get("config.distribution.yaml")
        .and_then(|t| serde_yaml_ng::from_str::<Dist>(t).ok())
        .map(|d| d.http.addr)
}

/// Whether this node's registry answers, from the files it was given: its address from
/// the distribution config, trust from the CA bundle.
fn registry_health(files: &BTreeMap<String, String>) -> (RegistryHealth, String) {
    let (Some(addr), Some(ca)) = (registry_addr(files), files.get("pki.ca.crt")) else {
        return (
            RegistryHealth::Unknown,
            "no http.addr or CA in the Secret".into(),
        );
    };
    match crate::health::check_registry(&addr, ca, std::time::Duration::from_secs(3)) {
        Ok(()) => (RegistryHealth::Ready, format!("https://{addr}/v2/ answers")),
        Err(e) => (RegistryHealth::NotReady, e),
    }
}

/// The upstream of this node's Proxy registry, from its configuration: `(scheme,
/// host[:port])` of `proxy.remoteurl`.
fn upstream_of(files: &BTreeMap<String, String>) -> anyhow::Result<(String, String)> {
    #[derive(Deserialize)]
    struct Proxy {
        remoteurl: String,
    }
    #[derive(Deserialize)]
    struct Dist {
        proxy: Proxy,
    }
    let text = files
        .get(cache_only::CONFIG_KEY)
        .context("a Proxy registry's Secret without config.distribution.yaml")?;
    let dist: Dist = serde_yaml_ng::from_str(text)
        .context("config.distribution.yaml of a Proxy registry has no proxy.remoteurl")?;
    let url = reqwest::Url::parse(&dist.proxy.remoteurl)
        .context("proxy.remoteurl of config.distribution.yaml is not a URL")?;
    let host = url.host_str().context("proxy.remoteurl has no host")?;
    let host = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok((url.scheme().to_string(), host))
}

/// Probes the upstream and this master's registry, and decides from what a previous
/// run recorded whether the registry serves from its cache alone
/// ([`cache_only::decide`]).
fn upstream_state(
    files: &BTreeMap<String, String>,
    previous: &BTreeMap<String, String>,
    hysteresis: &str,
) -> anyhow::Result<UpstreamState> {
    let hysteresis = match hysteresis {
        "" => cache_only::DEFAULT_HYSTERESIS_SECS,
        h => crate::model::duration::parse(h)
            .map(|d| d.as_secs() as i64)
            .map_err(|e| anyhow::anyhow!("annotation {}: {h:?} {e}", HYSTERESIS_ANNOTATION))?,
    };
    let (scheme, host) = upstream_of(files)?;
    let answers = crate::health::upstream_answers(
        &scheme,
        &host,
        files.get("pki.upstream-ca.crt").map(String::as_str),
        std::time::Duration::from_secs(5),
    );
    let prev = UpstreamState::from_data(previous);
    // Whether the registry serves matters only while it proxies and the upstream fails.
    let serving = answers
        || prev.is_some_and(|p| p.cache_only)
        || registry_health(files).0 == RegistryHealth::Ready;
    Ok(cache_only::decide(
        prev,
        cache_only::Seen {
            answers,
            serving,
            now: crate::clock::now()?,
            hysteresis,
        },
    ))
}

/// Puts the cache-only configuration in place of the registry's, and marks the static
/// pod so that its manifest differs and kubelet restarts it with that configuration.
fn install_cache_only(files: &mut BTreeMap<String, String>, variant: String) -> anyhow::Result<()> {
    files.insert(cache_only::CONFIG_KEY.to_string(), variant);
    let key = format!("manifest.{MANIFEST_FILE}");
    let text = files
        .get(&key)
        .with_context(|| format!("the Secret has no {key}"))?;
    let mut pod: serde_json::Value =
        serde_yaml_ng::from_str(text).with_context(|| format!("{key} is not YAML"))?;
    let annotations = pod
        .pointer_mut("/metadata/annotations")
        .and_then(serde_json::Value::as_object_mut)
        .with_context(|| format!("{key} has no metadata.annotations"))?;
    annotations.insert(CACHE_ONLY_ANNOTATION.into(), "true".into());
    files.insert(key, serde_yaml_ng::to_string(&pod)?);
    Ok(())
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    let node = node_name();
    if node.is_empty() {
        bail!("NODE_NAME is not set: the DaemonSet passes it from spec.nodeName");
    }
    let root = PathBuf::from(std::env::var(HOST_ROOT_VAR).unwrap_or_else(|_| "/".into()));
    let secrets: Vec<SecretObject> = input.snapshots.get("node_config")?;
    let secret = secrets.into_iter().next();
    let (files, hash) = match &secret {
        Some(s) => {
            let decoded = secrets::SecretSnap {
                name: String::new(),
                data: s.data.clone(),
            }
            .decoded();
            if decoded.len() != s.data.len() {
                bail!(
                    "{}: a value is not base64 of UTF-8 text",
                    node_config_secret(&node)
                );
            }
            let hash = s
                .metadata
                .annotations
                .get(CONFIG_HASH_ANNOTATION)
                .cloned()
                .unwrap_or_default();
            (Some(decoded), hash)
        }
        None => (None, String::new()),
    };
    // The registry generation this Secret carries: the registry-switch hook moves the
    // cluster only once every master reports it applied and serving.
    let annotation = |key: &str| {
        secret
            .as_ref()
            .and_then(|s| s.metadata.annotations.get(key).cloned())
            .unwrap_or_default()
    };
    let generation = annotation(GENERATION_ANNOTATION);
    // Which ro password the registry accepts (a hash of its hash): the pull Secret keeps
    // the previous one beside it until every master runs the new one.
    let ro_user = annotation(RO_USER_ANNOTATION);
    let current: Vec<ConfigMapObject> = input.snapshots.get("node_status")?;
    let previous = current.first().map(|c| c.data.clone()).unwrap_or_default();
    let mut upstream = None;
    let files = match files {
        Some(mut f) => {
            if let Some(variant) = f.remove(cache_only::CACHE_ONLY_KEY) {
                let hysteresis = annotation(HYSTERESIS_ANNOTATION);
                let state = upstream_state(&f, &previous, &hysteresis)?;
                if state.cache_only {
                    install_cache_only(&mut f, variant)?;
                }
                upstream = Some(state);
            }
            Some(f)
        }
        None => None,
    };
    let applied = apply(&root, files.as_ref(), &hash, owner()?)?;
    for f in &applied.written {
        input.log.info("wrote", &[("file", serde_json::json!(f))]);
    }
    for f in &applied.removed {
        input.log.info("removed", &[("file", serde_json::json!(f))]);
    }
    let health = match &files {
        Some(f) => registry_health(f),
        None => (
            RegistryHealth::Absent,
            "no registry on this node".to_string(),
        ),
    };
    let status = NodeStatus {
        node: node.clone(),
        applied_config_hash: applied.config_hash.clone(),
        applied_generation: generation,
        applied_ro_user: ro_user,
        static_pod: if files.is_some() {
            StaticPod::Present
        } else {
            StaticPod::Absent
        },
        registry: health.0,
        message: health.1,
        upstream,
    }
    .to_data();
    input.metrics.expire("cache_only");
    if let Some(state) = upstream {
        if Some(state) != UpstreamState::from_data(&previous) {
            input.log.info(
                "upstream",
                &[
                    ("answers", serde_json::json!(state.answers)),
                    ("cacheOnly", serde_json::json!(state.cache_only)),
                ],
            );
        }
        let labels = [("node", node.as_str())];
        input.metrics.set(
            "cache_only",
            "d8_embedded_registry_cache_only",
            if state.cache_only { 1.0 } else { 0.0 },
            &labels,
        );
        input.metrics.set(
            "cache_only",
            "d8_embedded_registry_upstream_answers",
            if state.answers { 1.0 } else { 0.0 },
            &labels,
        );
    }
    if current.first().map(|c| &c.data) != Some(&status) {
        input.objects.create_or_update(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": node_status_config_map(&node),
                "namespace": NAMESPACE,
                "labels": {"heritage": "deckhouse", "module": MODULE_NAME, ROLE_LABEL: "node-status",
                           NODE_LABEL: node},
            },
            "data": status,
        }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(extra: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut m: BTreeMap<String, String> = [
            ("config.distribution.yaml", "version: 0.1\n"),
            ("pki.ca.crt", "CA\n"),
            ("manifest.embedded-registry.yaml", "kind: Pod\n"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        for (k, v) in extra {
            m.insert(k.to_string(), v.to_string());
        }
        m
    }

    #[test]
    fn writes_then_skips_then_removes_in_order() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        let a = apply(r, Some(&files(&[])), "h1", None).unwrap();
        assert_eq!(
            a.written,
            vec![
                "etc/kubernetes/registry/config/distribution.yaml",
                "etc/kubernetes/registry/pki/ca.crt",
                "etc/kubernetes/manifests/embedded-registry.yaml"
            ],
            "manifest last"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(r.join(PKI_DIR).join("ca.crt"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(r.join(DATA_DIR).is_dir());
        let again = apply(r, Some(&files(&[])), "h1", None).unwrap();
        assert!(
            again.written.is_empty() && again.removed.is_empty(),
            "{again:?}"
        );
        let changed = apply(
            r,
            Some(&files(&[
                ("pki.ca.crt", "CA2\n"),
                ("pki.upstream-ca.crt", "k"),
            ])),
            "h2",
            None,
        )
        .unwrap();
        assert_eq!(
            changed.written,
            vec![
                "etc/kubernetes/registry/pki/ca.crt",
                "etc/kubernetes/registry/pki/upstream-ca.crt"
            ]
        );
        let fewer = apply(r, Some(&files(&[])), "h3", None).unwrap();
        assert_eq!(
            fewer.removed,
            vec!["etc/kubernetes/registry/pki/upstream-ca.crt"]
        );
        let gone = apply(r, None, "", None).unwrap();
        assert_eq!(
            gone.removed[0], "etc/kubernetes/manifests/embedded-registry.yaml",
            "manifest first"
        );
        assert_eq!(gone.removed.len(), 3);
        assert!(r.join(DATA_DIR).is_dir(), "data is kept");
    }

    #[test]
    fn a_missing_host_root_is_created_for_a_secret_and_left_alone_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("host");
        assert_eq!(apply(&root, None, "", None).unwrap(), Applied::default());
        assert!(!root.exists());
        let a = apply(&root, Some(&files(&[])), "h", None).unwrap();
        assert_eq!(a.written.len(), 3);
    }

    #[test]
    fn names_that_escape_are_refused_before_anything_is_written() {
        for bad in [
            "pki...",
            "pki./etc/passwd",
            "config...evil",
            "other.file",
            "pki.",
            "manifest..hidden",
        ] {
            let root = tempfile::tempdir().unwrap();
            let e = apply(root.path(), Some(&files(&[(bad, "x")])), "h", None).unwrap_err();
            assert!(e.to_string().contains("refusing"), "{bad}: {e}");
            assert_eq!(
                std::fs::read_dir(root.path()).unwrap().count(),
                0,
                "{bad}: nothing written"
            );
        }
    }

    #[test]
    fn a_failure_before_the_manifest_leaves_no_manifest() {
        let root = tempfile::tempdir().unwrap();
        // A file where the PKI directory should be: writing PKI files fails.
        std::fs::create_dir_all(root.path().join("etc/kubernetes/registry")).unwrap();
        std::fs::write(root.path().join(PKI_DIR), "not a directory").unwrap();
        assert!(apply(root.path(), Some(&files(&[])), "h", None).is_err());
        assert!(!root
            .path()
            .join(MANIFEST_DIR)
            .join("embedded-registry.yaml")
            .exists());
    }

    #[test]
    fn only_the_registry_s_own_manifest_and_known_files_are_accepted() {
        for (bad, needle) in [
            (
                "manifest.kube-apiserver.yaml",
                "manifest.* takes embedded-registry.yaml",
            ),
            (
                "manifest.evil.yaml",
                "manifest.* takes embedded-registry.yaml",
            ),
            (
                "config.kubelet.yaml",
                "config.* takes auth.yaml, distribution.yaml",
            ),
            ("pki.extra.key", "pki.* takes auth.crt"),
        ] {
            let root = tempfile::tempdir().unwrap();
            let manifests = root.path().join(MANIFEST_DIR);
            std::fs::create_dir_all(&manifests).unwrap();
            std::fs::write(manifests.join("kube-apiserver.yaml"), "apiserver\n").unwrap();
            let e = apply(root.path(), Some(&files(&[(bad, "x")])), "h", None)
                .unwrap_err()
                .to_string();
            assert!(e.contains(&format!("{bad:?}")) && e.contains(needle), "{e}");
            assert!(
                e.contains("refusing the whole Secret") && !e.contains('\n'),
                "{e}"
            );
            let left: Vec<_> = std::fs::read_dir(&manifests).unwrap().collect();
            assert_eq!(left.len(), 1, "{bad}: nothing written");
            assert_eq!(
                std::fs::read_to_string(manifests.join("kube-apiserver.yaml")).unwrap(),
                "apiserver\n"
            );
            assert!(!root.path().join("etc/kubernetes/registry").exists());
        }
        // Every key the chart renders is accepted.
        let chart: Vec<(String, &str)> = CONFIG_FILES
            .iter()
            .map(|f| (format!("config.{f}"), "c"))
            .chain(PKI_FILES.iter().map(|f| (format!("pki.{f}"), "p")))
            .collect();
        let chart: Vec<(&str, &str)> = chart.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let root = tempfile::tempdir().unwrap();
        let a = apply(root.path(), Some(&files(&chart)), "h", None).unwrap();
        assert_eq!(a.written.len(), CONFIG_FILES.len() + PKI_FILES.len() + 1);
    }

    use std::os::unix::fs::{symlink, PermissionsExt as _};

    /// A victim directory outside the host root with one file (mode 0644) in it.
    struct Victim {
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl Victim {
        fn new() -> Victim {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("victim");
            std::fs::create_dir(&path).unwrap();
            std::fs::write(path.join("precious"), "keep me\n").unwrap();
            std::fs::set_permissions(
                path.join("precious"),
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            Victim { _dir: dir, path }
        }

        fn file(&self) -> PathBuf {
            self.path.join("precious")
        }

        /// The victim is as it was: one file, same content and mode.
        fn untouched(&self) {
            let names: Vec<_> = std::fs::read_dir(&self.path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, ["precious"], "nothing added or removed");
            assert_eq!(std::fs::read_to_string(self.file()).unwrap(), "keep me\n");
            let mode = std::fs::metadata(self.file()).unwrap().permissions().mode();
            assert_eq!(mode & 0o7777, 0o644);
        }
    }

    /// A host root that already holds an installed registry (so removal has files to
    /// remove), then `prepare` run on it.
    fn installed(prepare: impl FnOnce(&Path)) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        apply(root.path(), Some(&files(&[])), "h", None).unwrap();
        prepare(root.path());
        root
    }

    fn replace_with_link(path: &Path, to: &Path) {
        if path.is_dir() {
            std::fs::remove_dir_all(path).unwrap();
        } else if path.exists() {
            std::fs::remove_file(path).unwrap();
        }
        symlink(to, path).unwrap();
    }

    fn refused(root: &Path, secret: Option<&BTreeMap<String, String>>, path: &Path) {
        let e = apply(root, secret, "h2", None).unwrap_err().to_string();
        assert!(e.starts_with(&path.display().to_string()), "{e}");
        assert!(e.contains("symbolic link") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_symlinked_config_dir_is_neither_written_nor_emptied() {
        let victim = Victim::new();
        let root = installed(|r| replace_with_link(&r.join(CONFIG_DIR), &victim.path));
        let r = root.path();
        let manifest = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
        std::fs::remove_file(&manifest).unwrap();
        refused(r, Some(&files(&[])), &r.join(CONFIG_DIR));
        assert!(!manifest.exists(), "nothing written after the refusal");
        refused(r, None, &r.join(CONFIG_DIR));
        victim.untouched();
        assert!(r.join(PKI_DIR).join("ca.crt").exists(), "nothing removed");
    }

    #[test]
    fn a_symlinked_parent_dir_is_refused() {
        let victim = Victim::new();
        let root =
            installed(|r| replace_with_link(&r.join("etc/kubernetes/registry"), &victim.path));
        let r = root.path();
        refused(r, Some(&files(&[])), &r.join("etc/kubernetes/registry"));
        refused(r, None, &r.join("etc/kubernetes/registry"));
        victim.untouched();
    }

    #[test]
    fn a_link_at_a_temporary_or_file_name_is_never_written_through() {
        for name in [
            // The temporary name the hook used before (`.<file>.tmp-<pid>`).
            format!(".ca.crt.tmp-{}", std::process::id()),
            "ca.crt".to_string(),
            "token.key".to_string(),
        ] {
            let victim = Victim::new();
            let root =
                installed(|r| replace_with_link(&r.join(PKI_DIR).join(&name), &victim.file()));
            let r = root.path();
            let changed = files(&[("pki.ca.crt", "CA2\n"), ("pki.token.key", "K\n")]);
            refused(r, Some(&changed), &r.join(PKI_DIR).join(&name));
            refused(r, None, &r.join(PKI_DIR).join(&name));
            victim.untouched();
            assert_eq!(
                std::fs::read_to_string(r.join(MANIFEST_DIR).join(MANIFEST_FILE)).unwrap(),
                "kind: Pod\n",
                "{name}: nothing removed"
            );
        }
    }

    #[test]
    fn a_symlinked_manifests_dir_or_manifest_is_refused() {
        let victim = Victim::new();
        let root = installed(|r| replace_with_link(&r.join(MANIFEST_DIR), &victim.path));
        let r = root.path();
        refused(r, Some(&files(&[])), &r.join(MANIFEST_DIR));
        refused(r, None, &r.join(MANIFEST_DIR));
        victim.untouched();
        assert!(r.join(CONFIG_DIR).join("distribution.yaml").exists());

        let victim = Victim::new();
        let root = installed(|r| {
            replace_with_link(&r.join(MANIFEST_DIR).join(MANIFEST_FILE), &victim.file())
        });
        let r = root.path();
        let manifest = r.join(MANIFEST_DIR).join(MANIFEST_FILE);
        refused(r, Some(&files(&[])), &manifest);
        refused(r, None, &manifest);
        victim.untouched();
        assert!(std::fs::symlink_metadata(&manifest).unwrap().is_symlink());
    }

    #[test]
    fn the_data_dir_is_created_without_following_links_and_an_existing_one_is_left_alone() {
        let victim = Victim::new();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir(r.join("opt")).unwrap();
        symlink(&victim.path, r.join("opt/deckhouse")).unwrap();
        refused(r, Some(&files(&[])), &r.join("opt/deckhouse"));
        victim.untouched();
        assert!(!r.join(MANIFEST_DIR).exists(), "refused before any file");

        // A data directory the administrator linked to another disk is used as it is.
        let disk = Victim::new();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("opt/deckhouse/registry")).unwrap();
        symlink(&disk.path, r.join(DATA_DIR)).unwrap();
        apply(r, Some(&files(&[])), "h", None).unwrap();
        // Only the storage layout distribution needs is added beside what was there.
        std::fs::remove_dir_all(disk.path.join("docker")).unwrap();
        disk.untouched();
        assert!(std::fs::symlink_metadata(r.join(DATA_DIR))
            .unwrap()
            .is_symlink());
    }

    #[test]
    fn a_fresh_data_dir_holds_the_storage_layout_garbage_collection_needs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        apply(r, Some(&files(&[])), "h", None).unwrap();
        for d in STORAGE_DIRS {
            assert!(r.join(DATA_DIR).join(d).is_dir(), "{d}");
        }
        // A second run finds them and changes nothing.
        let again = apply(r, Some(&files(&[])), "h", None).unwrap();
        assert!(again.written.is_empty() && again.removed.is_empty());
    }
}
