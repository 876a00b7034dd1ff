//! The check a switch step needs ([`super::CheckNeeded`]): what to check (a [`Spec`])
//! and how the report becomes a [`CheckRecord`]. Pure: the check runs through an
//! injected [`Checker`] (the network in production, a fake in unit tests).
//!
//! Above 400 lines with its unit tests (the code is about 260 lines): the tests share
//! the fake checkers defined among them.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{CheckNeeded, NAMES_SHOWN};
use crate::distribution::failure::FailureKind as _;
use crate::distribution::{Credentials, Kind};
use crate::model::switch::CheckRecord;
use crate::model::values::Master;
use crate::module::REGISTRY_PORT;
use crate::upstream::{self, Checker, Image, Spec};

/// The whole time a check of no image may take (the registry, the credentials).
pub const BUDGET: Duration = Duration::from_secs(20);
/// What each image adds to the budget: at the checker's 8 parallel requests this is
/// almost half a second per image and worker, room for a `HEAD` and, for a missing
/// image, the tag list that tells a wrong path from a missing tag.
pub const BUDGET_PER_IMAGE: Duration = Duration::from_millis(60);
/// The budget never grows beyond this, however long the list (the hook runs inside
/// the module's `beforeHelm`): 60 s, reached at 667 images.
pub const BUDGET_MAX: Duration = Duration::from_secs(60);
/// One request's time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The budget of a check of `images` images: [`BUDGET`] plus [`BUDGET_PER_IMAGE`] per
/// image, at most [`BUDGET_MAX`] (a release of 340 images: 40.4 s).
pub fn budget(images: usize) -> Duration {
    let n = u32::try_from(images).unwrap_or(u32::MAX);
    BUDGET
        .saturating_add(BUDGET_PER_IMAGE.saturating_mul(n))
        .min(BUDGET_MAX)
}

/// What a mirror check needs beside the target (unused by an upstream check).
#[derive(Clone, Debug, Default)]
pub struct MirrorInputs<'a> {
    /// The masters (the first of the target's nodes is checked).
    pub masters: &'a [Master],
    /// The `ro` user's Secret data (`name`, `password`).
    pub ro: Option<&'a BTreeMap<String, String>>,
    /// The module CA bundle (`internal.pki.caBundle`).
    pub ca: Option<String>,
    /// `global.modulesImages.registry.base`: its path is the mirrored repository.
    pub base: String,
}

/// The whole time the storage check of a switch step may take.
pub const STORAGE_BUDGET: Duration = Duration::from_secs(20);

/// A check that cannot be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A Proxy target came without its proxy settings.
    #[error("a Proxy target without proxy settings")]
    NoProxySettings,
    /// A storage check was asked of the registry checker, or a target without S3 of
    /// the storage checker.
    #[error("a storage check runs through storage::Checker, on a target with s3")]
    NotStorage,
}

/// Runs the storage check a [`CheckNeeded::Storage`] step asks for through `checker`:
/// the target's bucket, within [`STORAGE_BUDGET`], each request within
/// [`REQUEST_TIMEOUT`]. The record holds the failure's kind and one-line message (no
/// key: the check's messages hold none).
pub fn run_storage(
    checker: &dyn crate::storage::Checker,
    need: CheckNeeded,
    now: i64,
) -> Result<CheckRecord, CheckError> {
    let CheckNeeded::Storage(t) = need else {
        return Err(CheckError::NotStorage);
    };
    let b = t.s3.as_ref().ok_or(CheckError::NotStorage)?;
    let mut spec = crate::storage::Spec::for_target(b.clone());
    spec.budget = STORAGE_BUDGET;
    spec.request_timeout = REQUEST_TIMEOUT;
    let report = checker.check(&spec);
    let (kind, message) = match &report.failure {
        Some(f) => (f.kind.as_str().to_string(), f.message.clone()),
        None if report.ok => (
            String::new(),
            format!(
                "bucket {} at {} is usable (read, write, delete)",
                report.bucket, report.endpoint
            ),
        ),
        None => (
            "http".into(),
            "the storage check failed without a reason".into(),
        ),
    };
    Ok(CheckRecord {
        what: super::STORAGE.into(),
        generation: t.generation,
        ok: report.ok && report.failure.is_none(),
        kind,
        message,
        since: now,
    })
}

