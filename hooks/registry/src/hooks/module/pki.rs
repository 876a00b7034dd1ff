//! Keeps the registry's certificates: the CA, the token signer, and per master a
//! distribution and an auth server certificate; also the `http.secret` that every
//! distribution instance must share, with its revision ([`secrets::Revision`]: what
//! the chart hashes in the secret's place; a private key needs none, its certificate
//! holds its public key and is hashed as it is).
//!
//! Everything lives in Secrets (`registry-pki`, `registry-node-<node>-pki`) and is read
//! back from snapshots: a valid certificate is never reissued. Runs before every Helm
//! render and daily, so renewal happens even when nothing else changes.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context as _;
use hook_sdk::{
    Hook, HookConfig, HookInput, KubernetesBinding, LabelSelector, NamespaceSelector,
    ScheduleBinding,
};

use crate::model::values::{Master, NodePki, PkiValues};
use crate::module::MODULE_KEY;
use crate::module::{node_pki_secret, NAMESPACE, NODE_LABEL, PKI_SECRET, ROLE_LABEL};
use crate::pki::renewal::{self, Rollover, Spec};
use crate::pki::{self, Pair};
use crate::secrets::{self, SECRET_FILTER};

const DAY: i64 = 86_400;
/// CA lifetime: ten years, as Deckhouse's internal CAs.
pub const CA_VALIDITY: i64 = 3650 * DAY;
/// Token signer and server certificates: one year, renewed well before the end.
pub const LEAF_VALIDITY: i64 = 365 * DAY;
/// Minimum time between rotation steps: trust must reach every node and container
/// runtime (static pods restart on change; nodes apply configuration within minutes).
pub const OVERLAP: i64 = DAY;
/// Gauge: when each certificate expires (unix seconds), by `certificate` and `node`.
pub const EXPIRY_METRIC: &str = "d8_embedded_registry_certificate_expiration_timestamp_seconds";
/// Common name of the token signer; docker_auth's `token.issuer` is a separate string.
pub const TOKEN_CN: &str = "embedded-registry-auth-token";

/// The hook.
pub fn hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "pki".into(),
            before_helm: Some(20),
            schedule: vec![ScheduleBinding::new("daily-renewal", "42 4 * * *")],
            kubernetes: vec![KubernetesBinding {
                namespace: Some(NamespaceSelector::names(&[NAMESPACE])),
                label_selector: Some(LabelSelector {
                    match_labels: [(ROLE_LABEL.to_string(), "pki".to_string())].into(),
                    ..Default::default()
                }),
                jq_filter: Some(SECRET_FILTER.into()),
                keep_full_objects_in_memory: Some(false),
                // Snapshot only: the hook writes these Secrets itself.
                execute_hook_on_event: Some(vec![]),
                execute_hook_on_synchronization: Some(false),
                ..KubernetesBinding::new("pki_secrets", "v1", "Secret")
            }],
            ..Default::default()
        },
        handle,
    )
}

/// Names every server certificate of `master` must cover.
pub fn server_names(master: &Master, cluster_domain: &str) -> BTreeSet<String> {
    let svc = crate::module::SERVICE;
    [
        "127.0.0.1".to_string(),
        "localhost".to_string(),
        master.name.clone(),
        master.internal_ip.clone(),
        format!("{svc}.{NAMESPACE}"),
        format!("{svc}.{NAMESPACE}.svc"),
        format!("{svc}.{NAMESPACE}.svc.{cluster_domain}"),
    ]
    .into_iter()
    .collect()
}

