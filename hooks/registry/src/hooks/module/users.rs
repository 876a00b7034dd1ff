//! The registry's users: `ro` (pull only) and `rw` (pull, push, delete).
//!
//! Each lives in a Secret (`registry-user-ro`, `registry-user-rw`: `name`, `password`,
//! `passwordHash`, and the user's `revision` with its `revisionCheck`) and is never
//! regenerated while valid; deleting the Secret rotates the user. Only names, bcrypt
//! hashes and revisions reach the values (docker_auth needs nothing more; the chart
//! hashes the revision, never the bcrypt hash: [`secrets::Revision`]);
//! the `ro` password also goes into `registry-ro-pull`, a `.dockerconfigjson` Secret for
//! nodes and components that pull from the embedded registry.

use std::collections::BTreeMap;

use hook_sdk::{Hook, HookConfig, HookInput, KubernetesBinding, NamespaceSelector};
use sha2::{Digest, Sha256};

use crate::model::values::{Master, UserValues, Users};
use crate::module::{user_secret, Role, MODULE_KEY, NAMESPACE, PULL_SECRET_TYPE, RO_PULL_SECRET};
use crate::secrets::{self, SECRET_FILTER};
use crate::switch::pull_secret::docker_config;

/// bcrypt cost: docker_auth checks a password on every token request.
pub const BCRYPT_COST: u32 = 10;
/// Generated password length (alphanumeric: about 143 bits).
pub const PASSWORD_LEN: usize = 24;

/// The hook.
pub fn hook() -> Hook {
    Hook::new(
        HookConfig {
            name: "users".into(),
            before_helm: Some(20),
            kubernetes: vec![KubernetesBinding {
                namespace: Some(NamespaceSelector::names(&[NAMESPACE])),
                name_selector: Some(hook_sdk::config::NameSelector {
                    match_names: vec![
                        user_secret(Role::Ro),
                        user_secret(Role::Rw),
                        RO_PULL_SECRET.into(),
                    ],
                }),
                jq_filter: Some(SECRET_FILTER.into()),
                keep_full_objects_in_memory: Some(false),
                execute_hook_on_event: Some(vec![]),
                execute_hook_on_synchronization: Some(false),
                ..KubernetesBinding::new("user_secrets", "v1", "Secret")
            }],
            ..Default::default()
        },
        handle,
    )
}

