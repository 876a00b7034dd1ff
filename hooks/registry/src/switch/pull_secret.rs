//! The cluster's pull Secret `d8-system/deckhouse-registry`. Deckhouse renders every
//! platform image reference from its `address` and `path`, and kubelet pulls those
//! images with its `.dockerconfigjson`. kubelet hands containerd the credentials of the
//! image's registry, and containerd sends them to whichever mirror it tries: so the
//! masters' registries can only be reached with credentials they accept when the image
//! references name the embedded registry itself.
//!
//! While the cluster pulls through the masters, the Secret names the embedded registry
//! (the Service name, which nodes map to the masters in their containerd mirror
//! configuration) with the `ro` user and the module CA. The Secret it had before is
//! kept verbatim in [`SAVED_PULL_SECRET`] and put back when the cluster returns to the
//! upstream. Pure: [`plan`] says what to write; the `registry-switch` hook writes it.

use std::collections::BTreeMap;

use serde_json::json;

use crate::model::switch::ClusterTarget;
use crate::model::values::Master;
use crate::module::{service_address, NAMESPACE, PULL_SECRET, REGISTRY_PORT, SAVED_PULL_SECRET};

/// One `.dockerconfigjson` entry: user, password and their `auth` (base64 `user:password`).
pub fn auth_entry(user: &str, password: &str) -> serde_json::Value {
    let auth = crate::secrets::b64(&format!("{user}:{password}"));
    json!({"username": user, "password": password, "auth": auth})
}

/// The `.dockerconfigjson` for `user` on every master's endpoint and the Service name.
pub fn docker_config(masters: &[Master], user: &str, password: &str) -> String {
    let entry = auth_entry(user, password);
    let mut auths = serde_json::Map::new();
    for m in masters {
        auths.insert(format!("{}:{REGISTRY_PORT}", m.internal_ip), entry.clone());
    }
    auths.insert(service_address(), entry);
    json!({"auths": auths}).to_string()
}

/// Why the pull Secret cannot follow the cluster target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PullSecretError {
    /// The pull Secret is gone.
    #[error("Secret {NAMESPACE}/{PULL_SECRET} is missing: Deckhouse keeps the cluster's registry in it; restore it (its address, path and credentials) before switching to the embedded registry")]
    Missing,
    /// The module CA or the `ro` user is not there yet.
    #[error("the pull Secret cannot name the embedded registry yet: the module CA or the ro user is missing")]
    NotReady,
    /// The pull Secret names the embedded registry and the upstream's copy is gone.
    #[error("Secret {NAMESPACE}/{PULL_SECRET} names the embedded registry, but its saved upstream copy {NAMESPACE}/{SAVED_PULL_SECRET} is missing: write the upstream's address, path, scheme, ca and .dockerconfigjson back into {PULL_SECRET}; the registry stays until then")]
    SavedCopyMissing,
}

/// A Secret's decoded data.
pub type Data = BTreeMap<String, String>;

/// Whether a pull Secret names the embedded registry.
pub fn names_embedded(data: &Data) -> bool {
    data.get("address") == Some(&service_address())
}

/// `/a/b` from `a/b/`, `/a/b` or `a/b`; empty stays empty.
pub fn normalize_path(path: &str) -> String {
    let trimmed = path.trim().trim_matches('/');
    if trimmed.is_empty() {
        String::new()
    } else {
        format!("/{trimmed}")
    }
}

/// What the pull Secret holds while the cluster pulls through the masters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedded {
    /// Repository path of the platform images in the embedded registry.
    pub path: String,
    /// The module CA bundle (PEM).
    pub ca: String,
    /// The read-only user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// The `ro` credentials the pull Secret had, while a master still runs with them
    /// (the `ro` user was rotated): kept beside the new ones so pulls never stop.
    pub previous: Option<(String, String)>,
}

