//! Node hook `rotate` (shell-operator in the manager DaemonSet, classic protocol): once a
//! day, on the master whose registry holds the mirror, plans the rotation of old
//! releases and, when `detached.rotation.enabled`, applies it through the local
//! registry with the `rw` user. After it deleted anything it restarts the registry's
//! static pod, whose `garbage-collect` init container then frees the blobs with the
//! registry stopped (see [`restart_for_gc`] and `docs/internal/rotation.md`); on S3
//! (`gc: window`) it runs on the one master the ConfigMap names and asks the module for
//! a garbage-collection window instead (ConfigMap `registry-gc-request`), since every
//! master writes to the shared bucket.
//!
//! Inputs, all from the module namespace:
//! - ConfigMap `registry-rotation` (rendered by the chart in Detached mode): `enabled`,
//!   `keepReleases`, `minAge`, `path` (the mirror's root repository), and
//!   `keepReleases`-exempt `runningReleases` (comma-separated);
//! - this node's Secret `registry-node-<node>-config` (registry address, CA bundle);
//! - Secret `registry-user-rw` (the user with the delete right).
//!
//! Metrics (group `rotation`, label `node`): releases kept, manifests deleted, bytes
//! freed, `..._failed` (1 when the last run stopped on an error); and, never expired,
//! the last success time.
//!
//! The handler's I/O is injected ([`handle_with`]): the registry through a
//! [`Registry`] ([`rotation::Network`] in production and end-to-end tests, a fake in unit
//! tests, so no unit test opens a socket), and the host root the manifest is moved
//! under, reached only through the SDK's `fsutil` directory handles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, ScheduleBinding};

use super::node_files::{registry_addr, HOST_ROOT_VAR};
use crate::distribution::{Credentials, Endpoint};
use crate::hooks::{named_binding, node_name};
use crate::model::gc_window::Request;
use crate::module::{
    node_config_secret, user_secret, Role, GC_REQUEST_CONFIG_MAP, MODULE_NAME, NAMESPACE,
};
use crate::rotation::plan::Policy;
use crate::rotation::run::Job;
use crate::rotation::{self, Registry};
use crate::secrets;

/// The ConfigMap with the rotation settings.
pub const CONFIG_MAP: &str = "registry-rotation";
/// Metric group replaced on every run.
pub const GROUP: &str = "rotation";
/// Metric group of the last success time (never expired).
pub const SUCCESS_GROUP: &str = "rotation_success";

/// The hook.
pub fn hook() -> Hook {
    Hook::new(config(&node_name()), handle)
}

/// The hook's configuration on node `node`: its bindings name that node's Secret.
pub(crate) fn config(node: &str) -> HookConfig {
    // Snapshots only: the daily schedule runs the hook.
    let named = |binding: &str, kind: &str, name: String| KubernetesBinding {
        execute_hook_on_event: Some(vec![]),
        execute_hook_on_synchronization: Some(false),
        ..named_binding(binding, kind, name)
    };
    HookConfig {
        name: "rotate".into(),
        kubernetes: vec![
            named("rotation_config", "ConfigMap", CONFIG_MAP.into()),
            named("node_config", "Secret", node_config_secret(node)),
            named("user_rw", "Secret", user_secret(Role::Rw)),
        ],
        schedule: vec![ScheduleBinding {
            include_snapshots_from: vec![
                "rotation_config".into(),
                "node_config".into(),
                "user_rw".into(),
            ],
            ..ScheduleBinding::new("daily", "41 3 * * *")
        }],
        ..Default::default()
    }
}

/// The rotation settings as the ConfigMap carries them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Apply (else plan only).
    pub enabled: bool,
    /// Latest releases to keep.
    pub keep: usize,
    /// Minimum age in seconds.
    pub min_age_secs: i64,
    /// Root repository of the mirror.
    pub path: String,
    /// Releases that always stay.
    pub running: Vec<String>,
    /// The one master that rotates (empty: any master that holds the registry; on S3
    /// every master serves the same bucket, so the chart names the first).
    pub node: String,
    /// How deleted manifests' blobs are freed.
    pub gc: Gc,
}

