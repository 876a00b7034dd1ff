//! The module's settings (ModuleConfig `spec.settings`), typed, with the cross-field
//! rules that JSON Schema can only express as unhelpful `anyOf` failures.
//!
//! `openapi/config-values.yaml` is the authority the runner enforces; [`check`] runs
//! first so that a user gets a sentence naming the field and the fix.
//!
//! Above 400 lines with its unit tests: the settings types and [`check`]'s rules, one
//! per field, are read together; the tests follow the code.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::duration::GoDuration;

/// Where nodes pull platform images from.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
pub enum Mode {
    /// No local registry.
    #[default]
    Direct,
    /// A pull-through cache of the upstream registry.
    Proxy,
    /// A full local copy ("Mirror").
    Detached,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Direct => "Direct",
            Mode::Proxy => "Proxy",
            Mode::Detached => "Detached",
        })
    }
}

/// `proxy` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxySettings {
    /// host[:port] of the upstream registry.
    pub host: String,
    /// `http` or `https`.
    #[serde(default = "https")]
    pub scheme: String,
    /// Repository path, e.g. `/deckhouse/ee`.
    #[serde(default)]
    pub path: Option<String>,
    /// Upstream user.
    #[serde(default)]
    pub user: Option<String>,
    /// Upstream password.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM CA bundle of the upstream.
    #[serde(default)]
    pub ca: Option<String>,
    /// Go duration; `0` = never expire.
    #[serde(default = "default_ttl")]
    pub ttl: GoDuration,
    /// Go duration: how long the upstream must answer (or fail) before a master
    /// switches between pulling through and serving its cache alone.
    #[serde(default = "default_upstream_hysteresis")]
    pub upstream_hysteresis: GoDuration,
    /// Requests each master's warm-up process sends at a time (1 to 32).
    #[serde(default = "default_warmup_concurrency")]
    pub warmup_concurrency: u32,
    /// `Fs` or `S3`.
    #[serde(default = "fs")]
    pub storage_mode: String,
    /// The bucket, with `storage_mode: S3`.
    #[serde(default)]
    pub s3: Option<S3Settings>,
}

/// `proxy.s3` / `detached.s3`: the S3 bucket the registry stores its data in, with
/// `storageMode: S3`. Required fields are checked by [`check`] before this is read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct S3Settings {
    /// The S3 API URL with its scheme (`https://s3.example.com:3900`).
    #[serde(default)]
    pub endpoint: String,
    /// The bucket's region (Garage: its `s3_region`).
    #[serde(default)]
    pub region: String,
    /// The bucket.
    #[serde(default)]
    pub bucket: String,
    /// The key prefix under which the registry keeps its data (default `/embedded-registry`).
    #[serde(default = "default_root_directory")]
    pub root_directory: String,
    /// Access key ID.
    #[serde(default)]
    pub access_key: String,
    /// Secret access key: never logged, echoed or hashed into a shown value.
    #[serde(default)]
    pub secret_key: String,
    /// PEM CA bundle of the endpoint, when it is not publicly trusted.
    #[serde(default)]
    pub ca: Option<String>,
    /// Path-style requests (`https://host/bucket/key`; default `true`).
    #[serde(default = "yes")]
    pub force_path_style: bool,
}

/// `s3.rootDirectory` when not set.
pub const DEFAULT_S3_ROOT_DIRECTORY: &str = "/embedded-registry";

fn default_root_directory() -> String {
    DEFAULT_S3_ROOT_DIRECTORY.into()
}
fn yes() -> bool {
    true
}

fn https() -> String {
    "https".into()
}
fn default_warmup_concurrency() -> u32 {
    4
}
fn default_ttl() -> GoDuration {
    "168h".into()
}
fn default_upstream_hysteresis() -> GoDuration {
    "1m".into()
}
fn fs() -> String {
    "Fs".into()
}

/// `detached` settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetachedSettings {
    /// `Fs` or `S3`.
    #[serde(default = "fs")]
    pub storage_mode: String,
    /// The bucket, with `storage_mode: S3`.
    #[serde(default)]
    pub s3: Option<S3Settings>,
    /// Rotation of old releases.
    #[serde(default)]
    pub rotation: Rotation,
}

