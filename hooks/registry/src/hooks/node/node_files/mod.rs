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
//!
//! A changed configuration waits for the masters before this one ([`rollout`]: rolling
//! restarts); the status then reports what runs, not what waits.
//!
//! The handler's I/O is injected ([`handle_with`], [`io`]): the network through a
//! [`Probe`] ([`Network`] in production and end-to-end tests, a fake in unit tests, so
//! no unit test binds a port); the filesystem through the SDK's `fsutil` directory
//! handles opened below the [`Node`]'s host root ([`files`]: the injected filesystem, a
//! temporary directory in unit tests). Unit tests: `tests.rs` (the handler, its
//! snapshots built from cluster-state YAML through the hook's bindings) and
//! `files_tests.rs` ([`apply`]).
//!
//! Longer than 400 lines for a reason: one run (read the Secret, gate, write, probe,
//! report) shares the host handles and the previous status from start to end; what
//! stands alone is in `files.rs` (writing), `rollout.rs` (the gate), `warm.rs` (the
//! warm-up progress) and `io.rs` (the probes).

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};
use hook_sdk::config::{LabelSelector, LabelSelectorRequirement, NamespaceSelector};
use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, ScheduleBinding};
use serde::Deserialize;

use crate::cache_only;
use crate::hooks::{named_binding, node_name};
use crate::model::node_status::{NodeStatus, RegistryHealth, Rollout, StaticPod, UpstreamState};
use crate::module::{
    node_config_secret, node_status_config_map, CACHE_ONLY_ANNOTATION, CONFIG_HASH_ANNOTATION,
    GC_WINDOW_ANNOTATION, GENERATION_ANNOTATION, HYSTERESIS_ANNOTATION, MODULE_NAME, NAMESPACE,
    NODE_LABEL, ROLE_LABEL, RO_USER_ANNOTATION,
};
use crate::secrets;

pub mod files;
pub mod io;
pub mod rollout;
pub mod warm;

pub use files::{
    apply, Applied, CONFIG_DIR, CONFIG_FILES, DATA_DIR, MANIFEST_DIR, MANIFEST_FILE, PKI_DIR,
    PKI_FILES, STORAGE_DIRS,
};
pub use io::{
    Network, Node, Probe, DEFAULT_OWNER, HOST_ROOT_VAR, OWNER_VAR, REGISTRY_PROBE_TIMEOUT,
    UPSTREAM_PROBE_TIMEOUT,
};

/// The hook; its bindings name this node's objects, so it reads `NODE_NAME`.
pub fn hook() -> Hook {
    Hook::new(config(&node_name()), handle)
}

/// What the hook keeps of another master's status ConfigMap (binding `masters_status`):
/// its name and the two keys the rollout gate reads.
pub const PEER_FILTER: &str = r#"{name: .metadata.name, appliedConfigHash: (.data.appliedConfigHash // ""), registry: (.data.registry // "")}"#;

/// The bindings every run needs the snapshots of: events of one binding carry the
/// others' (shell-operator's `includeSnapshotsFrom`), so a run never mistakes a
/// snapshot it was not given for an empty one.
const SNAPSHOTS: [&str; 3] = ["node_config", "node_status", "masters_status"];

