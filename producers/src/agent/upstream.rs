//! The proxy's side toward the pipeline: one upstream connection per client connection and upstream.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Request, StatusCode};
use tokio::net::TcpStream;

use chaoseater_net::http::MAX_BODY_BYTES;

/// The upstream connections of one client connection. HTTP/1.1 serves a connection's requests one at a
/// time, so each client connection gets its own upstream connection per upstream: no shared pool, no lock
/// contention between clients (the proxy's overhead is measured in benches/proxy.rs).
#[derive(Default)]
pub(super) struct Links {
    senders: std::collections::HashMap<String, hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

/// A complete upstream answer.
pub(super) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

async fn connect(authority: &str) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(authority).await.map_err(|e| format!("connecting to {authority}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {authority}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::trace!(error = %e, "Upstream connection ended.");
        }
    });
    Ok(sender)
}

/// Sends `request` on this client connection's link to `authority`, opening it when needed. A request
/// the old link never sent (it had closed) is sent again on a new one; nothing is ever sent twice.
pub(super) async fn send_upstream(
    links: &tokio::sync::Mutex<Links>,
    authority: &str,
    request: Request<Full<Bytes>>,
) -> Result<Reply, String> {
    let mut links = links.lock().await;
    let mut request = request;
    for attempt in 0..2 {
        let usable = match links.senders.get_mut(authority) {
            Some(sender) => !sender.is_closed() && sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            let fresh = connect(authority).await?;
            links.senders.insert(authority.to_owned(), fresh);
        }
        let sender = links.senders.get_mut(authority).ok_or("no upstream link")?;
        match sender.try_send_request(request).await {
            Ok(response) => {
                let (parts, body) = response.into_parts();
                let body = http_body_util::Limited::new(body, MAX_BODY_BYTES)
                    .collect()
                    .await
                    .map_err(|e| format!("reading the answer: {e}"))?
                    .to_bytes();
                return Ok(Reply { status: parts.status, headers: parts.headers, body });
            }
            Err(mut e) => {
                links.senders.remove(authority);
                match e.take_message() {
                    Some(unsent) if attempt == 0 => request = unsent,
                    _ => return Err(e.into_error().to_string()),
                }
            }
        }
    }
    Err(format!("no usable connection to {authority}"))
}
