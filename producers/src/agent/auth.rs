//! Who may call the agent's mutating routes: the bearer token, and (off by default) networks allowed to
//! call the synchronous run endpoint without it, for the Python tool's client, which cannot send a header.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::AgentCore;

/// `[auth]` in agent.toml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Networks (`10.0.0.0/8`, `192.168.1.20`, `fd00::/8`) whose clients may call
    /// `POST /api/v1/experiments/run` without the token. Every other route still needs it, from anywhere.
    /// Empty by default: a fault injector must not take orders from whoever can reach its port.
    #[serde(default)]
    pub unauthenticated_from: Vec<Network>,
}

impl AuthConfig {
    /// What the start-up log and `GET /health` say while the allowance is on.
    pub fn warning(&self) -> Option<String> {
        (!self.unauthenticated_from.is_empty()).then(|| {
            let networks: Vec<String> = self.unauthenticated_from.iter().map(Network::to_string).collect();
            format!(
                "POST /api/v1/experiments/run accepts requests without a token from {} ([auth] unauthenticated_from)",
                networks.join(", ")
            )
        })
    }

    fn allows(&self, peer: IpAddr) -> bool {
        self.unauthenticated_from.iter().any(|n| n.contains(peer))
    }
}

/// An IP network: an address and a prefix length, host bits zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` lies in the network (an IPv4 peer seen as `::ffff:a.b.c.d` counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.address, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), 32, self.prefix) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => mask(u128::from(ip), 128, self.prefix) == u128::from(net),
            _ => false,
        }
    }
}

/// `bits` with all but the top `prefix` of its `width` bits cleared.
fn mask(bits: u128, width: u8, prefix: u8) -> u128 {
    let host = width - prefix;
    if host >= 128 { 0 } else { bits >> host << host }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let address: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or network"))?;
        let width: u8 = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= width)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {width}"))?,
        };
        if prefix == 0 {
            return Err(format!(
                "{text:?} would let anyone run experiments without a token; name the client's network"
            ));
        }
        let bits = match address {
            IpAddr::V4(a) => u128::from(u32::from(a)),
            IpAddr::V6(a) => u128::from(a),
        };
        if mask(bits, width, prefix) != bits {
            return Err(format!("{text:?} has host bits set (a network is its first address and a prefix length)"));
        }
        Ok(Self { address, prefix })
    }
}

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// Refuses a request without the right token before anything reads its body.
pub async fn require_token(
    State(core): State<Arc<AgentCore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&core.token, request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused,
    }
}

/// [`require_token`], except that a request with no `Authorization` header at all from a network of
/// `[auth] unauthenticated_from` passes. A token that is given must be right, from anywhere.
pub async fn require_token_or_network(
    State(core): State<Arc<AgentCore>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let refused = match authorize(&core.token, request.headers()) {
        Ok(()) => return next.run(request).await,
        Err(refused) => refused,
    };
    let peer = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    let anonymous = !request.headers().contains_key(axum::http::header::AUTHORIZATION);
    match peer {
        Some(peer) if anonymous && core.config.auth.allows(peer.ip()) => {
            tracing::info!(%peer, "Running an experiment without a token: the peer's network is in [auth] unauthenticated_from.");
            next.run(request).await
        }
        _ => refused,
    }
}

fn refuse(message: &str) -> Response {
    (StatusCode::UNAUTHORIZED, axum::Json(json!({ "error": message }))).into_response()
}

// Handlers answer with a response either way; boxing the error side would buy nothing.
#[allow(clippy::result_large_err)]
fn authorize(token: &str, headers: &HeaderMap) -> Result<(), Response> {
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        // Strict: exactly `Bearer <token>`, no space around or inside the token.
        Some(given) if !given.contains(char::is_whitespace) && constant_time_eq(given.as_bytes(), token.as_bytes()) => {
            Ok(())
        }
        Some(_) => Err(refuse("invalid bearer token")),
        None => Err(refuse("this route needs an Authorization: Bearer token")),
    }
}

/// Compares in time independent of where the inputs differ (the length is not secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn networks_contain_their_addresses_only() {
        let net: Network = "10.0.0.0/8".parse().expect("network");
        assert!(net.contains(ip("10.1.2.3")));
        assert!(net.contains(ip("::ffff:10.9.9.9")), "an IPv4 peer on a dual-stack socket");
        assert!(!net.contains(ip("11.0.0.1")));
        assert!(!net.contains(ip("::1")));
        let host: Network = "127.0.0.1".parse().expect("host");
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(host.contains(ip("127.0.0.1")) && !host.contains(ip("127.0.0.2")));
        let v6: Network = "fd00::/8".parse().expect("v6");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        let all_but_one: Network = "192.168.1.0/31".parse().expect("/31");
        assert!(all_but_one.contains(ip("192.168.1.1")) && !all_but_one.contains(ip("192.168.1.2")));
    }

    #[test]
    fn bad_networks_are_refused_with_the_reason() {
        for (text, reason) in [
            ("10.0.0.1/8", "host bits"),
            ("0.0.0.0/0", "anyone"),
            ("::/0", "anyone"),
            ("10.0.0.0/33", "prefix length"),
            ("ten/8", "not an IP"),
        ] {
            let error = text.parse::<Network>().expect_err(text);
            assert!(error.contains(reason), "{text}: {error}");
        }
    }
}
