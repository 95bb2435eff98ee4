//! mizzen: an Istio-compatible service-mesh installer and sidecar injector.
//!
//! This crate is the pure core shared by the operator, the webhook and `mizzenctl`: the `MeshInstall` API, the
//! generated install bundle, YAML helpers and (in later modules) injection and rendering. Nothing here opens a
//! socket or talks to the Kubernetes API.
#![forbid(unsafe_code)]
// Untrusted input (admission reviews, manifests) flows through this crate: it must refuse, never panic.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

pub mod admission;
pub mod api;
pub mod bundle;
pub mod cli;
pub mod convert;
pub mod crd;
pub mod dataplane;
pub mod events;
pub mod inject;
pub mod istio_crds;
pub(crate) mod json_read;
pub mod json_text;
pub mod kubeinject;
pub mod precoded;
pub mod quantity;
pub mod rbac;
pub mod render;
pub mod revisions;
pub mod status;
#[cfg(test)]
mod test_support;
pub mod yaml;

pub use api::{MeshInstall, MeshInstallSpec, MeshInstallStatus};
