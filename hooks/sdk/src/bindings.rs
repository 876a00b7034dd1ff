//! What a kubernetes binding sees: the objects its selectors let through, shaped by its
//! `jqFilter` into snapshot items, as shell-operator builds them from its watch.
//!
//! The same code builds the snapshots of the local converge (from its file-backed
//! cluster) and of [`HookTest::cluster_state`](crate::testing::HookTest::cluster_state)
//! (from a YAML list of objects), so a hook's selectors and filters run in its unit
//! tests exactly as they run in the converge. jq filters run in the real `jq` binary.
//!
//! Matching, in the order the API server applies it: `kind` and `apiVersion` (an empty
//! binding `apiVersion` matches any), `nameSelector`, `namespace` (by name, or by the
//! labels of the `v1` `Namespace` objects among the given objects), `labelSelector`
//! (`matchLabels` and `matchExpressions` with `In`, `NotIn`, `Exists`,
//! `DoesNotExist`), `fieldSelector` (dotted paths compared as strings with `=`, `==`,
//! `Equals`, `!=`, `NotEquals`).
//!
//! Snapshot items: without a `jqFilter`, the full object; with one, only the filter
//! result (its first output, `null` when it gave none), plus the object when
//! `keepFullObjectsInMemory: true` (module-sdk's batch configuration sets it `false`
//! whenever a filter is set).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{FieldSelector, KubernetesBinding, LabelSelector};
use crate::context::SnapshotItem;
use crate::jq::JqError;

/// Why a binding's snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BindingError {
    /// A label selector operator the API server does not know.
    #[error("binding {binding}: label selector operator {operator:?} is not In, NotIn, Exists or DoesNotExist")]
    LabelOperator {
        /// The binding.
        binding: String,
        /// The operator given.
        operator: String,
    },
    /// A field selector operator the API server does not know.
    #[error("binding {binding}: field selector operator {operator:?} is not =, ==, Equals, != or NotEquals")]
    FieldOperator {
        /// The binding.
        binding: String,
        /// The operator given.
        operator: String,
    },
    /// The binding's `jqFilter` failed.
    #[error("binding {binding}: {error}")]
    Jq {
        /// The binding.
        binding: String,
        /// What jq said.
        error: JqError,
    },
}

/// A selector operator nobody knows (the binding's name is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectorError {
    /// Unknown label selector operator.
    Label(String),
    /// Unknown field selector operator.
    Field(String),
}

impl SelectorError {
    fn in_binding(self, binding: &str) -> BindingError {
        match self {
            SelectorError::Label(operator) => BindingError::LabelOperator {
                binding: binding.into(),
                operator,
            },
            SelectorError::Field(operator) => BindingError::FieldOperator {
                binding: binding.into(),
                operator,
            },
        }
    }
}

