//! `tresor status [-n NS]`: the ArtifactSyncs of a cluster and their state, like `flux get`.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use kube::api::{Api, ApiResource, DynamicObject, ListParams};
use kube::Client;
use serde::Serialize;

use super::{CliError, Format, Printer};
use crate::api::conditions::{now_rfc3339, observe, Observation};
use crate::api::{ArtifactSync, ArtifactSyncSpec, ArtifactSyncStatus};
use crate::kube::{connect, ApplyError, ConnectOptions};
use crate::reconcile::Retry;

/// Objects per list request (pages are followed).
const PAGE: u32 = 500;
/// Upper bound on pages, so a misbehaving server cannot keep the command busy forever.
const MAX_PAGES: usize = 200;
/// Timeout of each request to the API server.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Arguments of `tresor status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this namespace (default: all namespaces).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Kubeconfig file [default: KUBECONFIG, ~/.kube/config, or the in-cluster config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Context of the kubeconfig [default: its current context].
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
}

/// Why `tresor status` failed.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// No usable kubeconfig or in-cluster configuration.
    #[error("cannot load the Kubernetes configuration: {message} (set KUBECONFIG, --kubeconfig or --context)")]
    Config {
        /// What was wrong.
        message: String,
    },
    /// The ArtifactSync CRD is not installed in the cluster.
    #[error("the ArtifactSync CRD is not installed in this cluster; install it with kubectl apply -k deploy/")]
    CrdNotInstalled,
    /// The API server refused or failed the request.
    #[error("listing ArtifactSyncs failed: {message}")]
    Api {
        /// The error, without credentials.
        message: String,
    },
}

impl StatusError {
    /// Stable CamelCase reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Config { .. } => "KubeconfigInvalid",
            Self::CrdNotInstalled => "CrdNotInstalled",
            Self::Api { .. } => "KubernetesApiError",
        }
    }
}

/// One ArtifactSync as `tresor status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncRow {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `spec.url`.
    pub url: String,
    /// What is followed: `tag:v1`, `semver:>=1 <2` or `digest:sha256:…`.
    #[serde(rename = "ref")]
    pub source_ref: String,
    /// The `Ready` condition's status: `True`, `False`, `Unknown` (none yet: `Unknown`).
    pub ready: String,
    /// The `Ready` condition's reason (or `Suspended`).
    pub reason: String,
    /// The `Ready` condition's message.
    pub message: String,
    /// `status.lastAppliedDigest`.
    pub last_applied_digest: Option<String>,
    /// `status.promotion`: who approved the applied digest (`tresor promote`), when a
    /// promotion record verified under the sync's trust.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<crate::api::Promotion>,
    /// `spec.suspend`.
    pub suspended: bool,
    /// Time since creation, like kubectl (`45s`, `5m`, `3h`, `12d`).
    pub age: String,
}

/// Rows for `items`, sorted by namespace and name; `now` is used for the age.
pub fn rows(items: &[ArtifactSync], now: SystemTime) -> Vec<SyncRow> {
    let mut rows: Vec<SyncRow> = items
        .iter()
        .map(|s| {
            let ready = s.status.as_ref().and_then(|st| st.ready());
            let r = &s.spec.source_ref;
            let source_ref = match (&r.tag, &r.semver, &r.digest) {
                (Some(t), _, _) => format!("tag:{t}"),
                (_, Some(v), _) => format!("semver:{v}"),
                (_, _, Some(d)) => format!("digest:{d}"),
                _ => String::from("-"),
            };
            let created: Option<SystemTime> = s
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| SystemTime::from(t.0));
            SyncRow {
                namespace: s.metadata.namespace.clone().unwrap_or_default(),
                name: s.metadata.name.clone().unwrap_or_default(),
                url: s.spec.url.clone(),
                source_ref,
                ready: ready.map_or("Unknown", |c| c.status.as_str()).to_string(),
                reason: if s.spec.suspend {
                    "Suspended".to_string()
                } else {
                    ready.map(|c| c.reason.clone()).unwrap_or_default()
                },
                message: ready.map(|c| c.message.clone()).unwrap_or_default(),
                last_applied_digest: s
                    .status
                    .as_ref()
                    .and_then(|st| st.last_applied_digest.clone()),
                promotion: s.status.as_ref().and_then(|st| st.promotion.clone()),
                suspended: s.spec.suspend,
                age: created
                    .and_then(|c| now.duration_since(c).ok())
                    .map_or_else(|| "-".to_string(), age),
            }
        })
        .collect();
    rows.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    rows
}

/// A duration the way kubectl shows ages.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7_200 => format!("{}m", s / 60),
        7_200..172_800 => format!("{}h", s / 3_600),
        172_800..63_072_000 => format!("{}d", s / 86_400),
        _ => format!("{}y", s / 31_536_000),
    }
}

