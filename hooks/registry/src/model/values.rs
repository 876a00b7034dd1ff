//! `embeddedRegistry.internal`: everything the hooks compute.
//!
//! `openapi/values.yaml` describes the same tree; a test keeps the two from drifting.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::settings::Mode;

/// A certificate and its private key, both PEM. `Debug` never shows the key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Pair {
    /// PEM certificate.
    pub cert: String,
    /// PEM PKCS#8 private key.
    pub key: String,
}

impl std::fmt::Debug for Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pair")
            .field("cert", &self.cert)
            .field("key", &"(hidden)")
            .finish()
    }
}

/// A master node that runs the registry.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct Master {
    /// Node name.
    pub name: String,
    /// The node's InternalIP: the registry binds to it.
    #[serde(rename = "internalIP")]
    pub internal_ip: String,
}

/// A master's server certificates.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodePki {
    /// distribution's TLS pair.
    pub distribution: Pair,
    /// docker_auth's TLS pair.
    pub auth: Pair,
}

/// Certificates and shared secrets the chart renders into the registry's configs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PkiValues {
    /// Every CA certificate to trust (during a rotation, old and new).
    pub ca_bundle: String,
    /// The token signer docker_auth uses now.
    pub token: Pair,
    /// Every token certificate distribution trusts (its `rootcertbundle`).
    pub token_bundle: String,
    /// distribution's `http.secret`, shared by every instance.
    pub http_secret: String,
    /// The `http.secret`'s revision: random, renewed with each new secret; what the
    /// chart hashes in the secret's place (`embedded_registry.node_files` with `redact`).
    #[serde(default)]
    pub http_secret_revision: String,
    /// Server certificates by master name.
    pub nodes: BTreeMap<String, NodePki>,
    /// Set by the daily schedule (the day, in days since the epoch) when a certificate
    /// is due or a rotation is under way: the values change makes the runner run the
    /// module, whose `beforeHelm` renews (schedules get no snapshots) and clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renewal_due: Option<i64>,
}

/// A registry user as docker_auth needs it (no password).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserValues {
    /// Login name.
    pub name: String,
    /// bcrypt hash of the password.
    pub password_hash: String,
    /// The user's revision: random, renewed with each new password or hash; what the
    /// chart hashes in the hash's place (`embedded_registry.node_files` with `redact`).
    #[serde(default)]
    pub revision: String,
}

/// The registry's users.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Users {
    /// Pull only.
    pub ro: UserValues,
    /// Pull, push, delete.
    pub rw: UserValues,
}

/// The computed values.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Internal {
    /// Masters, sorted by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub masters: Option<Vec<Master>>,
    /// The mode the chart renders.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Registry on every master (Proxy only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high_availability: Option<bool>,
    /// Certificates.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pki: Option<PkiValues>,
    /// Users.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users: Option<Users>,
    /// What the chart renders for the registry and the nodes' pull target.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<super::switch::SwitchValues>,
    /// The garbage-collection window of a Detached registry on S3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gc_window: Option<super::gc_window::GcWindow>,
    /// What a Proxy registry's warm-up caches beyond the running release.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm: Option<WarmValues>,
}

/// `internal.warm`: written by the `next-release` hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WarmValues {
    /// Releases Deckhouse announced (`DeckhouseRelease` `Pending`) newer than the
    /// running one, oldest first, at most two: release tags `vX.Y.Z`.
    pub next: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Reduces a schema to its shape: object property names and leaf types, with
    /// `$ref`s resolved and `null` alternatives dropped.
    fn shape(schema: &Value, defs: &Value) -> Value {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            let name = r.rsplit('/').next().unwrap();
            return shape(&defs[name], defs);
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(alts) = schema.get(key).and_then(Value::as_array) {
                let non_null: Vec<&Value> = alts
                    .iter()
                    .filter(|a| a.get("type") != Some(&Value::from("null")))
                    .collect();
                if non_null.len() == 1 {
                    return shape(non_null[0], defs);
                }
                // A documented enum: one `const` per variant.
                if non_null
                    .iter()
                    .all(|a| a.get("const").is_some_and(Value::is_string))
                {
                    return Value::from("string");
                }
            }
        }
        let ty = match schema.get("type") {
            Some(Value::Array(ts)) => ts
                .iter()
                .find(|t| *t != "null")
                .cloned()
                .unwrap_or(Value::Null),
            Some(t) => t.clone(),
            None if schema.get("enum").is_some() => Value::from("string"),
            None => Value::Null,
        };
        match ty.as_str() {
            Some("object") => {
                let props = schema
                    .get("properties")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                let mut out: serde_json::Map<String, Value> = props
                    .iter()
                    .map(|(k, v)| (k.clone(), shape(v, defs)))
                    .collect();
                if let Some(extra) = schema.get("additionalProperties").filter(|a| a.is_object()) {
                    out.insert("*".into(), shape(extra, defs));
                }
                Value::Object(out)
            }
            Some("array") => Value::Array(vec![shape(&schema["items"], defs)]),
            _ => ty,
        }
    }

    #[test]
    fn internal_type_and_values_yaml_agree() {
        let generated = serde_json::to_value(schemars::schema_for!(Internal)).unwrap();
        let ours = shape(&generated, &generated["$defs"]);
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../openapi/values.yaml");
        let values: Value =
            serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let declared = shape(&values["properties"]["internal"], &Value::Null);
        assert_eq!(
            ours, declared,
            "hooks/registry/src/internal.rs and openapi/values.yaml drifted apart"
        );
    }
}
