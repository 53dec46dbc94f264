//! Who must have signed: authorities, the `require` rule, and the "cannot weaken" rule.
//!
//! The authority shape follows the trust-policy file of `tresor verify --policy`
//! (`name` plus exactly one of `key` / `keyless`; `require: any | all | N`), with cluster
//! sources instead of file paths: a key is inline PEM (`data`) or a Secret (`secretRef`).
//!
//! # Cannot weaken
//!
//! [`effective_requirements`] computes what an [`ArtifactSync`] must satisfy as a list of
//! [`Constraint`]s that must **all** hold:
//!
//! 1. one per [`TrustPolicy`] that covers the sync (its namespace and repository match);
//! 2. the policy the sync names in `spec.verify.trustPolicy`, covering or not;
//! 3. the sync's own `spec.verify.authorities` with its `require`, as a constraint of its own.
//!
//! Because the sync's authorities form a *separate* constraint, they can only add
//! requirements: adding a key to a policy's pool would let that key alone satisfy an `any`
//! rule, so that is never done. Constraints over the same set of authorities are merged into
//! the stricter one, which is how a sync raises `any` to `all` or `2`. A covering policy can
//! never be dropped, and `allowUnsigned` is refused when any policy covers the sync. An
//! invalid covering policy is an error, never skipped (skipping would weaken it).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{ApiError, ArtifactSync, TrustPolicy};
use crate::signing::identity::Matcher;

/// A Secret key holding a PEM document (a public key or a trusted root).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    pub name: String,
    /// Namespace of the Secret. Required in a TrustPolicy; an ArtifactSync may only name
    /// its own namespace (the default), so tenants cannot read each other's Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key inside the Secret's data; default `cosign.pub` (for a trusted root:
    /// `trusted_root.json`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A public key (ECDSA P-256, `cosign.pub`): exactly one of `data` or `secretRef`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyAuthority {
    /// The PEM text (`-----BEGIN PUBLIC KEY-----`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// A Secret holding the PEM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
}

/// A keyless (Fulcio certificate) signer. Identity and issuer are both required, each exact
/// or as a fully anchored regular expression; there is no "any identity".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeylessAuthority {
    /// Exact certificate identity (SAN: URI or e-mail).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// Certificate identity as a regular expression matching the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_regexp: Option<String>,
    /// Exact OIDC issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OIDC issuer as a regular expression matching the whole value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_regexp: Option<String>,
    /// A Secret holding the Sigstore `trusted_root.json` (key `trusted_root.json` by
    /// default) to check certificates and log entries against, offline. Required: the
    /// puller ships no root of its own, and a keyless authority without one fails closed
    /// (reason `TrustedRootMissing`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_root_ref: Option<SecretKeyRef>,
}

/// Who may sign: a name and exactly one of `key` or `keyless`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Authority {
    /// Unique within its list; shown as the signer.
    pub name: String,
    /// A public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<KeyAuthority>,
    /// A keyless identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyless: Option<KeylessAuthority>,
}

