//! Artifact format v1: what a tresor artifact is, how it is built from a directory and how
//! it is read back.
//!
//! The format is Flux's (`flux push artifact`): one OCI image manifest, a config blob with
//! media type [`format::CONFIG_MEDIA_TYPE`] and exactly one deterministic tar+gzip layer with
//! media type [`format::CONTENT_MEDIA_TYPE`].

pub mod archive;
pub mod diff;
pub mod format;
pub mod objects;
