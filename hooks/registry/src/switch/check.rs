//! The check a switch step needs ([`super::CheckNeeded`]): what to check (a [`Spec`])
//! and how the report becomes a [`CheckRecord`]. Pure: the check runs through an
//! injected [`Checker`] (the network in production, a fake in unit tests).

use std::collections::BTreeMap;
use std::time::Duration;

use super::CheckNeeded;
use crate::distribution::Credentials;
use crate::model::switch::CheckRecord;
use crate::model::values::Master;
use crate::module::REGISTRY_PORT;
use crate::upstream::{self, Checker, Image, Spec};

/// The whole time a check may take, and one request's.
pub const BUDGET: Duration = Duration::from_secs(20);
/// One request's time.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

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

/// A check that cannot be built.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// A Proxy target came without its proxy settings.
    #[error("a Proxy target without proxy settings")]
    NoProxySettings,
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
    spec.images = images;
    spec.budget = BUDGET;
    spec.request_timeout = REQUEST_TIMEOUT;
    Ok(record(what, generation, &checker.check(&spec), now))
}

/// A report as the switch keeps it (no password in it: the report carries none).
pub fn record(what: &str, generation: String, report: &upstream::Report, now: i64) -> CheckRecord {
    let (kind, message) = match &report.failure {
        Some(f) => (upstream::kind_name(f.kind), f.message.clone()),
        None => (
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
}
