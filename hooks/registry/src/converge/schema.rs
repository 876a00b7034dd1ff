//! The module's OpenAPI schemas as the runner uses them: `x-extend` resolved, `x-`
//! keys dropped, `additionalProperties: false` where a schema lists properties and says
//! nothing, defaults applied, and errors turned into one line naming the field.

use std::path::Path;

use anyhow::{Context as _, Result};
use serde_json::{Map, Value};

use crate::model::settings::FieldError;

/// A compiled schema plus the JSON tree it came from (for defaults).
pub struct Schema {
    tree: Value,
    validator: jsonschema::Validator,
    /// Prefix of field names in errors (`spec.settings` or `embeddedRegistry`).
    prefix: String,
}

/// `config-values.yaml` and `values.yaml` of a module.
pub struct ModuleSchemas {
    /// ModuleConfig `spec.settings`.
    pub config: Schema,
    /// The module's values (settings plus `internal`).
    pub values: Schema,
}

fn read_yaml(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("{}: not valid YAML", path.display()))
}

/// Drops OpenAPI extensions and closes objects the way addon-operator does.
fn to_json_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, sub) in m {
                if k.starts_with("x-") {
                    continue;
                }
                let sub = match k.as_str() {
                    // Names under these keys are data (property names), not keywords.
                    "properties" | "patternProperties" => Value::Object(
                        sub.as_object()
                            .map(|props| {
                                props
                                    .iter()
                                    .map(|(n, s)| (n.clone(), to_json_schema(s)))
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    "default" | "enum" | "examples" => sub.clone(),
                    _ => to_json_schema(sub),
                };
                out.insert(k.clone(), sub);
            }
            if out.get("type").and_then(Value::as_str) == Some("object")
                && out.contains_key("properties")
                && !out.contains_key("additionalProperties")
            {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(to_json_schema).collect()),
        other => other.clone(),
    }
}

/// Merges `overlay` into `base`: objects key by key, anything else replaced.
pub fn deep_merge(base: &mut Value, overlay: &Value) {
    match (base, overlay) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(k) {
                    Some(existing) => deep_merge(existing, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, o) => *b = o.clone(),
    }
}

impl Schema {
    fn compile(tree: Value, prefix: &str) -> Result<Self> {
        let validator =
            jsonschema::validator_for(&tree).map_err(|e| anyhow::anyhow!("invalid schema: {e}"))?;
        Ok(Schema {
            tree,
            validator,
            prefix: prefix.into(),
        })
    }

    /// Fills absent properties that have a `default`, recursively, as the runner does.
    pub fn apply_defaults(&self, value: &mut Value) {
        apply_defaults(&self.tree, value)
    }

    /// Validates; the first error as one line naming the field.
    pub fn validate(&self, value: &Value) -> Result<(), FieldError> {
        let Some(e) = self.validator.iter_errors(value).next() else {
            return Ok(());
        };
        let path = e.instance_path().to_string();
        let mut field = self.prefix.clone();
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            field.push('.');
            field.push_str(&seg.replace("~1", "/").replace("~0", "~"));
        }
        let secret = path.split('/').any(|s| s == "password" || s == "secretKey");
        // jsonschema's messages start with the value itself: replaced by what it is, so
        // that no value (a password in a mistyped `proxy`, control characters) is echoed.
        let value = e.instance().to_string();
        let raw = e.to_string();
        let raw = match raw.strip_prefix(value.as_str()) {
            Some(rest) => format!("{}{rest}", crate::untrusted::describe(e.instance())),
            None => raw,
        };
        let raw = crate::untrusted::escape_controls(&raw);
        let message = if secret {
            "invalid value (not shown: it is a secret); it must be a non-empty string".to_string()
        } else if raw.contains("Additional properties are not allowed") {
            format!("{raw}: remove it or fix its spelling")
        } else if raw.contains("does not match") {
            format!("{raw}: see the field's description for the expected format")
        } else {
            raw
        };
        Err(FieldError { field, message })
    }
}

fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(obj) => {
            let Some(props) = schema.get("properties").and_then(Value::as_object) else {
                return;
            };
            for (name, sub) in props {
                if !obj.contains_key(name) {
                    if let Some(d) = sub.get("default") {
                        obj.insert(name.clone(), d.clone());
                    }
                }
                if let Some(child) = obj.get_mut(name) {
                    apply_defaults(sub, child);
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

impl ModuleSchemas {
    /// Loads `openapi/config-values.yaml` and `openapi/values.yaml` of `module_dir`.
    pub fn load(module_dir: &Path) -> Result<Self> {
        let openapi = module_dir.join("openapi");
        let config = read_yaml(&openapi.join("config-values.yaml"))?;
        let mut values = read_yaml(&openapi.join("values.yaml"))?;
        if let Some(ext) = values
            .get("x-extend")
            .and_then(|x| x.get("schema"))
            .and_then(Value::as_str)
        {
            let mut base = read_yaml(&openapi.join(ext))?;
            deep_merge(&mut base, &values);
            values = base;
        }
        Ok(ModuleSchemas {
            config: Schema::compile(to_json_schema(&config), "spec.settings")
                .context("openapi/config-values.yaml")?,
            values: Schema::compile(to_json_schema(&values), crate::module::MODULE_KEY)
                .context("openapi/values.yaml")?,
        })
    }

    /// The raw `config-values.yaml` tree with extensions (for `x-examples`).
    pub fn config_examples(module_dir: &Path) -> Result<Vec<Value>> {
        let config = read_yaml(&module_dir.join("openapi/config-values.yaml"))?;
        Ok(config
            .get("x-examples")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn validate_settings(s: &ModuleSchemas, mut v: Value) -> Result<(), FieldError> {
        s.config.apply_defaults(&mut v);
        s.config.validate(&v)
    }

    #[test]
    fn examples_validate_and_defaults_fill_in() {
        let s = ModuleSchemas::load(&module_dir()).unwrap();
        let examples = ModuleSchemas::config_examples(&module_dir()).unwrap();
        assert!(examples.len() >= 3);
        for ex in examples {
            validate_settings(&s, ex.clone()).unwrap_or_else(|e| panic!("{ex}: {e}"));
        }
        let mut v = json!({"mode": "Proxy", "proxy": {"host": "h"}});
        s.config.apply_defaults(&mut v);
        assert_eq!(v["proxy"]["ttl"], "168h");
        assert_eq!(v["proxy"]["scheme"], "https");
        let mut v = json!({});
        s.values.apply_defaults(&mut v);
        assert_eq!(
            v,
            json!({"mode": "Direct", "certificates": {"renewalThresholdPercent": 33}, "internal": {}})
        );
    }

    /// The schema alone (what the runner enforces) rejects what `settings::check` does.
    #[test]
    fn schema_rejects_cross_field_mistakes_too() {
        let s = ModuleSchemas::load(&module_dir()).unwrap();
        for bad in [
            json!({"mode": "Proxy"}),
            json!({"mode": "Detached"}),
            json!({"mode": "Direct", "proxy": {"host": "h"}}),
            json!({"mode": "Proxy", "proxy": {"host": "h", "user": "u"}}),
            json!({"mode": "Detached", "detached": {}, "highAvailability": true}),
            json!({"mode": "Proxy", "proxy": {"host": "h", "ttl": "7d"}}),
            json!({"mode": "Proxy", "proxy": {"host": "h", "bogus": 1}}),
            json!({"mode": "Mirror"}),
        ] {
            assert!(validate_settings(&s, bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_name_the_field_and_hide_passwords() {
        let s = ModuleSchemas::load(&module_dir()).unwrap();
        let e = validate_settings(
            &s,
            json!({"mode": "Proxy", "proxy": {"host": "h", "scheme": "ftp"}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.settings.proxy.scheme");
        let e = validate_settings(
            &s,
            json!({"mode": "Proxy", "proxy": {"host": "h", "user": "u", "password": 123456789}}),
        )
        .unwrap_err();
        assert_eq!(e.field, "spec.settings.proxy.password");
        assert!(!e.message.contains("123456789"), "{}", e.message);
    }

    #[test]
    fn values_schema_closes_internal() {
        let s = ModuleSchemas::load(&module_dir()).unwrap();
        let ok = json!({"mode": "Direct", "internal": {"masters": [{"name": "m", "internalIP": "1.2.3.4"}]}});
        s.values.validate(&ok).unwrap();
        let e = s
            .values
            .validate(&json!({"mode": "Direct", "internal": {"unknown": 1}}))
            .unwrap_err();
        assert_eq!(e.field, "embeddedRegistry.internal");
    }
}