/// Lists the ArtifactSyncs in `namespace` (all namespaces when `None`), following pages.
///
/// Each object is decoded on its own, so one the Rust types cannot read (written under a
/// CRD without the CEL rules) hides nothing: it is listed with its metadata and `spec.url`,
/// `Ready` False, reason `InvalidSpec` and the field that is wrong.
pub async fn list(
    client: Client,
    namespace: Option<&str>,
) -> Result<Vec<ArtifactSync>, StatusError> {
    let resource = ApiResource::erase::<ArtifactSync>(&());
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client, ns, &resource),
        None => Api::all_with(client, &resource),
    };
    let mut items = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    for _ in 0..MAX_PAGES {
        let page = api.list(&params).await.map_err(|e| match &e {
            kube::Error::Api(s) if s.code == 404 => StatusError::CrdNotInstalled,
            _ => StatusError::Api {
                message: e.to_string(),
            },
        })?;
        items.extend(page.items.iter().map(decode));
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(token) => params = params.continue_token(&token),
            None => return Ok(items),
        }
    }
    Err(StatusError::Api {
        message: format!("more than {MAX_PAGES} pages of {PAGE} objects; narrow it with -n"),
    })
}

/// `object` as an ArtifactSync, or, when it cannot be read, a stand-in saying so.
fn decode(object: &DynamicObject) -> ArtifactSync {
    let value = serde_json::to_value(object).unwrap_or_default();
    let error = match ArtifactSync::decode(&value) {
        Ok(sync) => return sync,
        Err(e) => e,
    };
    let url = value
        .pointer("/spec/url")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut sync = ArtifactSync::new(
        "",
        ArtifactSyncSpec {
            url,
            ..ArtifactSyncSpec::default()
        },
    );
    sync.metadata = object.metadata.clone();
    let mut status = ArtifactSyncStatus::default();
    observe(
        &mut status,
        object.metadata.generation,
        &Observation::Failed {
            reason: error.reason().to_string(),
            message: error.to_string(),
            retry: Retry::Stalled,
        },
        &now_rfc3339(),
    );
    sync.status = Some(status);
    sync
}

/// A client from the kubeconfig (`kubeconfig`, else KUBECONFIG or ~/.kube/config; its
/// `context`, else the current one) or the in-cluster account.
pub async fn client(
    kubeconfig: Option<&std::path::Path>,
    context: Option<&str>,
) -> Result<Client, StatusError> {
    let options = ConnectOptions {
        kubeconfig: kubeconfig.map(std::path::Path::to_path_buf),
        context: context.map(str::to_string),
        impersonate: None,
        timeout: TIMEOUT,
    };
    let (client, _) = connect(&options).await.map_err(|e| StatusError::Config {
        message: match e {
            ApplyError::Config { message } => message,
            other => other.to_string(),
        },
    })?;
    Ok(client)
}

fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", hex.get(..12).unwrap_or(hex)),
        None => d.to_string(),
    }
}

/// The approver's authority name (the key is in `--format json`).
fn approver_name(p: &crate::api::Promotion) -> String {
    p.approved_by
        .split_once(" (key ")
        .map_or(p.approved_by.as_str(), |(name, _)| name)
        .to_string()
}

/// The rows as an aligned table.
pub fn table(rows: &[SyncRow]) -> String {
    let header = [
        "NAMESPACE",
        "NAME",
        "URL",
        "REF",
        "READY",
        "REASON",
        "DIGEST",
        "APPROVED",
        "AGE",
    ];
    let lines: Vec<[String; 9]> = rows
        .iter()
        .map(|r| {
            [
                r.namespace.clone(),
                r.name.clone(),
                r.url.clone(),
                r.source_ref.clone(),
                r.ready.clone(),
                r.reason.clone(),
                r.last_applied_digest
                    .as_deref()
                    .map_or_else(|| "-".to_string(), short_digest),
                r.promotion
                    .as_ref()
                    .map_or_else(|| "-".to_string(), approver_name),
                r.age.clone(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut write_line = |cells: Vec<&str>| {
        let mut line = String::new();
        for (cell, w) in cells.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    write_line(header.to_vec());
    for line in &lines {
        write_line(line.iter().map(String::as_str).collect());
    }
    out
}

#[derive(Serialize)]
struct StatusOutput<'a> {
    items: &'a [SyncRow],
}

pub(super) async fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let printer = Printer::new(args.format);
    let client = client(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let items = list(client, args.namespace.as_deref()).await?;
    let rows = rows(&items, SystemTime::now());
    if rows.is_empty() && printer.format() == Format::Text {
        printer.note(match &args.namespace {
            Some(ns) => format!("no ArtifactSyncs in namespace {ns}"),
            None => "no ArtifactSyncs in any namespace".to_string(),
        });
        return Ok(ExitCode::SUCCESS);
    }
    printer.result(&StatusOutput { items: &rows }, || table(&rows));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_like_kubectl() {
        assert_eq!(age(Duration::from_secs(45)), "45s");
        assert_eq!(age(Duration::from_secs(300)), "5m");
        assert_eq!(age(Duration::from_secs(3 * 3600)), "3h");
        assert_eq!(age(Duration::from_secs(12 * 86_400)), "12d");
        assert_eq!(age(Duration::from_secs(3 * 31_536_000)), "3y");
    }

    #[test]
    fn digests_are_shortened_in_text() {
        assert_eq!(
            short_digest("sha256:0123456789abcdef0123"),
            "sha256:0123456789ab"
        );
    }
}
