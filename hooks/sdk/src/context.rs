//! Binding contexts (`$BINDING_CONTEXT_PATH`) and typed snapshot access.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::config::WatchEvent;

/// A binding context file, or a snapshot in it, that cannot be read as the runner
/// writes it. Messages never quote the input's values (they may be secrets).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// The file is empty.
    #[error("empty file: expected a JSON array of binding contexts")]
    Empty,
    /// JSON nested deeper than the limit.
    #[error("nested deeper than {max} levels (at byte {at}): the runner sends no such input")]
    TooDeep {
        /// The limit.
        max: usize,
        /// Where the limit was crossed.
        at: usize,
    },
    /// Not a JSON array of binding contexts.
    #[error("not a JSON array of binding contexts: {message}")]
    Malformed {
        /// The parser's message, quoted values redacted.
        message: String,
    },
    /// A context without a binding name.
    #[error("context {index}: binding is empty")]
    NoBinding {
        /// The context's position.
        index: usize,
    },
    /// An `Event` context without `watchEvent`.
    #[error("context {index} ({binding}): an Event context needs watchEvent")]
    NoWatchEvent {
        /// The context's position.
        index: usize,
        /// Its binding.
        binding: String,
    },
    /// A snapshot item that does not deserialise into the hook's type.
    #[error("snapshot {binding}[{index}]: {message}")]
    Snapshot {
        /// The binding.
        binding: String,
        /// The item's position.
        index: usize,
        /// The deserialiser's message, quoted values redacted.
        message: String,
    },
}

type Result<T> = std::result::Result<T, ContextError>;

/// The `type` of a binding context. Lifecycle contexts (`onStartup`, `beforeHelm`, ...)
/// carry no type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContextType {
    /// Initial list of a kubernetes binding's objects.
    Synchronization,
    /// One watch event.
    Event,
    /// A crontab tick.
    Schedule,
    /// Several bindings of one group, delivered as snapshots only.
    Group,
}

/// Deserialises a field so that "absent" (`None`) and "present but null"
/// (`Some(Value::Null)`) stay apart: a jqFilter that yields `null` is a result.
fn present<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// As [`present`], keeping the JSON text unparsed.
fn present_raw<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// One object of a snapshot, kept as JSON text: a hook deserialises it straight into
/// its own type, so fields it does not read cost no allocation (snapshots of thousands
/// of full objects are most of a run's input).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotItem {
    /// The full object (absent with `keepFullObjectsInMemory: false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Box<RawValue>>,
    /// The jqFilter result (present only with a jqFilter; may be `null`).
    #[serde(
        default,
        deserialize_with = "present_raw",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter_result: Option<Box<RawValue>>,
}

impl PartialEq for SnapshotItem {
    fn eq(&self, other: &Self) -> bool {
        let text = |v: &Option<Box<RawValue>>| v.as_ref().map(|r| r.get().to_owned());
        text(&self.object) == text(&other.object)
            && text(&self.filter_result) == text(&other.filter_result)
    }
}

fn raw(v: &Value) -> Box<RawValue> {
    serde_json::value::to_raw_value(v).expect("a Value always serialises")
}

impl SnapshotItem {
    /// An item holding only a filter result.
    pub fn filtered(v: &Value) -> Self {
        SnapshotItem {
            object: None,
            filter_result: Some(raw(v)),
        }
    }

    /// An item holding a full object and, optionally, a filter result.
    pub fn full(object: &Value, filter_result: Option<&Value>) -> Self {
        SnapshotItem {
            object: Some(raw(object)),
            filter_result: filter_result.map(raw),
        }
    }

    /// The JSON text a hook works with: `filterResult` when present, else `object`,
    /// else `null`.
    pub fn raw(&self) -> &str {
        self.filter_result
            .as_deref()
            .or(self.object.as_deref())
            .map(RawValue::get)
            .unwrap_or("null")
    }

    /// Whether that value is `null`.
    pub fn is_null(&self) -> bool {
        self.raw().trim() == "null"
    }

    /// Deserialises that value.
    pub fn parse<T: DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_str(self.raw())
    }
}

/// One binding context.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BindingContext {
    /// Binding name (`onStartup`, `beforeHelm`, a schedule or kubernetes binding, or
    /// the group name).
    pub binding: String,
    /// Context type; `None` for lifecycle bindings.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<ContextType>,
    /// For `Event`: what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_event: Option<WatchEvent>,
    /// For `Group`: the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
    /// For `Synchronization`: the binding's objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<SnapshotItem>>,
    /// For `Event`: the object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
    /// For `Event`: the object's filter result.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub filter_result: Option<Value>,
    /// Snapshots of bindings by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub snapshots: BTreeMap<String, Vec<SnapshotItem>>,
}

