//! Hook configuration: what a hook binds to, in the two serialisations runners read.
//!
//! [`HookConfig::classic_json`] emits shell-operator's `configVersion: v1` document (what
//! `<hook> --config` prints); [`HookConfig::batch_json`] emits one entry of module-sdk's
//! batch document (what `hook config` prints). The batch format is narrower: it cannot
//! express `beforeDeleteHelm`, per-schedule options, event subsets or binding groups, and
//! [`HookConfig::batch_json`] refuses a hook that uses them rather than drop them silently.
//!
//! Longer than 400 lines for a reason: the binding types, their checks
//! ([`HookConfig::validate`]) and the two serialisations are one contract, read side by
//! side to see that both runners get the same hook; its unit tests are in
//! `config_tests.rs`.

use std::time::Duration;

use serde::{Deserialize as _, Serialize};
use serde_json::{json, Map, Value};

/// A hook configuration neither runner would accept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The hook has no name.
    #[error("hook config: name is empty")]
    NoName,
    /// The hook has no binding at all.
    #[error("hook {hook}: no binding: it would never run")]
    NoTrigger {
        /// The hook.
        hook: String,
    },
    /// `onStartup` together with kubernetes bindings (module-sdk refuses it).
    #[error("hook {hook}: onStartup cannot be combined with kubernetes bindings (an onStartup context has no snapshots)")]
    StartupWithKubernetes {
        /// The hook.
        hook: String,
    },
    /// A kubernetes binding without name, apiVersion or kind.
    #[error("hook {hook}: a kubernetes binding needs name, apiVersion and kind")]
    IncompleteBinding {
        /// The hook.
        hook: String,
    },
    /// Two bindings with one name.
    #[error("hook {hook}: duplicate binding name {binding}")]
    DuplicateBinding {
        /// The hook.
        hook: String,
        /// The name used twice.
        binding: String,
    },
    /// A crontab that does not parse: a wrong number of fields, or a field's value out
    /// of its range.
    #[error("hook {hook}: crontab {crontab:?} is not valid ({reason}): it must have 5 fields (minute hour day-of-month month day-of-week), or 6 with seconds first")]
    Crontab {
        /// The hook.
        hook: String,
        /// The crontab given.
        crontab: String,
        /// What the parser refused, naming the field where it can.
        reason: String,
    },
    /// A Helm lifecycle binding asked of plain shell-operator.
    #[error("hook {hook}: {key} exists only for addon-operator module hooks")]
    ShellLifecycle {
        /// The hook.
        hook: String,
        /// `beforeHelm`, `afterHelm`, `beforeDeleteHelm` or `afterDeleteHelm`.
        key: &'static str,
    },
    /// `beforeDeleteHelm` in the batch format, which lacks it.
    #[error("hook {hook}: the batch protocol has no beforeDeleteHelm; use afterDeleteHelm")]
    BatchBeforeDeleteHelm {
        /// The hook.
        hook: String,
    },
    /// Per-schedule options in the batch format, which lacks them.
    #[error("hook {hook}: schedule options (allowFailure, queue, group, includeSnapshotsFrom) are classic-only; set allowFailure on the hook")]
    BatchScheduleOptions {
        /// The hook.
        hook: String,
    },
    /// A binding group in the batch format (every binding is in group `main`).
    #[error("hook {hook}: binding {binding}: the batch runner puts every binding in group main; do not set group")]
    BatchGroup {
        /// The hook.
        hook: String,
        /// The binding.
        binding: String,
    },
    /// A subset of events in the batch format (all or none there).
    #[error("hook {hook}: binding {binding}: the batch protocol runs on all events or none")]
    BatchEventSubset {
        /// The hook.
        hook: String,
        /// The binding.
        binding: String,
    },
}

type Result<T> = std::result::Result<T, ConfigError>;

/// Which runner reads the classic configuration: it decides which lifecycle keys exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerKind {
    /// addon-operator module hook: `beforeHelm`, `afterHelm`, `beforeDeleteHelm`,
    /// `afterDeleteHelm` are allowed.
    Module,
    /// Plain shell-operator: only `onStartup`, `schedule`, `kubernetes`, `settings`.
    Shell,
}

/// A Kubernetes watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum WatchEvent {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object was deleted.
    Deleted,
}

