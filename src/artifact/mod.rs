//! Artifact format v1: what a tresor artifact is, how it is built from a directory and how
//! it is read back.
//!
//! The format is Flux's (`flux push artifact`): one OCI image manifest, a config blob with
//! media type [`format::CONFIG_MEDIA_TYPE`] and exactly one deterministic tar+gzip layer with
//! media type [`format::CONTENT_MEDIA_TYPE`]. [`push`] builds and uploads one, [`fetch`]
//! resolves, downloads and unpacks one, [`inspect`] describes one.

pub mod archive;
pub mod diff;
pub mod fetch;
pub mod format;
pub mod inspect;
pub mod metadata;
pub mod objects;
pub mod push;

use std::path::PathBuf;

use crate::digest::Digest;
use crate::registry::RegistryError;

/// Errors of artifact operations; each wraps the domain error that caused it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// Talking to the registry or layout failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Packing or unpacking the content layer failed.
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    /// The manifests in the tree are invalid.
    #[error(transparent)]
    Objects(#[from] objects::ObjectsError),
    /// The tag already points at different content (immutability).
    #[error(
        "{reference} already points at {existing} with different content; tags are immutable \
         by default: push under a new tag, or pass --overwrite to move it"
    )]
    TagExists {
        /// The tag reference.
        reference: String,
        /// What the tag points at now.
        existing: Digest,
    },
    /// The reference names something that is not a single-manifest artifact.
    #[error("{reference} is not an artifact: {reason}")]
    NotAnArtifact {
        /// The reference.
        reference: String,
        /// What it is instead.
        reason: String,
    },
    /// The output directory exists and is not empty.
    #[error("output directory {path} exists and is not empty; choose a new or empty directory")]
    OutputExists {
        /// The directory.
        path: PathBuf,
    },
    /// A user annotation is invalid or collides with one tresor sets.
    #[error("invalid annotation {annotation:?}: {reason}")]
    Annotation {
        /// The annotation as given.
        annotation: String,
        /// Why it is rejected.
        reason: String,
    },
    /// `SOURCE_DATE_EPOCH` or a similar input is malformed.
    #[error("{0}")]
    Input(String),
    /// A local file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ArtifactError {
    /// Stable CamelCase reason for conditions, events, metrics and JSON output.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Registry(e) => e.reason(),
            Self::Archive(e) => e.reason(),
            Self::Objects(e) => e.reason(),
            Self::TagExists { .. } => "TagExists",
            Self::NotAnArtifact { .. } => "NotAnArtifact",
            Self::OutputExists { .. } => "OutputExists",
            Self::Annotation { .. } => "InvalidAnnotation",
            Self::Input(_) => "InvalidInput",
            Self::Io { .. } => "IoError",
        }
    }
}

/// Normalises a directory inside an artifact (`spec.path`, `--path`): relative, `/`
/// separated, `.` and empty components dropped. `Ok(None)` means the whole artifact (empty
/// or `.`). Fails (the message says why) for an absolute path, `..`, or a backslash.
pub fn subdirectory(text: &str) -> Result<Option<PathBuf>, String> {
    if text.starts_with('/') {
        return Err(format!(
            "{text:?} is absolute; give a directory relative to the artifact's root"
        ));
    }
    if text.contains('\\') {
        return Err(format!("{text:?}: use / to separate directories"));
    }
    let mut path = PathBuf::new();
    for part in text.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(format!(
                    "{text:?} contains ..; give a directory inside the artifact"
                ))
            }
            part => path.push(part),
        }
    }
    Ok((!path.as_os_str().is_empty()).then_some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subdirectory_normalises_and_refuses_escapes() {
        let ok = |t: &str| subdirectory(t).unwrap();
        assert_eq!(ok("prod"), Some(PathBuf::from("prod")));
        assert_eq!(ok("./clusters//eu/"), Some(PathBuf::from("clusters/eu")));
        assert_eq!(ok("."), None);
        assert_eq!(ok(""), None);
        for bad in ["/etc", "prod/../..", "..", "a\\b"] {
            assert!(subdirectory(bad).is_err(), "{bad}");
        }
        assert!(subdirectory("a/../b").unwrap_err().contains(".."));
    }
}
