//! The converge's input files (ModuleConfig, `--nodes`, `--global-values`), read with
//! bounds: a size cap checked before the file is read, a nesting depth, and no
//! duplicate keys (the API server refuses them; a silent last-wins would hide a typo).
//!
//! YAML goes through `serde-saphyr`, a streaming parser whose budget stops a deep
//! document as soon as it passes the limit (libyaml, under `serde_yaml_ng`, scans
//! deeply nested flow collections in quadratic time). Every error is one line that
//! names the file and, where there is one, the key path; it never quotes a value.

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Largest ModuleConfig accepted: 1 MiB. A real one is a few KiB (a CA bundle included);
/// the API server stores objects of at most 1.5 MiB.
pub const MODULE_CONFIG_MAX_BYTES: u64 = 1 << 20;
/// Largest `--global-values` file accepted: 4 MiB (Deckhouse's global values, image
/// digests of every module included, are a few hundred KiB).
pub const GLOBAL_VALUES_MAX_BYTES: u64 = 4 << 20;
/// Largest `--nodes` file accepted: 256 MiB, room for 5,000 full Nodes as `kubectl get
/// nodes -o json` prints them (about 27 KiB each with 25 images and three managed-field
/// entries, 50 KiB with kubelet's maximum of 50 images; YAML is less than half that).
pub const NODES_MAX_BYTES: u64 = 256 << 20;
/// Deepest nesting of lists and maps accepted in any input file: 64. A Node, its
/// managed fields included, is about 12 levels deep; a ModuleConfig about 6.
pub const MAX_DEPTH: usize = 64;
/// Most YAML parser events in one input (a scalar, a list or a map start and end each
/// count one): 5,000 full Nodes are about 5 million; the cap also bounds the memory a
/// file of tiny scalars can take.
const MAX_EVENTS: usize = 40_000_000;

/// An input that cannot be used: the one-line reason (without the file name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError(pub String);

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Reads a whole text file of at most `limit` bytes; a larger one is refused before
/// it is read into memory.
pub fn read_bounded(path: &Path, limit: u64) -> Result<String, InputError> {
    let file = std::fs::File::open(path).map_err(|e| InputError(format!("cannot read: {e}")))?;
    let mut text = String::new();
    file.take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|e| InputError(format!("cannot read: {e}")))?;
    if text.len() as u64 > limit {
        return Err(InputError(format!(
            "larger than {} (the limit for this input): pass a smaller file",
            crate::untrusted::size(limit)
        )));
    }
    Ok(text)
}

/// Parses every YAML (or JSON) document of `text`: no duplicate keys, nesting at most
/// [`MAX_DEPTH`]. An empty document is `null`.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, InputError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            // The seed below refuses depth MAX_DEPTH + 1 naming the path; the budget,
            // one level further, stops the parser itself on anything deeper.
            max_depth: MAX_DEPTH + 2,
            flow_nesting_limit: MAX_DEPTH + 2,
            max_events: MAX_EVENTS,
            max_nodes: MAX_EVENTS / 2,
            // The file size bounds these; the defaults (64 MiB, 1,024 documents) are
            // below what 5,000 Nodes, one document each, need.
            max_total_scalar_bytes: NODES_MAX_BYTES as usize,
            max_documents: 20_000,
        },
        // Aliases replay events: count them against the same cap (PyYAML's dump
        // shares equal maps between Nodes as anchors).
        alias_limits: serde_saphyr::alias_limits! { max_total_replayed_events: MAX_EVENTS },
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
        non_finite_float_policy: serde_saphyr::NonFiniteFloatPolicy::PassThrough,
    };
    let docs: Vec<Strict> = serde_saphyr::from_multiple_with_options(text, options)
        .map_err(|e| InputError(one_line(&e)))?;
    Ok(docs.into_iter().map(|d| d.0).collect())
}

/// Parses `text` as exactly one document (an empty one is `null`).
pub fn parse_document(text: &str) -> Result<Value, InputError> {
    let mut docs = parse_documents(text)?;
    match docs.len() {
        0 => Ok(Value::Null),
        1 => Ok(docs.remove(0)),
        n => Err(InputError(format!(
            "{n} YAML documents where one is expected: keep one"
        ))),
    }
}

/// The parser's error as one line: the message and its position, no source snippet
/// (a snippet would quote the file, passwords included).
fn one_line(e: &serde_saphyr::Error) -> String {
    let text = e.without_snippet().to_string();
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let first = first.trim().trim_start_matches("error: ");
    if ["budget breached: Depth", "recursion limit", "flow nesting"]
        .iter()
        .any(|m| first.contains(m))
    {
        return format!("nested deeper than {MAX_DEPTH} levels ({first}): flatten it");
    }
    format!("not valid YAML or JSON: {first}")
}

/// A path in a document, for error lines: `spec.settings.proxy`, `items[3].metadata`.
#[derive(Clone, Copy)]
enum KeyPath<'a> {
    Root,
    Key(&'a KeyPath<'a>, &'a str),
    Index(&'a KeyPath<'a>, usize),
}