/// Largest binding context file a hook reads: 256 MiB, room for a Synchronization of
/// 5,000 full Nodes at up to 50 KiB of JSON each (managed fields and image lists
/// included; a typical Node is 5-15 KiB).
pub const MAX_CONTEXT_BYTES: u64 = 256 << 20;

/// Deepest nesting of arrays and objects in a binding context or values file: 128,
/// serde_json's own recursion limit, applied also to snapshot objects, which are kept
/// as raw JSON and would otherwise be scanned at any depth.
pub const MAX_JSON_DEPTH: usize = 128;

/// Refuses JSON nested deeper than `max` arrays/objects, in one linear pass over the
/// text (exact for JSON: brackets inside strings do not count).
pub fn check_json_depth(text: &str, max: usize) -> Result<()> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, b) in text.bytes().enumerate() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Err(ContextError::TooDeep { max, at: i });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Parses a binding context file's content: a JSON array of contexts.
pub fn parse_contexts(text: &str) -> Result<Vec<BindingContext>> {
    if text.trim().is_empty() {
        return Err(ContextError::Empty);
    }
    check_json_depth(text, MAX_JSON_DEPTH)?;
    let contexts: Vec<BindingContext> =
        serde_json::from_str(text).map_err(|e| ContextError::Malformed {
            message: crate::log::redact(&e.to_string()),
        })?;
    for (index, c) in contexts.iter().enumerate() {
        if c.binding.is_empty() {
            return Err(ContextError::NoBinding { index });
        }
        if c.kind == Some(ContextType::Event) && c.watch_event.is_none() {
            return Err(ContextError::NoWatchEvent {
                index,
                binding: c.binding.clone(),
            });
        }
    }
    Ok(contexts)
}

/// Snapshots by binding name.
///
/// Built from the last context of a run: it holds the freshest view. A
/// `Synchronization` context's own `objects` count as the snapshot of its binding.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshots {
    by_binding: BTreeMap<String, Vec<SnapshotItem>>,
}

impl Snapshots {
    /// Merges the contexts of one run, later contexts overriding earlier ones.
    pub fn from_contexts(contexts: &[BindingContext]) -> Self {
        let mut by_binding = BTreeMap::new();
        for c in contexts {
            for (k, v) in &c.snapshots {
                by_binding.insert(k.clone(), v.clone());
            }
            if let (Some(ContextType::Synchronization), Some(objects)) = (c.kind, &c.objects) {
                by_binding.insert(c.binding.clone(), objects.clone());
            }
        }
        Snapshots { by_binding }
    }

    /// As [`Snapshots::from_contexts`], moving the snapshots out of the contexts instead
    /// of copying them (snapshots of thousands of objects are the bulk of the input).
    /// The contexts keep everything else.
    pub fn take_from_contexts(contexts: &mut [BindingContext]) -> Self {
        let mut by_binding = BTreeMap::new();
        for c in contexts {
            by_binding.append(&mut std::mem::take(&mut c.snapshots));
            if c.kind == Some(ContextType::Synchronization) {
                if let Some(objects) = c.objects.take() {
                    by_binding.insert(c.binding.clone(), objects);
                }
            }
        }
        Snapshots { by_binding }
    }

    /// Whether the run carried a snapshot for `binding` (it may be empty).
    pub fn has(&self, binding: &str) -> bool {
        self.by_binding.contains_key(binding)
    }

    /// The raw items of `binding` (empty when the binding is absent).
    pub fn items(&self, binding: &str) -> &[SnapshotItem] {
        self.by_binding
            .get(binding)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Deserialises every non-null value of `binding` into `T`.
    ///
    /// A `null` value (a jqFilter that answered `null`, or an item with neither
    /// object nor filter result) is skipped: it means "nothing of interest here".
    pub fn get<T: DeserializeOwned>(&self, binding: &str) -> Result<Vec<T>> {
        self.items(binding)
            .iter()
            .enumerate()
            .filter(|(_, item)| !item.is_null())
            .map(|(index, item)| {
                item.parse::<T>().map_err(|e| ContextError::Snapshot {
                    binding: binding.into(),
                    index,
                    message: crate::log::redact(&e.to_string()),
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
