//! Registries and local OCI layouts.

pub mod auth;