impl Authority {
    /// Checks the shape; `own_namespace` is `Some` for an ArtifactSync (Secrets must be in
    /// it) and `None` for a TrustPolicy (Secrets must name their namespace).
    fn validate(&self, own_namespace: Option<&str>) -> Result<(), String> {
        let name = &self.name;
        if name.is_empty() {
            return Err("an authority needs a name".into());
        }
        let check_secret = |r: &SecretKeyRef, what: &str| -> Result<(), String> {
            if r.name.is_empty() {
                return Err(format!("authority {name:?}: {what}.name is empty"));
            }
            match (own_namespace, r.namespace.as_deref()) {
                (None, None) => Err(format!(
                    "authority {name:?}: {what}.namespace is required in a TrustPolicy"
                )),
                (Some(own), Some(ns)) if ns != own => Err(format!(
                    "authority {name:?}: {what} must be in the ArtifactSync's namespace {own:?}, \
                     not {ns:?}"
                )),
                _ => Ok(()),
            }
        };
        match (&self.key, &self.keyless) {
            (Some(key), None) => match (&key.data, &key.secret_ref) {
                (Some(data), None) if data.contains("BEGIN PUBLIC KEY") => Ok(()),
                (Some(_), None) => Err(format!(
                    "authority {name:?}: key.data is not a PEM public key"
                )),
                (None, Some(r)) => check_secret(r, "key.secretRef"),
                _ => Err(format!(
                    "authority {name:?}: key needs exactly one of data or secretRef"
                )),
            },
            (None, Some(k)) => {
                matcher(&k.identity, &k.identity_regexp, "identity")
                    .and_then(|()| matcher(&k.issuer, &k.issuer_regexp, "issuer"))
                    .map_err(|m| format!("authority {name:?}: keyless: {m}"))?;
                match &k.trusted_root_ref {
                    Some(r) => check_secret(r, "keyless.trustedRootRef"),
                    None => Ok(()),
                }
            }
            _ => Err(format!(
                "authority {name:?}: needs exactly one of key or keyless"
            )),
        }
    }

    /// Whether `self` and `other` are the same signer as far as the spec shows: the same key
    /// material inline (compared as the public key, not the PEM text), the same Secret key
    /// (a missing namespace is `own_namespace`), or the same keyless identity and issuer as
    /// written. Keys in different Secrets are compared once read, when the puller builds
    /// the verifier ([`crate::signing::TrustPolicy::new`]).
    fn same_signer(&self, other: &Authority, own_namespace: Option<&str>) -> bool {
        match (&self.key, &other.key, &self.keyless, &other.keyless) {
            (Some(a), Some(b), _, _) => match (&a.data, &b.data, &a.secret_ref, &b.secret_ref) {
                (Some(a), Some(b), _, _) => same_pem_key(a, b),
                (_, _, Some(a), Some(b)) => {
                    let ns =
                        |r: &SecretKeyRef| r.namespace.clone().or(own_namespace.map(String::from));
                    let field =
                        |r: &SecretKeyRef| r.key.clone().unwrap_or_else(|| "cosign.pub".into());
                    ns(a) == ns(b) && a.name == b.name && field(a) == field(b)
                }
                _ => false,
            },
            (None, None, Some(a), Some(b)) => {
                a.identity == b.identity
                    && a.identity_regexp == b.identity_regexp
                    && a.issuer == b.issuer
                    && a.issuer_regexp == b.issuer_regexp
            }
            _ => false,
        }
    }

    /// What makes two authorities the same signer, whatever they are called.
    fn identity_key(&self) -> String {
        match (&self.key, &self.keyless) {
            (Some(k), _) => match (&k.data, &k.secret_ref) {
                (Some(d), _) => format!("key:data:{}", d.split_whitespace().collect::<String>()),
                (_, Some(r)) => format!(
                    "key:secret:{}/{}/{}",
                    r.namespace.as_deref().unwrap_or(""),
                    r.name,
                    r.key.as_deref().unwrap_or("")
                ),
                _ => String::from("key:?"),
            },
            (_, Some(k)) => format!(
                "keyless:{:?}|{:?}|{:?}|{:?}|{:?}",
                k.identity,
                k.identity_regexp,
                k.issuer,
                k.issuer_regexp,
                k.trusted_root_ref
                    .as_ref()
                    .map(|r| (&r.namespace, &r.name, &r.key))
            ),
            _ => String::from("?"),
        }
    }
}

/// Whether two inline PEM texts hold the same public key: compared as keys when both parse
/// (other line breaks, or another encoding of the same point, are the same key), else as
/// text without whitespace.
fn same_pem_key(a: &str, b: &str) -> bool {
    use crate::signing::PublicKey;
    let origin = std::path::Path::new("spec");
    match (
        PublicKey::from_pem(a.as_bytes(), origin),
        PublicKey::from_pem(b.as_bytes(), origin),
    ) {
        (Ok(a), Ok(b)) => a.same_key(&b),
        _ => {
            let squeeze = |s: &str| s.split_whitespace().collect::<String>();
            squeeze(a) == squeeze(b)
        }
    }
}