/// Runs the check `need` asks for through `checker`. A mirror check whose inputs are
/// not there yet is `pending` (failed) without running.
pub fn run(
    checker: &dyn Checker,
    need: CheckNeeded,
    images: Vec<Image>,
    mirror: MirrorInputs<'_>,
    now: i64,
) -> Result<CheckRecord, CheckError> {
    let (what, generation, mut spec) = match need {
        CheckNeeded::Storage(_) => return Err(CheckError::NotStorage),
        CheckNeeded::Upstream(t) => {
            let p = t.proxy.clone().ok_or(CheckError::NoProxySettings)?;
            let mut spec = Spec::new(&p.scheme, &p.host, &p.path);
            spec.credentials = p
                .user
                .clone()
                .zip(p.password.clone())
                .map(|(user, password)| Credentials { user, password });
            spec.ca_pem = p.ca.clone();
            ("upstream", t.generation, spec)
        }
        CheckNeeded::Mirror(t) => {
            let m = mirror;
            let first = t
                .nodes
                .first()
                .and_then(|n| m.masters.iter().find(|x| &x.name == n));
            let path = m
                .base
                .split_once('/')
                .map(|(_, p)| p.to_string())
                .unwrap_or_default();
            let (Some(first), Some(ca), Some(ro)) = (first, m.ca, m.ro) else {
                return Ok(CheckRecord {
                    what: "mirror".into(),
                    generation: t.generation,
                    ok: false,
                    kind: "pending".into(),
                    message:
                        "the mirror check waits for the master's address, the CA and the ro user"
                            .into(),
                    since: now,
                });
            };
            let mut spec = Spec::new(
                "https",
                &format!("{}:{REGISTRY_PORT}", first.internal_ip),
                &path,
            );
            spec.credentials = ro
                .get("name")
                .cloned()
                .zip(ro.get("password").cloned())
                .map(|(user, password)| Credentials { user, password });
            spec.ca_pem = Some(ca);
            spec.ca_only = true;
            ("mirror", t.generation, spec)
        }
    };
    spec.budget = budget(images.len());
    spec.images = images;
    spec.request_timeout = REQUEST_TIMEOUT;
    Ok(record(what, generation, &checker.check(&spec), now))
}

/// A report as the switch keeps it (no password in it: the report carries none). When
/// images failed, the message counts them and names the first [`NAMES_SHOWN`]
/// ([`images_summary`]).
pub fn record(what: &str, generation: String, report: &upstream::Report, now: i64) -> CheckRecord {
    let (kind, message) = match (&report.failure, images_summary(report)) {
        (Some(_), Some((kind, message))) => (upstream::kind_name(kind), message),
        (Some(f), None) => (upstream::kind_name(f.kind), f.message.clone()),
        (None, _) => (
            String::new(),
            format!(
                "{} is usable ({} auth, {} image(s) found)",
                report.registry,
                report.auth,
                report.images.len()
            ),
        ),
    };
    CheckRecord {
        what: what.into(),
        generation,
        ok: report.ok,
        kind,
        message,
        since: now,
    }
}

