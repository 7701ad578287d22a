//! The region registry (topic chaoseater.regions, compacted, key region name). Tokens never travel here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ids::{EventId, RegionName, TimestampMs};

/// A region's agent joined or changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionRegistered {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub region: RegionName,
    /// Base URL of the region's agent.
    pub endpoint: String,
    /// Higher runs first in sequential mode; lower is touched first by blast radius.
    pub priority: i32,
    pub metadata: BTreeMap<String, String>,
}

/// A region left the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegionRemoved {
    pub event_id: EventId,
    pub occurred_at: TimestampMs,
    pub region: RegionName,
}

impl RegionRegistered {
    /// Registrations are idempotent per region and time of registration.
    pub fn id_for(region: &RegionName, at: TimestampMs) -> EventId {
        EventId::derive("RegionRegistered", &[region.as_str(), &at.to_id_part()])
    }
}

impl RegionRemoved {
    pub fn id_for(region: &RegionName, at: TimestampMs) -> EventId {
        EventId::derive("RegionRemoved", &[region.as_str(), &at.to_id_part()])
    }
}