/// A fast check that `hash` was made from `password`, so a run does not pay for a
/// bcrypt verification (tens of milliseconds) when nothing changed. It is stored next
/// to the plaintext password, so it reveals nothing the Secret does not already hold.
fn hash_check(password: &str, hash: &str) -> String {
    let digest = Sha256::new()
        .chain_update(password.as_bytes())
        .chain_update([0u8])
        .chain_update(hash.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_password() -> String {
    use rand::distr::{Alphanumeric, SampleString};
    Alphanumeric.sample_string(&mut rand::rng(), PASSWORD_LEN)
}

fn bcrypt_hash(password: &str) -> anyhow::Result<String> {
    Ok(bcrypt::hash_with_result(password, BCRYPT_COST)?.format_for_version(bcrypt::Version::TwoA))
}

/// Keeps a user, repairs its hash, or creates it. Returns the Secret data.
fn reconcile_user(
    role: &str,
    stored: Option<&BTreeMap<String, String>>,
    log: &hook_sdk::Logger,
) -> anyhow::Result<BTreeMap<String, String>> {
    let valid_password = |p: &String| p.len() >= 16 && p.chars().all(|c| c.is_ascii_alphanumeric());
    let kept = stored
        .filter(|d| d.get("name").map(String::as_str) == Some(role))
        .and_then(|d| {
            d.get("password")
                .filter(|p| valid_password(p))
                .map(|p| (d, p.clone()))
        });
    let (password, hash) = match kept {
        Some((d, password)) => {
            let hash = d.get("passwordHash").cloned().unwrap_or_default();
            let checked = d.get("passwordHashCheck").map(String::as_str)
                == Some(hash_check(&password, &hash).as_str());
            if checked || bcrypt::verify(&password, &hash).unwrap_or(false) {
                (password, hash)
            } else {
                log.info(
                    &format!("user {role}: password hash did not match; recomputed"),
                    &[],
                );
                let h = bcrypt_hash(&password)?;
                (password, h)
            }
        }
        None => {
            log.info(&format!("user {role}: created"), &[]);
            let p = new_password();
            let h = bcrypt_hash(&p)?;
            (p, h)
        }
    };
    // A new password or bcrypt hash is a new revision (the registry restarts on it);
    // the same pair keeps its revision, so a second run changes nothing.
    let revision = secrets::Revision::of(
        &[&password, &hash],
        stored.and_then(|d| {
            d.get("revision")
                .map(String::as_str)
                .zip(d.get("revisionCheck").map(String::as_str))
        }),
    )?;
    Ok(BTreeMap::from([
        ("name".to_string(), role.to_string()),
        ("revision".to_string(), revision.revision),
        ("revisionCheck".to_string(), revision.check),
        (
            "passwordHashCheck".to_string(),
            hash_check(&password, &hash),
        ),
        ("password".to_string(), password),
        ("passwordHash".to_string(), hash),
    ]))
}

fn handle(input: &mut HookInput) -> anyhow::Result<()> {
    let existing = secrets::by_name(input, "user_secrets")?;
    let masters: Vec<Master> = input
        .values
        .get_as(&format!("{MODULE_KEY}.internal.masters"))?
        .unwrap_or_default();
    let mut users = BTreeMap::new();
    for role in [Role::Ro, Role::Rw] {
        let name = user_secret(role);
        let role = role.as_str();
        let data = reconcile_user(role, existing.get(&name), &input.log)?;
        if Some(&data) != existing.get(&name) {
            input
                .objects
                .create_or_update(secrets::secret(&name, "user", "Opaque", &data, &[]));
        }
        users.insert(role, data);
    }
    let ro = &users["ro"];
    let pull = BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        docker_config(&masters, &ro["name"], &ro["password"]),
    )]);
    if Some(&pull) != existing.get(RO_PULL_SECRET) {
        input.objects.create_or_update(secrets::secret(
            RO_PULL_SECRET,
            "pull",
            PULL_SECRET_TYPE,
            &pull,
            &[],
        ));
    }
    let user = |role: &str| UserValues {
        name: users[role]["name"].clone(),
        password_hash: users[role]["passwordHash"].clone(),
        revision: users[role]["revision"].clone(),
    };
    input.values.set(
        &format!("{MODULE_KEY}.internal.users"),
        &Users {
            ro: user("ro"),
            rw: user("rw"),
        },
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::module::cluster_yaml::{object, seen, yaml};
    use hook_sdk::objects::ObjectOperation;
    use hook_sdk::testing::HookTest;
    use serde_json::{json, Value};

    /// A run on a cluster holding `objects`.
    fn run(objects: &[Value]) -> hook_sdk::testing::TestOutput {
        HookTest::new()
            .values(json!({"global": {}, "embeddedRegistry": {"internal": {"masters": [{"name": "m1", "internalIP": "10.0.0.1"}]}}}))
            .cluster_state(&yaml(objects))
            .lifecycle("beforeHelm")
            .run(&hook())
            .unwrap()
    }

    /// The objects a run wrote, as the cluster then holds them.
    fn written(out: &hook_sdk::testing::TestOutput) -> Vec<Value> {
        out.objects
            .iter()
            .map(|o| o.object.clone().unwrap())
            .collect()
    }

    fn data(op: &ObjectOperation) -> BTreeMap<String, String> {
        crate::secrets::SecretSnap {
            name: String::new(),
            data: serde_json::from_value(op.object.as_ref().unwrap()["data"].clone()).unwrap(),
        }
        .decoded()
    }

    #[test]
    fn creates_users_once_and_keeps_them() {
        let first = run(&[]);
        assert_eq!(first.objects.len(), 3, "two users and the pull secret");
        let ro = data(&first.objects[0]);
        assert_eq!(ro["name"], "ro");
        assert!(ro["password"].len() >= 16);
        assert!(bcrypt::verify(&ro["password"], &ro["passwordHash"]).unwrap());
        assert!(ro["passwordHash"].starts_with("$2a$10$"));
        let internal = &first.values["embeddedRegistry"]["internal"]["users"];
        assert_eq!(internal["ro"]["passwordHash"], ro["passwordHash"].as_str());
        assert!(crate::secrets::is_revision(&ro["revision"]), "{ro:?}");
        assert_eq!(internal["ro"]["revision"], ro["revision"].as_str());
        assert_ne!(internal["ro"]["revision"], internal["rw"]["revision"]);
        assert!(
            !first.values.to_string().contains(&ro["password"]),
            "no password in values"
        );
        let pull = data(&first.objects[2]);
        let cfg: Value = serde_json::from_str(&pull[".dockerconfigjson"]).unwrap();
        assert_eq!(cfg["auths"]["10.0.0.1:5001"]["username"], "ro");

        let second = run(&written(&first));
        assert!(
            second.objects.is_empty(),
            "valid users are never regenerated"
        );
        assert_eq!(second.values, first.values);
    }

    #[test]
    fn only_the_named_secrets_of_the_module_namespace_are_read() {
        let first = run(&[]);
        let mut cluster = written(&first);
        // The same users in another namespace, with other passwords; an unnamed user
        // Secret and a ConfigMap under a user's name in the module namespace.
        let other = run(&[]);
        for mut o in written(&other) {
            o["metadata"]["namespace"] = json!("default");
            cluster.push(o);
        }
        cluster.push(object(
            "Secret",
            NAMESPACE,
            "registry-user-admin",
            &[],
            &[("name", "admin")],
        ));
        cluster.push(object(
            "ConfigMap",
            NAMESPACE,
            &user_secret(Role::Rw),
            &[],
            &[("name", "rw")],
        ));
        let cluster_yaml = yaml(&cluster);
        let snapshot = seen(&hook(), &cluster_yaml, "user_secrets");
        let names: Vec<&str> = snapshot.iter().filter_map(|s| s["name"].as_str()).collect();
        assert_eq!(
            names,
            ["registry-ro-pull", "registry-user-ro", "registry-user-rw"]
        );
        assert!(
            snapshot
                .iter()
                .all(|s| s.as_object().unwrap().keys().eq(["data", "name"])),
            "the filter keeps name and data only: {snapshot:?}"
        );
        let again = run(&cluster);
        assert!(again.objects.is_empty(), "{:?}", again.objects);
        assert_eq!(
            again.values, first.values,
            "the other namespace's users unread"
        );
    }

    #[test]
    fn a_wrong_hash_is_recomputed_and_the_password_kept() {
        let first = run(&[]);
        let password = data(&first.objects[0])["password"].clone();
        let mut cluster = written(&first);
        cluster[0]["data"]["passwordHash"] =
            json!(crate::secrets::b64(&bcrypt_hash("something-else").unwrap()));
        let second = run(&cluster);
        assert_eq!(second.objects.len(), 1);
        let fixed = data(&second.objects[0]);
        assert_eq!(fixed["password"], password);
        assert!(bcrypt::verify(&password, &fixed["passwordHash"]).unwrap());
        assert_ne!(
            fixed["revision"],
            data(&first.objects[0])["revision"],
            "a new hash in the files: a new revision"
        );
    }

    #[test]
    fn a_password_changed_by_hand_is_a_new_revision_and_a_user_without_one_gets_one() {
        let first = run(&[]);
        let before = data(&first.objects[0]);
        let mut cluster = written(&first);
        cluster[0]["data"]["password"] = json!(crate::secrets::b64("ChangedByHandPassw0rd123"));
        let second = run(&cluster);
        let after = data(&second.objects[0]);
        assert_eq!(after["password"], "ChangedByHandPassw0rd123");
        assert_ne!(after["revision"], before["revision"]);
        // A Secret written before revisions existed: kept, and given one.
        let mut cluster = written(&first);
        for key in ["revision", "revisionCheck"] {
            cluster[1]["data"].as_object_mut().unwrap().remove(key);
        }
        let third = run(&cluster);
        assert_eq!(third.objects.len(), 1, "{:?}", third.objects);
        let rw = data(&third.objects[0]);
        assert_eq!(rw["password"], data(&first.objects[1])["password"]);
        assert!(crate::secrets::is_revision(&rw["revision"]));
    }

    #[test]
    fn deleting_a_secret_rotates_that_user_only() {
        let first = run(&[]);
        let rw_before = data(&first.objects[1]);
        let second = run(&written(&first)[1..]);
        let names: Vec<_> = second
            .objects
            .iter()
            .map(|o| o.object.as_ref().unwrap()["metadata"]["name"].clone())
            .collect();
        assert_eq!(
            names,
            vec![json!("registry-user-ro"), json!("registry-ro-pull")]
        );
        assert_ne!(
            data(&second.objects[0])["password"],
            data(&first.objects[0])["password"]
        );
        assert_eq!(
            second.values["embeddedRegistry"]["internal"]["users"]["rw"]["passwordHash"],
            rw_before["passwordHash"].as_str()
        );
        let users = &second.values["embeddedRegistry"]["internal"]["users"];
        assert_eq!(users["rw"]["revision"], rw_before["revision"].as_str());
        assert_ne!(
            users["ro"]["revision"],
            first.values["embeddedRegistry"]["internal"]["users"]["ro"]["revision"]
        );
    }
}