/// A hook's configuration. Fields left `None`/empty are not emitted.
#[derive(Clone, Debug, Default)]
pub struct HookConfig {
    /// Unique hook name; also the name the classic entry point answers to.
    pub name: String,
    /// Run once when the runner starts (no snapshots available then).
    pub on_startup: Option<u32>,
    /// addon-operator: run before every Helm render/upgrade; lower runs first.
    pub before_helm: Option<u32>,
    /// addon-operator: run after every Helm upgrade.
    pub after_helm: Option<u32>,
    /// addon-operator: run before the release is deleted (classic protocol only).
    pub before_delete_helm: Option<u32>,
    /// addon-operator: run after the release is deleted.
    pub after_delete_helm: Option<u32>,
    /// Crontab bindings.
    pub schedule: Vec<ScheduleBinding>,
    /// Kubernetes watch bindings.
    pub kubernetes: Vec<KubernetesBinding>,
    /// Rate limiting of runs.
    pub settings: Option<Settings>,
    /// Batch protocol: a failure of this hook does not block its queue.
    pub allow_failure: Option<bool>,
}

/// A `schedule[]` binding.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleBinding {
    /// Binding name delivered in the context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// 5 fields, or 6 with seconds first.
    pub crontab: String,
    /// A failure does not block the queue (classic protocol only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
    /// Snapshots to include in the context (classic protocol only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub include_snapshots_from: Vec<String>,
    /// Queue name (classic protocol only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Binding group (classic protocol only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl ScheduleBinding {
    /// A named crontab binding with no options.
    pub fn new(name: &str, crontab: &str) -> Self {
        ScheduleBinding {
            name: Some(name.into()),
            crontab: crontab.into(),
            ..Default::default()
        }
    }
}

/// `matchNames` selector.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NameSelector {
    /// Exact names.
    #[serde(default)]
    pub match_names: Vec<String>,
}

/// A Kubernetes label selector.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels that must equal the given values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct LabelSelectorRequirement {
    /// Label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In`/`NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl LabelSelector {
    /// A selector matching objects that carry `key` with any value.
    pub fn exists(key: &str) -> Self {
        LabelSelector {
            match_expressions: vec![LabelSelectorRequirement {
                key: key.into(),
                operator: "Exists".into(),
                values: vec![],
            }],
            ..Default::default()
        }
    }
}

/// A field selector (`metadata.name`, `metadata.namespace` and a few others).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FieldSelector {
    /// Requirements, all of which must hold.
    #[serde(default)]
    pub match_expressions: Vec<FieldSelectorRequirement>,
}

/// One field requirement.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
pub struct FieldSelectorRequirement {
    /// Dotted field path, e.g. `metadata.name`.
    pub field: String,
    /// `=`, `==`, `Equals`, `!=` or `NotEquals`.
    pub operator: String,
    /// The value compared with.
    pub value: String,
}

/// Which namespaces a binding watches.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceSelector {
    /// Namespaces by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_selector: Option<NameSelector>,
    /// Namespaces by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
}

impl NamespaceSelector {
    /// Watch the named namespaces only.
    pub fn names(names: &[&str]) -> Self {
        NamespaceSelector {
            name_selector: Some(NameSelector {
                match_names: names.iter().map(|s| s.to_string()).collect(),
            }),
            label_selector: None,
        }
    }
}

/// `executeHookOnEvent` in either serialisation: an event list (classic) or a bool
/// (batch).
fn events_or_bool<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Vec<WatchEvent>>, D::Error> {
    #[derive(serde::Deserialize)]
    #[serde(untagged)]
    enum Events {
        All(bool),
        Some(Vec<WatchEvent>),
    }
    Ok(match Option::<Events>::deserialize(d)? {
        None => None,
        Some(Events::All(false)) => Some(vec![]),
        Some(Events::All(true)) => Some(vec![
            WatchEvent::Added,
            WatchEvent::Modified,
            WatchEvent::Deleted,
        ]),
        Some(Events::Some(events)) => Some(events),
    })
}