/// The failed images of `report`, counted: `12 of 340 images missing: host/path@sha256:…,
/// … and 7 more` for the ones the registry does not hold (`manifest-unknown`,
/// `name-unknown`), then `3 of 340 images not checked: <the first one's failure>` for
/// the others (denied, time budget spent, ...). The kind is the first missing image's,
/// else the first other one's. `None` when no image failed (the failure, if any, is the
/// registry's own and keeps its message).
pub fn images_summary(report: &upstream::Report) -> Option<(Kind, String)> {
    let total = report.images.len();
    let failed: Vec<(&upstream::ImageResult, &crate::distribution::Failure)> = report
        .images
        .iter()
        .filter_map(|i| i.failure.as_ref().map(|f| (i, f)))
        .collect();
    let absent = |k: Kind| matches!(k, Kind::ManifestUnknown | Kind::NameUnknown);
    type Failed<'a> = Vec<(&'a upstream::ImageResult, &'a crate::distribution::Failure)>;
    let (missing, other): (Failed, Failed) = failed.into_iter().partition(|(_, f)| absent(f.kind));
    let kind = missing.first().or(other.first())?.1.kind;
    // `registry` is `scheme://host/path`: images are shown as `host/` + their name.
    let host = report
        .registry
        .split_once("://")
        .map_or(report.registry.as_str(), |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    let mut parts = Vec::new();
    if !missing.is_empty() {
        let mut names: Vec<String> = missing
            .iter()
            .take(NAMES_SHOWN)
            .map(|(i, _)| format!("{host}/{}", i.image))
            .collect();
        if missing.len() > NAMES_SHOWN {
            names.push(format!("and {} more", missing.len() - NAMES_SHOWN));
        }
        let mut part = format!(
            "{} of {total} images missing: {}",
            missing.len(),
            names.join(", ")
        );
        if missing[0].1.kind == Kind::NameUnknown {
            part.push_str(&format!(" ({})", missing[0].1.message));
        }
        parts.push(part);
    }
    if let Some((_, f)) = other.first() {
        parts.push(format!(
            "{} of {total} images not checked: {}",
            other.len(),
            f.message
        ));
    }
    Some((kind, parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;
    use crate::model::settings::Mode;
    use crate::model::switch::RegistryTarget;

    /// Records the spec it was given; the registry answers as usable.
    #[derive(Default)]
    struct Recorder(RefCell<Option<Spec>>);

    impl Checker for Recorder {
        fn check(&self, spec: &Spec) -> upstream::Report {
            *self.0.borrow_mut() = Some(spec.clone());
            upstream::Report {
                ok: true,
                registry: format!("https://{}", spec.host),
                auth: "bearer".into(),
                failure: None,
                images: vec![],
                requests: 1,
                token_requests: 0,
                elapsed_ms: 0,
            }
        }
    }

    #[test]
    fn a_mirror_check_asks_the_first_masters_registry_with_the_ro_user_and_the_module_ca() {
        let masters = [Master {
            name: "m1".into(),
            internal_ip: "10.0.0.1".into(),
        }];
        let ro = BTreeMap::from([
            ("name".to_string(), "ro".to_string()),
            ("password".to_string(), "pw".to_string()),
        ]);
        let target = RegistryTarget::new(Mode::Detached, None, vec!["m1".into()], b"k");
        let mirror = || MirrorInputs {
            masters: &masters,
            ro: Some(&ro),
            ca: Some("CA".into()),
            base: "registry.example/deckhouse/ee".into(),
        };
        let checker = Recorder::default();
        let r = run(
            &checker,
            CheckNeeded::Mirror(target.clone()),
            vec![],
            mirror(),
            7,
        )
        .unwrap();
        assert!(r.ok && r.what == "mirror" && r.generation == target.generation && r.since == 7);
        let spec = checker.0.borrow().clone().unwrap();
        assert_eq!(
            (spec.host.as_str(), spec.path.as_str()),
            ("10.0.0.1:5001", "deckhouse/ee")
        );
        assert!(spec.ca_only && spec.ca_pem.as_deref() == Some("CA"));
        assert_eq!(spec.credentials.map(|c| c.user), Some("ro".into()));

        // Without the CA the check waits and nothing is asked.
        let checker = Recorder::default();
        let pending = MirrorInputs {
            ca: None,
            ..mirror()
        };
        let r = run(&checker, CheckNeeded::Mirror(target), vec![], pending, 8).unwrap();
        assert_eq!((r.ok, r.kind.as_str()), (false, "pending"));
        assert!(checker.0.borrow().is_none());
    }

    #[test]
    fn a_proxy_target_without_its_settings_is_an_error() {
        let target = RegistryTarget::new(Mode::Proxy, None, vec![], b"k");
        let err = run(
            &Recorder::default(),
            CheckNeeded::Upstream(target),
            vec![],
            MirrorInputs::default(),
            1,
        );
        assert_eq!(err.unwrap_err(), CheckError::NoProxySettings);
    }

    /// A registry holding every image but those whose reference starts with
    /// `sha256:f`; it records the spec it was given.
    #[derive(Default)]
    struct Holds(RefCell<Option<Spec>>);

    impl Checker for Holds {
        fn check(&self, spec: &Spec) -> upstream::Report {
            *self.0.borrow_mut() = Some(spec.clone());
            upstream::holds_all_but_f(spec)
        }
    }

    fn proxy_target() -> RegistryTarget {
        RegistryTarget::new(
            Mode::Proxy,
            Some(crate::model::switch::ProxyTarget {
                scheme: "https".into(),
                host: "up.example:5000".into(),
                path: "/deckhouse/ee".into(),
                user: Some("puller".into()),
                password: Some("the-Pa55word".into()),
                ca: None,
                ttl: "1h".into(),
            }),
            vec!["m1".into()],
            b"k",
        )
    }

    fn digests(first: char, n: usize) -> Vec<Image> {
        (0..n)
            .map(|i| Image {
                name: String::new(),
                reference: format!("sha256:{first}{i:063x}"),
            })
            .collect()
    }

    #[test]
    fn a_release_of_340_images_gets_a_scaled_budget_and_a_count_of_the_missing() {
        let mut images = digests('0', 328);
        images.extend(digests('f', 12));
        let checker = Holds::default();
        let r = run(
            &checker,
            CheckNeeded::Upstream(proxy_target()),
            images,
            MirrorInputs::default(),
            3,
        )
        .unwrap();
        let spec = checker.0.borrow().clone().unwrap();
        assert_eq!(spec.images.len(), 340);
        assert_eq!(spec.budget, Duration::from_millis(40_400));
        assert_eq!(spec.request_timeout, REQUEST_TIMEOUT);
        assert_eq!((r.ok, r.kind.as_str()), (false, "manifest-unknown"));
        let first = format!("up.example:5000/deckhouse/ee@sha256:f{:063x}", 0);
        let fifth = format!("up.example:5000/deckhouse/ee@sha256:f{:063x}", 4);
        assert!(
            r.message
                .starts_with(&format!("12 of 340 images missing: {first}, ")),
            "{}",
            r.message
        );
        assert!(
            r.message.ends_with(&format!("{fifth}, and 7 more")),
            "{}",
            r.message
        );
        assert!(!r.message.contains("Pa55word"));

        // All there: usable, with the count.
        let r = run(
            &Holds::default(),
            CheckNeeded::Upstream(proxy_target()),
            digests('0', 340),
            MirrorInputs::default(),
            4,
        )
        .unwrap();
        assert!(
            r.ok && r.message.contains("340 image(s) found"),
            "{}",
            r.message
        );
    }

    #[test]
    fn the_budget_grows_with_the_list_up_to_its_cap() {
        assert_eq!(budget(0), BUDGET);
        assert_eq!(budget(1), Duration::from_millis(20_060));
        assert_eq!(budget(400), Duration::from_secs(44));
        assert_eq!(budget(666), Duration::from_millis(59_960));
        assert_eq!(budget(667), BUDGET_MAX);
        assert_eq!(budget(100_000), BUDGET_MAX);
        assert_eq!(budget(usize::MAX), BUDGET_MAX);
    }

    #[test]
    fn images_not_checked_are_counted_apart_from_the_missing_ones() {
        use crate::distribution::Failure;
        let result = |image: &str, failure: Option<Failure>| upstream::ImageResult {
            image: image.into(),
            ok: failure.is_none(),
            digest: None,
            failure,
        };
        let images = vec![
            result("p@sha256:1", None),
            result(
                "p@sha256:2",
                Some(Failure::new(
                    Kind::Timeout,
                    "p@sha256:2: the time budget is spent",
                )),
            ),
            result(
                "p@sha256:3",
                Some(Failure::new(Kind::ManifestUnknown, "p@sha256:3: gone")),
            ),
            result(
                "p@sha256:4",
                Some(Failure::new(
                    Kind::Timeout,
                    "p@sha256:4: the time budget is spent",
                )),
            ),
        ];
        let report = upstream::Report {
            ok: false,
            registry: "http://127.0.0.1:5000/p".into(),
            auth: "anonymous".into(),
            failure: images[1].failure.clone(),
            images,
            requests: 4,
            token_requests: 0,
            elapsed_ms: 1,
        };
        let (kind, message) = images_summary(&report).unwrap();
        assert_eq!(kind, Kind::ManifestUnknown);
        assert_eq!(
            message,
            "1 of 4 images missing: 127.0.0.1:5000/p@sha256:3; 2 of 4 images not checked: p@sha256:2: the time budget is spent"
        );
        // A failure of the registry itself keeps its own message.
        let bare = upstream::Report {
            images: vec![],
            ..report
        };
        assert!(images_summary(&bare).is_none());
        let r = record("upstream", "g".into(), &bare, 1);
        assert_eq!(r.message, "p@sha256:2: the time budget is spent");
    }
}
