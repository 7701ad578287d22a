//! Where the brokers are and how to reach them.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::codec::Codec;
use crate::topics::TopicNames;

/// librdkafka's default `message.max.bytes`.
pub const DEFAULT_MESSAGE_MAX_BYTES: usize = 1_000_000;

/// Everything a producer or consumer needs to reach the brokers. Built once from configuration and
/// passed down; cheap to clone.
#[derive(Debug, Clone)]
pub struct BusContext {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// librdkafka properties passed through unchanged (TLS, SASL, timeouts).
    pub properties: BTreeMap<String, String>,
    /// The event codec.
    pub codec: Codec,
    /// Topic names (the prefix).
    pub topics: TopicNames,
}

impl BusContext {
    /// A context for `brokers` with no extra properties and the default codec.
    pub fn new(brokers: impl Into<String>, codec: Codec) -> Self {
        Self { brokers: brokers.into(), properties: BTreeMap::new(), codec, topics: TopicNames::default() }
    }

    /// The largest message our producers publish: librdkafka's `message.max.bytes`, as configured in
    /// the pass-through properties or its default. Dead letters are cut to fit it.
    pub fn message_max_bytes(&self) -> usize {
        self.properties.get("message.max.bytes").and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_MESSAGE_MAX_BYTES)
    }

    /// A librdkafka configuration with the bootstrap servers and the pass-through properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        // The mock cluster and test brokers are single-node; keep metadata fresh so new topics appear fast.
        config.set("topic.metadata.refresh.interval.ms", "10000");
        for (key, value) in &self.properties {
            config.set(key, value);
        }
        config
    }
}
