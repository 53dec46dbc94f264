//! `ArtifactSync`: pull one signed artifact and keep a namespace's objects equal to it.

use std::time::Duration;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::Condition;
use super::notification::{Notification, NotifyTarget};
use super::trust::{validate_authorities, Authority, Require};
use super::ApiError;
use crate::digest::Digest;
use crate::reference::{Reference, RegistryReference};

/// The longest ArtifactSync name (and ServiceAccount name) accepted: the name becomes a
/// label value, and Kubernetes limits those to 63 characters.
pub const MAX_NAME_LENGTH: usize = 63;

/// How many applied digests `status.history` keeps (newest first).
pub const HISTORY_LIMIT: usize = 10;

/// Pull a signed OCI artifact by digest, verify it, and apply its manifests.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tresor.dev",
    version = "v1alpha1",
    kind = "ArtifactSync",
    namespaced,
    status = "ArtifactSyncStatus",
    category = "tresor",
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.url"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    doc = "Pulls a signed, digest-pinned OCI artifact and applies its manifests.",
    // The name becomes a label value (at most 63 characters) on every applied object.
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63").message(
        "the name of an ArtifactSync must be at most 63 characters: it becomes a label value \
         on every object it applies"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSyncSpec {
    /// The repository, `oci://host[:port]/path`, without tag or digest (those go in `ref`).
    pub url: String,
    /// What to follow in the repository: exactly one of tag, semver or digest.
    #[serde(rename = "ref")]
    pub source_ref: SourceRef,
    /// How often to check the registry, e.g. `5m` (drift is corrected from watches sooner).
    pub interval: String,
    /// Who must have signed; combined with every TrustPolicy that covers this object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// Delete objects that left the artifact (only those tresor applied and labelled).
    #[serde(default = "default_true")]
    pub prune: bool,
    /// Allow an artifact with no objects to prune everything tresor applied before
    /// (otherwise such an artifact is refused as a likely mistake).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_empty: bool,
    /// Namespace for namespaced objects that name none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_namespace: Option<String>,
    /// Apply with this ServiceAccount's rights (impersonation), so tenants cannot escalate.
    /// A ServiceAccount of this namespace, by name (a DNS-1123 label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.size() <= 63 && self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
        "message": "serviceAccountName must name a ServiceAccount of this namespace: lower-case \
                    letters, digits and '-', at most 63 characters"
    }]))]
    pub service_account_name: Option<String>,
    /// Limit for one reconcile including the health wait, e.g. `5m`; default: the interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Wait until the applied objects are healthy (kstatus) before reporting Ready.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub wait: bool,
    /// Stop reconciling (the applied objects stay as they are).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
    /// A Secret in this namespace with credentials for the registry: type
    /// `kubernetes.io/dockerconfigjson` (`kubectl create secret docker-registry`) or the
    /// legacy `kubernetes.io/dockercfg`, with an `auths` entry for the registry host. Read
    /// every cycle, so a rotated password applies without editing the ArtifactSync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret_ref: Option<LocalObjectRef>,
    /// A Secret in this namespace whose `ca.crt` (PEM, one or more certificates) is trusted
    /// for the registry's TLS, in addition to the system roots. Read every cycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<LocalObjectRef>,
    /// Talk plain HTTP to the registry (test registries only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
    /// Directory inside the artifact to apply, relative to its root (`prod`, `clusters/eu`);
    /// default: the whole artifact. `..` and absolute paths are refused; a path that is not a
    /// directory of the artifact stalls the sync (reason `PathNotFound`) and applies nothing.
    /// The immutability policy still checks the whole artifact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// When a new digest fails its health check, apply the last healthy digest again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rollback: bool,
    /// Decrypt the artifact's SOPS-encrypted files before they are applied (as Flux
    /// Kustomization's `decryption`). Without it, a SOPS file in the artifact refuses the
    /// version. Decrypted values exist only in the puller's memory and the API request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption: Option<Decryption>,
    /// Where to report what happens (Applied, Rejected, Failed, DriftCorrected,
    /// HealthFailed, RolledBack): each event goes to every target, once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notify: Vec<NotifyTarget>,
}

