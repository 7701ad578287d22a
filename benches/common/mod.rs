//! What the bus benchmarks share: a context on their own topics, made on the embedded broker or a real one.

use chaoseater_schemas::bus::{BusContext, EmbeddedBroker, admin};
use chaoseater_schemas::codec::Codec;
use chaoseater_schemas::topics::{Topic, TopicNames};

/// A context whose topics (every one of ChaosEater's) carry `prefix`, created on `embedded` or, without
/// it, through the admin API of `brokers`.
pub async fn context(prefix: &str, brokers: &str, embedded: Option<&EmbeddedBroker>) -> BusContext {
    let mut ctx = BusContext::new(brokers, Codec::new().expect("codec"));
    ctx.topics = TopicNames::with_prefix(prefix);
    match embedded {
        Some(broker) => {
            for topic in Topic::ALL {
                broker.create_topic(&ctx.topics.name(topic), topic.partitions()).expect("topic");
            }
        }
        None => {
            admin::ensure_topics(&ctx, &Topic::ALL).await.expect("topics");
        }
    }
    ctx
}