/// `detached.rotation`: removal of old releases from the mirror (see `docs/internal/rotation.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rotation {
    /// Whether the node hook deletes old releases on its schedule (else it only plans).
    #[serde(default)]
    pub enabled: bool,
    /// Latest releases to keep.
    #[serde(default = "three")]
    pub keep_releases: u32,
    /// Go duration: releases built less recently than this are never dropped.
    #[serde(default = "default_min_age")]
    pub min_age: GoDuration,
}

fn three() -> u32 {
    3
}

fn default_min_age() -> GoDuration {
    "24h".into()
}

impl Default for Rotation {
    fn default() -> Self {
        Rotation {
            enabled: false,
            keep_releases: 3,
            min_age: default_min_age(),
        }
    }
}

/// All settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// The mode.
    #[serde(default)]
    pub mode: Mode,
    /// Proxy mode settings.
    #[serde(default)]
    pub proxy: Option<ProxySettings>,
    /// Detached mode settings.
    #[serde(default)]
    pub detached: Option<DetachedSettings>,
    /// HA override (Proxy, or Detached on S3).
    #[serde(default)]
    pub high_availability: Option<bool>,
    /// How long a Ready node may take to acknowledge a mirror configuration before it
    /// is reported overdue (a Go duration; default `15m`). The switch waits either way.
    #[serde(default)]
    pub node_acknowledgement_timeout: Option<GoDuration>,
}

/// A settings error that names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted field path from the ModuleConfig root, e.g. `spec.settings.proxy.host`.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

fn err(field: &str, message: &str) -> FieldError {
    FieldError {
        field: format!(
            "spec.settings{}{field}",
            if field.is_empty() { "" } else { "." }
        ),
        message: message.into(),
    }
}

/// The settings that hold a Go duration: JSON pointer, field, examples for the fix.
const DURATIONS: [(&str, &str, &str); 4] = [
    ("/proxy/ttl", "proxy.ttl", "72h, 30m or 0 (never expire)"),
    (
        "/proxy/upstreamHysteresis",
        "proxy.upstreamHysteresis",
        "1m or 5m",
    ),
    (
        "/detached/rotation/minAge",
        "detached.rotation.minAge",
        "24h, 90m or 0 (no guard)",
    ),
    (
        "/nodeAcknowledgementTimeout",
        "nodeAcknowledgementTimeout",
        "15m or 1h",
    ),
];

/// The values of `mode`.
const MODES: [&str; 3] = ["Direct", "Proxy", "Detached"];