/// A `kubernetes[]` binding.
///
/// It reads back from either serialisation: `executeHookOnEvent` as the classic event
/// list or as the batch format's bool (`false` = no event, `true` = every event).
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KubernetesBinding {
    /// Binding name; the key of its snapshot.
    pub name: String,
    /// e.g. `v1`, `apps/v1`.
    #[serde(default)]
    pub api_version: String,
    /// e.g. `Node`.
    pub kind: String,
    /// Objects by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name_selector: Option<NameSelector>,
    /// Objects by namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<NamespaceSelector>,
    /// Objects by label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_selector: Option<LabelSelector>,
    /// Objects by field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field_selector: Option<FieldSelector>,
    /// jq program applied to each object; its result is the snapshot's `filterResult`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jq_filter: Option<String>,
    /// Which events run the hook; `Some(vec![])` = keep a snapshot only.
    #[serde(
        default,
        deserialize_with = "events_or_bool",
        skip_serializing_if = "Option::is_none"
    )]
    pub execute_hook_on_event: Option<Vec<WatchEvent>>,
    /// Run on the initial Synchronization (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execute_hook_on_synchronization: Option<bool>,
    /// Block the module start until synchronised (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_for_synchronization: Option<bool>,
    /// Keep full objects besides the filter result (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_full_objects_in_memory: Option<bool>,
    /// A failure does not block the queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_failure: Option<bool>,
    /// Periodic full resync, a duration string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resynchronization_period: Option<String>,
    /// Queue name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Binding group (classic protocol only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Other bindings' snapshots to include in this binding's contexts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_snapshots_from: Vec<String>,
}

impl KubernetesBinding {
    /// A binding on every object of a kind, with all options at their defaults.
    pub fn new(name: &str, api_version: &str, kind: &str) -> Self {
        KubernetesBinding {
            name: name.into(),
            api_version: api_version.into(),
            kind: kind.into(),
            ..Default::default()
        }
    }
}

/// Run rate limits.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// Minimal interval between runs.
    pub execution_min_interval: Option<Duration>,
    /// Runs allowed in a burst.
    pub execution_burst: Option<u32>,
}

/// Formats a duration the way Go's `time.ParseDuration` reads it (`1h2m3.5s`).
fn go_duration(d: Duration) -> String {
    let total_ms = d.as_millis();
    if total_ms == 0 {
        return "0s".into();
    }
    let (h, rem) = (total_ms / 3_600_000, total_ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let (s, ms) = (rem / 1000, rem % 1000);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || ms > 0 {
        if ms > 0 {
            out.push_str(&format!("{s}.{ms:03}s"));
        } else {
            out.push_str(&format!("{s}s"));
        }
    }
    out
}

fn to_value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).expect("config types serialise infallibly")
}