fn random_secret(len: usize) -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    let now = crate::clock::now()?;
    let renew_percent: u32 = input
        .values
        .get_as(&format!(
            "{MODULE_KEY}.certificates.renewalThresholdPercent"
        ))?
        .unwrap_or(33);
    if input.bindings().any(|b| b == "daily-renewal") && !input.snapshots.has("pki_secrets") {
        return flag_due_renewal(input, now, renew_percent);
    }
    let masters: Vec<Master> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.masters"))?
        .unwrap_or_default();
    let domain: String = input
        .values
        .get_as("global.discovery.clusterDomain")?
        .unwrap_or_else(|| "cluster.local".into());
    let existing = secrets::by_name(input, "pki_secrets")?;

    let ca_spec = Spec {
        validity: CA_VALIDITY,
        renew_percent,
        overlap: OVERLAP,
        ca: true,
        issue: |now, v| pki::new_ca("embedded-registry-ca", now, v),
    };
    let token_spec = Spec {
        validity: LEAF_VALIDITY,
        renew_percent,
        overlap: OVERLAP,
        ca: false,
        issue: |now, v| pki::new_signer(TOKEN_CN, now, v),
    };
    let stored = existing.get(PKI_SECRET).cloned().unwrap_or_default();
    let mut events = Vec::new();
    let (ca, ev) =
        renewal::step(Rollover::from_data(&stored, "ca"), now, &ca_spec).context("CA")?;
    events.extend(ev.map(|e| format!("CA: {e}")));
    let (token, ev) = renewal::step(Rollover::from_data(&stored, "token"), now, &token_spec)
        .context("token signer")?;
    events.extend(ev.map(|e| format!("token signer: {e}")));
    let http_secret = stored
        .get("http-secret")
        .filter(|s| s.len() >= 32)
        .cloned()
        .unwrap_or_else(|| random_secret(48));

    // The revision the chart hashes in the secret's place: kept while the secret is.
    let http_revision = secrets::Revision::of(
        &[&http_secret],
        stored
            .get("http-secret-revision")
            .map(String::as_str)
            .zip(stored.get("http-secret-revision-check").map(String::as_str)),
    )?;

    let mut data = BTreeMap::new();
    ca.to_data("ca", &mut data);
    token.to_data("token", &mut data);
    data.insert("http-secret".into(), http_secret.clone());
    data.insert(
        "http-secret-revision".into(),
        http_revision.revision.clone(),
    );
    data.insert("http-secret-revision-check".into(), http_revision.check);
    if data != stored {
        input
            .objects
            .create_or_update(secrets::secret(PKI_SECRET, "pki", "Opaque", &data, &[]));
    }

    input.metrics.expire("pki");
    // A timestamp, not "seconds left": it does not age between runs (a second run
    // emits the same metrics), and PromQL derives the rest (`... - time()`).
    let mut expiry = |certificate: &str, node: &str, cert: &str| -> anyhow::Result<()> {
        let info = pki::inspect(cert)?;
        input.metrics.set(
            "pki",
            EXPIRY_METRIC,
            info.not_after as f64,
            &[("certificate", certificate), ("node", node)],
        );
        Ok(())
    };
    expiry("ca", "", &ca.active.cert)?;
    expiry("token", "", &token.active.cert)?;

    let mut nodes = BTreeMap::new();
    for m in &masters {
        let name = node_pki_secret(&m.name);
        let stored = existing.get(&name).cloned().unwrap_or_default();
        let sans = server_names(m, &domain);
        let mut data = BTreeMap::new();
        let mut pairs = Vec::new();
        for role in ["distribution", "auth"] {
            let current = Pair {
                cert: stored
                    .get(&format!("{role}.crt"))
                    .cloned()
                    .unwrap_or_default(),
                key: stored
                    .get(&format!("{role}.key"))
                    .cloned()
                    .unwrap_or_default(),
            };
            let pair =
                match pki::server_defect(&current, &ca.active.cert, &sans, now, renew_percent) {
                    None => current,
                    Some(why) => {
                        events.push(format!("{}: {role} certificate issued ({why})", m.name));
                        pki::new_server(
                            &ca.active,
                            &format!("{}-{role}", m.name),
                            &sans,
                            now,
                            LEAF_VALIDITY,
                        )?
                    }
                };
            data.insert(format!("{role}.crt"), pair.cert.clone());
            data.insert(format!("{role}.key"), pair.key.clone());
            pairs.push(pair);
        }
        if data != stored {
            input.objects.create_or_update(secrets::secret(
                &name,
                "pki",
                "Opaque",
                &data,
                &[(NODE_LABEL, &m.name)],
            ));
        }
        let auth = pairs.pop().expect("two pairs");
        let distribution = pairs.pop().expect("two pairs");
        expiry("distribution", &m.name, &distribution.cert)?;
        expiry("auth", &m.name, &auth.cert)?;
        nodes.insert(m.name.clone(), NodePki { distribution, auth });
    }
    let wanted: BTreeSet<String> = masters.iter().map(|m| node_pki_secret(&m.name)).collect();
    for name in existing.keys() {
        if name != PKI_SECRET && !wanted.contains(name) {
            events.push(format!("{name}: deleted (no longer a master)"));
            input.objects.delete("v1", "Secret", NAMESPACE, name);
        }
    }
    for e in &events {
        input.log.info(e, &[]);
    }
    let values = PkiValues {
        ca_bundle: ca.bundle(),
        token: token.active.clone(),
        token_bundle: token.bundle(),
        http_secret,
        http_secret_revision: http_revision.revision,
        nodes,
        renewal_due: None,
    };
    input
        .values
        .set(&format!("{MODULE_KEY}.internal.pki"), &values)?;
    Ok(())
}

/// The daily schedule's run: the batch runner gives schedules no snapshots, so the
/// Secrets cannot be renewed here. The certificates in the values tell whether work is
/// due (one is due for renewal, or a rotation is under way and moves on by time); if
/// so, `internal.pki.renewalDue` changes, which makes the runner run the module.
fn flag_due_renewal(input: &mut HookInput, now: i64, renew_percent: u32) -> anyhow::Result<()> {
    let Some(current) = input
        .values
        .get_as::<crate::model::values::PkiValues>(&format!("{MODULE_KEY}.internal.pki"))?
    else {
        return Ok(());
    };
    let is_due = |i: pki::CertInfo| i.due(now, renew_percent);
    let leaves_due = current
        .nodes
        .values()
        .flat_map(|n| [&n.distribution.cert, &n.auth.cert])
        .any(|c| pki::inspect(c).map_or(true, is_due));
    // A bundle that does not read as PEM is due: the next module run rewrites it.
    let (rotating, due) = match (
        pki::bundle_certs(&current.ca_bundle),
        pki::bundle_certs(&current.token_bundle),
    ) {
        (Ok(cas), Ok(tokens)) => (
            cas.len() > 1 || tokens.len() > 1,
            leaves_due
                || cas
                    .iter()
                    .chain(&tokens)
                    .any(|d| pki::inspect_der(d).map_or(true, is_due)),
        ),
        _ => (false, true),
    };
    if rotating || due {
        let day = now.div_euclid(86_400);
        if current.renewal_due != Some(day) {
            input.log.info(
                "certificate work is due: asking for a module run",
                &[
                    ("rotating", serde_json::json!(rotating)),
                    ("due", serde_json::json!(due)),
                ],
            );
            input
                .values
                .set(&format!("{MODULE_KEY}.internal.pki.renewalDue"), &day)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