fn str_at<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `labels` satisfy `sel` (every `matchLabels` pair and every expression).
pub fn labels_match(
    sel: &LabelSelector,
    labels: &Map<String, Value>,
) -> Result<bool, SelectorError> {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    for (k, v) in &sel.match_labels {
        if get(k) != Some(v.as_str()) {
            return Ok(false);
        }
    }
    for e in &sel.match_expressions {
        let value = get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => value.is_some_and(|v| e.values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !e.values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            other => return Err(SelectorError::Label(other.into())),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether `obj` satisfies every requirement of `sel` (a missing field counts as `""`).
pub fn fields_match(sel: &FieldSelector, obj: &Value) -> Result<bool, SelectorError> {
    for e in &sel.match_expressions {
        let actual = str_at(obj, &format!("/{}", e.field.replace('.', "/")));
        let ok = match e.operator.as_str() {
            "=" | "==" | "Equals" => actual == e.value,
            "!=" | "NotEquals" => actual != e.value,
            other => return Err(SelectorError::Field(other.into())),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The labels of every `v1` `Namespace` among `objects`, by name: what a binding's
/// `namespace.labelSelector` is matched against.
pub fn namespace_labels<'a>(objects: &[&'a Value]) -> BTreeMap<&'a str, &'a Map<String, Value>> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let empty = EMPTY.get_or_init(Map::new);
    objects
        .iter()
        .filter(|o| str_at(o, "/kind") == "Namespace" && str_at(o, "/apiVersion") == "v1")
        .map(|o| {
            let labels = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(empty);
            (str_at(o, "/metadata/name"), labels)
        })
        .collect()
}

/// Whether `binding` selects `obj`; `namespaces` as [`namespace_labels`] gives them.
pub fn selects(
    binding: &KubernetesBinding,
    obj: &Value,
    namespaces: &BTreeMap<&str, &Map<String, Value>>,
) -> Result<bool, BindingError> {
    let err = |e: SelectorError| e.in_binding(&binding.name);
    if str_at(obj, "/kind") != binding.kind {
        return Ok(false);
    }
    if !binding.api_version.is_empty() && str_at(obj, "/apiVersion") != binding.api_version {
        return Ok(false);
    }
    let name = str_at(obj, "/metadata/name");
    if let Some(n) = &binding.name_selector {
        if !n.match_names.iter().any(|m| m == name) {
            return Ok(false);
        }
    }
    let namespace = str_at(obj, "/metadata/namespace");
    if let Some(ns) = &binding.namespace {
        if let Some(n) = &ns.name_selector {
            if !n.match_names.iter().any(|m| m == namespace) {
                return Ok(false);
            }
        }
        if let Some(sel) = &ns.label_selector {
            // A namespace that is not there (or a cluster-scoped object) matches no
            // namespace label selector.
            let Some(labels) = namespaces.get(namespace) else {
                return Ok(false);
            };
            if !labels_match(sel, labels).map_err(err)? {
                return Ok(false);
            }
        }
    }
    if let Some(sel) = &binding.label_selector {
        let empty = Map::new();
        let labels = obj
            .pointer("/metadata/labels")
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        if !labels_match(sel, labels).map_err(err)? {
            return Ok(false);
        }
    }
    if let Some(sel) = &binding.field_selector {
        if !fields_match(sel, obj).map_err(err)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// The snapshot of `binding` over `objects`, in their order.
pub fn snapshot(
    binding: &KubernetesBinding,
    objects: &[&Value],
) -> Result<Vec<SnapshotItem>, BindingError> {
    let namespaces = namespace_labels(objects);
    let mut selected = Vec::new();
    for obj in objects {
        if selects(binding, obj, &namespaces)? {
            selected.push((*obj).clone());
        }
    }
    let Some(filter) = &binding.jq_filter else {
        return Ok(selected
            .iter()
            .map(|o| SnapshotItem::full(o, None))
            .collect());
    };
    let results = crate::jq::map_filter(filter, &selected).map_err(|error| BindingError::Jq {
        binding: binding.name.clone(),
        error,
    })?;
    let keep = binding.keep_full_objects_in_memory.unwrap_or(false);
    Ok(selected
        .iter()
        .zip(results)
        .map(|(o, r)| {
            if keep {
                SnapshotItem::full(o, Some(&r))
            } else {
                SnapshotItem::filtered(&r)
            }
        })
        .collect())
}

/// The snapshots of every binding over `objects`, by binding name.
pub fn snapshots(
    bindings: &[KubernetesBinding],
    objects: &[&Value],
) -> Result<BTreeMap<String, Vec<SnapshotItem>>, BindingError> {
    bindings
        .iter()
        .map(|b| Ok((b.name.clone(), snapshot(b, objects)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_match_like_the_api_server() {
        let labels = json!({"node-role.kubernetes.io/master": "", "zone": "a"});
        let labels = labels.as_object().unwrap();
        let sel = |v: Value| -> LabelSelector { serde_json::from_value(v).unwrap() };
        assert!(labels_match(&sel(json!({"matchExpressions": [{"key": "node-role.kubernetes.io/master", "operator": "Exists"}]})), labels).unwrap());
        assert!(!labels_match(
            &sel(
                json!({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]})
            ),
            labels
        )
        .unwrap());
        assert!(labels_match(&sel(json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}], "matchLabels": {"zone": "a"}})), labels).unwrap());
        assert_eq!(
            labels_match(
                &sel(json!({"matchExpressions": [{"key": "x", "operator": "Bogus"}]})),
                labels
            ),
            Err(SelectorError::Label("Bogus".into()))
        );
        let obj = json!({"metadata": {"name": "n1", "namespace": "ns"}});
        let fs = |v: Value| -> FieldSelector { serde_json::from_value(v).unwrap() };
        assert!(fields_match(&fs(json!({"matchExpressions": [{"field": "metadata.name", "operator": "=", "value": "n1"}]})), &obj).unwrap());
        assert!(!fields_match(&fs(json!({"matchExpressions": [{"field": "metadata.name", "operator": "NotEquals", "value": "n1"}]})), &obj).unwrap());
    }

    #[test]
    fn bindings_read_back_from_both_serialisations() {
        let classic: KubernetesBinding = serde_json::from_value(json!({
            "name": "b", "apiVersion": "v1", "kind": "Secret",
            "executeHookOnEvent": ["Added"], "namespace": {"nameSelector": {"matchNames": ["ns"]}}
        }))
        .unwrap();
        assert_eq!(
            classic.execute_hook_on_event,
            Some(vec![crate::WatchEvent::Added])
        );
        let batch: KubernetesBinding = serde_json::from_value(
            json!({"name": "b", "kind": "Secret", "executeHookOnEvent": false}),
        )
        .unwrap();
        assert_eq!(batch.execute_hook_on_event, Some(vec![]));
        assert_eq!(batch.api_version, "");
        let round: KubernetesBinding =
            serde_json::from_value(serde_json::to_value(&classic).unwrap()).unwrap();
        assert_eq!(round, classic);
    }

    #[test]
    fn namespace_label_selectors_use_the_namespace_objects() {
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "x"}}});
        let in_a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "a"}});
        let in_b = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "b"}});
        let binding = KubernetesBinding {
            namespace: Some(crate::NamespaceSelector {
                name_selector: None,
                label_selector: Some(LabelSelector {
                    match_labels: [("team".to_string(), "x".to_string())].into(),
                    ..Default::default()
                }),
            }),
            ..KubernetesBinding::new("cms", "v1", "ConfigMap")
        };
        let got = snapshot(&binding, &[&ns, &in_a, &in_b]).unwrap();
        assert_eq!(got, vec![SnapshotItem::full(&in_a, None)]);
    }

    #[test]
    fn unknown_operators_and_bad_filters_name_the_binding() {
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}});
        let mut b = KubernetesBinding::new("nodes", "v1", "Node");
        b.field_selector = Some(FieldSelector {
            match_expressions: vec![crate::FieldSelectorRequirement {
                field: "metadata.name".into(),
                operator: "Like".into(),
                value: "n".into(),
            }],
        });
        let e = snapshot(&b, &[&obj]).unwrap_err().to_string();
        assert!(
            e.starts_with("binding nodes:") && e.contains("\"Like\""),
            "{e}"
        );
        b.field_selector = None;
        b.jq_filter = Some(".metadata |||".into());
        let e = snapshot(&b, &[&obj]).unwrap_err();
        assert!(matches!(e, BindingError::Jq { .. }), "{e}");
    }
}