fn matcher(exact: &Option<String>, regexp: &Option<String>, what: &str) -> Result<(), String> {
    match (exact, regexp) {
        (Some(e), None) if !e.is_empty() => Ok(()),
        (None, Some(r)) if !r.is_empty() => Matcher::regexp(r)
            .map(|_| ())
            .map_err(|e| format!("{what}Regexp: {e}")),
        (Some(_), Some(_)) => Err(format!("give {what} or {what}Regexp, not both")),
        _ => Err(format!(
            "{what} or {what}Regexp is required (there is no \"any {what}\" default)"
        )),
    }
}

/// How many authorities of a list must have signed: `any`, `all` or a number ≥ 1.
///
/// Written as a string or an integer (`require: 2` and `require: "2"` are the same).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Require {
    /// At least one.
    #[default]
    Any,
    /// Every authority.
    All,
    /// At least N.
    AtLeast(u32),
}

impl Require {
    /// Authorities needed out of `total`.
    pub fn needed(self, total: usize) -> usize {
        crate::signing::Require::from(self).needed(total)
    }
}

/// The verifier's rule: the CRD field is `u32` for its schema, the verifier counts in `usize`.
impl From<Require> for crate::signing::Require {
    fn from(require: Require) -> Self {
        match require {
            Require::Any => Self::Any,
            Require::All => Self::All,
            Require::AtLeast(n) => Self::AtLeast(usize::try_from(n).unwrap_or(usize::MAX)),
        }
    }
}

impl fmt::Display for Require {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::signing::Require::from(*self).fmt(f)
    }
}

impl std::str::FromStr for Require {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "any" => Ok(Self::Any),
            "all" => Ok(Self::All),
            n => match n.parse::<u32>() {
                Ok(0) | Err(_) => Err(format!(
                    "invalid require {s:?}: expected any, all or a number of authorities (≥ 1)"
                )),
                Ok(n) => Ok(Self::AtLeast(n)),
            },
        }
    }
}

