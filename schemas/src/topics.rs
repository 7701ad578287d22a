//! Topic names, in one place. ARCHITECTURE.md's topic table is the map; keep both true.
//!
//! Every name is `{prefix}.{role}`, the prefix `chaoseater` by default. A different prefix runs a separate
//! ChaosEater (a staging copy, a test) on the same Kafka cluster without the two seeing each other.

use std::fmt;

/// The default topic prefix.
pub const DEFAULT_PREFIX: &str = "chaoseater";

/// The role of a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// Commands from the CLI, the HTTP gateway and other systems (key: run id).
    Commands,
    /// The region registry, compacted (key: region name).
    Regions,
    /// Work for the dispatcher: region dispatches and rollback steps (key: run id).
    Dispatch,
    /// Run and region results, for everything downstream and external subscribers (key: run id).
    Results,
    /// Health samples of region agents (key: region name).
    Health,
    /// Rollback steps, pauses, completions and circuit transitions (key: run id or region).
    Rollback,
    /// Schedules' definitions, compacted (key: schedule id).
    Schedules,
    /// Messages a consumer could not decode or validate, with headers naming the error and origin.
    Dlq,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 8] = [
        Topic::Commands,
        Topic::Regions,
        Topic::Dispatch,
        Topic::Results,
        Topic::Health,
        Topic::Rollback,
        Topic::Schedules,
        Topic::Dlq,
    ];

    /// The part after the prefix.
    pub fn suffix(self) -> &'static str {
        match self {
            Topic::Commands => "commands",
            Topic::Regions => "regions",
            Topic::Dispatch => "dispatch",
            Topic::Results => "results",
            Topic::Health => "health",
            Topic::Rollback => "rollback",
            Topic::Schedules => "schedules",
            Topic::Dlq => "dlq",
        }
    }

    /// Partitions when created: enough for per-key parallelism, few enough for the mock broker.
    pub fn partitions(self) -> i32 {
        match self {
            Topic::Regions | Topic::Schedules | Topic::Dlq => 1,
            _ => 3,
        }
    }

    /// Log compaction instead of deletion: the registry keeps the latest event per region, the
    /// schedules topic the latest definition per schedule.
    pub fn compacted(self) -> bool {
        matches!(self, Topic::Regions | Topic::Schedules)
    }

    /// Parses a suffix (`results`) or a full name with any prefix (`chaoseater.results`).
    pub fn parse(name: &str) -> Option<Self> {
        let suffix = name.rsplit('.').next().unwrap_or(name);
        Self::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

/// Resolves topic roles to names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicNames {
    prefix: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        Self { prefix: DEFAULT_PREFIX.to_owned() }
    }
}

impl TopicNames {
    /// Names under `prefix` (no trailing dot).
    pub fn with_prefix(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full name of a topic.
    pub fn name(&self, topic: Topic) -> String {
        format!("{}.{}", self.prefix, topic.suffix())
    }

    /// The role of a full topic name under this prefix.
    pub fn role_of(&self, name: &str) -> Option<Topic> {
        let suffix = name.strip_prefix(&self.prefix)?.strip_prefix('.')?;
        Topic::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.suffix())
    }
}

/// Header names on every message ChaosEater writes.
pub mod headers {
    /// The event type, e.g. `RunRequested`: lets a subscriber filter without decoding.
    pub const EVENT_TYPE: &str = "chaoseater.type";
    /// The event id.
    pub const EVENT_ID: &str = "chaoseater.id";
    /// DLQ: what was wrong with the message.
    pub const DLQ_ERROR: &str = "chaoseater.dlq.error";
    /// DLQ: the topic the message came from.
    pub const DLQ_TOPIC: &str = "chaoseater.dlq.topic";
    /// DLQ: its partition.
    pub const DLQ_PARTITION: &str = "chaoseater.dlq.partition";
    /// DLQ: its offset.
    pub const DLQ_OFFSET: &str = "chaoseater.dlq.offset";
    /// DLQ: the component that rejected it.
    pub const DLQ_CONSUMER: &str = "chaoseater.dlq.consumer";
    /// DLQ: what was left out to fit the message limit (`payload`, `payload,headers`, `payload,headers,key`).
    pub const DLQ_DROPPED: &str = "chaoseater.dlq.dropped";
    /// DLQ: the original payload's length in bytes, when it was left out.
    pub const DLQ_PAYLOAD_BYTES: &str = "chaoseater.dlq.payload_bytes";
    /// DLQ: the original payload's CRC-64-AVRO digest (`crc64-avro:` and 16 hex digits), when left out.
    pub const DLQ_PAYLOAD_DIGEST: &str = "chaoseater.dlq.payload_digest";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roles() {
        let names = TopicNames::default();
        assert_eq!(names.name(Topic::Results), "chaoseater.results");
        let test = TopicNames::with_prefix("t1.chaoseater");
        assert_eq!(test.role_of("t1.chaoseater.dlq"), Some(Topic::Dlq));
        assert_eq!(test.role_of("chaoseater.dlq"), None);
        assert_eq!(Topic::parse("results"), Some(Topic::Results));
    }
}
