//! `embeddedRegistry.internal`: everything the hooks compute.
//!
//! `openapi/values.yaml` describes the same tree; a test keeps the two from drifting.

use serde::{Deserialize, Serialize};

use crate::settings::Mode;

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
                Value::Object(
                    props
                        .iter()
                        .map(|(k, v)| (k.clone(), shape(v, defs)))
                        .collect(),
                )
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
