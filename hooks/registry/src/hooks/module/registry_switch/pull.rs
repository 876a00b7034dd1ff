//! The pull Secret of `registry-switch`: how the state reads it, the writes that make
//! it follow the cluster target ([`crate::switch::pull_secret`]), and giving it back
//! when the module is disabled.

use std::collections::BTreeMap;

use hook_sdk::HookInput;
use serde_json::json;

use crate::model::switch::{ClusterTarget, State};
use crate::module::{user_secret, Role, MODULE_KEY, NAMESPACE, PULL_SECRET, SAVED_PULL_SECRET};
use crate::secrets;
use crate::switch::pull_secret::{self, Action, Embedded};
use crate::switch::{self, NodeReport};

/// The state as the pull Secret shows it: a state that says the cluster pulls through
/// the masters while the pull Secret names another registry and no copy was saved
/// (written before the module managed the pull Secret, or restored by hand) goes
/// through the nodes' grace period again before the Secret is rewritten.
pub(super) fn pull_secret_seen(
    mut state: State,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
) -> State {
    let upstream = secrets
        .get(PULL_SECRET)
        .is_some_and(|c| !pull_secret::names_embedded(c));
    if state.cluster == ClusterTarget::Embedded
        && upstream
        && !secrets.contains_key(SAVED_PULL_SECRET)
    {
        state.cluster = ClusterTarget::Upstream;
        state.mirrors_since = None;
    }
    state
}

/// The module was disabled (its registry is gone with its Helm release): the pull
/// Secret gets the upstream's data back if it still names the embedded registry. The
/// saved copy stays; an enabled module drops it once it sees the Secret restored.
pub(super) fn restore_on_disable(input: &mut HookInput) -> anyhow::Result<()> {
    let secrets = secrets::by_name(input, "secrets")?;
    let actions = pull_secret::plan(
        crate::model::switch::ClusterTarget::Upstream,
        secrets.get(PULL_SECRET),
        secrets.get(SAVED_PULL_SECRET),
        None,
    )?;
    for action in actions {
        if let Action::Write(data) = action {
            input.log.info(
                "module disabled: the pull Secret names the upstream again",
                &[("address", json!(data.get("address")))],
            );
            write_pull_secret(input, secrets.get(PULL_SECRET), &data);
        }
    }
    Ok(())
}

/// The writes that make the pull Secret follow the cluster target.
pub(super) fn pull_secret_actions(
    input: &HookInput,
    next: &State,
    secrets: &BTreeMap<String, BTreeMap<String, String>>,
    reports: &[NodeReport],
) -> anyhow::Result<Vec<Action>> {
    let current = secrets.get(PULL_SECRET);
    let saved = secrets.get(SAVED_PULL_SECRET);
    let ca: Option<String> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.pki.caBundle"))?;
    let ro = secrets.get(&user_secret(Role::Ro));
    let serving = next
        .registry
        .as_ref()
        .is_some_and(|r| switch::all_ready(r, reports));
    let path = match (
        next.registry.as_ref().and_then(|r| r.proxy.as_ref()),
        current,
    ) {
        // A new upstream path only once the masters serve it.
        (Some(_), Some(c)) if pull_secret::names_embedded(c) && !serving => {
            pull_secret::normalize_path(c.get("path").map_or("", |p| p))
        }
        (Some(p), _) => pull_secret::normalize_path(&p.path),
        (None, _) => pull_secret::upstream_path(current, saved),
    };
    if next.cluster == ClusterTarget::Embedded
        && current.is_some_and(pull_secret::names_embedded)
        && saved.is_none()
    {
        input.log.warn(
            &format!("Secret {NAMESPACE}/{SAVED_PULL_SECRET} is missing: going back to the upstream will need {PULL_SECRET} restored by hand"),
            &[],
        );
    }
    // A rotated ro user: the previous password stays in the pull Secret until every
    // listed master runs the new one, which it reports as the user's revision (random,
    // kept with the user by the users hook; the chart's ro-user annotation).
    let version = ro
        .and_then(|r| r.get("revision"))
        .filter(|r| secrets::is_revision(r))
        .cloned();
    let all_run_it = version.is_some()
        && next.mirrors.iter().all(|n| {
            reports
                .iter()
                .any(|r| &r.node == n && Some(&r.ro_user) == version.as_ref())
        });
    let previous = current
        .filter(|c| pull_secret::names_embedded(c))
        .and_then(pull_secret::ro_credentials)
        .filter(|(_, p)| !all_run_it && ro.and_then(|r| r.get("password")) != Some(p));
    let embedded = match (ca, ro.and_then(|r| r.get("name").zip(r.get("password")))) {
        (Some(ca), Some((user, password))) => Some(Embedded {
            path,
            ca,
            user: user.clone(),
            password: password.clone(),
            previous,
        }),
        _ => None,
    };
    Ok(pull_secret::plan(
        next.cluster,
        current,
        saved,
        embedded.as_ref(),
    )?)
}

/// Writes `wanted` into the pull Secret as a merge patch of its data only: Deckhouse
/// owns the Secret (its metadata and type stay as they are).
pub(super) fn write_pull_secret(
    input: &mut HookInput,
    current: Option<&BTreeMap<String, String>>,
    wanted: &BTreeMap<String, String>,
) {
    let empty = BTreeMap::new();
    input.objects.patch(
        hook_sdk::objects::Patch::Merge(pull_secret::data_patch(current.unwrap_or(&empty), wanted)),
        "v1",
        "Secret",
        NAMESPACE,
        PULL_SECRET,
        "",
        false,
    );
}
