//! How the puller reaches a sync's registry and decrypts its content: credentials from
//! `spec.pullSecretRef`, extra trusted CAs from `spec.caSecretRef` and age identities from
//! `spec.decryption.secretRef`, all read from Secrets in the sync's namespace.
//!
//! They are read before every cycle; the engine is rebuilt when what they hold changes (see
//! [`RegistrySettings::fingerprint`]), so a rotated password or CA takes effect on the next
//! cycle without editing the ArtifactSync. Values from the Secrets go only into the HTTP
//! client: errors name the Secret and the key, never their content.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use sha2::{Digest as _, Sha256};

use super::{call, Context, PullerError};
use crate::api::ArtifactSync;
use crate::reference::Reference;
use crate::registry::auth::{self, PullSecretFormat};
use crate::registry::{CaBundle, RegistryOptions};
use crate::secrets::{Decryption, Identities};

/// Secret type of a docker `config.json` pull secret.
pub const DOCKER_CONFIG_JSON_TYPE: &str = "kubernetes.io/dockerconfigjson";
/// Secret type of the legacy `.dockercfg` pull secret.
pub const DOCKER_CFG_TYPE: &str = "kubernetes.io/dockercfg";
/// Key of the CA certificates in the Secret named by `spec.caSecretRef`.
pub const CA_KEY: &str = "ca.crt";

/// Keys of the Secret named by `spec.decryption.secretRef` that hold age identities end in
/// this (as in Flux).
pub const AGE_KEY_SUFFIX: &str = ".agekey";

/// The registry options of one sync, its age identities, and a fingerprint of the Secret
/// content they hold.
pub(super) struct RegistrySettings {
    /// Options for [`crate::registry::Repository::open`].
    pub options: RegistryOptions,
    /// The identities from `spec.decryption.secretRef` (none without it).
    pub decryption: Decryption,
    /// SHA-256 over the credentials and CA bundle (empty when neither is set): the engine
    /// is rebuilt when it changes.
    pub fingerprint: String,
}

/// Reads `sync`'s pull secret and CA Secret (if set) into registry options.
///
/// Fails with [`PullerError::SecretMissing`] when a named Secret does not exist and
/// [`PullerError::Secret`] when it has the wrong type, lacks the key, has no entry for the
/// registry host, or is malformed.
pub(super) async fn registry_for(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
) -> Result<RegistrySettings, PullerError> {
    let spec = &sync.spec;
    // A request cannot usefully outlast the cycle it is part of: `spec.timeout`, when shorter,
    // bounds each registry request as well (the cycle's own limit only stops the engine
    // between steps).
    let cycle_limit = spec
        .timeout
        .as_deref()
        .and_then(|t| humantime::parse_duration(t).ok());
    let mut options = RegistryOptions {
        plain_http: spec.insecure,
        hints: crate::registry::Hints::Puller,
        timeout: cycle_limit.map_or(ctx.options.call_timeout, |limit| {
            limit.min(ctx.options.call_timeout)
        }),
        ..RegistryOptions::default()
    };
    let mut hash = Sha256::new();
    if let Some(r) = &spec.pull_secret_ref {
        let secret = get_secret(ctx, namespace, &r.name, "spec.pullSecretRef").await?;
        let host = registry_host(sync)?;
        let invalid = |message: String| PullerError::Secret {
            namespace: namespace.to_string(),
            name: r.name.clone(),
            message,
        };
        let type_ = secret.type_.as_deref().unwrap_or("Opaque");
        let (format, key) = match type_ {
            DOCKER_CONFIG_JSON_TYPE => (PullSecretFormat::DockerConfigJson, ".dockerconfigjson"),
            DOCKER_CFG_TYPE => (PullSecretFormat::DockerCfg, ".dockercfg"),
            other => {
                return Err(invalid(format!(
                    "has type {other:?}; spec.pullSecretRef needs a {DOCKER_CONFIG_JSON_TYPE} \
                     Secret (kubectl create secret docker-registry)"
                )))
            }
        };
        let data = secret_key(&secret, key)
            .ok_or_else(|| invalid(format!("has no key {key:?}, which a {type_} Secret needs")))?;
        let origin = format!("pull secret {namespace}/{}", r.name);
        let creds = auth::lookup_in_pull_secret(data, format, &origin, &host)
            .map_err(|e| invalid(e.to_string()))?
            .ok_or_else(|| {
                invalid(format!(
                    "has no credentials for registry {host}; add an auths entry for it"
                ))
            })?;
        hash.update(b"creds\0");
        hash.update(creds.username.as_bytes());
        hash.update(b"\0");
        hash.update(creds.password().as_bytes());
        hash.update(b"\0");
        options.creds = Some(creds);
        options.creds_origin = Some(origin);
    }
    if let Some(r) = &spec.ca_secret_ref {
        let secret = get_secret(ctx, namespace, &r.name, "spec.caSecretRef").await?;
        let pem = secret_key(&secret, CA_KEY).ok_or_else(|| PullerError::Secret {
            namespace: namespace.to_string(),
            name: r.name.clone(),
            message: format!("has no key {CA_KEY:?}; put the PEM CA certificate(s) there"),
        })?;
        hash.update(b"ca\0");
        hash.update(pem);
        options.ca_pem = Some(CaBundle {
            origin: format!("Secret {namespace}/{} key {CA_KEY}", r.name),
            pem: pem.to_vec(),
        });
    }
    let decryption = decryption_for(sync, ctx, namespace, &mut hash).await?;
    let fingerprint = if options.creds.is_none()
        && options.ca_pem.is_none()
        && decryption.identities().is_empty()
    {
        String::new()
    } else {
        hex::encode(hash.finalize())
    };
    Ok(RegistrySettings {
        options,
        decryption,
        fingerprint,
    })
}

