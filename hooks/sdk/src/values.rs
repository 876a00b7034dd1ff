//! Values and their patches.
//!
//! The runner accepts only `add` and `remove` operations and applies them strictly
//! (RFC 6902: `add` needs an existing parent, `remove` an existing path). A
//! [`PatchableValues`] keeps a working copy so a handler reads its own writes, and
//! records exactly the operations the runner will replay.

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A values read or write a handler asked for that cannot be done. Messages never quote
/// values (they may be secrets).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValuesError {
    /// A dotted path with an empty segment (`a..b`, `.a`).
    #[error("values path {path:?}: empty segment")]
    EmptySegment {
        /// The path.
        path: String,
    },
    /// Setting below something that is not an object.
    #[error("values {path}: {parent} is not an object")]
    NotAnObject {
        /// The path set.
        path: String,
        /// The part of it that holds a non-object.
        parent: String,
    },
    /// The value does not serialise to JSON.
    #[error("values {path}: {message}")]
    Serialize {
        /// The path set.
        path: String,
        /// serde's message.
        message: String,
    },
    /// The value at a path does not deserialise into the type asked for.
    #[error("values {path}: {message}")]
    Deserialize {
        /// The path read.
        path: String,
        /// serde's message, quoted values redacted.
        message: String,
    },
}

/// A values patch the runner would refuse, or could not apply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    /// A document of the patch stream is not JSON.
    #[error("document {index}: {message}")]
    Document {
        /// Its position in the stream.
        index: usize,
        /// The parser's message, quoted values redacted.
        message: String,
    },
    /// An operation other than `add` and `remove`.
    #[error("operation {op:?} is not allowed in a values patch: only add and remove")]
    Operation {
        /// The operation given.
        op: String,
    },
    /// An entry without `op`.
    #[error("values patch entry without op")]
    NoOp,
    /// An entry without `path`.
    #[error("values patch entry without path")]
    NoPath,
    /// Operations that are not RFC 6902.
    #[error("malformed values patch: {message}")]
    Malformed {
        /// The parser's message, quoted values redacted.
        message: String,
    },
    /// An operation that fails on the document (strict RFC 6902).
    #[error("values patch: {message}")]
    Apply {
        /// json-patch's message.
        message: String,
    },
}

/// Escapes one JSON Pointer segment (RFC 6901).
pub fn escape_pointer_segment(s: &str) -> String {
    s.replace('~', "~0").replace('/', "~1")
}

fn pointer(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| format!("/{}", escape_pointer_segment(s)))
        .collect()
}

fn split(path: &str) -> Result<Vec<&str>, ValuesError> {
    let segments: Vec<&str> = path.split('.').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(ValuesError::EmptySegment { path: path.into() });
    }
    Ok(segments)
}

/// Values plus the patch that produces their current state from the original.
#[derive(Clone, Debug)]
pub struct PatchableValues {
    current: Value,
    ops: Vec<Value>,
}

impl PatchableValues {
    /// Wraps a values document (usually `{"global": ..., "<module>": ...}`).
    pub fn new(values: Value) -> Self {
        PatchableValues {
            current: values,
            ops: Vec::new(),
        }
    }

    /// The value at a dotted path (`embeddedRegistry.internal.masters`).
    pub fn get(&self, path: &str) -> Option<&Value> {
        let mut v = &self.current;
        for seg in path.split('.') {
            v = v.as_object()?.get(seg)?;
        }
        Some(v)
    }

    /// The value at a dotted path, deserialised; `Ok(None)` when absent or null.
    pub fn get_as<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, ValuesError> {
        match self.get(path) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => T::deserialize(v)
                .map(Some)
                .map_err(|e| ValuesError::Deserialize {
                    path: path.into(),
                    message: crate::log::redact(&e.to_string()),
                }),
        }
    }

    /// The whole working document.
    pub fn document(&self) -> &Value {
        &self.current
    }

    /// Sets `path` to `value`: missing parent objects are added first (the runner's
    /// strict `add` would refuse them), and nothing is recorded when the value is
    /// already there, so a second run on the same input emits no patch.
    pub fn set<T: Serialize + ?Sized>(&mut self, path: &str, value: &T) -> Result<(), ValuesError> {
        let value = serde_json::to_value(value).map_err(|e| ValuesError::Serialize {
            path: path.into(),
            message: crate::log::redact(&e.to_string()),
        })?;
        let segments = split(path)?;
        if self.get(path) == Some(&value) {
            return Ok(());
        }
        let mut node = &mut self.current;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            let Some(obj) = node.as_object_mut() else {
                return Err(ValuesError::NotAnObject {
                    path: path.into(),
                    parent: segments[..i].join("."),
                });
            };
            if last {
                obj.insert(seg.to_string(), value.clone());
                self.ops
                    .push(json!({"op": "add", "path": pointer(&segments), "value": value}));
                return Ok(());
            }
            if !obj.contains_key(*seg) {
                obj.insert(seg.to_string(), Value::Object(Map::new()));
                self.ops
                    .push(json!({"op": "add", "path": pointer(&segments[..=i]), "value": {}}));
            }
            node = obj.get_mut(*seg).expect("just ensured");
        }
        unreachable!("split never returns an empty path")
    }

    /// Removes `path` if it exists; records nothing otherwise (the runner refuses to
    /// remove a missing path).
    pub fn remove(&mut self, path: &str) -> Result<(), ValuesError> {
        let segments = split(path)?;
        let (last, parents) = segments.split_last().expect("non-empty");
        let mut node = &mut self.current;
        for seg in parents {
            match node.as_object_mut().and_then(|o| o.get_mut(*seg)) {
                Some(next) => node = next,
                None => return Ok(()),
            }
        }
        if let Some(obj) = node.as_object_mut() {
            if obj.remove(*last).is_some() {
                self.ops
                    .push(json!({"op": "remove", "path": pointer(&segments)}));
            }
        }
        Ok(())
    }

    /// The recorded operations, in order.
    pub fn patch(&self) -> &[Value] {
        &self.ops
    }
}