/// How the blobs of deleted manifests are freed (the ConfigMap's `gc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gc {
    /// Restart the registry: its `garbage-collect` init container runs at every start
    /// (a mirror on the master's disk; `restart`, the default).
    Restart,
    /// Ask the module for a garbage-collection window (`window`: a shared S3 bucket,
    /// where no registry may write while one collects): ConfigMap `registry-gc-request`.
    Window,
}

/// Reads the ConfigMap's data; `Err` names the key and the fix.
pub fn settings(data: &BTreeMap<String, String>) -> anyhow::Result<Settings> {
    let get = |k: &str| data.get(k).map(|v| v.trim()).unwrap_or("");
    let keep: usize = get("keepReleases")
        .parse()
        .ok()
        .filter(|k| *k >= 1)
        .with_context(|| format!("{CONFIG_MAP}: keepReleases must be a number of at least 1"))?;
    let min_age = crate::model::duration::parse(get("minAge"))
        .map_err(|e| anyhow::anyhow!("{CONFIG_MAP}: minAge {:?} {e}", get("minAge")))?;
    let gc = match get("gc") {
        "" | "restart" => Gc::Restart,
        "window" => Gc::Window,
        _ => anyhow::bail!("{CONFIG_MAP}: gc must be restart or window"),
    };
    let node = get("node");
    if !node.is_empty() && crate::untrusted::node_name(node).is_err() {
        anyhow::bail!("{CONFIG_MAP}: node is not a node name");
    }
    let path = get("path").trim_matches('/').to_string();
    if path.is_empty() {
        anyhow::bail!("{CONFIG_MAP}: path (the mirror's root repository) is empty");
    }
    Ok(Settings {
        enabled: get("enabled") == "true",
        keep,
        min_age_secs: min_age.as_secs() as i64,
        path,
        running: get("runningReleases")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        node: node.to_string(),
        gc,
    })
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var(HOST_ROOT_VAR).unwrap_or_else(|_| "/".into()));
    handle_with(input, &node_name(), &root, &rotation::Network)
}