/// The age identities of `spec.decryption.secretRef`: every key ending in `.agekey` of the
/// Secret in the sync's own namespace, read as the puller (like the pull secret). Their
/// content goes into `hash` (the engine is rebuilt when it changes) and the decrypting
/// engine, nowhere else; errors name the Secret and key, never the content.
async fn decryption_for(
    sync: &ArtifactSync,
    ctx: &Context,
    namespace: &str,
    hash: &mut Sha256,
) -> Result<Decryption, PullerError> {
    let Some(spec) = &sync.spec.decryption else {
        return Ok(Decryption::none(
            "spec.decryption (provider: sops, secretRef: a Secret in this namespace with the \
             age identity under a key ending in .agekey)",
        ));
    };
    let hint = "spec.decryption.secretRef to a Secret in this namespace whose key ending in \
                .agekey holds an age identity that is a recipient of the file";
    let Some(r) = &spec.secret_ref else {
        return Ok(Decryption::none(hint));
    };
    let secret = get_secret(ctx, namespace, &r.name, "spec.decryption.secretRef").await?;
    let invalid = |message: String| PullerError::Secret {
        namespace: namespace.to_string(),
        name: r.name.clone(),
        message,
    };
    let mut identities = Identities::none();
    for (key, value) in secret.data.iter().flatten() {
        if !key.ends_with(AGE_KEY_SUFFIX) {
            continue;
        }
        let source = format!("Secret {namespace}/{} key {key}", r.name);
        let parsed = Identities::parse(&source, &value.0).map_err(|e| invalid(e.to_string()))?;
        hash.update(b"age\0");
        hash.update(key.as_bytes());
        hash.update(b"\0");
        hash.update(&value.0);
        identities.extend(parsed);
    }
    if identities.is_empty() {
        return Err(invalid(format!(
            "has no key ending in {AGE_KEY_SUFFIX}; put the age identity (age-keygen output) \
             under e.g. age{AGE_KEY_SUFFIX}"
        )));
    }
    Ok(Decryption::new(identities, hint))
}

/// The registry host (`host[:port]`) of `spec.url`.
fn registry_host(sync: &ArtifactSync) -> Result<String, PullerError> {
    let repository = sync.spec.repository()?;
    match format!("oci://{repository}").parse::<Reference>() {
        Ok(Reference::Registry(r)) => Ok(r.host),
        _ => Err(PullerError::Setup {
            reason: "InvalidSpec",
            message: format!(
                "{}: spec.url {:?} does not name a registry",
                sync.object_name(),
                sync.spec.url
            ),
        }),
    }
}

/// Secret `namespace/name`; [`PullerError::SecretMissing`] names `field` (who needs it)
/// when it does not exist.
pub(super) async fn get_secret(
    ctx: &Context,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<Secret, PullerError> {
    let api = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    call("get Secret", ctx.options.call_timeout, api.get_opt(name))
        .await?
        .ok_or_else(|| PullerError::SecretMissing {
            namespace: namespace.to_string(),
            name: name.to_string(),
            field: field.to_string(),
        })
}

/// The bytes of `key` in `secret`'s data.
pub(super) fn secret_key<'a>(secret: &'a Secret, key: &str) -> Option<&'a [u8]> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| b.0.as_slice())
}