impl fmt::Display for KeyPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyPath::Root => f.write_str("(the document root)"),
            KeyPath::Key(KeyPath::Root, k) => f.write_str(k),
            KeyPath::Key(parent, k) => write!(f, "{parent}.{k}"),
            KeyPath::Index(KeyPath::Root, i) => write!(f, "[{i}]"),
            KeyPath::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

impl KeyPath<'_> {
    /// The path, cut to a readable length (a deep path repeats itself).
    fn short(&self) -> String {
        let full = self.to_string();
        if full.chars().count() <= 160 {
            return full;
        }
        let head: String = full.chars().take(150).collect();
        format!("{head}…")
    }
}

/// A JSON value read with the strict rules.
struct Strict(Value);

impl<'de> de::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Seed {
            depth: 0,
            path: &KeyPath::Root,
        }
        .deserialize(d)
        .map(Strict)
    }
}

/// Builds a `serde_json::Value` as serde_json's own visitor does, but refuses a
/// duplicate key and nesting deeper than [`MAX_DEPTH`], naming the path.
#[derive(Clone, Copy)]
struct Seed<'a> {
    /// Containers above this value.
    depth: usize,
    path: &'a KeyPath<'a>,
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Seed<'_> {
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "{}: nested deeper than {MAX_DEPTH} levels: flatten it",
                self.path.short()
            )));
        }
        Ok(depth)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut items = Vec::new();
        loop {
            let path = KeyPath::Index(self.path, items.len());
            match seq.next_element_seed(Seed { depth, path: &path })? {
                Some(v) => items.push(v),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let depth = self.enter()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = KeyPath::Key(self.path, &key);
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!(
                    "{}: duplicate key: keep one",
                    path.short()
                )));
            }
            let value = map.next_value_seed(Seed { depth, path: &path })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn documents_parse_like_before() {
        let v =
            parse_document("a: 1\nb: [x, {c: true}]\nd: ~\ne: \"s\"\nf: 10.128.0.10\n").unwrap();
        assert_eq!(
            v,
            json!({"a": 1, "b": ["x", {"c": true}], "d": null, "e": "s", "f": "10.128.0.10"})
        );
        assert_eq!(parse_document("").unwrap(), Value::Null);
        assert_eq!(
            parse_document(r#"{"a": {"b": [1, 2.5]}}"#).unwrap(),
            json!({"a": {"b": [1, 2.5]}})
        );
        let docs = parse_documents("a: 1\n---\nb: 2\n").unwrap();
        assert_eq!(docs, vec![json!({"a": 1}), json!({"b": 2})]);
        assert!(parse_document("a: 1\n---\nb: 2\n")
            .unwrap_err()
            .0
            .contains("2 YAML documents"));
    }

    #[test]
    fn duplicate_keys_are_refused_naming_the_path() {
        let e =
            parse_document("spec:\n  settings:\n    mode: Proxy\n    mode: Direct\n").unwrap_err();
        assert!(e.0.contains("spec.settings.mode: duplicate key"), "{e}");
        assert!(!e.0.contains("Direct") && !e.0.contains('\n'), "{e}");
        let e = parse_document(r#"{"items": [{"a": 1, "a": 2}]}"#).unwrap_err();
        assert!(e.0.contains("items[0].a: duplicate key"), "{e}");
    }

    #[test]
    fn depth_is_bounded_and_deep_documents_fail_fast() {
        let nest = |n: usize| "[".repeat(n) + &"]".repeat(n);
        assert!(parse_document(&nest(MAX_DEPTH)).is_ok());
        let e = parse_document(&nest(MAX_DEPTH + 1)).unwrap_err();
        assert!(e.0.contains("nested deeper than 64 levels"), "{e}");
        // 200,000 levels: refused at the limit, not parsed (libyaml took minutes).
        let e = parse_document(&nest(200_000)).unwrap_err();
        assert!(e.0.contains("nested deeper than 64 levels"), "{e}");
        let block: String = (0..200).map(|i| " ".repeat(i) + "a:\n").collect();
        let e = parse_document(&block).unwrap_err();
        assert!(e.0.contains("nested deeper than 64 levels"), "{e}");
        let e =
            parse_document(&("{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000))).unwrap_err();
        assert!(e.0.contains("nested deeper than 64 levels"), "{e}");
    }

    #[test]
    fn errors_are_one_line_without_the_source() {
        let e = parse_document("password: s3cr3t\nkey: [unclosed\n").unwrap_err();
        assert!(e.0.starts_with("not valid YAML or JSON: "), "{e}");
        assert!(!e.0.contains('\n') && !e.0.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn big_files_are_refused_before_reading() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.yaml");
        std::fs::write(&p, "a: 1\n".repeat(300)).unwrap();
        assert!(read_bounded(&p, 1500).is_ok());
        let e = read_bounded(&p, 1499).unwrap_err();
        assert!(e.0.contains("larger than 1499 bytes"), "{e}");
        let e = read_bounded(&dir.path().join("absent"), 10).unwrap_err();
        assert!(e.0.starts_with("cannot read"), "{e}");
    }
}
