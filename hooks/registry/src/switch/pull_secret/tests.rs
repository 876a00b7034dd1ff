//! Unit tests of `pull_secret`.

use super::*;

fn upstream() -> Data {
    Data::from([
        ("address".into(), "registry.example.com".into()),
        ("path".into(), "/deckhouse/ee".into()),
        ("scheme".into(), "https".into()),
        ("clusterIsBootstrapped".into(), "true".into()),
        (
            ".dockerconfigjson".into(),
            r#"{"auths":{"registry.example.com":{"auth":"dTpw"}}}"#.into(),
        ),
    ])
}

fn embedded() -> Embedded {
    Embedded {
        path: "deckhouse/ee/".into(),
        ca: "CA".into(),
        user: "ro".into(),
        password: "secret-pw".into(),
        previous: None,
    }
}

fn apply(actions: &[Action], current: &mut Option<Data>, saved: &mut Option<Data>) {
    for a in actions {
        match a {
            Action::Save(d) => *saved = Some(d.clone()),
            Action::Write(d) => *current = Some(d.clone()),
            Action::DropSaved => *saved = None,
        }
    }
}

#[test]
fn a_round_trip_saves_first_restores_verbatim_and_is_idempotent() {
    let (mut current, mut saved) = (Some(upstream()), None);
    let e = embedded();
    let go = |c: ClusterTarget, current: &Option<Data>, saved: &Option<Data>| {
        plan(c, current.as_ref(), saved.as_ref(), Some(&e)).unwrap()
    };
    let actions = go(ClusterTarget::Embedded, &current, &saved);
    assert!(
        matches!(actions[0], Action::Save(_)),
        "saved before replaced"
    );
    apply(&actions, &mut current, &mut saved);
    let now = current.clone().unwrap();
    assert_eq!(now["address"], "embedded-registry.d8-system.svc:5001");
    assert_eq!(
        now["imagesRegistry"],
        "embedded-registry.d8-system.svc:5001/deckhouse/ee"
    );
    assert_eq!(now["clusterIsBootstrapped"], "true", "other keys kept");
    assert!(now[".dockerconfigjson"].contains("embedded-registry.d8-system.svc:5001"));
    assert_eq!(saved, Some(upstream()));
    assert!(go(ClusterTarget::Embedded, &current, &saved).is_empty());

    let back = go(ClusterTarget::Upstream, &current, &saved);
    assert_eq!(back, vec![Action::Write(upstream())]);
    apply(&back, &mut current, &mut saved);
    assert_eq!(saved, Some(upstream()), "kept until the restore is seen");
    let drop = go(ClusterTarget::Upstream, &current, &saved);
    assert_eq!(drop, vec![Action::DropSaved]);
    apply(&drop, &mut current, &mut saved);
    assert_eq!((current, saved.clone()), (Some(upstream()), None));
    assert!(go(ClusterTarget::Upstream, &Some(upstream()), &saved).is_empty());
}

#[test]
fn a_pull_secret_changed_while_embedded_becomes_the_upstream() {
    let e = embedded();
    let old = upstream();
    let ours = e.data(&old);
    let mut changed = old.clone();
    changed.insert("address".into(), "other.example".into());
    let actions = plan(
        ClusterTarget::Embedded,
        Some(&changed),
        Some(&old),
        Some(&e),
    )
    .unwrap();
    assert_eq!(actions[0], Action::Save(changed.clone()));
    assert!(matches!(&actions[1], Action::Write(d) if names_embedded(d)));
    // A rotated ro password rewrites the Secret, keeping the saved copy.
    let rotated = Embedded {
        password: "new".into(),
        ..e
    };
    assert_eq!(
        plan(
            ClusterTarget::Embedded,
            Some(&ours),
            Some(&old),
            Some(&rotated)
        )
        .unwrap(),
        vec![Action::Write(rotated.data(&old))]
    );
}

#[test]
fn nothing_is_written_when_the_upstream_copy_or_the_secret_is_missing() {
    let e = embedded();
    let ours = e.data(&upstream());
    let err = plan(ClusterTarget::Upstream, Some(&ours), None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("registry-upstream-pull is missing"), "{err}");
    assert!(!err.contains("secret-pw"));
    let err = plan(ClusterTarget::Embedded, None, None, Some(&e))
        .unwrap_err()
        .to_string();
    assert!(err.contains("deckhouse-registry is missing"), "{err}");
    let err = plan(ClusterTarget::Embedded, Some(&upstream()), None, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ro user"), "{err}");
}

#[test]
fn the_upstream_path_comes_from_the_secret_or_its_copy() {
    let e = embedded();
    let mut up = upstream();
    up.insert("path".into(), "deckhouse/ce/".into());
    assert_eq!(upstream_path(Some(&up), None), "/deckhouse/ce");
    let ours = e.data(&up);
    assert_eq!(upstream_path(Some(&ours), Some(&up)), "/deckhouse/ce");
    assert_eq!(upstream_path(None, None), "");
    assert_eq!(
        upstream_path(Some(&ours), None),
        "/deckhouse/ee",
        "a lost copy keeps the path the Secret has"
    );
}

#[test]
fn a_rotated_ro_user_keeps_the_previous_password_beside_the_new_one() {
    let old = embedded().data(&upstream());
    assert_eq!(
        ro_credentials(&old),
        Some(("ro".to_string(), "secret-pw".to_string()))
    );
    let rotating = Embedded {
        password: "new-pw".into(),
        previous: ro_credentials(&old),
        ..embedded()
    };
    let both = rotating.data(&old);
    let auths: serde_json::Value = serde_json::from_str(&both[".dockerconfigjson"]).unwrap();
    let a = service_address();
    assert_eq!(
        auths["auths"][format!("{a}/deckhouse/ee")]["password"],
        "new-pw"
    );
    assert_eq!(auths["auths"][&a]["password"], "secret-pw");
    assert_eq!(
        ro_credentials(&both).unwrap().1,
        "secret-pw",
        "read back as the previous"
    );
    let done = Embedded {
        previous: None,
        ..rotating
    }
    .data(&both);
    let auths: serde_json::Value = serde_json::from_str(&done[".dockerconfigjson"]).unwrap();
    assert_eq!(auths["auths"].as_object().unwrap().len(), 1);
    assert_eq!(auths["auths"][&a]["password"], "new-pw");
}

#[test]
fn the_data_patch_sets_what_differs_and_removes_what_is_gone() {
    let up = upstream();
    let ours = embedded().data(&up);
    let back = data_patch(&ours, &up);
    assert_eq!(back["data"]["ca"], serde_json::Value::Null);
    assert_eq!(
        back["data"]["address"],
        crate::secrets::b64("registry.example.com")
    );
    assert!(
        back["data"].get("clusterIsBootstrapped").is_none(),
        "unchanged keys stay out"
    );
    assert_eq!(data_patch(&up, &up), serde_json::json!({"data": {}}));
}