impl HookConfig {
    /// Checks invariants both runners enforce, so a bad hook fails in tests, not in a
    /// cluster: a name, at least one trigger, unique binding names, crontab shape, and
    /// module-sdk's rule that `onStartup` and kubernetes bindings do not mix.
    pub fn validate(&self) -> Result<()> {
        let hook = || self.name.clone();
        if self.name.is_empty() {
            return Err(ConfigError::NoName);
        }
        let triggers = self.on_startup.is_some() as usize
            + self.before_helm.is_some() as usize
            + self.after_helm.is_some() as usize
            + self.before_delete_helm.is_some() as usize
            + self.after_delete_helm.is_some() as usize
            + self.schedule.len()
            + self.kubernetes.len();
        if triggers == 0 {
            return Err(ConfigError::NoTrigger { hook: hook() });
        }
        if self.on_startup.is_some() && !self.kubernetes.is_empty() {
            return Err(ConfigError::StartupWithKubernetes { hook: hook() });
        }
        let mut seen = std::collections::BTreeSet::new();
        for k in &self.kubernetes {
            if k.name.is_empty() || k.kind.is_empty() || k.api_version.is_empty() {
                return Err(ConfigError::IncompleteBinding { hook: hook() });
            }
            if !seen.insert(k.name.as_str()) {
                return Err(ConfigError::DuplicateBinding {
                    hook: hook(),
                    binding: k.name.clone(),
                });
            }
        }
        // What shell-operator's parser takes: 5 fields, or 6 with seconds first; no year.
        let parser = croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Optional)
            .year(croner::parser::Year::Disallowed)
            .build();
        for s in &self.schedule {
            if let Err(e) = parser.parse(&s.crontab) {
                return Err(ConfigError::Crontab {
                    hook: hook(),
                    crontab: s.crontab.clone(),
                    reason: e.to_string().trim_end_matches('.').to_string(),
                });
            }
        }
        Ok(())
    }

    /// The shell-operator `configVersion: v1` document for this hook.
    pub fn classic_json(&self, runner: RunnerKind) -> Result<Value> {
        self.validate()?;
        let mut root = Map::new();
        root.insert("configVersion".into(), json!("v1"));
        if let Some(o) = self.on_startup {
            root.insert("onStartup".into(), json!(o));
        }
        let lifecycle = [
            ("beforeHelm", self.before_helm),
            ("afterHelm", self.after_helm),
            ("beforeDeleteHelm", self.before_delete_helm),
            ("afterDeleteHelm", self.after_delete_helm),
        ];
        for (key, order) in lifecycle {
            if let Some(o) = order {
                if runner == RunnerKind::Shell {
                    return Err(ConfigError::ShellLifecycle {
                        hook: self.name.clone(),
                        key,
                    });
                }
                root.insert(key.into(), json!(o));
            }
        }
        if !self.schedule.is_empty() {
            root.insert("schedule".into(), to_value(&self.schedule));
        }
        if !self.kubernetes.is_empty() {
            root.insert("kubernetes".into(), to_value(&self.kubernetes));
        }
        if let Some(s) = &self.settings {
            let mut m = Map::new();
            if let Some(d) = s.execution_min_interval {
                m.insert("executionMinInterval".into(), json!(go_duration(d)));
            }
            if let Some(b) = s.execution_burst {
                m.insert("executionBurst".into(), json!(b));
            }
            if !m.is_empty() {
                root.insert("settings".into(), Value::Object(m));
            }
        }
        Ok(Value::Object(root))
    }

    /// One entry of module-sdk's batch `hook config` document.
    pub fn batch_json(&self, path: &str) -> Result<Value> {
        self.validate()?;
        if self.before_delete_helm.is_some() {
            return Err(ConfigError::BatchBeforeDeleteHelm {
                hook: self.name.clone(),
            });
        }
        let mut root = Map::new();
        root.insert("configVersion".into(), json!("v1"));
        root.insert("metadata".into(), json!({"name": self.name, "path": path}));
        if !self.schedule.is_empty() {
            let mut items = Vec::new();
            for s in &self.schedule {
                if s.allow_failure.is_some()
                    || s.queue.is_some()
                    || s.group.is_some()
                    || !s.include_snapshots_from.is_empty()
                {
                    return Err(ConfigError::BatchScheduleOptions {
                        hook: self.name.clone(),
                    });
                }
                let mut m = Map::new();
                if let Some(n) = &s.name {
                    m.insert("name".into(), json!(n));
                }
                m.insert("crontab".into(), json!(s.crontab));
                items.push(Value::Object(m));
            }
            root.insert("schedule".into(), Value::Array(items));
        }
        if !self.kubernetes.is_empty() {
            let mut items = Vec::new();
            for k in &self.kubernetes {
                if k.group.is_some() {
                    return Err(ConfigError::BatchGroup {
                        hook: self.name.clone(),
                        binding: k.name.clone(),
                    });
                }
                let mut v = to_value(k);
                let obj = v.as_object_mut().expect("binding serialises to an object");
                match &k.execute_hook_on_event {
                    None => {}
                    Some(events) if events.is_empty() => {
                        obj.insert("executeHookOnEvent".into(), json!(false));
                    }
                    Some(events) if events.len() == 3 => {
                        obj.insert("executeHookOnEvent".into(), json!(true));
                    }
                    Some(_) => {
                        return Err(ConfigError::BatchEventSubset {
                            hook: self.name.clone(),
                            binding: k.name.clone(),
                        })
                    }
                }
                items.push(v);
            }
            root.insert("kubernetes".into(), Value::Array(items));
        }
        let lifecycle = [
            ("onStartup", self.on_startup),
            ("beforeHelm", self.before_helm),
            ("afterHelm", self.after_helm),
            ("afterDeleteHelm", self.after_delete_helm),
        ];
        for (key, order) in lifecycle {
            if let Some(o) = order {
                root.insert(key.into(), json!(o));
            }
        }
        if let Some(a) = self.allow_failure {
            root.insert("allowFailure".into(), json!(a));
        }
        if let Some(s) = &self.settings {
            let mut m = Map::new();
            if let Some(d) = s.execution_min_interval {
                // Go's time.Duration marshals as integer nanoseconds.
                m.insert("executionMinInterval".into(), json!(d.as_nanos() as u64));
            }
            if let Some(b) = s.execution_burst {
                m.insert("executionBurst".into(), json!(b));
            }
            if !m.is_empty() {
                root.insert("settings".into(), Value::Object(m));
            }
        }
        Ok(Value::Object(root))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
