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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, ScheduleBinding};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::{named_binding, node_name};
use crate::secrets::{self, NAMESPACE};

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
/// The status ConfigMap of a node.
pub fn status_name(node: &str) -> String {
    format!("registry-node-{node}-status")
}

/// The hook; its bindings name this node's objects, so it reads `NODE_NAME`.
pub fn hook() -> Hook {
    let node = node_name();
    Hook::new(
        HookConfig {
            name: "node-files".into(),
            kubernetes: vec![
                named_binding(
                    "node_config",
                    "Secret",
                    format!("registry-node-{node}-config"),
                ),
                KubernetesBinding {
                    execute_hook_on_event: Some(vec![]),
                    execute_hook_on_synchronization: Some(false),
                    ..named_binding("node_status", "ConfigMap", status_name(&node))
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

/// Where a Secret key lands: `config.<file>`, `pki.<file>` or `manifest.<file>`.
fn target(root: &Path, key: &str) -> anyhow::Result<(u8, PathBuf)> {
    let (dir, file) = key.split_once('.').unwrap_or(("", key));
    let valid = !file.is_empty()
        && file != "."
        && file != ".."
        && !file.starts_with('.')
        && file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    let (order, base) = match dir {
        "config" => (0, CONFIG_DIR),
        "pki" => (0, PKI_DIR),
        "manifest" => (1, MANIFEST_DIR),
        _ => bail!("Secret key {key:?}: not config.*, pki.* or manifest.*: refusing it"),
    };
    if !valid {
        bail!("Secret key {key:?}: file name would escape {base}: refusing the whole Secret");
    }
    Ok((order, root.join(base).join(file)))
}

fn sha(bytes: &[u8]) -> Vec<u8> {
    Sha256::digest(bytes).to_vec()
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

/// Writes `content` to `path` unless it already holds it; returns whether it wrote.
fn put(path: &Path, content: &[u8], owner: Option<(u32, u32)>) -> anyhow::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| sha(&old) == sha(content)) {
        return Ok(false);
    }
    let dir = path.parent().expect("files live in directories");
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let staged = hook_sdk::fsutil::stage(path, content, Some(0o600))?;
    if let Some((u, g)) = owner {
        chown(staged.path(), u, g)?;
    }
    staged.commit()?;
    Ok(true)
}

fn chown(path: &Path, uid: u32, gid: u32) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .with_context(|| format!("{}: cannot chown to {uid}:{gid}", path.display()))
}

fn remove(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("{}: cannot remove", path.display())),
    }
}

/// Files in `dir` (ours entirely) that `keep` does not list.
fn stale(dir: &Path, keep: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && !keep.contains(p))
        .collect();
    out.sort();
    out
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

/// Makes the host match the Secret (or its absence).
pub fn apply(
    root: &Path,
    secret: Option<&BTreeMap<String, String>>,
    hash: &str,
    owner: Option<(u32, u32)>,
) -> anyhow::Result<Applied> {
    let rel = |p: &Path| p.strip_prefix(root).unwrap_or(p).display().to_string();
    let manifest = root.join(MANIFEST_DIR).join("embedded-registry.yaml");
    let mut done = Applied::default();
    let Some(files) = secret else {
        // Manifest first: kubelet stops the pod before its files go.
        if remove(&manifest)? {
            done.removed.push(rel(&manifest));
        }
        for dir in [CONFIG_DIR, PKI_DIR] {
            for f in stale(&root.join(dir), &[]) {
                remove(&f)?;
                done.removed.push(rel(&f));
            }
        }
        return Ok(done);
    };
    // Check every name before touching anything.
    let mut plan: Vec<(u8, PathBuf, &String)> = files
        .iter()
        .map(|(k, v)| target(root, k).map(|(order, path)| (order, path, v)))
        .collect::<anyhow::Result<_>>()?;
    if !plan.iter().any(|(_, p, _)| *p == manifest) {
        bail!("the Secret has no manifest.embedded-registry.yaml");
    }
    plan.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    let data = root.join(DATA_DIR);
    if !data.exists() {
        std::fs::create_dir_all(&data)
            .with_context(|| format!("{}: cannot create", data.display()))?;
        if let Some((u, g)) = owner {
            chown(&data, u, g)?;
        }
    }
    let keep: Vec<PathBuf> = plan.iter().map(|(_, p, _)| p.clone()).collect();
    for (_, path, content) in &plan {
        if put(path, content.as_bytes(), owner)? {
            done.written.push(rel(path));
        }
    }
    for dir in [CONFIG_DIR, PKI_DIR] {
        for f in stale(&root.join(dir), &keep) {
            remove(&f)?;
            done.removed.push(rel(&f));
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
fn registry_health(files: &BTreeMap<String, String>) -> (String, String) {
    let (Some(addr), Some(ca)) = (registry_addr(files), files.get("pki.ca.crt")) else {
        return ("unknown".into(), "no http.addr or CA in the Secret".into());
    };
    match crate::health::check_registry(&addr, ca, std::time::Duration::from_secs(3)) {
        Ok(()) => ("ready".into(), format!("https://{addr}/v2/ answers")),
        Err(e) => ("not-ready".into(), e),
    }
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
                bail!("registry-node-{node}-config: a value is not base64 of UTF-8 text");
            }
            let hash = s
                .metadata
                .annotations
                .get("embedded-registry.deckhouse.io/config-hash")
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
    let generation = annotation("embedded-registry.deckhouse.io/generation");
    // Which ro password the registry accepts (a hash of its hash): the pull Secret keeps
    // the previous one beside it until every master runs the new one.
    let ro_user = annotation(crate::pull_secret::RO_USER_ANNOTATION);
    let applied = apply(&root, files.as_ref(), &hash, owner()?)?;
    for f in &applied.written {
        input.log.info("wrote", &[("file", serde_json::json!(f))]);
    }
    for f in &applied.removed {
        input.log.info("removed", &[("file", serde_json::json!(f))]);
    }
    let health = match &files {
        Some(f) => registry_health(f),
        None => ("absent".to_string(), "no registry on this node".to_string()),
    };
    let status = BTreeMap::from([
        ("node".to_string(), node.clone()),
        ("appliedConfigHash".to_string(), applied.config_hash.clone()),
        ("appliedGeneration".to_string(), generation),
        ("appliedRoUser".to_string(), ro_user),
        (
            "staticPod".to_string(),
            if files.is_some() { "present" } else { "absent" }.to_string(),
        ),
        ("registry".to_string(), health.0),
        ("message".to_string(), health.1),
    ]);
    let current: Vec<ConfigMapObject> = input.snapshots.get("node_status")?;
    if current.first().map(|c| &c.data) != Some(&status) {
        input.objects.create_or_update(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": status_name(&node),
                "namespace": NAMESPACE,
                "labels": {"heritage": "deckhouse", "module": "embedded-registry", secrets::ROLE_LABEL: "node-status",
                           "embedded-registry.deckhouse.io/node": node},
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
            Some(&files(&[("pki.ca.crt", "CA2\n"), ("pki.extra.key", "k")])),
            "h2",
            None,
        )
        .unwrap();
        assert_eq!(
            changed.written,
            vec![
                "etc/kubernetes/registry/pki/ca.crt",
                "etc/kubernetes/registry/pki/extra.key"
            ]
        );
        let fewer = apply(r, Some(&files(&[])), "h3", None).unwrap();
        assert_eq!(fewer.removed, vec!["etc/kubernetes/registry/pki/extra.key"]);
        let gone = apply(r, None, "", None).unwrap();
        assert_eq!(
            gone.removed[0], "etc/kubernetes/manifests/embedded-registry.yaml",
            "manifest first"
        );
        assert_eq!(gone.removed.len(), 3);
        assert!(r.join(DATA_DIR).is_dir(), "data is kept");
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
}
