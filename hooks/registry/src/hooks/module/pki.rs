//! Keeps the registry's certificates: the CA, the token signer, and per master a
//! distribution and an auth server certificate; also the `http.secret` that every
//! distribution instance must share.
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

    let mut data = BTreeMap::new();
    ca.to_data("ca", &mut data);
    token.to_data("token", &mut data);
    data.insert("http-secret".into(), http_secret.clone());
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
    let (cas, tokens) = (
        pki::bundle_certs(&current.ca_bundle),
        pki::bundle_certs(&current.token_bundle),
    );
    let mut all: Vec<&String> = cas.iter().chain(&tokens).collect();
    for n in current.nodes.values() {
        all.extend([&n.distribution.cert, &n.auth.cert]);
    }
    let rotating = cas.len() > 1 || tokens.len() > 1;
    let due = all
        .iter()
        .any(|c| pki::inspect(c).map_or(true, |i| i.due(now, renew_percent)));
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
mod tests {
    use super::*;
    use crate::clock::with_now;
    use hook_sdk::objects::{ObjectOperation, Operation};
    use hook_sdk::testing::{filtered, HookTest, TestOutput};
    use serde_json::{json, Value};

    const T0: i64 = 1_800_000_000;

    fn masters(list: &[(&str, &str)]) -> Value {
        json!(list
            .iter()
            .map(|(n, ip)| json!({"name": n, "internalIP": ip}))
            .collect::<Vec<_>>())
    }

    /// The cluster's Secrets, updated by each run's operations.
    #[derive(Default, Clone)]
    struct Cluster(BTreeMap<String, Value>);