impl Serialize for Require {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::AtLeast(n) => s.serialize_u32(*n),
            other => s.serialize_str(&other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Require {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Require;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any, all or a number of authorities (≥ 1)")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Require, E> {
                u32::try_from(n)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(Require::AtLeast)
                    .ok_or_else(|| {
                        E::custom(format!(
                            "invalid require {n}: expected any, all or a number of authorities \
                             from 1 to {}",
                            u32::MAX
                        ))
                    })
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Require, E> {
                match u64::try_from(n) {
                    Ok(n) => self.visit_u64(n),
                    Err(_) => Err(E::custom(format!(
                        "invalid require {n}: expected any, all or a number of authorities (≥ 1)"
                    ))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Require, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl JsonSchema for Require {
    fn schema_name() -> Cow<'static, str> {
        "Require".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // Kubernetes' structural schemas express "integer or string" with this extension.
        // The rule refuses what `Deserialize` refuses (0, negatives, more than u32, other
        // words): one object the puller cannot decode must not get past the server.
        json_schema!({
            "description": "How many authorities must have signed: any, all, or a number N >= 1.",
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": "type(self) == int ? (self >= 1 && self <= 4294967295) : (self in ['any', 'all'] || (self.matches('^[0-9]{1,10}$') && int(self) >= 1 && int(self) <= 4294967295))",
                "message": "require must be any, all or a number of authorities from 1 to 4294967295"
            }]
        })
    }
}

/// One rule that must hold: at least `require` of `authorities` signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Constraint {
    /// Where it comes from: `TrustPolicy/NAME` or `ArtifactSync NS/NAME` (merged: joined
    /// with `, `).
    pub source: String,
    /// Who may sign.
    pub authorities: Vec<Authority>,
    /// How many of them must.
    pub require: Require,
}

impl Constraint {
    /// Authorities needed, e.g. 2 for `all` over two.
    pub fn needed(&self) -> usize {
        self.require.needed(self.authorities.len())
    }

    fn signers(&self) -> BTreeSet<String> {
        self.authorities
            .iter()
            .map(Authority::identity_key)
            .collect()
    }
}

/// What an ArtifactSync must satisfy before anything is applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Requirements {
    /// The explicit opt-out (`spec.verify.allowUnsigned`), only when no policy covers it.
    Unsigned,
    /// Every constraint must hold (sorted by source).
    Signed(Vec<Constraint>),
}

impl Requirements {
    /// The constraints (none for [`Requirements::Unsigned`]).
    pub fn constraints(&self) -> &[Constraint] {
        match self {
            Self::Unsigned => &[],
            Self::Signed(c) => c,
        }
    }
}

/// Checks a list of authorities with its rule; `Err` is the message.
pub(super) fn validate_authorities(
    authorities: &[Authority],
    require: Require,
    own_namespace: Option<&str>,
) -> Result<(), String> {
    if authorities.is_empty() {
        return Err("no authorities: name at least one key or keyless identity".into());
    }
    let mut names = BTreeSet::new();
    for (i, a) in authorities.iter().enumerate() {
        a.validate(own_namespace)?;
        if !names.insert(a.name.as_str()) {
            return Err(format!("authority {:?} is listed twice", a.name));
        }
        if let Some(first) = authorities
            .iter()
            .take(i)
            .find(|b| b.same_signer(a, own_namespace))
        {
            return Err(format!(
                "authorities {:?} and {:?} are the same signer (the same key or keyless \
                 identity and issuer); N-of-M counts distinct signers, so list each once",
                first.name, a.name
            ));
        }
    }
    if let Require::AtLeast(n) = require {
        if require.needed(authorities.len()) > authorities.len() {
            return Err(format!(
                "require: {n} but there are {} authorities",
                authorities.len()
            ));
        }
    }
    Ok(())
}

/// The trust requirements of `sync`: every covering policy, the named policy and the sync's
/// own authorities, all of which must hold (see the module docs for the "cannot weaken" rule).
///
/// `namespace_labels` are the labels of the sync's namespace, for policies that select
/// namespaces by label. Fails when the sync or a covering policy is invalid, the named policy
/// does not exist, the sync opts out of verification while a policy covers it, or nothing
/// requires a signature at all.
pub fn effective_requirements(
    policies: &[TrustPolicy],
    sync: &ArtifactSync,
    namespace_labels: &BTreeMap<String, String>,
) -> Result<Requirements, ApiError> {
    sync.validate()?;
    let object = sync.object_name();
    let namespace = sync.metadata.namespace.as_deref().unwrap_or("default");
    let repository = sync.spec.repository()?;

    let mut constraints = Vec::new();
    let mut covering = Vec::new();
    for policy in policies {
        if policy.covers(namespace, namespace_labels, &repository) {
            policy.validate()?;
            covering.push(policy.name());
            constraints.push(policy.constraint());
        }
    }
    let verify = sync.spec.verify.clone().unwrap_or_default();
    if let Some(name) = verify.trust_policy.as_deref() {
        let policy = policies.iter().find(|p| p.name() == name).ok_or_else(|| {
            ApiError::TrustPolicyNotFound {
                object: object.clone(),
                name: name.to_string(),
            }
        })?;
        policy.validate()?;
        constraints.push(policy.constraint());
    }
    if !verify.authorities.is_empty() {
        constraints.push(Constraint {
            source: object.clone(),
            authorities: verify.authorities.clone(),
            require: verify.require.unwrap_or_default(),
        });
    }
    if verify.allow_unsigned {
        if let Some(policy) = covering.first() {
            return Err(ApiError::WeakensTrustPolicy {
                object,
                policy: policy.clone(),
                message: "spec.verify.allowUnsigned is set".into(),
            });
        }
        return Ok(Requirements::Unsigned);
    }
    if constraints.is_empty() {
        return Err(ApiError::NoTrustRequirements { object });
    }
    Ok(Requirements::Signed(merge(constraints)))
}

/// Merges constraints over the same signers into the stricter one, then sorts by source.
fn merge(constraints: Vec<Constraint>) -> Vec<Constraint> {
    let mut merged: Vec<Constraint> = Vec::new();
    for c in constraints {
        let signers = c.signers();
        match merged.iter_mut().find(|m| m.signers() == signers) {
            Some(m) => {
                if c.needed() > m.needed() {
                    m.require = c.require;
                }
                if !m.source.split(", ").any(|s| s == c.source) {
                    m.source = format!("{}, {}", m.source, c.source);
                }
            }
            None => merged.push(c),
        }
    }
    merged.sort_by(|a, b| a.source.cmp(&b.source));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ArtifactSyncSpec, NamespaceSelector, SourceRef, TrustPolicySpec, Verify};
    use kube::api::ObjectMeta;