/// The cross-field rules, checked on settings with defaults applied.
pub fn check(settings: &Value) -> Result<(), FieldError> {
    let Some(obj) = settings.as_object() else {
        return Err(err("", "must be an object (a map of settings)"));
    };
    // The mode first: every rule below depends on it, and a wrong one is never echoed.
    let mode = match obj.get("mode") {
        None | Some(Value::Null) => "Direct",
        Some(Value::String(m)) if MODES.contains(&m.as_str()) => m.as_str(),
        Some(v) => {
            return Err(err(
                "mode",
                &format!(
                    "{} is not one of \"Direct\", \"Proxy\" or \"Detached\": set one of them",
                    crate::untrusted::describe(v)
                ),
            ))
        }
    };
    let has = |k: &str| obj.get(k).is_some_and(|v| !v.is_null());
    match mode {
        "Proxy" if !has("proxy") => {
            return Err(err(
                "proxy",
                "is required when mode is Proxy: add proxy.host (and path, user, password as the upstream needs)",
            ))
        }
        "Detached" if !has("detached") => {
            return Err(err(
                "detached",
                "is required when mode is Detached: add detached: {storageMode: Fs}",
            ))
        }
        _ => {}
    }
    if has("proxy") && mode != "Proxy" {
        return Err(err(
            "proxy",
            &format!(
                "is allowed only with mode Proxy (mode is {mode}): remove proxy or set mode: Proxy"
            ),
        ));
    }
    if has("detached") && mode != "Detached" {
        return Err(err(
            "detached",
            &format!("is allowed only with mode Detached (mode is {mode}): remove detached or set mode: Detached"),
        ));
    }
    let detached_on_s3 = settings
        .pointer("/detached/storageMode")
        .is_some_and(|m| m == "S3");
    if has("highAvailability") && mode != "Proxy" && !(mode == "Detached" && detached_on_s3) {
        let fix = if mode == "Detached" {
            "remove highAvailability or set detached.storageMode: S3"
        } else {
            "remove highAvailability"
        };
        return Err(err(
            "highAvailability",
            &format!("is allowed only with mode Proxy, or Detached with detached.storageMode S3 (mode is {mode}): {fix}"),
        ));
    }
    if let Some(proxy) = obj.get("proxy").and_then(Value::as_object) {
        let set = |k: &str| proxy.get(k).is_some_and(|v| !v.is_null());
        if !set("host") {
            return Err(err(
                "proxy.host",
                "is required: the upstream registry host, e.g. registry.deckhouse.io",
            ));
        }
        match (set("user"), set("password")) {
            (true, false) => {
                return Err(err(
                    "proxy.password",
                    "is required when proxy.user is set: give both or neither",
                ))
            }
            (false, true) => {
                return Err(err(
                    "proxy.user",
                    "is required when proxy.password is set: give both or neither",
                ))
            }
            _ => {}
        }
    }
    for section in ["proxy", "detached"] {
        if let Some(obj) = settings.get(section).and_then(Value::as_object) {
            check_s3(section, obj)?;
        }
    }
    for (pointer, field, example) in DURATIONS {
        if let Some(text) = settings.pointer(pointer).and_then(Value::as_str) {
            if let Err(e) = crate::model::duration::parse(text) {
                return Err(err(field, &format!("{text:?} {e}; e.g. {example}")));
            }
        }
    }
    Ok(())
}

/// The fields `s3` must hold, each with what it is (no value is ever echoed: one of
/// them is the secret key).
const S3_REQUIRED: [(&str, &str); 5] = [
    (
        "endpoint",
        "the S3 API URL with its scheme, e.g. https://s3.example.com:3900",
    ),
    ("region", "the bucket's region (Garage: its s3_region)"),
    ("bucket", "the bucket's name"),
    (
        "accessKey",
        "the access key ID of a key with read and write on the bucket",
    ),
    ("secretKey", "the secret of accessKey"),
];

