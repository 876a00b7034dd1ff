//! The distribution (OCI registry) HTTP API as this module uses it: auth challenges,
//! tokens per scope, and failures classified for administrators.

pub mod challenge;
pub mod client;
pub mod failure;
#[cfg(test)]
pub(crate) mod testserver;

pub use client::{Auth, Client, Credentials, Endpoint};
pub use failure::{Failure, Kind};