/// The handler, given its I/O: the node it runs on, the host root (where the static pod
/// manifest is moved for a restart) and the registry to rotate through.
pub fn handle_with(
    input: &mut HookInput,
    node: &str,
    root: &Path,
    registry: &dyn Registry,
) -> anyhow::Result<()> {
    let first = |input: &HookInput, b: &str| -> anyhow::Result<Option<BTreeMap<String, String>>> {
        Ok(input
            .snapshots
            .get::<crate::hooks::DataSnap>(b)?
            .into_iter()
            .next()
            .map(|o| o.data))
    };
    let config = first(input, "rotation_config")?;
    let node_secret = first(input, "node_config")?;
    let user = first(input, "user_rw")?;
    input.metrics.expire(GROUP);
    let (Some(config), Some(node_secret), Some(user)) = (config, node_secret, user) else {
        // Not Detached, or this master holds no registry: nothing to rotate here.
        return Ok(());
    };
    let labels = [("node", node)];
    let decode = |m: BTreeMap<String, String>| {
        secrets::SecretSnap {
            name: String::new(),
            data: m,
        }
        .decoded()
    };
    let files = decode(node_secret);
    let user = decode(user);
    let parsed = settings(&config);
    if let Ok(s) = &parsed {
        if !s.node.is_empty() && s.node != node {
            // Another master rotates the shared mirror.
            return Ok(());
        }
    }
    let gc_mode = parsed.as_ref().map_or(Gc::Restart, |s| s.gc);
    let job = (|| -> anyhow::Result<Job> {
        let s = parsed?;
        let addr = registry_addr(&files)
            .context("the node's Secret has no http.addr in config.distribution.yaml")?;
        let ca = files
            .get("pki.ca.crt")
            .cloned()
            .context("the node's Secret has no pki.ca.crt")?;
        let (Some(name), Some(password)) = (user.get("name"), user.get("password")) else {
            anyhow::bail!("Secret {} has no name or password", user_secret(Role::Rw));
        };
        Ok(Job {
            endpoint: Endpoint {
                scheme: "https".into(),
                host: addr,
                credentials: Some(Credentials {
                    user: name.clone(),
                    password: password.clone(),
                }),
                ca_pem: Some(ca),
                ca_only: true,
                resolve: Vec::new(),
            },
            path: s.path,
            policy: Policy {
                keep: s.keep,
                keep_releases: s.running,
                min_age_secs: s.min_age_secs,
                now: crate::clock::now()?,
            },
            apply: s.enabled,
            timeout: Duration::from_secs(1800),
        })
    })();
    // The contract of a failed rotation: the hook run succeeds (exit 0) and reports it
    // through `d8_embedded_registry_rotation_failed` and an error line. An error exit
    // would lose the metric (the runtime writes no output of a failed run) and make
    // shell-operator retry the hook, holding up node-files in the same queue.
    let job = match job {
        Ok(j) => j,
        Err(e) => {
            input.log.error(
                "rotation not started",
                &[("error", serde_json::json!(e.to_string()))],
            );
            input
                .metrics
                .set(GROUP, "d8_embedded_registry_rotation_failed", 1.0, &labels);
            return Ok(());
        }
    };
    let report = registry.execute(&job);
    let plan = report.plan.as_ref();
    let deleted = report.applied.as_ref().map_or(0, |a| a.deleted);
    let freed = report.applied.as_ref().map_or(0, |a| a.freed_bytes);
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_rotation_releases_kept",
        plan.map_or(0, |p| p.kept.len()) as f64,
        &labels,
    );
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_rotation_manifests_deleted",
        deleted as f64,
        &labels,
    );
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_rotation_freed_bytes",
        freed as f64,
        &labels,
    );
    let mut failure = report
        .failure
        .as_ref()
        .map(|f| (f.stage.to_string(), f.message.clone()));
    if failure.is_none() && deleted > 0 && gc_mode == Gc::Window {
        // A shared bucket: the module collects in a window with every master read-only.
        let request = Request {
            id: job.policy.now.to_string(),
            node: node.to_string(),
        };
        input.objects.create_or_update(serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": GC_REQUEST_CONFIG_MAP,
                "namespace": NAMESPACE,
                "labels": {"heritage": "deckhouse", "module": MODULE_NAME},
            },
            "data": request.to_data(),
        }));
        input.log.info(
            "garbage collection requested",
            &[("window", serde_json::json!(request.id))],
        );
    } else if failure.is_none() && deleted > 0 {
        // Deleted manifests free nothing until garbage collection, which needs the
        // registry stopped: restart it, and its init container collects.
        let ca = job.endpoint.ca_pem.as_deref().unwrap_or_default();
        let waits = (GC_STOP_WAIT, GC_START_WAIT);
        match restart_for_gc(root, &job.endpoint.host, ca, registry, waits) {
            Ok(()) => input
                .log
                .info("registry restarted for garbage collection", &[]),
            Err(e) => failure = Some(("gc".into(), e.to_string())),
        }
    }
    input.metrics.set(
        GROUP,
        "d8_embedded_registry_rotation_failed",
        if failure.is_none() { 0.0 } else { 1.0 },
        &labels,
    );
    match &failure {
        None => {
            input.metrics.expire(SUCCESS_GROUP);
            input.metrics.set(
                SUCCESS_GROUP,
                "d8_embedded_registry_rotation_last_success_timestamp_seconds",
                job.policy.now as f64,
                &labels,
            );
            input.log.info(
                if job.apply {
                    "rotation applied"
                } else {
                    "rotation planned (disabled: nothing deleted)"
                },
                &[
                    ("kept", serde_json::json!(plan.map_or(0, |p| p.kept.len()))),
                    (
                        "planned",
                        serde_json::json!(plan.map_or(0, |p| p.deletions.len())),
                    ),
                    ("deleted", serde_json::json!(deleted)),
                ],
            );
        }
        Some((stage, message)) => input.log.error(
            "rotation stopped",
            &[
                ("stage", serde_json::json!(stage)),
                ("error", serde_json::json!(message)),
            ],
        ),
    }
    Ok(())
}

#[path = "rotate_gc.rs"]
mod gc;

pub use gc::{restart_for_gc, GcError, ASIDE_DIR, ASIDE_FILE};
use gc::{GC_START_WAIT, GC_STOP_WAIT};

#[cfg(test)]
#[path = "rotate_tests.rs"]
mod tests;
