//! A `kube::Client` from a kubeconfig (or the in-cluster config), with timeouts and
//! optional impersonation.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::ApplyError;

/// Where the cluster is and as whom to talk to it.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Kubeconfig file (default: `KUBECONFIG`, `~/.kube/config`, then in-cluster).
    pub kubeconfig: Option<PathBuf>,
    /// Context in the kubeconfig (default: its current context).
    pub context: Option<String>,
    /// User to impersonate (`Impersonate-User`), e.g. [`service_account_user`].
    pub impersonate: Option<String>,
    /// Connect, read and write timeout of every request (0: 30 s).
    pub timeout: Duration,
}

/// `system:serviceaccount:NAMESPACE:NAME`, the user a service account authenticates as.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// Loads the configuration and builds a client; returns it with the context's default
/// namespace. Fails with [`ApplyError::Config`] when no usable configuration is found.
pub async fn connect(options: &ConnectOptions) -> Result<(Client, String), ApplyError> {
    let config_error = |e: &dyn std::fmt::Display| ApplyError::Config {
        message: e.to_string(),
    };
    let kube_options = KubeConfigOptions {
        context: options.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match &options.kubeconfig {
        Some(path) => {
            let file = Kubeconfig::read_from(path).map_err(|e| ApplyError::Config {
                message: format!("{}: {e}", path.display()),
            })?;
            Config::from_custom_kubeconfig(file, &kube_options)
                .await
                .map_err(|e| config_error(&e))?
        }
        None if options.context.is_some() => Config::from_kubeconfig(&kube_options)
            .await
            .map_err(|e| config_error(&e))?,
        None => Config::infer().await.map_err(|e| config_error(&e))?,
    };
    let namespace = config.default_namespace.clone();
    let client = client_from_config(config, options.impersonate.as_deref(), options.timeout)?;
    Ok((client, namespace))
}

/// How long a watch may stay silent before its connection counts as dead: longer than the
/// 290 s a watch request asks the server to keep it open.
pub const WATCH_READ_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds a client for long-running watches from `config`: connect and write time out after
/// `timeout`, reads after [`WATCH_READ_TIMEOUT`] (a watch with nothing to report is silent;
/// the request timeout of [`client_from_config`] would cut it every `timeout`).
pub fn watch_client_from_config(config: Config, timeout: Duration) -> Result<Client, ApplyError> {
    client_with_timeouts(config, timeout, |timeout| WATCH_READ_TIMEOUT.max(timeout))
}

/// A client that talks as `user` (`Impersonate-User` on every request) through `base`: its
/// connection pool, credentials and timeouts.
///
/// The puller applies every tenant's objects as that tenant's service account; a client
/// built from the configuration per account would hold its own TLS configuration and
/// connection pool, hundreds of kilobytes per sync. Fails with [`ApplyError::Config`] when
/// `user` cannot be a header value.
pub fn impersonating(base: &Client, user: &str) -> Result<Client, ApplyError> {
    let value = HeaderValue::from_str(user).map_err(|e| ApplyError::Config {
        message: format!("cannot impersonate {user:?}: {e}"),
    })?;
    let namespace = base.default_namespace().to_string();
    let base = base.clone();
    let service = tower::service_fn(move |mut request: http::Request<kube::client::Body>| {
        request
            .headers_mut()
            .insert(HeaderName::from_static("impersonate-user"), value.clone());
        let base = base.clone();
        async move { base.send(request).await }
    });
    Ok(Client::new(service, namespace))
}

/// Builds a client from `config` with request timeouts and, when given, impersonation
/// (kube sends `auth_info.impersonate` as the `Impersonate-User` header).
pub fn client_from_config(
    mut config: Config,
    impersonate: Option<&str>,
    timeout: Duration,
) -> Result<Client, ApplyError> {
    if let Some(user) = impersonate {
        config.auth_info.impersonate = Some(user.to_string());
    }
    client_with_timeouts(config, timeout, |timeout| timeout)
}

/// A client whose connects and writes time out after `timeout` (30 s when zero) and reads
/// after `read(timeout)`.
fn client_with_timeouts(
    mut config: Config,
    timeout: Duration,
    read: impl FnOnce(Duration) -> Duration,
) -> Result<Client, ApplyError> {
    let timeout = if timeout.is_zero() {
        Duration::from_secs(30)
    } else {
        timeout
    };
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(read(timeout));
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| ApplyError::Config {
        message: e.to_string(),
    })
}