/// The hook's configuration on node `node`: its bindings name that node's Secret and
/// status ConfigMap, and select the other masters' status ConfigMaps (the rollout gate:
/// a change of theirs runs the hook).
pub(crate) fn config(node: &str) -> HookConfig {
    let include: Vec<String> = SNAPSHOTS.iter().map(|s| s.to_string()).collect();
    HookConfig {
        name: "node-files".into(),
        kubernetes: vec![
            KubernetesBinding {
                include_snapshots_from: include.clone(),
                ..named_binding("node_config", "Secret", node_config_secret(node))
            },
            KubernetesBinding {
                execute_hook_on_event: Some(vec![]),
                execute_hook_on_synchronization: Some(false),
                ..named_binding("node_status", "ConfigMap", node_status_config_map(node))
            },
            KubernetesBinding {
                namespace: Some(NamespaceSelector::names(&[NAMESPACE])),
                label_selector: Some(LabelSelector {
                    match_labels: BTreeMap::from([(ROLE_LABEL.into(), "node-status".into())]),
                    match_expressions: vec![LabelSelectorRequirement {
                        key: NODE_LABEL.into(),
                        operator: "NotIn".into(),
                        values: vec![node.into()],
                    }],
                }),
                jq_filter: Some(PEER_FILTER.into()),
                include_snapshots_from: include.clone(),
                ..KubernetesBinding::new("masters_status", "v1", "ConfigMap")
            },
        ],
        schedule: vec![ScheduleBinding {
            include_snapshots_from: include,
            // Re-checks health and re-applies files (repairs manual edits).
            ..ScheduleBinding::new("resync", "* * * * *")
        }],
        ..Default::default()
    }
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
#[serde(rename_all = "camelCase")]
struct PeerSnap {
    name: String,
    applied_config_hash: String,
    registry: String,
}

#[derive(Deserialize)]
struct ConfigMapObject {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

/// What the node hook reads of the distribution config among the node's files.
#[derive(Deserialize)]
struct DistHttp {
    addr: String,
    #[serde(default)]
    headers: BTreeMap<String, Vec<String>>,
}

/// The `http` section of the node's distribution config (`None`: none that parses).
fn dist_http(files: &BTreeMap<String, String>) -> Option<DistHttp> {
    #[derive(Deserialize)]
    struct Dist {
        http: DistHttp,
    }
    files
        .get("config.distribution.yaml")
        .and_then(|t| serde_yaml_ng::from_str::<Dist>(t).ok())
        .map(|d| d.http)
}

/// The registry's `host:port` on this node: `http.addr` of the distribution config among
/// the node's files.
pub(crate) fn registry_addr(files: &BTreeMap<String, String>) -> Option<String> {
    dist_http(files).map(|h| h.addr)
}

/// Which files a registry runs: the [`crate::health::CONFIG_ID_HEADER`] the chart put
/// into its distribution config (`None`: a configuration without one).
fn config_id(files: &BTreeMap<String, String>) -> Option<String> {
    dist_http(files)
        .and_then(|mut h| h.headers.remove(crate::health::CONFIG_ID_HEADER))
        .and_then(|v| v.into_iter().next())
}

/// Whether this node's registry answers, from the files it was given: its address from
/// the distribution config, trust from the CA bundle. With `installed`, the files are
/// the ones on the node, and the registry counts as ready only when it announces their
/// [`config_id`]: an older process (kubelet has not restarted the pod yet) is not ready
/// on them.
fn registry_health(
    files: &BTreeMap<String, String>,
    probe: &dyn Probe,
    installed: bool,
) -> (RegistryHealth, String) {
    let (Some(addr), Some(ca)) = (registry_addr(files), files.get("pki.ca.crt")) else {
        return (
            RegistryHealth::Unknown,
            "no http.addr or CA in the Secret".into(),
        );
    };
    let expected = if installed { config_id(files) } else { None };
    match probe.registry_config(&addr, ca) {
        Ok(served) => match expected {
            Some(want) if served.as_deref() != Some(want.as_str()) => (
                RegistryHealth::NotReady,
                format!(
                    "https://{addr}/v2/ answers, but not with the configuration installed: \
                     kubelet has not restarted the registry onto it yet"
                ),
            ),
            _ => (RegistryHealth::Ready, format!("https://{addr}/v2/ answers")),
        },
        Err(e) => (RegistryHealth::NotReady, e.to_string()),
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
    probe: &dyn Probe,
) -> anyhow::Result<UpstreamState> {
    let hysteresis = match hysteresis {
        "" => cache_only::DEFAULT_HYSTERESIS_SECS,
        h => crate::model::duration::parse(h)
            .map(|d| d.as_secs() as i64)
            .map_err(|e| anyhow::anyhow!("annotation {}: {h:?} {e}", HYSTERESIS_ANNOTATION))?,
    };
    let (scheme, host) = upstream_of(files)?;
    let answers = probe.upstream(
        &scheme,
        &host,
        files.get("pki.upstream-ca.crt").map(String::as_str),
    );
    let prev = UpstreamState::from_data(previous);
    // Whether the registry serves matters only while it proxies and the upstream fails.
    let serving = answers
        || prev.is_some_and(|p| p.cache_only)
        || registry_health(files, probe, false).0 == RegistryHealth::Ready;
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

/// The rollout gate for this run ([`rollout`]); `None` when the change is not gated: no
/// Secret (a removal), nothing changed, a first install (no manifest on the host), or a
/// Proxy registry switching between proxying and cache-only. The order annotation is
/// checked whenever there is a Secret, before anything is written.
#[allow(clippy::too_many_arguments)]
fn rollout_gate(
    input: &HookInput,
    node: &str,
    host: &Node,
    annotation: &dyn Fn(&str) -> String,
    has_secret: bool,
    hash: &str,
    prev: &NodeStatus,
    upstream: Option<UpstreamState>,
) -> anyhow::Result<Option<rollout::Decision>> {
    if !has_secret {
        return Ok(None);
    }
    let ahead = rollout::before(&annotation(rollout::ORDER_ANNOTATION), node)
        .map_err(|e| anyhow::anyhow!("{}: {e}", node_config_secret(node)))?;
    let flip =
        matches!((prev.upstream, upstream), (Some(p), Some(u)) if p.cache_only != u.cache_only);
    if hash == prev.applied_config_hash || flip || !files::manifest_present(&host.root)? {
        return Ok(None);
    }
    let peers = input
        .snapshots
        .get::<PeerSnap>("masters_status")?
        .into_iter()
        .map(|p| {
            (
                p.name,
                rollout::Peer {
                    applied_config_hash: p.applied_config_hash,
                    registry: NodeStatus::from_data(&BTreeMap::from([(
                        "registry".to_string(),
                        p.registry,
                    )]))
                    .registry,
                },
            )
        })
        .collect::<BTreeMap<_, _>>();
    // Peers by node name: only the status ConfigMap of that name counts for a master.
    let peers = ahead
        .iter()
        .filter_map(|(name, _)| {
            peers
                .get(&node_status_config_map(name))
                .map(|p| (name.clone(), p.clone()))
        })
        .collect();
    Ok(Some(rollout::decide(
        &ahead,
        &peers,
        prev.rollout.as_ref().map(|r| r.since),
        crate::clock::now()?,
    )))
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    handle_with(input, &Node::from_env()?, &Network)
}

/// The handler with its I/O injected: the network through `probe`, the filesystem
/// below `host.root` through [`apply`]'s directory handles.
pub fn handle_with(input: &mut HookInput, host: &Node, probe: &dyn Probe) -> anyhow::Result<()> {
    let node = host.name.clone();
    if !input.snapshots.has("node_config") {
        bail!("the run carries no snapshot of binding node_config: nothing is changed (the hook's bindings include it in every run)");
    }
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
    // Which ro password the registry accepts (the ro user's revision): the pull Secret keeps
    // the previous one beside it until every master runs the new one.
    let ro_user = annotation(RO_USER_ANNOTATION);
    // The garbage-collection window of the files (S3): reported, like the ro user, only
    // once the registry runs them, so the window advances on what really runs.
    let gc_window = annotation(GC_WINDOW_ANNOTATION);
    let current: Vec<ConfigMapObject> = input.snapshots.get("node_status")?;
    let previous = current.first().map(|c| c.data.clone()).unwrap_or_default();
    let mut upstream = None;
    let files = match files {
        Some(mut f) => {
            if let Some(variant) = f.remove(cache_only::CACHE_ONLY_KEY) {
                let hysteresis = annotation(HYSTERESIS_ANNOTATION);
                let state = upstream_state(&f, &previous, &hysteresis, probe)?;
                if state.cache_only {
                    install_cache_only(&mut f, variant)?;
                }
                upstream = Some(state);
            }
            Some(f)
        }
        None => None,
    };
    if files
        .as_ref()
        .is_some_and(|f| f.contains_key(warm::LIST_KEY))
    {
        warm::ensure_dir(&host.root, host.owner)?;
    }
    let prev = NodeStatus::from_data(&previous);
    let gate = rollout_gate(
        input,
        &node,
        host,
        &annotation,
        files.is_some(),
        &hash,
        &prev,
        upstream,
    )?;
    let hold = match &gate {
        Some(rollout::Decision::Wait { waiting_for, since }) => Some(Rollout {
            waiting_for: waiting_for.clone(),
            since: *since,
        }),
        Some(rollout::Decision::Install { overdue }) if !overdue.is_empty() => {
            input.log.warn(
                "installing a changed configuration past the rollout bound",
                &[
                    ("overdue", serde_json::json!(overdue)),
                    ("boundSeconds", serde_json::json!(rollout::BOUND_SECS)),
                ],
            );
            None
        }
        _ => None,
    };
    let applied = match &hold {
        // The running configuration stays: nothing on the host changes.
        Some(_) => Applied {
            config_hash: prev.applied_config_hash.clone(),
            ..Applied::default()
        },
        None => apply(&host.root, files.as_ref(), &hash, host.owner)?,
    };
    for f in &applied.written {
        input.log.info("wrote", &[("file", serde_json::json!(f))]);
    }
    for f in &applied.removed {
        input.log.info("removed", &[("file", serde_json::json!(f))]);
    }
    let health = match &files {
        Some(f) => registry_health(f, probe, hold.is_none()),
        None => (
            RegistryHealth::Absent,
            "no registry on this node".to_string(),
        ),
    };
    let (generation, ro_user, gc_window) = match &hold {
        Some(_) => (
            prev.applied_generation.clone(),
            prev.applied_ro_user.clone(),
            prev.applied_gc_window.clone(),
        ),
        None => (generation, ro_user, gc_window),
    };
    // The pull Secret drops the previous ro password once every master reports the new
    // one: report it only once the registry serves the installed files (their users).
    let (ro_user, gc_window) = match (&files, health.0) {
        (Some(_), RegistryHealth::Ready) | (None, _) => (ro_user, gc_window),
        _ => (prev.applied_ro_user.clone(), prev.applied_gc_window.clone()),
    };
    input.metrics.expire("rollout");
    let waited = hold
        .as_ref()
        .map_or(Ok(0), |r| crate::clock::now().map(|now| now - r.since))?;
    input.metrics.set(
        "rollout",
        "d8_embedded_registry_rollout_wait_seconds",
        waited as f64,
        &[("node", node.as_str())],
    );
    if let Some(r) = &hold {
        if prev.rollout.as_ref() != Some(r) {
            input.log.info(
                "holding a changed configuration back",
                &[("waitingFor", serde_json::json!(r.waiting_for))],
            );
        }
    }
    let warm = files.as_ref().and_then(|f| warm::status(f, &host.root));
    if let Some((_, Some(e))) = &warm {
        input
            .log
            .warn("warm progress refused", &[("error", serde_json::json!(e))]);
    }
    let warm = warm.map(|(w, _)| w);
    warm::metrics(&mut input.metrics, &node, warm.as_ref(), upstream);
    let status = NodeStatus {
        node: node.clone(),
        applied_config_hash: applied.config_hash.clone(),
        applied_generation: generation,
        applied_ro_user: ro_user,
        applied_gc_window: gc_window,
        static_pod: if files.is_some() {
            StaticPod::Present
        } else {
            StaticPod::Absent
        },
        registry: health.0,
        message: health.1,
        upstream,
        rollout: hold,
        warm,
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
mod tests;
