//! Kubernetes object operations (`$KUBERNETES_PATCH_PATH`).

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An object operation missing what it needs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OperationError {
    /// Delete and patches need a target.
    #[error("{operation:?} needs kind and name")]
    NoTarget {
        /// The operation.
        operation: Operation,
    },
    /// `Create*` needs an object.
    #[error("{operation:?} needs object")]
    NoObject {
        /// The operation.
        operation: Operation,
    },
    /// The object to create lacks an identity field.
    #[error("{operation:?}: object has no {field}")]
    ObjectField {
        /// The operation.
        operation: Operation,
        /// `apiVersion`, `kind` or `metadata.name`.
        field: &'static str,
    },
    /// A patch operation without its patch.
    #[error("{operation:?} needs {field}")]
    NoPatch {
        /// The operation.
        operation: Operation,
        /// `jqFilter`, `mergePatch` or `jsonPatch`.
        field: &'static str,
    },
}

/// A Kubernetes patch file the runner would refuse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjectsError {
    /// An entry that is not an operation.
    #[error("operation {index}: {message}")]
    Parse {
        /// Its position in the stream.
        index: usize,
        /// The parser's message, quoted values redacted.
        message: String,
    },
    /// An operation missing what it needs.
    #[error("operation {index}: {error}")]
    Invalid {
        /// Its position in the stream.
        index: usize,
        /// What is missing.
        error: OperationError,
    },
}

/// The operations the runner performs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operation {
    /// Create; fails if the object exists.
    Create,
    /// Create, or replace an existing object.
    CreateOrUpdate,
    /// Create unless it exists.
    CreateIfNotExists,
    /// Delete in the foreground.
    Delete,
    /// Delete in the background.
    DeleteInBackground,
    /// Delete orphaning dependents.
    DeleteNonCascading,
    /// Patch with a jq program.
    JQPatch,
    /// RFC 7386 merge patch.
    MergePatch,
    /// RFC 6902 JSON patch.
    JSONPatch,
}

/// One object operation, as the runner reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectOperation {
    /// What to do.
    pub operation: Operation,
    /// Target apiVersion (for Delete and patches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub api_version: String,
    /// Target kind (for Delete and patches).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Target namespace; empty = cluster-scoped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Target name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// e.g. `status`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    /// The object for Create*.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// For JQPatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jq_filter: Option<String>,
    /// For MergePatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_patch: Option<Value>,
    /// For JSONPatch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_patch: Option<Value>,
    /// A patch of a missing object is not an error.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_missing_object: bool,
    /// A failure of this operation does not fail the hook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_hook_error: bool,
}

impl ObjectOperation {
    fn targeted(op: Operation, api_version: &str, kind: &str, namespace: &str, name: &str) -> Self {
        ObjectOperation {
            operation: op,
            api_version: api_version.into(),
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
            subresource: String::new(),
            object: None,
            jq_filter: None,
            merge_patch: None,
            json_patch: None,
            ignore_missing_object: false,
            ignore_hook_error: false,
        }
    }

    /// Checks that the fields the operation needs are there.
    pub fn validate(&self) -> Result<(), OperationError> {
        use Operation::*;
        let operation = self.operation;
        let needs_target = || {
            if self.kind.is_empty() || self.name.is_empty() {
                return Err(OperationError::NoTarget { operation });
            }
            Ok(())
        };
        let no_patch = |field| Err(OperationError::NoPatch { operation, field });
        match operation {
            Create | CreateOrUpdate | CreateIfNotExists => {
                let obj = self
                    .object
                    .as_ref()
                    .ok_or(OperationError::NoObject { operation })?;
                for field in ["apiVersion", "kind"] {
                    if obj.get(field).and_then(Value::as_str).is_none() {
                        return Err(OperationError::ObjectField { operation, field });
                    }
                }
                if obj
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .is_none()
                {
                    return Err(OperationError::ObjectField {
                        operation,
                        field: "metadata.name",
                    });
                }
                Ok(())
            }
            Delete | DeleteInBackground | DeleteNonCascading => needs_target(),
            JQPatch if self.jq_filter.is_none() => no_patch("jqFilter"),
            MergePatch if self.merge_patch.is_none() => no_patch("mergePatch"),
            JSONPatch if self.json_patch.is_none() => no_patch("jsonPatch"),
            JQPatch | MergePatch | JSONPatch => needs_target(),
        }
    }
}

/// Collects object operations in order.
#[derive(Clone, Debug, Default)]
pub struct ObjectPatchCollector {
    ops: Vec<ObjectOperation>,
}

/// How a deletion propagates to dependents ([`ObjectPatchCollector::delete_with`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Dependents first (`Delete`).
    Foreground,
    /// The object now, dependents after (`DeleteInBackground`).
    Background,
    /// Dependents are left (`DeleteNonCascading`).
    NonCascading,
}

/// The body of a patch operation ([`ObjectPatchCollector::patch`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Patch {
    /// An RFC 7386 merge patch.
    Merge(Value),
    /// An RFC 6902 JSON patch (a list of operations).
    Json(Value),
}

impl ObjectPatchCollector {
    fn create_with(&mut self, op: Operation, object: Value) {
        let mut o = ObjectOperation::targeted(op, "", "", "", "");
        o.object = Some(object);
        self.ops.push(o);
    }

    /// Creates the object; the runner fails if it exists.
    pub fn create(&mut self, object: Value) {
        self.create_with(Operation::Create, object)
    }