/// How the artifact's encrypted files are decrypted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Decryption {
    /// The format of the encrypted files: `sops` (values encrypted with AES-256-GCM, the
    /// data key wrapped for age recipients).
    pub provider: DecryptionProvider,
    /// A Secret in this namespace whose keys ending in `.agekey` each hold age identities
    /// (`AGE-SECRET-KEY-1…`, as age-keygen writes them). Read every cycle, as the pull
    /// secret is, so a rotated key applies without editing the ArtifactSync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<LocalObjectRef>,
}

/// The encrypted file formats the puller decrypts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DecryptionProvider {
    /// SOPS files (getsops/sops) encrypted for age recipients.
    #[default]
    Sops,
}

fn default_true() -> bool {
    true
}

/// What to follow: exactly one of `tag`, `semver` or `digest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.tag), has(self.semver), has(self.digest)].filter(x, x).size() == 1",
    "message": "set exactly one of tag, semver or digest"
}]))]
pub struct SourceRef {
    /// A tag; resolved to a digest on every check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// A semver range over the tags, e.g. `>=1.2 <2`; the highest match wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semver: Option<String>,
    /// A fixed digest, `sha256:…`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

/// Who must have signed, on top of the TrustPolicies that cover the ArtifactSync.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    /// Name of a TrustPolicy that must also be satisfied, even if it does not cover this
    /// namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_policy: Option<String>,
    /// Additional authorities (Secrets in this namespace, inline keys, keyless identities).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authorities: Vec<Authority>,
    /// How many of `authorities` must have signed; default `any`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require: Option<Require>,
    /// Accept unsigned artifacts. Refused when a TrustPolicy covers this ArtifactSync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

/// A reference to an object in the ArtifactSync's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LocalObjectRef {
    /// Its name.
    pub name: String,
}

/// What the puller observed and did (kstatus-compatible).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSyncStatus {
    /// The `metadata.generation` the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (see [`super::conditions`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The digest whose objects are applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_digest: Option<String>,
    /// The digest the last cycle tried (differs from the applied one after a refusal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempted_digest: Option<String>,
    /// Who signed the applied digest (key fingerprints or keyless identities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signer: Option<String>,
    /// Who approved the applied digest into this repository: a `tresor promote` record
    /// whose signature verified under this sync's trust (absent when there is none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
    /// The value of the `tresor.dev/reconcile-requested-at` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled_reconcile_at: Option<String>,
    /// The objects applied from the artifact (what prune compares against).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inventory: Vec<InventoryEntry>,
    /// The last applied digests, newest first, at most [`HISTORY_LIMIT`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// The last event for `spec.notify`, and whether every target has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<Notification>,
}

/// A verified promotion of the applied digest (`tresor promote`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Promotion {
    /// The approver: the trust authority whose key signed the record, and the key, e.g.
    /// `release-manager (key sha256:…)`.
    pub approved_by: String,
    /// When it was approved (RFC 3339).
    pub time: String,
    /// Why (`tresor promote --reason`), if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where it was promoted from, e.g. `oci://registry.example/app:staging`.
    pub from: String,
    /// The trust the approver's key belongs to: `TrustPolicy/NAME`, or `ArtifactSync
    /// NS/NAME` for the sync's own `spec.verify` keys (which its authors choose).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
}

/// One applied object.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub struct InventoryEntry {
    /// API group (`""` for the core group).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace (`""` for cluster-scoped objects).
    #[serde(default)]
    pub namespace: String,
    /// Name.
    pub name: String,
    /// API version it was applied with.
    pub version: String,
}

/// One applied digest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HistoryEntry {
    /// The digest.
    pub digest: String,
    /// When it was applied (RFC 3339).
    pub time: String,
    /// The tag it was resolved from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

impl ArtifactSyncStatus {
    /// Records that `digest` was applied at `now`: last applied digest, signer and history
    /// (newest first, a repeated digest moves to the front, at most [`HISTORY_LIMIT`]).
    pub fn record_applied(&mut self, digest: &str, signer: &str, tag: Option<&str>, now: &str) {
        self.last_applied_digest = Some(digest.to_string());
        self.signer = Some(signer.to_string());
        self.history.retain(|h| h.digest != digest);
        self.history.insert(
            0,
            HistoryEntry {
                digest: digest.to_string(),
                time: now.to_string(),
                tag: tag.map(str::to_string),
            },
        );
        self.history.truncate(HISTORY_LIMIT);
    }

