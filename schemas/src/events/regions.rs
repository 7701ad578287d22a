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