/// Parses a values patch file: a stream of JSON values, each an operation or an array
/// of operations. Only `add` and `remove` are accepted, as the runner does.
pub fn parse_values_patch(text: &str) -> Result<Vec<Value>, PatchError> {
    let mut ops = Vec::new();
    for (index, item) in serde_json::Deserializer::from_str(text)
        .into_iter::<Value>()
        .enumerate()
    {
        let item = item.map_err(|e| PatchError::Document {
            index,
            message: crate::log::redact(&e.to_string()),
        })?;
        match item {
            Value::Array(items) => ops.extend(items),
            other => ops.push(other),
        }
    }
    for op in &ops {
        match op.get("op").and_then(Value::as_str) {
            Some("add") | Some("remove") => {}
            Some(other) => return Err(PatchError::Operation { op: other.into() }),
            None => return Err(PatchError::NoOp),
        }
        if op.get("path").and_then(Value::as_str).is_none() {
            return Err(PatchError::NoPath);
        }
    }
    Ok(ops)
}

/// Applies operations to a document strictly (RFC 6902), all or nothing.
pub fn apply_values_patch(doc: &mut Value, ops: &[Value]) -> Result<(), PatchError> {
    let patch: json_patch::Patch =
        serde_json::from_value(Value::Array(ops.to_vec())).map_err(|e| PatchError::Malformed {
            message: crate::log::redact(&e.to_string()),
        })?;
    // The copy makes it all or nothing. json-patch's own undo (`patch`) panics when it
    // cannot revert some failed sequences (a `move` into the root), so it is not used.
    let mut work = doc.clone();
    json_patch::patch_unsafe(&mut work, &patch).map_err(|e| PatchError::Apply {
        message: e.to_string(),
    })?;
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_creates_parents_and_replays_strictly() {
        let original = json!({"global": {}, "m": {}});
        let mut v = PatchableValues::new(original.clone());
        v.set("m.internal.masters", &vec!["a", "b"]).unwrap();
        v.set("m.internal.mode", "Proxy").unwrap();
        assert_eq!(v.patch().len(), 3, "{:?}", v.patch());
        let mut replay = original;
        apply_values_patch(&mut replay, v.patch()).unwrap();
        assert_eq!(&replay, v.document());
    }

    #[test]
    fn setting_the_same_value_records_nothing() {
        let mut v = PatchableValues::new(json!({"m": {"internal": {"mode": "Proxy"}}}));
        v.set("m.internal.mode", "Proxy").unwrap();
        assert!(v.patch().is_empty());
    }

    #[test]
    fn remove_only_existing_paths() {
        let mut v = PatchableValues::new(json!({"m": {"a": 1}}));
        v.remove("m.b").unwrap();
        v.remove("m.x.y").unwrap();
        assert!(v.patch().is_empty());
        v.remove("m.a").unwrap();
        assert_eq!(v.patch(), &[json!({"op": "remove", "path": "/m/a"})]);
    }

    #[test]
    fn pointer_segments_are_escaped() {
        let mut v = PatchableValues::new(json!({"m": {}}));
        v.set("m.a/b~c", &1).unwrap();
        assert_eq!(v.patch()[0]["path"], "/m/a~1b~0c");
        let mut doc = json!({"m": {}});
        apply_values_patch(&mut doc, v.patch()).unwrap();
        assert_eq!(doc["m"]["a/b~c"], 1);
    }

    #[test]
    fn strict_semantics_of_the_runner() {
        let mut doc = json!({"m": {}});
        let missing_parent = vec![json!({"op": "add", "path": "/m/x/y", "value": 1})];
        assert!(apply_values_patch(&mut doc, &missing_parent).is_err());
        let missing_path = vec![json!({"op": "remove", "path": "/m/x"})];
        assert!(apply_values_patch(&mut doc, &missing_path).is_err());
        assert_eq!(doc, json!({"m": {}}), "a failed patch changes nothing");
        let partly_bad = vec![
            json!({"op": "add", "path": "/m/a", "value": 1}),
            json!({"op": "remove", "path": "/m/zz"}),
        ];
        assert!(apply_values_patch(&mut doc, &partly_bad).is_err());
        assert_eq!(doc, json!({"m": {}}), "all or nothing");
    }

    #[test]
    fn patch_files_are_streams_and_replace_is_refused() {
        let text = "{\"op\":\"add\",\"path\":\"/m/a\",\"value\":1}\n[{\"op\":\"remove\",\"path\":\"/m/a\"}]";
        assert_eq!(parse_values_patch(text).unwrap().len(), 2);
        assert!(parse_values_patch("").unwrap().is_empty());
        let e =
            parse_values_patch("[{\"op\":\"replace\",\"path\":\"/m\",\"value\":1}]").unwrap_err();
        assert!(e.to_string().contains("replace"));
        assert!(parse_values_patch("[{\"op\":\"add\"").is_err());
    }

    #[test]
    fn set_through_a_scalar_is_an_error() {
        let mut v = PatchableValues::new(json!({"m": 5}));
        assert!(v.set("m.a", &1).is_err());
    }
}
