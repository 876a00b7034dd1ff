//! A file-backed cluster: one JSON file per object at
//! `objects/<namespace or _cluster>/<Kind>/<name>.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use hook_sdk::objects::{ObjectOperation, Operation};
use serde_json::Value;

/// Directory name used for cluster-scoped objects.
pub const CLUSTER_SCOPE: &str = "_cluster";

/// Identity of an object.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjKey {
    /// Namespace; empty for cluster-scoped objects.
    pub namespace: String,
    /// Kind, e.g. `Secret`.
    pub kind: String,
    /// Name.
    pub name: String,
}

impl ObjKey {
    /// The key of a full object.
    pub fn of(obj: &Value) -> Result<Self> {
        let s = |p: &str| {
            obj.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let key = ObjKey {
            namespace: s("/metadata/namespace"),
            kind: s("/kind"),
            name: s("/metadata/name"),
        };
        if key.kind.is_empty() || key.name.is_empty() {
            bail!("object without kind or metadata.name");
        }
        key.check()?;
        Ok(key)
    }

    fn check(&self) -> Result<()> {
        for part in [&self.namespace, &self.kind, &self.name] {
            if part.contains('/')
                || part.contains('\0')
                || part == ".."
                || part == "."
                || part.starts_with('.')
            {
                bail!("object {self}: {part:?} cannot be a file name");
            }
        }
        Ok(())
    }

    fn relative_path(&self) -> PathBuf {
        let ns = if self.namespace.is_empty() {
            CLUSTER_SCOPE
        } else {
            &self.namespace
        };
        Path::new(ns).join(&self.kind).join(file_name(&self.name))
    }
}

/// Names longer than this are stored under a shortened file name: a Kubernetes name may
/// hold 253 characters, a file name 255 bytes, and the atomic write's temporary name
/// adds about 25 (`.<name>.tmp-<random>`).
const NAME_IN_FILE_MAX: usize = 200;

/// The file an object of this name is stored in: `<name>.json`, or for a long name its
/// first 160 characters and a digest of the whole (objects are loaded by their content,
/// so the file name only has to be unique).
fn file_name(name: &str) -> String {
    if name.len() <= NAME_IN_FILE_MAX {
        return format!("{name}.json");
    }
    use sha2::{Digest, Sha256};
    let head: String = name.chars().take(160).collect();
    let digest: String = Sha256::digest(name.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{head}-{digest}.json")
}

impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{}/{}", self.kind, self.name)
        } else {
            write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
        }
    }
}

/// The objects of the file-backed cluster.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Store {
    objects: BTreeMap<ObjKey, Value>,
}

/// What differs between two stores.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Changes {
    /// Keys only in the new store.
    pub created: Vec<String>,
    /// Keys in both with different content.
    pub updated: Vec<String>,
    /// Keys only in the old store.
    pub deleted: Vec<String>,
}

impl Changes {
    /// Whether anything changed.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty() && self.updated.is_empty() && self.deleted.is_empty()
    }
}

impl Store {
    /// Loads `dir/objects` (an absent directory is an empty cluster).
    pub fn load(dir: &Path) -> Result<Self> {
        let root = dir.join("objects");
        let mut store = Store::default();
        if !root.exists() {
            return Ok(store);
        }
        for ns in read_dir_sorted(&root)? {
            for kind in read_dir_sorted(&ns)? {
                for file in read_dir_sorted(&kind)? {
                    if file.extension().and_then(|e| e.to_str()) != Some("json") {
                        continue;
                    }
                    let text = std::fs::read_to_string(&file)
                        .with_context(|| format!("{}: cannot read", file.display()))?;
                    let obj: Value = serde_json::from_str(&text)
                        .with_context(|| format!("{}: not a JSON object", file.display()))?;
                    let key = ObjKey::of(&obj).with_context(|| file.display().to_string())?;
                    store.objects.insert(key, obj);
                }
            }
        }
        Ok(store)
    }