    /// The `Ready` condition, if any.
    pub fn ready(&self) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == "Ready")
    }
}

impl ArtifactSync {
    /// `ArtifactSync namespace/name`, for messages.
    pub fn object_name(&self) -> String {
        format!(
            "ArtifactSync {}/{}",
            self.metadata.namespace.as_deref().unwrap_or("default"),
            self.metadata.name.as_deref().unwrap_or("")
        )
    }

    /// Checks what the API server's schema cannot: the URL (parsed, and in canonical form:
    /// [`ApiError::NonCanonicalReference`] otherwise), exactly one ref, durations, the verify
    /// section.
    pub fn validate(&self) -> Result<(), ApiError> {
        let invalid = |field: &str, message: String| ApiError::InvalidSpec {
            object: self.object_name(),
            field: field.to_string(),
            message,
        };
        let spec = &self.spec;
        let name = self.metadata.name.as_deref().unwrap_or("");
        if name.len() > MAX_NAME_LENGTH {
            return Err(invalid(
                "metadata.name",
                format!(
                    "{} characters: at most {MAX_NAME_LENGTH} (the name becomes a label value on \
                     every applied object); recreate it with a shorter name",
                    name.len()
                ),
            ));
        }
        self.check_service_account()?;
        let reference = spec.registry_reference().map_err(|m| match m {
            ApiError::InvalidSpec { message, .. } => invalid("spec.url", message),
            other => other,
        })?;
        if !reference.is_canonical(spec.insecure) {
            return Err(ApiError::NonCanonicalReference {
                object: self.object_name(),
                url: spec.url.clone(),
                canonical: format!("oci://{}", reference.canonical_repository(spec.insecure)),
            });
        }
        let r = &spec.source_ref;
        match (&r.tag, &r.semver, &r.digest) {
            (Some(tag), None, None) => {
                crate::reference::check_tag(tag).map_err(|m| invalid("spec.ref.tag", m))?
            }
            (None, Some(range), None) => crate::reference::parse_range(range)
                .map(|_| ())
                .map_err(|e| invalid("spec.ref.semver", e.to_string()))?,
            (None, None, Some(digest)) => digest
                .parse::<Digest>()
                .map(|_| ())
                .map_err(|e| invalid("spec.ref.digest", e.to_string()))?,
            _ => {
                return Err(invalid(
                    "spec.ref",
                    "set exactly one of tag, semver or digest".into(),
                ))
            }
        }
        parse_duration(&spec.interval).map_err(|m| invalid("spec.interval", m))?;
        if let Some(t) = &spec.timeout {
            parse_duration(t).map_err(|m| invalid("spec.timeout", m))?;
        }
        if let Some(p) = &spec.path {
            crate::artifact::subdirectory(p).map_err(|m| invalid("spec.path", m))?;
        }
        for (i, target) in spec.notify.iter().enumerate() {
            target
                .check()
                .map_err(|m| invalid(&format!("spec.notify[{i}]"), m))?;
        }
        if let Some(v) = &spec.verify {
            if !v.authorities.is_empty() {
                validate_authorities(
                    &v.authorities,
                    v.require.unwrap_or_default(),
                    Some(self.metadata.namespace.as_deref().unwrap_or("default")),
                )
                .map_err(|m| invalid("spec.verify.authorities", m))?;
            } else if v.require.is_some() {
                return Err(invalid(
                    "spec.verify.require",
                    "require needs authorities in spec.verify.authorities".into(),
                ));
            }
            if v.allow_unsigned && (!v.authorities.is_empty() || v.trust_policy.is_some()) {
                return Err(invalid(
                    "spec.verify.allowUnsigned",
                    "allowUnsigned cannot be combined with authorities or trustPolicy".into(),
                ));
            }
        }
        Ok(())
    }
}