    impl Cluster {
        fn apply(&mut self, ops: &[ObjectOperation]) {
            for op in ops {
                match op.operation {
                    Operation::CreateOrUpdate => {
                        let o = op.object.clone().unwrap();
                        self.0
                            .insert(o["metadata"]["name"].as_str().unwrap().into(), o);
                    }
                    Operation::Delete => {
                        self.0.remove(&op.name);
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
        }

        fn run(&mut self, now: i64, m: Value) -> TestOutput {
            let snaps = self
                .0
                .values()
                .map(|o| filtered(json!({"name": o["metadata"]["name"], "data": o["data"]})))
                .collect();
            let out = with_now(now, || {
                HookTest::new()
                    .values(json!({"global": {}, "embeddedRegistry": {"internal": {"masters": m}}}))
                    .group_snapshot("pki_secrets", snaps)
                    .lifecycle("beforeHelm")
                    .run(&hook())
                    .unwrap()
            });
            self.apply(&out.objects);
            out
        }

        fn data(&self, name: &str) -> BTreeMap<String, String> {
            crate::secrets::SecretSnap {
                name: name.into(),
                data: serde_json::from_value(self.0[name]["data"].clone()).unwrap(),
            }
            .decoded()
        }
    }

    fn pki(out: &TestOutput) -> PkiValues {
        serde_json::from_value(out.values["embeddedRegistry"]["internal"]["pki"].clone()).unwrap()
    }

    /// The daily schedule's run on `values` (no snapshots: the batch runner gives
    /// schedules none).
    fn schedule(now: i64, values: Value) -> TestOutput {
        with_now(now, || {
            HookTest::new()
                .values(values)
                .schedule("daily-renewal")
                .run(&hook())
                .unwrap()
        })
    }

    #[test]
    fn the_schedule_asks_for_a_module_run_only_when_certificate_work_is_due() {
        let mut c = Cluster::default();
        let first = c.run(T0, masters(&[("m1", "10.0.0.1")]));
        let fresh = schedule(T0 + 86_400, first.values.clone());
        assert!(
            fresh.values_patch.is_empty() && fresh.objects.is_empty(),
            "nothing due"
        );
        // 260 days on, the one-year leaves are due: the values change, once a day.
        let later = T0 + 260 * 86_400;
        let due = schedule(later, first.values.clone());
        assert!(due.objects.is_empty(), "no Secret without its snapshot");
        let day = due.values["embeddedRegistry"]["internal"]["pki"]["renewalDue"].clone();
        assert_eq!(day, json!(later / 86_400));
        assert!(schedule(later + 60, due.values.clone())
            .values_patch
            .is_empty());
        // The module run that follows renews and clears the flag.
        let renewed = c.run(later, masters(&[("m1", "10.0.0.1")]));
        assert!(renewed.values["embeddedRegistry"]["internal"]["pki"]
            .get("renewalDue")
            .is_none());
    }

    #[test]
    fn issues_once_then_changes_nothing() {
        let mut c = Cluster::default();
        let m = masters(&[("m1", "10.0.0.1"), ("m2", "10.0.0.2")]);
        let first = c.run(T0, m.clone());
        assert_eq!(first.objects.len(), 3, "registry-pki and two node Secrets");
        let v = pki(&first);
        let ca = c.data(PKI_SECRET)["ca.crt"].clone();
        for n in ["m1", "m2"] {
            for pair in [&v.nodes[n].distribution, &v.nodes[n].auth] {
                assert!(crate::pki::signed_by(&pair.cert, &ca));
            }
        }
        assert_eq!(v.ca_bundle.trim_end(), ca.trim_end());
        assert!(!first.values.to_string().contains("ca.key"));
        assert!(
            !serde_json::to_string(&v)
                .unwrap()
                .contains(c.data(PKI_SECRET)["ca.key"].trim()),
            "the CA key stays in its Secret"
        );
        for _ in 0..3 {
            let again = c.run(T0 + 3600, m.clone());
            assert!(again.objects.is_empty(), "{:?}", again.objects);
            assert_eq!(pki(&again), v);
        }
        assert!(first
            .metrics
            .iter()
            .any(|m| m.name == EXPIRY_METRIC
                && m.labels.get("node").map(String::as_str) == Some("m2")));
    }

    #[test]
    fn a_changed_ip_reissues_only_that_master() {
        let mut c = Cluster::default();
        let before = pki(&c.run(T0, masters(&[("m1", "10.0.0.1"), ("m2", "10.0.0.2")])));
        let out = c.run(T0 + 60, masters(&[("m1", "10.0.0.1"), ("m2", "10.0.0.22")]));
        let names: Vec<_> = out
            .objects
            .iter()
            .map(|o| o.object.as_ref().unwrap()["metadata"]["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("registry-node-m2-pki")]);
        let after = pki(&out);
        assert_eq!(after.nodes["m1"], before.nodes["m1"]);
        assert!(crate::pki::inspect(&after.nodes["m2"].auth.cert)
            .unwrap()
            .sans
            .contains("10.0.0.22"));
    }

    #[test]
    fn removed_master_secret_is_deleted_and_added_one_issued() {
        let mut c = Cluster::default();
        c.run(T0, masters(&[("m1", "10.0.0.1"), ("m2", "10.0.0.2")]));
        let out = c.run(T0, masters(&[("m1", "10.0.0.1"), ("m3", "10.0.0.3")]));
        assert!(out
            .objects
            .iter()
            .any(|o| o.operation == Operation::Delete && o.name == "registry-node-m2-pki"));
        assert!(
            c.0.contains_key("registry-node-m3-pki") && !c.0.contains_key("registry-node-m2-pki")
        );
    }

    #[test]
    fn leaves_are_renewed_ahead_of_expiry() {
        let mut c = Cluster::default();
        let m = masters(&[("m1", "10.0.0.1")]);
        let v0 = pki(&c.run(T0, m.clone()));
        let v1 = pki(&c.run(T0 + 200 * DAY, m.clone()));
        assert_eq!(v1.nodes, v0.nodes, "165 of 365 days left: kept");
        let v2 = pki(&c.run(T0 + 250 * DAY, m.clone()));
        assert_ne!(
            v2.nodes["m1"].distribution, v0.nodes["m1"].distribution,
            "115 days left: renewed"
        );
        // The token signer rotates gently: first the new certificate is trusted...
        assert_eq!(v2.token, v0.token);
        assert_eq!(v2.token_bundle.matches("BEGIN CERTIFICATE").count(), 2);
        // ...a day later it signs, and the old one is still trusted...
        let v3 = pki(&c.run(T0 + 251 * DAY, m.clone()));
        assert_ne!(v3.token, v0.token);
        assert!(v3.token_bundle.contains(v0.token.cert.trim_end()));
        assert!(v3.token_bundle.contains(v3.token.cert.trim_end()));
        // ...and a day after that only the new one remains.
        let v4 = pki(&c.run(T0 + 252 * DAY, m.clone()));
        assert_eq!(v4.token_bundle.trim_end(), v3.token.cert.trim_end());
    }

    #[test]
    fn ca_rotation_keeps_every_leaf_trusted_at_every_step() {
        let mut c = Cluster::default();
        let m = masters(&[("m1", "10.0.0.1")]);
        c.run(T0, m.clone());
        let old_ca = c.data(PKI_SECRET)["ca.crt"].clone();
        // Step through the CA's renewal window a day at a time and check, after every
        // run, that each served certificate chains to a CA in the published bundle.
        let start = T0 + CA_VALIDITY * 70 / 100;
        let mut bundles = Vec::new();
        for day in 0..5 {
            let v = pki(&c.run(start + day * DAY, m.clone()));
            let bundle = crate::pki::bundle_certs(&v.ca_bundle);
            for pair in [&v.nodes["m1"].distribution, &v.nodes["m1"].auth] {
                assert!(
                    bundle
                        .iter()
                        .any(|ca| crate::pki::signed_by(&pair.cert, ca)),
                    "day {day}"
                );
            }
            bundles.push(bundle.len());
        }
        assert_eq!(bundles, vec![2, 2, 1, 1, 1], "introduce, switch, retire");
        assert_ne!(c.data(PKI_SECRET)["ca.crt"], old_ca);
    }
}