    const PEM_A: &str = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";

    fn key(name: &str, secret: &str, namespace: Option<&str>) -> Authority {
        Authority {
            name: name.into(),
            key: Some(KeyAuthority {
                data: None,
                secret_ref: Some(SecretKeyRef {
                    name: secret.into(),
                    namespace: namespace.map(str::to_string),
                    key: None,
                }),
            }),
            keyless: None,
        }
    }

    fn keyless(name: &str, identity: &str) -> Authority {
        Authority {
            name: name.into(),
            key: None,
            keyless: Some(KeylessAuthority {
                identity: Some(identity.into()),
                issuer: Some("https://token.actions.githubusercontent.com".into()),
                ..Default::default()
            }),
        }
    }

    fn policy(name: &str, authorities: Vec<Authority>, require: Require) -> TrustPolicy {
        let mut p = TrustPolicy::new(
            name,
            TrustPolicySpec {
                authorities,
                require,
                namespaces: NamespaceSelector::default(),
                repositories: vec![],
            },
        );
        p.metadata.name = Some(name.into());
        p
    }

    fn sync(namespace: &str, verify: Option<Verify>) -> ArtifactSync {
        ArtifactSync {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: ArtifactSyncSpec {
                url: "oci://ghcr.io/acme/app".into(),
                source_ref: SourceRef {
                    tag: Some("v1".into()),
                    ..Default::default()
                },
                interval: "5m".into(),
                verify,
                prune: true,
                ..Default::default()
            },
            status: None,
        }
    }

    fn no_labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn ci_and_security() -> TrustPolicy {
        policy(
            "prod",
            vec![
                key("ci", "ci-key", Some("tresor-system")),
                key("security", "sec-key", Some("tresor-system")),
            ],
            Require::All,
        )
    }