/// The S3 rules of `section` (`proxy` or `detached`): `s3` with `storageMode: S3` and
/// only then, its required fields, and an endpoint that says its scheme.
fn check_s3(section: &str, obj: &serde_json::Map<String, Value>) -> Result<(), FieldError> {
    let on_s3 = obj.get("storageMode").is_some_and(|m| m == "S3");
    let s3 = obj.get("s3").filter(|v| !v.is_null());
    match (on_s3, s3) {
        (true, None) => {
            return Err(err(
                &format!("{section}.s3"),
                &format!("is required when {section}.storageMode is S3: add s3 with endpoint, region, bucket, accessKey and secretKey"),
            ))
        }
        (false, Some(_)) => {
            return Err(err(
                &format!("{section}.s3"),
                &format!("is allowed only with {section}.storageMode S3: remove s3 or set storageMode: S3"),
            ))
        }
        _ => {}
    }
    let Some(s3) = s3.and_then(Value::as_object) else {
        return Ok(());
    };
    for (key, what) in S3_REQUIRED {
        if s3.get(key).is_none_or(Value::is_null) {
            return Err(err(
                &format!("{section}.s3.{key}"),
                &format!("is required: {what}"),
            ));
        }
    }
    if let Some(endpoint) = s3.get("endpoint").and_then(Value::as_str) {
        if !endpoint.starts_with("https://") && !endpoint.starts_with("http://") {
            return Err(err(
                &format!("{section}.s3.endpoint"),
                "needs its scheme: write https://HOST[:PORT] (or http://HOST[:PORT] for clear text)",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cross_field_rules_name_the_field() {
        let cases = [
            (json!({"mode": "Proxy"}), "spec.settings.proxy"),
            (json!({"mode": "Detached"}), "spec.settings.detached"),
            (
                json!({"mode": "Direct", "proxy": {"host": "h"}}),
                "spec.settings.proxy",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h"}, "detached": {}}),
                "spec.settings.detached",
            ),
            (
                json!({"mode": "Detached", "detached": {}, "highAvailability": true}),
                "spec.settings.highAvailability",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "user": "u"}}),
                "spec.settings.proxy.password",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "password": "p"}}),
                "spec.settings.proxy.user",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"path": "/x"}}),
                "spec.settings.proxy.host",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "ttl": "7d"}}),
                "spec.settings.proxy.ttl",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "ttl": "2562048h"}}),
                "spec.settings.proxy.ttl",
            ),
            (
                json!({"mode": "Detached", "detached": {"rotation": {"minAge": "99999999999999999999h"}}}),
                "spec.settings.detached.rotation.minAge",
            ),
            (
                json!({"mode": "Detached", "detached": {"storageMode": "S3"}}),
                "spec.settings.detached.s3",
            ),
            (
                json!({"mode": "Detached", "detached": {"storageMode": "Fs", "s3": s3()}}),
                "spec.settings.detached.s3",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "s3": s3()}}),
                "spec.settings.proxy.s3",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3"}}),
                "spec.settings.proxy.s3",
            ),
            (
                json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": without("secretKey")}}),
                "spec.settings.detached.s3.secretKey",
            ),
            (
                json!({"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3", "s3": without("endpoint")}}),
                "spec.settings.proxy.s3.endpoint",
            ),
            (
                json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": with("endpoint", "s3.example.com:3900")}}),
                "spec.settings.detached.s3.endpoint",
            ),
            (
                json!({"mode": "Detached", "detached": {"storageMode": "Fs"}, "highAvailability": true}),
                "spec.settings.highAvailability",
            ),
        ];
        for (settings, field) in cases {
            let e = check(&settings).unwrap_err();
            assert_eq!(e.field, field, "{settings}");
        }
        assert!(check(
            &json!({"mode": "Proxy", "proxy": {"host": "h", "user": "u", "password": "p"}})
        )
        .is_ok());
        assert!(check(&json!({})).is_ok());
        for ok in [
            json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": s3()}, "highAvailability": true}),
            json!({"mode": "Proxy", "proxy": {"host": "h", "storageMode": "S3", "s3": with("endpoint", "http://127.0.0.1:3900")}}),
        ] {
            assert!(check(&ok).is_ok(), "{ok}");
        }
    }

    fn s3() -> Value {
        json!({"endpoint": "https://s3.example.com:3900", "region": "garage", "bucket": "registry",
               "accessKey": "GK1", "secretKey": "S3cr3t-d0-not-print"})
    }

    fn without(key: &str) -> Value {
        let mut v = s3();
        v.as_object_mut().unwrap().remove(key);
        v
    }

    fn with(key: &str, value: &str) -> Value {
        let mut v = s3();
        v[key] = json!(value);
        v
    }

    #[test]
    fn s3_errors_never_show_the_secret_key() {
        let cases = [
            json!({"mode": "Detached", "detached": {"storageMode": "Fs", "s3": s3()}}),
            json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": without("bucket")}}),
            json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": with("endpoint", "S3cr3t-d0-not-print")}}),
        ];
        for c in cases {
            let e = check(&c).unwrap_err().to_string();
            assert!(!e.contains("S3cr3t"), "{e}");
        }
        let s: Settings = serde_json::from_value(
            json!({"mode": "Detached", "detached": {"storageMode": "S3", "s3": s3()}}),
        )
        .unwrap();
        let b = s.detached.unwrap().s3.unwrap();
        assert_eq!(
            (b.root_directory.as_str(), b.force_path_style, b.ca),
            (DEFAULT_S3_ROOT_DIRECTORY, true, None)
        );
    }

    #[test]
    fn typed_settings_fill_defaults() {
        let s: Settings =
            serde_json::from_value(json!({"mode": "Proxy", "proxy": {"host": "h"}})).unwrap();
        let p = s.proxy.unwrap();
        assert_eq!(
            (p.scheme.as_str(), p.ttl.as_str(), p.storage_mode.as_str()),
            ("https", "168h", "Fs")
        );
    }
}
