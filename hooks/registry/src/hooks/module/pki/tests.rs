//! The pki hook's unit tests: each run reads the Secrets a cluster holds (those of the
//! runs before) through the hook's own binding.

use super::*;
use crate::clock::with_now;
use crate::hooks::module::cluster_yaml::{object, seen, yaml};
use hook_sdk::objects::{ObjectOperation, Operation};
use hook_sdk::testing::{HookTest, TestOutput};
use serde_json::{json, Value};

const T0: i64 = 1_800_000_000;

fn masters(list: &[(&str, &str)]) -> Value {
    json!(list
        .iter()
        .map(|(n, ip)| json!({"name": n, "internalIP": ip}))
        .collect::<Vec<_>>())
}

/// The cluster: the hook's Secrets by name, updated by each run's operations, and
/// objects the hook must not see.
#[derive(Default, Clone)]
struct Cluster(BTreeMap<String, Value>, Vec<Value>);

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

    fn yaml(&self) -> String {
        yaml(self.0.values().chain(&self.1))
    }

    fn run(&mut self, now: i64, m: Value) -> TestOutput {
        let out = with_now(now, || {
            HookTest::new()
                .values(json!({"global": {}, "embeddedRegistry": {"internal": {"masters": m}}}))
                .cluster_state(&self.yaml())
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

/// The daily schedule's run on `values` in cluster `c` (the batch runner gives
/// schedules no snapshots).
fn schedule(now: i64, values: Value, c: &Cluster) -> TestOutput {
    with_now(now, || {
        HookTest::new()
            .values(values)
            .cluster_state(&c.yaml())
            .schedule("daily-renewal")
            .run(&hook())
            .unwrap()
    })
}

#[test]
fn the_schedule_asks_for_a_module_run_only_when_certificate_work_is_due() {
    let mut c = Cluster::default();
    let first = c.run(T0, masters(&[("m1", "10.0.0.1")]));
    let fresh = schedule(T0 + 86_400, first.values.clone(), &c);
    assert!(
        fresh.values_patch.is_empty() && fresh.objects.is_empty(),
        "nothing due"
    );
    // 260 days on, the one-year leaves are due: the values change, once a day.
    let later = T0 + 260 * 86_400;
    let due = schedule(later, first.values.clone(), &c);
    assert!(due.objects.is_empty(), "no Secret without its snapshot");
    let day = due.values["embeddedRegistry"]["internal"]["pki"]["renewalDue"].clone();
    assert_eq!(day, json!(later / 86_400));
    assert!(schedule(later + 60, due.values.clone(), &c)
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
    assert!(
        first
            .metrics
            .iter()
            .any(|m| m.name == EXPIRY_METRIC
                && m.labels.get("node").map(String::as_str) == Some("m2"))
    );
}

#[test]
fn the_http_secret_keeps_its_revision_until_it_changes() {
    let mut c = Cluster::default();
    let m = masters(&[("m1", "10.0.0.1")]);
    let first = pki(&c.run(T0, m.clone()));
    assert!(crate::secrets::is_revision(&first.http_secret_revision));
    assert_eq!(
        c.data(PKI_SECRET)["http-secret-revision"],
        first.http_secret_revision
    );
    assert!(!first.http_secret.contains(&first.http_secret_revision));
    // Changed by hand: a new revision (the registries restart), then kept.
    let mut edited = c.0[PKI_SECRET].clone();
    edited["data"]["http-secret"] = json!(crate::secrets::b64(&"N".repeat(48)));
    c.0.insert(PKI_SECRET.into(), edited);
    let second = pki(&c.run(T0 + 60, m.clone()));
    assert_eq!(second.http_secret, "N".repeat(48));
    assert_ne!(second.http_secret_revision, first.http_secret_revision);
    let third = c.run(T0 + 120, m);
    assert!(third.objects.is_empty(), "{:?}", third.objects);
    assert_eq!(
        pki(&third).http_secret_revision,
        second.http_secret_revision
    );
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
    assert!(c.0.contains_key("registry-node-m3-pki") && !c.0.contains_key("registry-node-m2-pki"));
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
        let bundle = crate::pki::bundle_certs(&v.ca_bundle).unwrap();
        for pair in [&v.nodes["m1"].distribution, &v.nodes["m1"].auth] {
            let leaf = crate::pki::der_of(&pair.cert).unwrap();
            assert!(
                bundle.iter().any(|ca| crate::pki::signed_by_der(&leaf, ca)),
                "day {day}"
            );
        }
        bundles.push(bundle.len());
    }
    assert_eq!(bundles, vec![2, 2, 1, 1, 1], "introduce, switch, retire");
    assert_ne!(c.data(PKI_SECRET)["ca.crt"], old_ca);
}

#[test]
fn only_the_module_namespaces_pki_secrets_are_read() {
    let mut c = Cluster::default();
    let m = masters(&[("m1", "10.0.0.1")]);
    let first = pki(&c.run(T0, m.clone()));
    // Out of the binding's view: a CA Secret elsewhere, and the Secrets of masters
    // that are gone (the hook would delete them) in another namespace, without the
    // role label, or of another kind.
    let role = [(ROLE_LABEL, "pki")];
    let bogus_ca = [("ca.crt", "not a certificate"), ("ca.key", "none")];
    c.1 = vec![
        object("Secret", "default", PKI_SECRET, &role, &bogus_ca),
        object("Secret", "default", &node_pki_secret("m9"), &role, &[]),
        object("Secret", NAMESPACE, &node_pki_secret("m8"), &[], &[]),
        object("ConfigMap", NAMESPACE, &node_pki_secret("m7"), &role, &[]),
    ];
    let snapshot = seen(&hook(), &c.yaml(), "pki_secrets");
    let names: Vec<&str> = snapshot.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(names, ["registry-node-m1-pki", PKI_SECRET]);
    assert!(
        snapshot
            .iter()
            .all(|s| s.as_object().unwrap().keys().eq(["data", "name"])),
        "the filter keeps name and data only"
    );
    let again = c.run(T0 + 60, m);
    assert!(again.objects.is_empty(), "{:?}", again.objects);
    assert_eq!(pki(&again), first);
}
