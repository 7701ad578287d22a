//! The health monitor: samples `GET /health` of every registered region's agent on a schedule (5 s
//! timeout) and publishes RegionHealthSampled: healthy (200 in time), degraded (slow, or an answer other
//! than 200), failed (no answer).

use std::time::{Duration, Instant};

use chaoseater_schemas::bus::{EventProducer, Shutdown, StateStore};
use chaoseater_schemas::events::{Event, HealthStatus, RegionHealthSampled};
use chaoseater_schemas::ids::TimestampMs;
use hyper::Method;

use super::{Dispatcher, RegionEntry};
use chaoseater_net::http::HttpClient;

pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer slower than this is degraded even when it is 200.
pub const SLOW: Duration = Duration::from_secs(1);

/// Samples one region.
pub async fn sample(client: &HttpClient, region: &RegionEntry) -> RegionHealthSampled {
    let url = format!("{}/health", region.endpoint.trim_end_matches('/'));
    let started = Instant::now();
    let answer = client.json(Method::GET, &url, None, None, HEALTH_TIMEOUT).await;
    let latency = started.elapsed();
    let at = TimestampMs::now();
    // The agent reports its probes' error rate while a fault is in place (the rollback's failure threshold).
    let error_rate = answer
        .as_ref()
        .ok()
        .and_then(|a| serde_json::from_slice::<serde_json::Value>(&a.body).ok())
        .and_then(|body| body.pointer("/experiment/error_rate").and_then(serde_json::Value::as_f64));
    let (status, http_status, message) = match answer {
        Ok(a) if a.status.is_success() && latency <= SLOW => (HealthStatus::Healthy, Some(a.status.as_u16()), None),
        Ok(a) if a.status.is_success() => {
            (HealthStatus::Degraded, Some(a.status.as_u16()), Some(format!("slow: {} ms", latency.as_millis())))
        }
        Ok(a) => {
            // An agent names what its probe of the target saw; anything else is quoted as it came.
            let body = serde_json::from_slice::<serde_json::Value>(&a.body).ok();
            let text = match body.as_ref().and_then(|b| b.pointer("/target/error")).and_then(|e| e.as_str()) {
                Some(error) => format!("HTTP {}: {error}", a.status.as_u16()),
                None => String::from_utf8_lossy(&a.body).chars().take(200).collect(),
            };
            (HealthStatus::Degraded, Some(a.status.as_u16()), Some(text))
        }
        Err(e) => (HealthStatus::Failed, None, Some(e.to_string())),
    };
    RegionHealthSampled {
        event_id: RegionHealthSampled::id_for(&region.name, at),
        occurred_at: at,
        region: region.name.clone(),
        status,
        latency_ms: (status != HealthStatus::Failed).then_some(latency.as_secs_f64() * 1e3),
        http_status: http_status.map(i32::from),
        message,
        error_rate,
    }
}

/// Samples every region the dispatcher knows, every `interval`, until `stop` fires.
pub async fn monitor(store: StateStore, producer: EventProducer, interval: Duration, stop: Shutdown) {
    let client = HttpClient::new();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = stop.wait() => return,
        }
        let regions = match Dispatcher::regions(&store) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Health monitor cannot read the registry.");
                continue;
            }
        };
        let samples = futures::future::join_all(regions.iter().map(|r| sample(&client, r))).await;
        let events: Vec<Event> = samples.into_iter().map(Event::RegionHealthSampled).collect();
        if !events.is_empty()
            && let Err(e) = producer.publish_all(&events).await
        {
            tracing::warn!(error = %e, "Publishing health samples failed.");
        }
    }
}
