//! Where the brokers are and how to reach them.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;

use crate::codec::Codec;
use crate::topics::TopicNames;

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