    #[test]
    fn covering_policy_applies_without_any_verify() {
        let r = effective_requirements(&[ci_and_security()], &sync("team-a", None), &no_labels())
            .unwrap();
        let c = r.constraints();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].source, "TrustPolicy/prod");
        assert_eq!(c[0].needed(), 2);
    }

    #[test]
    fn sync_authorities_are_a_separate_constraint_and_cannot_widen_the_pool() {
        // The tenant adds its own key with `any`. Joined to the policy's pool it could
        // count towards the policy's rule; as a separate constraint the policy (all of
        // ci+security) and the tenant key must both hold.
        let verify = Verify {
            authorities: vec![key("tenant", "tenant-key", None)],
            ..Default::default()
        };
        let r = effective_requirements(
            &[ci_and_security()],
            &sync("team-a", Some(verify)),
            &no_labels(),
        )
        .unwrap();
        let c = r.constraints();
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].source, "ArtifactSync team-a/app");
        assert_eq!(c[0].needed(), 1);
        assert_eq!(c[1].source, "TrustPolicy/prod");
        assert_eq!(c[1].needed(), 2, "the policy's rule is untouched");
    }

    #[test]
    fn sync_can_raise_n_over_the_same_authorities() {
        let p = policy(
            "two-of-three",
            vec![
                keyless("a", "https://github.com/acme/a"),
                keyless("b", "https://github.com/acme/b"),
                keyless("c", "https://github.com/acme/c"),
            ],
            Require::AtLeast(2),
        );
        // The same signers under other names, `all`: merged into the stricter rule.
        let mine = vec![
            keyless("x", "https://github.com/acme/a"),
            keyless("y", "https://github.com/acme/b"),
            keyless("z", "https://github.com/acme/c"),
        ];
        let raise = Verify {
            authorities: mine.clone(),
            require: Some(Require::All),
            ..Default::default()
        };
        let r = effective_requirements(
            std::slice::from_ref(&p),
            &sync("t", Some(raise)),
            &no_labels(),
        )
        .unwrap();
        assert_eq!(r.constraints().len(), 1);
        assert_eq!(r.constraints()[0].needed(), 3);
        // Asking for less over the same signers does not lower the policy's 2.
        let lower = Verify {
            authorities: mine,
            require: Some(Require::Any),
            ..Default::default()
        };
        let r = effective_requirements(&[p], &sync("t", Some(lower)), &no_labels()).unwrap();
        assert_eq!(r.constraints().len(), 1);
        assert_eq!(r.constraints()[0].needed(), 2);
        assert_eq!(
            r.constraints()[0].source,
            "TrustPolicy/two-of-three, ArtifactSync t/app"
        );
    }

    #[test]
    fn allow_unsigned_cannot_weaken_a_covering_policy() {
        let verify = Verify {
            allow_unsigned: true,
            ..Default::default()
        };
        let err = effective_requirements(
            &[ci_and_security()],
            &sync("team-a", Some(verify.clone())),
            &no_labels(),
        )
        .unwrap_err();
        assert_eq!(err.reason(), "WeakensTrustPolicy");
        // Without a covering policy, the explicit opt-out is honoured.
        let r = effective_requirements(&[], &sync("team-a", Some(verify)), &no_labels()).unwrap();
        assert_eq!(r, Requirements::Unsigned);
    }

    #[test]
    fn nothing_required_is_an_error() {
        let err = effective_requirements(&[], &sync("team-a", None), &no_labels()).unwrap_err();
        assert_eq!(err.reason(), "NoTrustRequirements");
    }

    #[test]
    fn policies_cover_by_namespace_name_labels_and_repository() {
        let mut by_name = ci_and_security();
        by_name.spec.namespaces.names = vec!["prod".into()];
        let mut by_label = policy("labelled", vec![keyless("k", "i")], Require::Any);
        by_label.spec.namespaces.selector = Some(crate::api::LabelSelector {
            match_labels: [("env".to_string(), "prod".to_string())]
                .into_iter()
                .collect(),
            match_expressions: vec![],
        });
        let mut other_repo = policy("other", vec![keyless("o", "o")], Require::Any);
        other_repo.spec.repositories = vec!["registry.example/**".into()];
        let mut same_repo = policy("acme", vec![keyless("g", "g")], Require::Any);
        same_repo.spec.repositories = vec!["ghcr.io/acme/*".into()];
        let policies = [by_name, by_label, other_repo, same_repo];

        let sources = |ns: &str, labels: &BTreeMap<String, String>| -> Vec<String> {
            effective_requirements(&policies, &sync(ns, None), labels)
                .unwrap()
                .constraints()
                .iter()
                .map(|c| c.source.clone())
                .collect()
        };
        let prod_labels = [("env".to_string(), "prod".to_string())]
            .into_iter()
            .collect();
        assert_eq!(
            sources("prod", &no_labels()),
            ["TrustPolicy/acme", "TrustPolicy/prod"]
        );
        assert_eq!(
            sources("dev", &prod_labels),
            ["TrustPolicy/acme", "TrustPolicy/labelled"]
        );
        assert_eq!(sources("dev", &no_labels()), ["TrustPolicy/acme"]);
    }

    #[test]
    fn named_policy_applies_even_when_not_covering_and_must_exist() {
        let mut p = ci_and_security();
        p.spec.namespaces.names = vec!["elsewhere".into()];
        let verify = Verify {
            trust_policy: Some("prod".into()),
            ..Default::default()
        };
        let r = effective_requirements(&[p], &sync("team-a", Some(verify.clone())), &no_labels())
            .unwrap();
        assert_eq!(r.constraints()[0].source, "TrustPolicy/prod");
        let err =
            effective_requirements(&[], &sync("team-a", Some(verify)), &no_labels()).unwrap_err();
        assert_eq!(err.reason(), "TrustPolicyNotFound");
    }

    #[test]
    fn invalid_covering_policy_fails_closed() {
        let bad = policy("bad", vec![keyless("k", "i")], Require::AtLeast(2));
        let err = effective_requirements(&[bad], &sync("t", None), &no_labels()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(
            err.to_string().contains("require: 2 but there are 1"),
            "{err}"
        );
    }

    #[test]
    fn tenant_secrets_stay_in_their_namespace() {
        let verify = Verify {
            authorities: vec![key("stolen", "ci-key", Some("tresor-system"))],
            ..Default::default()
        };
        let err =
            effective_requirements(&[], &sync("team-a", Some(verify)), &no_labels()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(err.to_string().contains("team-a"), "{err}");
        // A TrustPolicy must say where its Secret lives.
        let p = policy("p", vec![key("ci", "ci-key", None)], Require::Any);
        assert!(p.validate().is_err());
    }

    #[test]
    fn authority_shapes_are_checked() {
        let both = Authority {
            name: "both".into(),
            key: Some(KeyAuthority {
                data: Some(PEM_A.into()),
                secret_ref: None,
            }),
            keyless: Some(KeylessAuthority::default()),
        };
        assert!(both
            .validate(None)
            .unwrap_err()
            .contains("exactly one of key or keyless"));
        let any_identity = Authority {
            name: "any".into(),
            key: None,
            keyless: Some(KeylessAuthority {
                issuer: Some("https://issuer".into()),
                ..Default::default()
            }),
        };
        assert!(any_identity
            .validate(None)
            .unwrap_err()
            .contains("no \"any identity\""));
        let bad_regexp = Authority {
            name: "re".into(),
            key: None,
            keyless: Some(KeylessAuthority {
                identity_regexp: Some("(".into()),
                issuer: Some("https://issuer".into()),
                ..Default::default()
            }),
        };
        assert!(bad_regexp
            .validate(None)
            .unwrap_err()
            .contains("identityRegexp"));
        let inline = Authority {
            name: "inline".into(),
            key: Some(KeyAuthority {
                data: Some(PEM_A.into()),
                secret_ref: None,
            }),
            keyless: None,
        };
        assert!(inline.validate(None).is_ok());
    }

    const P256: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEFNLqFhf4fiN6o/glAuYnq2jYUeL0
vRuLu/z39pmbVwS9ff5AYnlwaP9sxREajdLY9ynM6G1sy6AAmb7Z63TsLg==
-----END PUBLIC KEY-----
";

    fn inline(name: &str, pem: &str) -> Authority {
        Authority {
            name: name.into(),
            key: Some(KeyAuthority {
                data: Some(pem.into()),
                secret_ref: None,
            }),
            keyless: None,
        }
    }

    /// Issue 12 point 1: a TrustPolicy or ArtifactSync listing one signer twice is invalid,
    /// so `require: 2` can never be met by one signature.
    #[test]
    fn the_same_signer_twice_is_invalid_in_policies_and_syncs() {
        // The same key inline, once with other line breaks.
        let one_line: String = P256.lines().filter(|l| !l.starts_with("-----")).collect();
        let rewrapped =
            format!("-----BEGIN PUBLIC KEY-----\n{one_line}\n-----END PUBLIC KEY-----\n");
        let p = policy(
            "twice",
            vec![inline("ci", P256), inline("security-team", &rewrapped)],
            Require::AtLeast(2),
        );
        let err = p.validate().unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(
            err.to_string()
                .contains("\"ci\" and \"security-team\" are the same signer"),
            "{err}"
        );
        // The same Secret key, once with the default key name spelled out.
        let mut explicit = key("b", "ci-key", Some("tresor-system"));
        if let Some(r) = explicit.key.as_mut().and_then(|k| k.secret_ref.as_mut()) {
            r.key = Some("cosign.pub".into());
        }
        let p = policy(
            "secret-twice",
            vec![key("a", "ci-key", Some("tresor-system")), explicit],
            Require::AtLeast(2),
        );
        assert!(p.validate().is_err());
        // The same keyless identity and issuer in an ArtifactSync.
        let verify = Verify {
            authorities: vec![
                keyless("a", "https://github.com/acme/app"),
                keyless("b", "https://github.com/acme/app"),
            ],
            require: Some(Require::AtLeast(2)),
            ..Default::default()
        };
        let err = effective_requirements(&[], &sync("t", Some(verify)), &no_labels()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(err.to_string().contains("spec.verify.authorities"), "{err}");
        assert!(err.to_string().contains("same signer"), "{err}");
    }

    #[test]
    fn the_merge_keeps_signers_distinct() {
        // A covering policy and a sync naming the same two signers: one constraint whose
        // authorities are still two distinct signers, with the stricter rule.
        let p = policy(
            "prod",
            vec![
                keyless("a", "https://github.com/acme/a"),
                keyless("b", "https://github.com/acme/b"),
            ],
            Require::Any,
        );
        let verify = Verify {
            authorities: vec![
                keyless("x", "https://github.com/acme/a"),
                keyless("y", "https://github.com/acme/b"),
            ],
            require: Some(Require::All),
            ..Default::default()
        };
        let r = effective_requirements(
            std::slice::from_ref(&p),
            &sync("t", Some(verify)),
            &no_labels(),
        )
        .unwrap();
        let [c] = r.constraints() else {
            panic!("expected one merged constraint: {r:?}")
        };
        assert_eq!(c.needed(), 2);
        assert_eq!(c.signers().len(), c.authorities.len());
        // A sync cannot smuggle a repeated signer into the merge.
        let twice = Verify {
            authorities: vec![
                keyless("x", "https://github.com/acme/a"),
                keyless("y", "https://github.com/acme/a"),
            ],
            require: Some(Require::All),
            ..Default::default()
        };
        assert!(effective_requirements(&[p], &sync("t", Some(twice)), &no_labels()).is_err());
    }

    #[test]
    fn require_reads_words_and_numbers() {
        let r: Require = serde_json::from_str("\"all\"").unwrap();
        assert_eq!(r, Require::All);
        let r: Require = serde_json::from_str("2").unwrap();
        assert_eq!(r, Require::AtLeast(2));
        let r: Require = serde_json::from_str("\"3\"").unwrap();
        assert_eq!(r, Require::AtLeast(3));
        assert!(serde_json::from_str::<Require>("0").is_err());
        assert!(serde_json::from_str::<Require>("\"most\"").is_err());
        for bad in ["-1", "4294967296", "1.5", "\"most\"", "null"] {
            let e = serde_json::from_str::<Require>(bad)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("any, all or a number of authorities"),
                "{bad}: {e}"
            );
        }
        assert_eq!(serde_json::to_string(&Require::AtLeast(2)).unwrap(), "2");
        assert_eq!(serde_json::to_string(&Require::Any).unwrap(), "\"any\"");
    }
}
