//! A small HTTP client for the sinks' calls to Grafana: JSON bodies, a bearer key, a deadline.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as Inner;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Pooled HTTP/1.1 client.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Inner<HttpConnector, Full<Bytes>>,
}

impl Default for Client {
    fn default() -> Self {
        Self::new()
    }
}

impl Client {
    pub fn new() -> Self {
        Self { inner: Inner::builder(TokioExecutor::new()).build(HttpConnector::new()) }
    }

    /// Sends `body` as JSON with `Authorization: Bearer key`; the status and the body's text, or why
    /// there was no answer.
    pub async fn request(
        &self,
        method: &str,
        url: &str,
        key: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, String), String> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::AUTHORIZATION, format!("Bearer {key}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .map_err(|e| format!("invalid request to {url}: {e}"))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| format!("{url}: {e}"))?;
            let status = response.status().as_u16();
            let bytes = response.into_body().collect().await.map_err(|e| format!("{url}: {e}"))?.to_bytes();
            Ok((status, String::from_utf8_lossy(&bytes).chars().take(500).collect()))
        };
        tokio::time::timeout(TIMEOUT, exchange).await.map_err(|_| format!("{url}: no answer within {TIMEOUT:?}"))?
    }
}
