//! Applies a plan: `DELETE /v2/<repository>/manifests/<digest>` in plan order, stopping
//! at the first failure. A manifest already gone counts as deleted (a resumed run).
//! Blobs are freed later, by the registry's garbage collection.

use reqwest::Method;
use serde::Serialize;

use super::plan::{Deletion, Plan};
use crate::distribution::client::{read_body, Body};
use crate::distribution::{Client, Failure, Kind};

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    /// Manifests deleted now.
    pub deleted: usize,
    /// Manifests that were already gone.
    pub already_gone: usize,
    /// Bytes the deleted manifests free after garbage collection.
    pub freed_bytes: u64,
    /// The deletion that failed, if one did; nothing after it was attempted.
    pub failed: Option<FailedDeletion>,
    /// Deletions not attempted because an earlier one failed.
    pub not_attempted: usize,
}

/// A deletion that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedDeletion {
    /// The repository.
    pub repository: String,
    /// The digest.
    pub digest: String,
    /// Why.
    pub failure: Failure,
}

/// Deletes one manifest; `Ok(true)` when deleted, `Ok(false)` when already gone.
pub fn delete(client: &Client, d: &Deletion) -> Result<bool, Failure> {
    let resp = client.send(
        Method::DELETE,
        &d.repository,
        &format!("manifests/{}", d.digest),
        "delete",
        None,
    )?;
    let code = resp.status().as_u16();
    // With token auth the token was issued, so a 401 means it lacks the delete scope
    // (`insufficient_scope`): the user may pull but not delete.
    let bearer = matches!(client.auth(), crate::distribution::Auth::Bearer { .. });
    if (200..=299).contains(&code) {
        return Ok(true);
    }
    let body = String::from_utf8_lossy(&read_body(resp, Body::Error)?).into_owned();
    let what = format!("DELETE {}@{}", d.repository, d.digest);
    match code {
        404 if body.contains("MANIFEST_UNKNOWN") || body.contains("NAME_UNKNOWN") => Ok(false),
        401 | 403 if bearer || code == 403 => Err(Failure::new(
            Kind::Denied,
            format!("{what}: the user may not delete here; use a user with the delete right (rw)"),
        )),
        401 => Err(Failure::new(
            Kind::BadCredentials,
            format!("{what}: the registry refused the credentials; check --user and the password"),
        )),
        405 => Err(Failure::new(
            Kind::Http,
            format!("{what}: deleting is disabled (HTTP 405); the registry needs storage.delete.enabled: true"),
        )),
        code => Err(Failure::new(
            Kind::Http,
            format!("{what}: HTTP {code} {}", body.chars().take(200).collect::<String>().replace('\n', " ")),
        )),
    }
}

/// Applies `plan` in order; `progress` is told about every deletion done.
pub fn apply(client: &Client, plan: &Plan, mut progress: impl FnMut(&Deletion, bool)) -> Applied {
    let mut out = Applied::default();
    for (i, d) in plan.deletions.iter().enumerate() {
        match delete(client, d) {
            Ok(deleted) => {
                if deleted {
                    out.deleted += 1;
                    out.freed_bytes += d.bytes;
                } else {
                    out.already_gone += 1;
                }
                progress(d, deleted);
            }
            Err(failure) => {
                out.failed = Some(FailedDeletion {
                    repository: d.repository.clone(),
                    digest: d.digest.clone(),
                    failure,
                });
                out.not_attempted = plan.deletions.len() - i - 1;
                break;
            }
        }
    }
    out
}
