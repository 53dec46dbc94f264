//! Registries and local OCI layouts.
