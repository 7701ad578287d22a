//! Newtype ids and timestamps carried by events.
//!
//! Ids are strings on the wire (Avro `string`) but distinct types in Rust, so a region name can never be
//! passed where a run id is expected.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Namespace of every derived event id (UUID v5), fixed forever: changing it would change every id.
const EVENT_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6368_616f_7365_6174_6572_2d65_7665_6e74);

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Wraps a string without checks; use where the value comes from a decoded event.
            pub fn new(value: impl Into<String>) -> Self {
                Self(value.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                Self(value.to_owned())
            }
        }
    };
}

string_id!(
    /// Id of one event. Derived from what the event records, so a replay yields the same id.
    EventId
);
string_id!(
    /// Id of one run (one experiment across its regions).
    RunId
);
string_id!(
    /// Name of a region, unique in the registry.
    RegionName
);
string_id!(
    /// Idempotency key of one region dispatch.
    DispatchId
);
string_id!(
    /// Id of one schedule (a cron expression and the experiments it runs), the key of its events.
    ScheduleId
);

impl DispatchId {
    /// One dispatch per run and region: the idempotency key the agent runs at most once, and the id of
    /// the experiment on the agent (rollback steps address it).
    pub fn for_region(run_id: &RunId, region: &RegionName) -> Self {
        DispatchId::new(format!("{run_id}.{region}"))
    }
}

impl EventId {
    /// Derives the id of an event of `kind` from the parts that identify the fact it records.
    ///
    /// The parts are joined with a separator that cannot occur in them (NUL), so `("ab", "c")` and
    /// `("a", "bc")` give different ids.
    pub fn derive(kind: &str, parts: &[&str]) -> Self {
        let mut name = Vec::with_capacity(64);
        name.extend_from_slice(kind.as_bytes());
        for part in parts {
            name.push(0);
            name.extend_from_slice(part.as_bytes());
        }
        Self(Uuid::new_v5(&EVENT_ID_NAMESPACE, &name).to_string())
    }
}

impl RunId {
    /// A fresh, random run id (UUID v4).
    pub fn random() -> Self {
        Self(Uuid::new_v4().to_string())
    }

    /// The run of one tick of a schedule: derived from the schedule and the tick's time alone, so a
    /// restart, a replay or a second scheduler firing the same tick yields the same run, which the
    /// orchestrator runs once.
    pub fn for_tick(schedule: &ScheduleId, tick: TimestampMs) -> Self {
        Self(EventId::derive("ScheduledRun", &[schedule.as_str(), &tick.to_id_part()]).0)
    }

    /// The run of a schedule's `index`th experiment at `tick`: the first is [`RunId::for_tick`], so a
    /// schedule of one experiment has one run per tick under that id.
    pub fn for_tick_entry(schedule: &ScheduleId, tick: TimestampMs, index: usize) -> Self {
        match index {
            0 => Self::for_tick(schedule, tick),
            _ => Self(EventId::derive("ScheduledRun", &[schedule.as_str(), &tick.to_id_part(), &index.to_string()]).0),
        }
    }
}

/// Milliseconds since the Unix epoch, UTC (Avro `timestamp-millis`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimestampMs(pub i64);

impl TimestampMs {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let millis = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Self(i64::try_from(millis).unwrap_or(i64::MAX))
    }

    /// The value as a string, for use in derived ids.
    pub fn to_id_part(self) -> String {
        self.0.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_separate_parts() {
        let a = EventId::derive("RegionResult", &["run-1", "eu"]);
        assert_eq!(a, EventId::derive("RegionResult", &["run-1", "eu"]));
        assert_ne!(a, EventId::derive("RegionResult", &["run-1e", "u"]));
        assert_ne!(a, EventId::derive("RunCompleted", &["run-1", "eu"]));
        // Pinned: the namespace must never change, or replays would produce new ids.
        assert_eq!(
            EventId::derive("RunRequested", &["r"]).as_str(),
            Uuid::new_v5(&EVENT_ID_NAMESPACE, b"RunRequested\0r").to_string()
        );
    }
}
