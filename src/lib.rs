//! tresor: GitOps without Git in the cluster.
//!
//! CI packages rendered manifests into signed, digest-pinned OCI artifacts (`tresor push`);
//! agents next to the target pull, verify and reconcile them. The library is split by domain:
//!
//! - [`digest`]: content addressing (`sha256:…`), hashing while streaming.
//! - [`reference`](mod@reference): `oci://…` registry references and `oci-layout:…` directories.
//! - [`oci`]: the OCI wire format (media types, descriptors, manifests, indexes).
//! - [`artifact`]: artifact format v1 (Flux-compatible), packaging, hardened extraction,
//!   manifest objects and object-level diffs, push and pull.
//! - [`registry`]: where artifacts live: OCI registries over HTTP(S) and local OCI layouts.
//! - [`retry`]: transient or stalled, the failure classification every layer shares.
//! - [`signing`]: cosign-compatible keys, signatures, trust policies and verification.
//! - [`promote`]: `tresor promote`: verify, sign, record and copy an artifact into an
//!   environment, moving its tag last.
//! - [`reconcile`]: the reconcile engine (resolve → verify → fetch → extract → policy →
//!   apply → prune), the host agent's directory target, status file and metrics.
//! - [`kube`]: the Kubernetes apply step: staged server-side apply, prune, health, drift
//!   (the puller and `tresor apply`).
//! - [`policy`]: the immutability policy: `tresor lint`, checks at push and pull, image
//!   pinning.
//! - [`api`]: the Kubernetes custom resources (`ArtifactSync`, `TrustPolicy`), their
//!   conditions, the trust "cannot weaken" rule and the generated CRDs.
//! - [`webhook`]: registry push notifications that trigger an immediate reconcile.
//! - [`notify`]: events about reconciles for pipelines and people (webhooks, CloudEvents,
//!   Slack, GitHub commit statuses).
//! - [`secrets`]: SOPS files encrypted for age recipients, decrypted only where applied.
//! - [`agent`]: the host agent behind `tresor sync`: the engine every interval, webhooks,
//!   notifications, `--exec`.
//! - [`cli`]: the `tresor` subcommands and how results are printed.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod agent;
pub mod api;
pub mod artifact;
pub mod cli;
pub mod digest;
pub mod kube;
pub mod notify;
pub mod oci;
pub mod policy;
pub mod promote;
pub mod puller;
pub mod reconcile;
pub mod reference;
pub mod registry;
pub mod retry;
pub mod secrets;
pub mod signing;
pub mod telemetry;
pub mod webhook;
