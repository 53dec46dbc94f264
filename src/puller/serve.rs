//! `/healthz` and `/readyz` over plain HTTP/1.1, without a web framework: the probes only
//! need a status line. What they answer is decided in `health`.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::Context;

/// Listens on `addr`: `HOST:PORT`, or `:PORT` for every address of the pod, IPv6 and IPv4
/// (`[::]:PORT`, which Linux serves dual-stack unless `net.ipv6.bindv6only` is set), so
/// that IPv6-only and dual-stack clusters reach the probes and metrics; where the kernel
/// has no IPv6, `0.0.0.0:PORT`.
pub async fn bind(addr: &str) -> std::io::Result<TcpListener> {
    let Some(port) = addr.strip_prefix(':') else {
        return TcpListener::bind(addr).await;
    };
    match TcpListener::bind(format!("[::]:{port}")).await {
        Ok(listener) => Ok(listener),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
        Err(_) => TcpListener::bind(format!("0.0.0.0:{port}")).await,
    }
}

/// Answers on `listener`, until the task is dropped: `GET /readyz` 200 `ok: ROLE` when the
/// puller is Ready ([`Context::readiness`]), else 503 naming the reason; `GET /healthz` 200
/// `ok` unless the reconcile loop is stalled ([`Context::liveness`]), else 503; anything else
/// 404. Each connection is read for at most 5 s.
pub async fn serve_health(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), read_head(&mut stream))
                    .await;
            let Ok(Ok(head)) = read else {
                return;
            };
            let head = String::from_utf8_lossy(&head);
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = match path.split('?').next().unwrap_or(path) {
                "/readyz" => match ctx.readiness() {
                    Ok(role) => ("200 OK", format!("ok: {}\n", role.name())),
                    Err(e) => unavailable(&e),
                },
                "/healthz" => match ctx.liveness() {
                    Ok(()) => ("200 OK", "ok\n".to_string()),
                    Err(e) => unavailable(&e),
                },
                _ => ("404 Not Found", "not found\n".to_string()),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}

/// The request head, read until its blank line (or 1 KiB, or the peer's end of sending):
/// a request may come in several segments.
async fn read_head(stream: &mut tokio::net::TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    Ok(head)
}

fn unavailable(e: &super::health::Unhealthy) -> (&'static str, String) {
    ("503 Service Unavailable", format!("{}: {e}\n", e.reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (issue 17): `:PORT` listened on IPv4 only, so IPv6-only clusters could not
    /// probe the puller.
    #[tokio::test]
    async fn a_bare_port_listens_on_ipv6_and_ipv4() {
        let listener = bind(":0").await.unwrap();
        let local = listener.local_addr().unwrap();
        assert!(local.is_ipv6(), "{local}");
        let port = local.port();
        for host in ["127.0.0.1", "[::1]"] {
            let connect = tokio::net::TcpStream::connect(format!("{host}:{port}"));
            let (stream, accepted) = tokio::join!(connect, listener.accept());
            assert!(stream.is_ok() && accepted.is_ok(), "{host}:{port}");
        }
        let explicit = bind("127.0.0.1:0").await.unwrap();
        assert!(explicit.local_addr().unwrap().is_ipv4());
    }
}