    /// All objects, ordered by namespace, kind, name.
    pub fn iter(&self) -> impl Iterator<Item = (&ObjKey, &Value)> {
        self.objects.iter()
    }

    /// One object.
    pub fn get(&self, key: &ObjKey) -> Option<&Value> {
        self.objects.get(key)
    }

    /// Inserts or replaces an object.
    pub fn put(&mut self, obj: Value) -> Result<()> {
        let key = ObjKey::of(&obj)?;
        self.objects.insert(key, obj);
        Ok(())
    }

    /// Removes every object of `kind` (cluster-scoped or not).
    pub fn remove_kind(&mut self, kind: &str) {
        self.objects.retain(|k, _| k.kind != kind);
    }

    /// Applies one hook object operation, as the API server and runner would.
    pub fn apply(&mut self, op: &ObjectOperation) -> Result<()> {
        let target = || -> Result<ObjKey> {
            let key = ObjKey {
                namespace: op.namespace.clone(),
                kind: op.kind.clone(),
                name: op.name.clone(),
            };
            key.check()?;
            Ok(key)
        };
        match op.operation {
            Operation::Create | Operation::CreateOrUpdate | Operation::CreateIfNotExists => {
                let obj = op.object.clone().context("operation without object")?;
                let key = ObjKey::of(&obj)?;
                let exists = self.objects.contains_key(&key);
                match op.operation {
                    Operation::Create if exists => bail!("Create {key}: already exists"),
                    Operation::CreateIfNotExists if exists => {}
                    _ => {
                        self.objects.insert(key, obj);
                    }
                }
            }
            Operation::Delete | Operation::DeleteInBackground | Operation::DeleteNonCascading => {
                self.objects.remove(&target()?);
            }
            Operation::MergePatch | Operation::JSONPatch | Operation::JQPatch => {
                let key = target()?;
                let Some(obj) = self.objects.get_mut(&key) else {
                    if op.ignore_missing_object {
                        return Ok(());
                    }
                    bail!("{:?} {key}: not found", op.operation);
                };
                let mut patched = obj.clone();
                match op.operation {
                    Operation::MergePatch => json_patch::merge(
                        &mut patched,
                        op.merge_patch.as_ref().context("no mergePatch")?,
                    ),
                    Operation::JSONPatch => {
                        let p: json_patch::Patch =
                            serde_json::from_value(op.json_patch.clone().context("no jsonPatch")?)
                                .with_context(|| format!("JSONPatch {key}: malformed"))?;
                        json_patch::patch(&mut patched, &p)
                            .with_context(|| format!("JSONPatch {key}"))?;
                    }
                    _ => {
                        let filter = op.jq_filter.as_deref().context("no jqFilter")?;
                        patched = super::jq::run(filter, &patched)?;
                    }
                }
                if ObjKey::of(&patched)? != key {
                    bail!(
                        "{:?} {key}: a patch may not change kind, namespace or name",
                        op.operation
                    );
                }
                *obj = patched;
            }
        }
        Ok(())
    }

    /// The difference from `old` to `self`.
    pub fn diff(&self, old: &Store) -> Changes {
        let mut c = Changes::default();
        for (k, v) in &self.objects {
            match old.objects.get(k) {
                None => c.created.push(k.to_string()),
                Some(o) if o != v => c.updated.push(k.to_string()),
                _ => {}
            }
        }
        for k in old.objects.keys() {
            if !self.objects.contains_key(k) {
                c.deleted.push(k.to_string());
            }
        }
        c
    }

    /// Writes what differs from `old` under `dir/objects`, each file atomically.
    pub fn save(&self, dir: &Path, old: &Store) -> Result<()> {
        let root = dir.join("objects");
        for (k, v) in &self.objects {
            if old.objects.get(k) == Some(v) {
                continue;
            }
            let path = root.join(k.relative_path());
            std::fs::create_dir_all(path.parent().expect("has parent"))
                .with_context(|| format!("{}: cannot create", path.display()))?;
            let text = serde_json::to_string_pretty(v).expect("serialisable") + "\n";
            // Objects may be Secrets: readable by the owner only.
            hook_sdk::fsutil::stage(&path, text.as_bytes(), Some(0o600))?.commit()?;
        }
        for k in old.objects.keys() {
            if !self.objects.contains_key(k) {
                let path = root.join(k.relative_path());
                std::fs::remove_file(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            }
        }
        Ok(())
    }
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": "d8-system"}, "data": {"a": "1"}})
    }