impl ArtifactSync {
    /// Checks `spec.serviceAccountName` alone: a DNS-1123 label, so that the impersonated
    /// `system:serviceaccount:<namespace>:<name>` names exactly one ServiceAccount. Every
    /// path that impersonates checks it (deletion too, which does not run [`Self::validate`]).
    pub fn check_service_account(&self) -> Result<(), ApiError> {
        match &self.spec.service_account_name {
            Some(account) if !is_dns_label(account) => Err(ApiError::InvalidSpec {
                object: self.object_name(),
                field: "spec.serviceAccountName".into(),
                message: format!(
                    "{account:?} is not a ServiceAccount name: use lower-case letters, digits \
                     and '-', at most {MAX_NAME_LENGTH} characters"
                ),
            }),
            _ => Ok(()),
        }
    }
}

impl ArtifactSyncSpec {
    /// The repository as canonical `host[:port]/path`, what TrustPolicy `repositories`
    /// match: lower-case host, no default port for the transport (`insecure`: 80, else 443),
    /// `docker.io` for Docker Hub ([`crate::reference::canonical_host`]).
    pub fn repository(&self) -> Result<String, ApiError> {
        Ok(self
            .registry_reference()?
            .canonical_repository(self.insecure))
    }

    /// `spec.url` parsed as a registry repository without tag or digest.
    fn registry_reference(&self) -> Result<RegistryReference, ApiError> {
        let invalid = |message: String| ApiError::InvalidSpec {
            object: String::from("ArtifactSync"),
            field: "spec.url".into(),
            message,
        };
        if !self.url.starts_with("oci://") {
            return Err(invalid(format!(
                "{:?}: expected oci://host/repository",
                self.url
            )));
        }
        match self.url.parse::<Reference>() {
            Ok(Reference::Registry(r)) if r.tag.is_none() && r.digest.is_none() => Ok(r),
            Ok(_) => Err(invalid(format!(
                "{:?}: give the repository without tag or digest; put them in spec.ref",
                self.url
            ))),
            Err(e) => Err(invalid(e.to_string())),
        }
    }

    /// The interval as a duration.
    pub fn interval(&self) -> Result<Duration, String> {
        parse_duration(&self.interval)
    }
}

/// Whether `text` is a DNS-1123 label (what a ServiceAccount name must be here, so that
/// `system:serviceaccount:<namespace>:<name>` names exactly one account).
pub fn is_dns_label(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LENGTH
        && bytes.first().is_some_and(alnum)
        && bytes.last().is_some_and(alnum)
        && bytes.iter().all(|b| alnum(b) || *b == b'-')
}

/// A positive duration such as `30s`, `5m`, `1h30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) => Ok(d),
        Ok(_) => Err(format!("{text:?}: must be at least 1s")),
        Err(e) => Err(format!("{text:?}: {e} (examples: 30s, 5m, 1h)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(name: &str, service_account: Option<&str>) -> ArtifactSync {
        let mut s = ArtifactSync::new(
            name,
            ArtifactSyncSpec {
                url: "oci://registry.example/app".into(),
                source_ref: SourceRef {
                    tag: Some("v1".into()),
                    ..Default::default()
                },
                interval: "5m".into(),
                service_account_name: service_account.map(str::to_string),
                verify: Some(Verify {
                    allow_unsigned: true,
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        s.metadata.namespace = Some("team".into());
        s
    }

    fn field_of(result: Result<(), ApiError>) -> Option<String> {
        match result {
            Err(ApiError::InvalidSpec { field, .. }) => Some(field),
            _ => None,
        }
    }

    /// Issue 17: objects written before the CEL rules existed are refused by the puller too.
    #[test]
    fn long_names_and_service_accounts_that_are_no_label_are_invalid() {
        assert_eq!(sync("app", Some("deployer")).validate(), Ok(()));
        assert_eq!(sync(&"a".repeat(63), None).validate(), Ok(()));
        assert_eq!(
            field_of(sync(&"a".repeat(64), None).validate()).as_deref(),
            Some("metadata.name")
        );
        for bad in ["a:b", "Deployer", "-a", "a.b", "", &"a".repeat(64)] {
            assert_eq!(
                field_of(sync("app", Some(bad)).validate()).as_deref(),
                Some("spec.serviceAccountName"),
                "{bad:?}"
            );
        }
    }
}
