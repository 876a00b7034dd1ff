//! The distribution (OCI registry) HTTP API as this module uses it: auth challenges,
//! tokens per scope, and failures classified for administrators.

pub mod challenge;
pub mod client;
pub mod failure;

pub use client::{Auth, Client, Credentials, Endpoint};
pub use failure::{Failure, Kind};