    fn op(v: Value) -> ObjectOperation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operations_behave_like_the_api_server() {
        let mut s = Store::default();
        s.apply(&op(json!({"operation": "Create", "object": secret("a")})))
            .unwrap();
        assert!(s
            .apply(&op(json!({"operation": "Create", "object": secret("a")})))
            .is_err());
        s.apply(&op(json!({"operation": "CreateIfNotExists", "object": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a", "namespace": "d8-system"}}})))
            .unwrap();
        let key = ObjKey::of(&secret("a")).unwrap();
        assert_eq!(
            s.get(&key).unwrap()["data"]["a"],
            "1",
            "CreateIfNotExists keeps the existing object"
        );
        s.apply(&op(json!({"operation": "MergePatch", "kind": "Secret", "namespace": "d8-system", "name": "a", "mergePatch": {"data": {"b": "2"}}})))
            .unwrap();
        assert_eq!(s.get(&key).unwrap()["data"], json!({"a": "1", "b": "2"}));
        s.apply(&op(json!({"operation": "JSONPatch", "kind": "Secret", "namespace": "d8-system", "name": "a", "jsonPatch": [{"op": "remove", "path": "/data/a"}]})))
            .unwrap();
        assert_eq!(s.get(&key).unwrap()["data"], json!({"b": "2"}));
        assert!(s
            .apply(&op(
                json!({"operation": "MergePatch", "kind": "Secret", "name": "zz", "mergePatch": {}})
            ))
            .is_err());
        s.apply(&op(json!({"operation": "MergePatch", "kind": "Secret", "name": "zz", "mergePatch": {}, "ignoreMissingObject": true})))
            .unwrap();
        s.apply(&op(
            json!({"operation": "Delete", "kind": "Secret", "namespace": "d8-system", "name": "a"}),
        ))
        .unwrap();
        assert!(s.get(&key).is_none());
        s.apply(&op(
            json!({"operation": "Delete", "kind": "Secret", "namespace": "d8-system", "name": "a"}),
        ))
        .unwrap();
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        let mut s = Store::default();
        let bad = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "../../etc", "namespace": "x"}});
        assert!(s.put(bad).is_err());
        assert!(s
            .apply(&op(
                json!({"operation": "Delete", "kind": "..", "name": "x"})
            ))
            .is_err());
    }

    #[test]
    fn a_name_as_long_as_kubernetes_allows_is_stored_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let before = Store::default();
        let mut store = before.clone();
        for name in ["a".repeat(253), "a".repeat(252)] {
            store
                .put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}}))
                .unwrap();
        }
        store.save(dir.path(), &before).unwrap();
        assert_eq!(Store::load(dir.path()).unwrap(), store);
    }

    #[test]
    fn save_writes_only_differences_and_load_reads_them_back() {
        let dir = tempfile::tempdir().unwrap();
        let empty = Store::default();
        let mut s = Store::default();
        s.put(secret("a")).unwrap();
        s.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}))
            .unwrap();
        s.save(dir.path(), &empty).unwrap();
        assert!(dir.path().join("objects/_cluster/Node/n1.json").exists());
        let back = Store::load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert!(back.diff(&s).is_empty());
        let mut t = back.clone();
        t.remove_kind("Node");
        let c = t.diff(&s);
        assert_eq!(c.deleted, vec!["Node/n1".to_string()]);
        t.save(dir.path(), &s).unwrap();
        assert!(!dir.path().join("objects/_cluster/Node/n1.json").exists());
    }
}
