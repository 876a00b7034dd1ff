//! What Deckhouse does around the module that the converge must do too: it keeps the
//! cluster's registry in the Secret `d8-system/deckhouse-registry` and gives every
//! module `global.modulesImages.registry` computed from it. So a pull Secret the
//! `registry-switch` hook rewrites shows in the next run's global values, as in a
//! cluster.

use anyhow::{Context as _, Result};
use base64::prelude::{Engine, BASE64_STANDARD};
use serde_json::{json, Value};

use super::store::{ObjKey, Store};
use crate::module::{NAMESPACE, PULL_SECRET, PULL_SECRET_TYPE};
use crate::switch::pull_secret::normalize_path;

fn key() -> ObjKey {
    ObjKey {
        namespace: NAMESPACE.into(),
        kind: "Secret".into(),
        name: PULL_SECRET.into(),
    }
}

/// Puts the pull Secret into the cluster from `registry` (the global values' registry,
/// e.g. `base: host/path` and an optional base64 `dockercfg`), unless it exists, as
/// the installer does.
pub fn seed_pull_secret(cluster: &mut Store, registry: &Value) -> Result<()> {
    if cluster.get(&key()).is_some() {
        return Ok(());
    }
    let base = registry["base"]
        .as_str()
        .context("global.modulesImages.registry.base is missing")?;
    let (address, path) = base.split_once('/').unwrap_or((base, ""));
    let docker_config = match registry["dockercfg"].as_str() {
        Some(b64) => String::from_utf8(
            BASE64_STANDARD
                .decode(b64)
                .context("global.modulesImages.registry.dockercfg is not base64")?,
        )
        .context("global.modulesImages.registry.dockercfg is not UTF-8")?,
        None => json!({"auths": {address: {}}}).to_string(),
    };
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.into(), json!(crate::secrets::b64(v)));
    };
    put(".dockerconfigjson", &docker_config);
    put("address", address);
    put("path", &normalize_path(path));
    put("scheme", registry["scheme"].as_str().unwrap_or("https"));
    put("imagesRegistry", base);
    if let Some(ca) = registry["CA"].as_str() {
        put("ca", ca);
    }
    cluster.put(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": PULL_SECRET, "namespace": NAMESPACE},
        "type": PULL_SECRET_TYPE,
        "data": data,
    }))
}

/// `global.modulesImages.registry` as Deckhouse computes it from the pull Secret
/// (`None` when there is none).
pub fn registry_values(cluster: &Store) -> Result<Option<Value>> {
    let Some(secret) = cluster.get(&key()) else {
        return Ok(None);
    };
    let field = |k: &str| -> Result<String> {
        let b64 = secret["data"][k].as_str().unwrap_or("");
        let bytes = BASE64_STANDARD
            .decode(b64)
            .with_context(|| format!("Secret {NAMESPACE}/{PULL_SECRET}: {k} is not base64"))?;
        String::from_utf8(bytes)
            .with_context(|| format!("Secret {NAMESPACE}/{PULL_SECRET}: {k} is not UTF-8"))
    };
    let address = field("address")?;
    let path = normalize_path(&field("path")?);
    let mut registry = json!({
        "base": format!("{address}{path}"),
        "address": address,
        "path": path,
        "scheme": field("scheme")?,
        "dockercfg": secret["data"][".dockerconfigjson"].as_str().unwrap_or(""),
    });
    let ca = field("ca")?;
    if !ca.is_empty() {
        registry["CA"] = json!(ca);
    }
    Ok(Some(registry))
}