    /// Creates or replaces the object.
    pub fn create_or_update(&mut self, object: Value) {
        self.create_with(Operation::CreateOrUpdate, object)
    }

    /// Creates the object unless it exists.
    pub fn create_if_not_exists(&mut self, object: Value) {
        self.create_with(Operation::CreateIfNotExists, object)
    }

    /// Deletes in the foreground.
    pub fn delete(&mut self, api_version: &str, kind: &str, namespace: &str, name: &str) {
        self.delete_with(Deletion::Foreground, api_version, kind, namespace, name)
    }

    /// Deletes with the propagation `how`.
    pub fn delete_with(
        &mut self,
        how: Deletion,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) {
        let op = match how {
            Deletion::Foreground => Operation::Delete,
            Deletion::Background => Operation::DeleteInBackground,
            Deletion::NonCascading => Operation::DeleteNonCascading,
        };
        self.targeted(op, [api_version, kind, namespace, name], "", false);
    }

    /// Patches an object with `patch` (a merge or a JSON patch), its `subresource`
    /// when not empty; `ignore_missing` makes a missing object not an error.
    #[allow(clippy::too_many_arguments)]
    pub fn patch(
        &mut self,
        patch: Patch,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
        subresource: &str,
        ignore_missing: bool,
    ) {
        let target = [api_version, kind, namespace, name];
        match patch {
            Patch::Merge(v) => {
                self.targeted(Operation::MergePatch, target, subresource, ignore_missing)
                    .merge_patch = Some(v)
            }
            Patch::Json(v) => {
                self.targeted(Operation::JSONPatch, target, subresource, ignore_missing)
                    .json_patch = Some(v)
            }
        }
    }

    /// Patch with a jq program.
    pub fn jq_patch(
        &mut self,
        filter: &str,
        api_version: &str,
        kind: &str,
        namespace: &str,
        name: &str,
    ) {
        let target = [api_version, kind, namespace, name];
        self.targeted(Operation::JQPatch, target, "", false)
            .jq_filter = Some(filter.into());
    }

    /// Records operation `op` on the object `[apiVersion, kind, namespace, name]` and
    /// returns it for its patch body.
    fn targeted(
        &mut self,
        op: Operation,
        [api_version, kind, namespace, name]: [&str; 4],
        subresource: &str,
        ignore_missing: bool,
    ) -> &mut ObjectOperation {
        let mut o = ObjectOperation::targeted(op, api_version, kind, namespace, name);
        o.subresource = subresource.into();
        o.ignore_missing_object = ignore_missing;
        self.ops.push(o);
        self.ops.last_mut().expect("just pushed")
    }

    /// The recorded operations.
    pub fn operations(&self) -> &[ObjectOperation] {
        &self.ops
    }
}

/// Parses a Kubernetes patch file: a stream of JSON objects (YAML is not produced by
/// this SDK and not read here).
pub fn parse_object_operations(text: &str) -> Result<Vec<ObjectOperation>, ObjectsError> {
    let mut out = Vec::new();
    for (index, item) in serde_json::Deserializer::from_str(text)
        .into_iter::<ObjectOperation>()
        .enumerate()
    {
        let op = item.map_err(|e| ObjectsError::Parse {
            index,
            message: crate::log::redact(&e.to_string()),
        })?;
        op.validate()
            .map_err(|error| ObjectsError::Invalid { index, error })?;
        out.push(op);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_operation_round_trips_and_validates() {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "ns"}});
        let mut c = ObjectPatchCollector::default();
        c.create(obj.clone());
        c.create_or_update(obj.clone());
        c.create_if_not_exists(obj);
        c.delete("v1", "Secret", "ns", "s");
        c.delete_with(Deletion::Background, "v1", "Secret", "ns", "s");
        c.delete_with(Deletion::NonCascading, "v1", "Secret", "ns", "s");
        let merge = Patch::Merge(json!({"data": null}));
        c.patch(merge, "v1", "Secret", "ns", "s", "", true);
        c.patch(
            Patch::Json(json!([{"op": "remove", "path": "/data"}])),
            "v1",
            "Secret",
            "ns",
            "s",
            "status",
            false,
        );
        c.jq_patch(".data = {}", "v1", "Secret", "ns", "s");
        let stream: String = c
            .operations()
            .iter()
            .map(|o| serde_json::to_string(o).unwrap() + "\n")
            .collect();
        let back = parse_object_operations(&stream).unwrap();
        assert_eq!(back, c.operations());
        assert!(stream
            .lines()
            .next()
            .unwrap()
            .starts_with("{\"operation\":\"Create\""));
        assert!(stream.contains("\"ignoreMissingObject\":true"));
        assert!(
            !stream.contains("ignoreHookError"),
            "false flags are omitted"
        );
    }

    #[test]
    fn incomplete_operations_are_refused() {
        for bad in [
            json!({"operation": "Create"}),
            json!({"operation": "Create", "object": {"kind": "Secret", "metadata": {"name": "x"}}}),
            json!({"operation": "Delete", "kind": "Secret"}),
            json!({"operation": "MergePatch", "kind": "Secret", "name": "x"}),
            json!({"operation": "Explode", "kind": "Secret", "name": "x"}),
        ] {
            assert!(parse_object_operations(&bad.to_string()).is_err(), "{bad}");
        }
    }
}
