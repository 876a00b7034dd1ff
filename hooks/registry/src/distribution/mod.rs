//! The distribution (OCI registry) HTTP API as this module uses it: auth challenges,
//! tokens per scope, and failures classified for administrators.

pub mod challenge;
pub mod client;
pub mod failure;
#[cfg(test)]
pub(crate) mod testserver;

pub use client::{Auth, Client, Credentials, Endpoint};
pub use failure::{Failure, Kind};

/// The network, as the domains' injected clients reach it: the upstream check's and
/// the storage check's `Checker` and the release cleanup's `Registry` are each
/// implemented for it in their own module. Production and end-to-end tests give it;
/// unit tests give a fake, so that no hook handler does I/O of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct Network;