impl Embedded {
    /// The pull Secret's data: the keys it has (Deckhouse may keep more than the
    /// registry in it), with the registry's replaced.
    pub fn data(&self, current: &Data) -> Data {
        let address = service_address();
        let path = normalize_path(&self.path);
        let docker_config = match &self.previous {
            // kubelet tries every entry that matches an image, the most specific first:
            // the new password under `address/path`, the previous one under `address`.
            Some((user, password)) if !path.is_empty() && password != &self.password => {
                json!({"auths": {
                    format!("{address}{path}"): auth_entry(&self.user, &self.password),
                    address.clone(): auth_entry(user, password),
                }})
                .to_string()
            }
            _ => docker_config(&[], &self.user, &self.password),
        };
        let mut data = current.clone();
        for (k, v) in [
            (".dockerconfigjson", docker_config),
            ("imagesRegistry", format!("{address}{path}")),
            ("address", address),
            ("path", path),
            ("scheme", "https".to_string()),
            ("ca", self.ca.clone()),
        ] {
            data.insert(k.to_string(), v);
        }
        data
    }
}

/// The `ro` credentials a pull Secret that names the embedded registry holds under the
/// bare address (user, password).
pub fn ro_credentials(data: &Data) -> Option<(String, String)> {
    let auths: serde_json::Value = serde_json::from_str(data.get(".dockerconfigjson")?).ok()?;
    let entry = &auths["auths"][service_address()];
    Some((
        entry["username"].as_str()?.to_string(),
        entry["password"].as_str()?.to_string(),
    ))
}

/// One write the hook makes, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Keep this upstream pull Secret data in [`SAVED_PULL_SECRET`] (before it is replaced).
    Save(Data),
    /// Write this data into the pull Secret.
    Write(Data),
    /// Delete [`SAVED_PULL_SECRET`]: the pull Secret is the upstream's again.
    DropSaved,
}

/// The writes that make the pull Secret follow `cluster`. `current` is the pull Secret,
/// `saved` the saved copy, `embedded` what the Secret holds while the cluster pulls
/// through the masters (needed only for [`ClusterTarget::Embedded`]).
///
/// The saved copy is written before the pull Secret is replaced, and deleted only once
/// the pull Secret is seen restored, so the upstream's address and credentials always
/// exist somewhere. An error leaves everything as it is.
pub fn plan(
    cluster: ClusterTarget,
    current: Option<&Data>,
    saved: Option<&Data>,
    embedded: Option<&Embedded>,
) -> Result<Vec<Action>, PullSecretError> {
    let mut actions = Vec::new();
    match cluster {
        ClusterTarget::Embedded => {
            let current = current.ok_or(PullSecretError::Missing)?;
            let embedded = embedded.ok_or(PullSecretError::NotReady)?;
            if !names_embedded(current) && saved != Some(current) {
                actions.push(Action::Save(current.clone()));
            }
            let wanted = embedded.data(current);
            if &wanted != current {
                actions.push(Action::Write(wanted));
            }
        }
        ClusterTarget::Upstream => match (current, saved) {
            (Some(c), Some(s)) if names_embedded(c) => actions.push(Action::Write(s.clone())),
            (Some(c), None) if names_embedded(c) => {
                return Err(PullSecretError::SavedCopyMissing);
            }
            (_, Some(_)) => actions.push(Action::DropSaved),
            _ => {}
        },
    }
    Ok(actions)
}

/// The path the platform images have upstream, from the pull Secret as it is or as it
/// was saved (the pull Secret keeps that path while it names the embedded registry).
pub fn upstream_path(current: Option<&Data>, saved: Option<&Data>) -> String {
    let upstream = match (current, saved) {
        (Some(c), Some(s)) if names_embedded(c) => Some(s),
        (Some(c), _) => Some(c),
        (None, s) => s,
    };
    normalize_path(upstream.and_then(|d| d.get("path")).map_or("", |p| p))
}

/// The RFC 7386 merge patch that turns `current` data into `wanted` (base64 values;
/// `null` removes a key). The pull Secret belongs to Deckhouse: only its data changes.
pub fn data_patch(current: &Data, wanted: &Data) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    for (k, v) in wanted {
        if current.get(k) != Some(v) {
            data.insert(k.clone(), crate::secrets::b64(v).into());
        }
    }
    for k in current.keys().filter(|k| !wanted.contains_key(*k)) {
        data.insert(k.clone(), serde_json::Value::Null);
    }
    serde_json::json!({ "data": data })
}

#[cfg(test)]
mod tests;
