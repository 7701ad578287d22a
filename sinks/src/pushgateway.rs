//! Pushes a run's results to a Prometheus Pushgateway, as the Python tool's observer did after each run
//! (`push_to_gateway`): for batch-style use where nothing scrapes `serve`. The series are the exporter's
//! own ([`crate::metrics`]), so the generated dashboard reads pushed results the same way.
//!
//! Each experiment is its own group (`/metrics/job/<job>/experiment/<name>`), replaced by its next push:
//! the Pushgateway then holds the latest result of every experiment, like the exporter's gauges.

use std::time::Duration;

use bytes::Bytes;
use chaoseater_net::http::HttpClient;
use chaoseater_schemas::events::Event;
use http_body_util::Full;
use hyper::{Method, Request};

use crate::metrics::MetricsView;

/// Attempts of one push: a Pushgateway restarting or a dropped connection is retried, with backoff.
const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);

/// A Pushgateway and the job name the results go under.
#[derive(Debug, Clone)]
pub struct Pushgateway {
    url: String,
    job: String,
    client: HttpClient,
}

/// Why a push failed, after its retries.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The Pushgateway refused the push (4xx): retrying would not help.
    #[error("the Pushgateway at {url} refused the push ({status}): {message}")]
    Refused { url: String, status: u16, message: String },
    #[error("the Pushgateway at {url} did not take the push after {ATTEMPTS} attempts: {message}")]
    Unreachable { url: String, message: String },
}

impl Pushgateway {
    /// `url` is the Pushgateway's base URL (`http://host:9091`); `job` the job label of every group.
    pub fn new(url: &str, job: &str) -> Self {
        Self { url: url.trim_end_matches('/').to_owned(), job: job.to_owned(), client: HttpClient::new() }
    }

    /// The group's URL: label values base64url-encoded (`@base64`), so any experiment name is a path segment.
    fn group_url(&self, experiment: &str) -> String {
        format!("{}/metrics/job@base64/{}/experiment@base64/{}", self.url, base64url(&self.job), base64url(experiment))
    }

    /// Replaces the group of `experiment` with the series `events` (a run's results) make.
    pub async fn push(&self, experiment: &str, events: &[Event]) -> Result<(), PushError> {
        let view = MetricsView::new();
        for event in events {
            view.apply(event);
        }
        let body = Bytes::from(view.render());
        let url = self.group_url(experiment);
        let mut backoff = Duration::from_millis(250);
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let request = Request::builder()
                .method(Method::PUT)
                .uri(&url)
                .header(hyper::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                .body(Full::new(body.clone()))
                .map_err(|e| PushError::Refused { url: self.url.clone(), status: 0, message: e.to_string() })?;
            match self.client.send(request, TIMEOUT).await {
                Ok(answer) if answer.status.is_success() => return Ok(()),
                Ok(answer) if answer.status.is_client_error() => {
                    return Err(PushError::Refused {
                        url: self.url.clone(),
                        status: answer.status.as_u16(),
                        message: String::from_utf8_lossy(&answer.body).trim().chars().take(500).collect(),
                    });
                }
                Ok(answer) => last = format!("HTTP {}", answer.status.as_u16()),
                Err(e) => last = e.to_string(),
            }
            if attempt < ATTEMPTS {
                tracing::warn!(url = %self.url, attempt, error = %last, "Push to the Pushgateway failed; retrying.");
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        Err(PushError::Unreachable { url: self.url.clone(), message: last })
    }
}

/// RFC 4648 base64url without padding (the Pushgateway accepts it for `@base64` label values).
fn base64url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    // An empty value is one `=` (the Pushgateway's spelling of an empty label value).
    if out.is_empty() { "=".to_owned() } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_the_rfc_vectors() {
        for (plain, encoded) in [
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64url(plain), encoded);
        }
        assert_eq!(base64url("a/b?"), "YS9iPw", "URL-safe alphabet, no padding");
        assert_eq!(base64url(""), "=");
    }

    #[test]
    fn each_experiment_is_its_own_group() {
        let gateway = Pushgateway::new("http://pg:9091/", "chaos_engineering");
        assert_eq!(
            gateway.group_url("model outage"),
            "http://pg:9091/metrics/job@base64/Y2hhb3NfZW5naW5lZXJpbmc/experiment@base64/bW9kZWwgb3V0YWdl"
        );
    }
}
