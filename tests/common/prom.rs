//! Reading a real Prometheus in the end-to-end tests: instant queries, and the dashboard's queries as a
//! Prometheus (not Grafana) can run them.

use serde_json::Value;

use super::http;

/// `GET /api/v1/query` on Prometheus: the result vector.
pub fn query(prometheus: &str, expr: &str) -> Vec<Value> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = http(prometheus, "GET", &format!("/api/v1/query?query={encoded}"), None, None);
    assert_eq!(status, 200, "{expr}: {body}");
    let json: Value = serde_json::from_str(&body).expect("JSON");
    json["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// Every query of the dashboard's panels with Grafana's variables filled in (every region, layer and
/// fault type; a one-minute rate window).
pub fn panel_exprs() -> Vec<String> {
    chaoseater_sinks::grafana::panel_queries()
        .into_iter()
        .flat_map(|(_, _, e)| e)
        .map(|e| {
            e.replace("$region", ".*")
                .replace("$layer", ".*")
                .replace("$fault_type", ".*")
                .replace("$__rate_interval", "1m")
        })
        .collect()
}
