//! Health samples (topic chaoseater.health, key region name).

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, RegionName, TimestampMs};

/// Health of a region's agent, as one sample saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HealthStatus {
    /// 200 in time.
    Healthy,
    /// Slow or not 200.
    Degraded,
    /// No answer within the timeout.
    Failed,
}

impl HealthStatus {
    /// The Avro symbol (`HEALTHY`, `DEGRADED`, `FAILED`).
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "HEALTHY",
            HealthStatus::Degraded => "DEGRADED",
            HealthStatus::Failed => "FAILED",
        }
    }
}

/// One health sample of a region's agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionHealthSampled {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub region: RegionName,
    pub status: HealthStatus,
    pub latency_ms: Option<f64>,
    pub http_status: Option<i32>,
    pub message: Option<String>,
    /// Share of the agent's probes that failed over its last window while a fault is in place.
    pub error_rate: Option<f64>,
}

impl RegionHealthSampled {
    /// One sample per region and instant.
    pub fn id_for(region: &RegionName, at: TimestampMs) -> EventId {
        EventId::derive("RegionHealthSampled", &[region.as_str(), &at.to_id_part()])
    }
}
