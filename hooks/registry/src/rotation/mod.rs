//! Rotation of old platform releases in a Detached (mirror) registry.
//!
//! A release is a semver tag in the mirror's root repository; its image carries an
//! `images_digests.json` naming every module image (in the same repository, by digest).
//! Rotation keeps the latest releases, the running ones and every release a release
//! channel points at, and deletes what only dropped releases reach.
//!
//! The work is split so that the dangerous part is pure and testable:
//! - [`model`]: the typed view of a mirror (repositories, tags, manifests, releases);
//! - [`scan`]: fetches that view through the registry API, each manifest once;
//! - [`plan`]: decides what is kept and what goes (no I/O);
//! - [`apply`]: deletes by digest, leaves first, release manifests last;
//! - [`run`]: one run (scan, plan, apply) into a report, and the [`Registry`] the
//!   `rotate` hook is given (the network, or a fake in its unit tests).
//!
//! Design and limits: `docs/internal/rotation.md`.

pub mod apply;
pub mod layer;
pub mod model;
pub mod plan;
pub mod run;
pub mod scan;

pub use run::{Network, Registry};
