//! The dead-letter topic: what goes there, who writes it, and how a copy always fits the broker.
//!
//! A message that cannot be decoded, or whose event type does not belong on the topic it came from
//! (the catalogue gives every type one topic), is copied to the DLQ by one designated consumer of that
//! topic ([`DeadLetterDuty`]), so four processors reading the same topic leave one copy, not four. An
//! event a processor refuses for its own reasons is dead-lettered by that processor.
//!
//! A copy keeps the original's key, bytes and headers and adds headers naming the error and the origin.
//! When that would not fit the producer's `message.max.bytes`, the payload is replaced by nothing and
//! headers give its length and CRC-64-AVRO digest; if it still would not fit, the original's headers
//! and key go too. The error text is cut to [`MAX_ERROR_LEN`]. So a dead letter can always be
//! published, and one message can never stop a processor.

use std::collections::BTreeSet;

use super::BusContext;
use super::consumer::Received;
use super::producer::RawMessage;
use crate::events::Event;
use crate::limits::truncate;
use crate::topics::{Topic, TopicNames, headers};

/// The longest error text a dead letter carries.
pub const MAX_ERROR_LEN: usize = 2_048;

/// Longest key a dead letter keeps (the DLQ has one partition: the key routes nothing).
const MAX_KEY_LEN: usize = 1_024;

/// Room left under `message.max.bytes` for the record's framing (librdkafka counts the whole batch).
const FRAMING_BYTES: usize = 4_096;

/// Which topics' undecodable or misplaced messages a consumer copies to the DLQ.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DeadLetterDuty {
    /// Every topic it reads: a consumer on its own.
    #[default]
    All,
    /// Only these: other consumers in the same service cover the rest.
    Only(BTreeSet<Topic>),
}

impl DeadLetterDuty {
    /// Whether this consumer writes the DLQ copy for messages of `topic`.
    pub fn covers(&self, topic: Option<Topic>) -> bool {
        match (self, topic) {
            (DeadLetterDuty::All, _) => true,
            (DeadLetterDuty::Only(topics), Some(topic)) => topics.contains(&topic),
            (DeadLetterDuty::Only(_), None) => false,
        }
    }

    /// Shares the duty among consumers that run together: each topic goes to the first consumer in
    /// `consumers` (name, topics read) that reads it. Returned in the same order.
    pub fn share(consumers: &[(&str, Vec<Topic>)]) -> Vec<DeadLetterDuty> {
        let mut taken = BTreeSet::new();
        consumers
            .iter()
            .map(|(_, topics)| {
                let mine: BTreeSet<Topic> = topics.iter().copied().filter(|t| taken.insert(*t)).collect();
                DeadLetterDuty::Only(mine)
            })
            .collect()
    }
}

/// Why `event`, read from the topic named `topic` (whose role under `topics` is `role`, resolved once
/// by the caller), must not be applied: the catalogue puts its type on another topic (a
/// RegionRegistered on the commands topic is a forgery or a mistake, never a registration). `None`
/// when it belongs there.
pub fn misplaced(topics: &TopicNames, topic: &str, role: Option<Topic>, event: &Event) -> Option<String> {
    let expected = event.topic();
    if role == Some(expected) {
        return None;
    }
    Some(format!(
        "event type {} does not belong on topic {topic} (it is published to {}); not applied",
        event.kind().name(),
        topics.name(expected)
    ))
}

/// The DLQ copy of a message: same key, bytes and headers, plus headers naming the error and the origin,
/// cut down until it fits the producer's message limit (see the module doc).
pub fn dead_letter(ctx: &BusContext, message: &Received, error: &str, consumer: &str) -> RawMessage {
    let ours = vec![
        (headers::DLQ_ERROR.to_owned(), truncate(error, MAX_ERROR_LEN).into_owned().into_bytes()),
        (headers::DLQ_TOPIC.to_owned(), message.topic.as_bytes().to_vec()),
        (headers::DLQ_PARTITION.to_owned(), message.partition.to_string().into_bytes()),
        (headers::DLQ_OFFSET.to_owned(), message.offset.to_string().into_bytes()),
        (headers::DLQ_CONSUMER.to_owned(), consumer.as_bytes().to_vec()),
    ];
    let payload = message.payload.as_deref().unwrap_or_default();
    let budget = ctx.message_max_bytes().saturating_sub(FRAMING_BYTES);
    let size = |key: Option<&[u8]>, payload: &[u8], hdrs: &[(String, Vec<u8>)]| {
        key.map_or(0, <[u8]>::len) + payload.len() + hdrs.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
    };
    let mut hdrs: Vec<(String, Vec<u8>)> = message.headers.to_pairs().into_iter().chain(ours.iter().cloned()).collect();
    let key = message.key.as_deref();
    if size(key, payload, &hdrs) <= budget {
        return RawMessage {
            topic: ctx.topics.name(Topic::Dlq),
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
            headers: hdrs,
        };
    }
    let dropped = |what: &str| {
        [
            (headers::DLQ_DROPPED.to_owned(), what.as_bytes().to_vec()),
            (headers::DLQ_PAYLOAD_BYTES.to_owned(), payload.len().to_string().into_bytes()),
            (
                headers::DLQ_PAYLOAD_DIGEST.to_owned(),
                format!("crc64-avro:{:016x}", crate::rabin::fingerprint(payload)).into_bytes(),
            ),
        ]
    };
    hdrs.extend(dropped("payload"));
    if size(key, &[], &hdrs) <= budget {
        return RawMessage {
            topic: ctx.topics.name(Topic::Dlq),
            key: key.map(<[u8]>::to_vec),
            payload: Vec::new(),
            headers: hdrs,
        };
    }
    // The original's headers or key are themselves too large: ours alone are bounded, so they fit.
    let key = key.filter(|k| k.len() <= MAX_KEY_LEN).map(<[u8]>::to_vec);
    let mut hdrs = ours;
    hdrs.extend(dropped(if key.is_some() { "payload,headers" } else { "payload,headers,key" }));
    RawMessage { topic: ctx.topics.name(Topic::Dlq), key, payload: Vec::new(), headers: hdrs }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn ctx() -> BusContext {
        BusContext::new("127.0.0.1:1", Codec::new().expect("schemas"))
    }

    fn received(key: usize, payload: usize, header: usize) -> Received {
        Received::new(
            "chaoseater.commands",
            2,
            41,
            Some(&vec![b'k'; key]),
            Some(&vec![7; payload]),
            &[("big".into(), vec![b'h'; header])],
        )
    }

    fn header<'a>(m: &'a RawMessage, name: &str) -> Option<&'a str> {
        m.headers.iter().find(|(k, _)| k == name).and_then(|(_, v)| std::str::from_utf8(v).ok())
    }

    fn total(m: &RawMessage) -> usize {
        m.key.as_ref().map_or(0, Vec::len)
            + m.payload.len()
            + m.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
    }

    #[test]
    fn a_small_message_is_copied_whole() {
        let m = dead_letter(&ctx(), &received(8, 100, 10), "cannot decode", "ledger");
        assert_eq!(m.payload, vec![7; 100]);
        assert_eq!(m.key.as_deref(), Some(&[b'k'; 8][..]));
        assert_eq!(header(&m, "big").map(str::len), Some(10));
        assert_eq!(header(&m, headers::DLQ_OFFSET), Some("41"));
        assert_eq!(header(&m, headers::DLQ_DROPPED), None);
    }

    #[test]
    fn a_message_near_the_limit_keeps_its_headers_and_loses_its_payload() {
        let limit = ctx().message_max_bytes();
        let m = dead_letter(&ctx(), &received(36, limit - 200, 10), &"e".repeat(1_000_000), "orchestrator");
        assert!(m.payload.is_empty());
        assert_eq!(header(&m, "big").map(str::len), Some(10));
        assert_eq!(header(&m, headers::DLQ_DROPPED), Some("payload"));
        assert_eq!(header(&m, headers::DLQ_PAYLOAD_BYTES), Some((limit - 200).to_string().as_str()));
        assert!(header(&m, headers::DLQ_PAYLOAD_DIGEST).is_some_and(|d| d.starts_with("crc64-avro:")));
        assert!(header(&m, headers::DLQ_ERROR).is_some_and(|e| e.len() <= MAX_ERROR_LEN));
        assert!(total(&m) < limit);
    }

    #[test]
    fn huge_headers_and_key_go_too() {
        let limit = ctx().message_max_bytes();
        let m = dead_letter(&ctx(), &received(limit, 10, limit), "bad", "ledger");
        assert_eq!(header(&m, "big"), None);
        assert_eq!(m.key, None);
        assert_eq!(header(&m, headers::DLQ_DROPPED), Some("payload,headers,key"));
        assert_eq!(header(&m, headers::DLQ_TOPIC), Some("chaoseater.commands"));
        assert!(total(&m) < 10_000);
    }

    #[test]
    fn the_duty_goes_to_the_first_reader_of_each_topic() {
        let duties = DeadLetterDuty::share(&[
            ("ledger", vec![Topic::Commands, Topic::Results]),
            ("orchestrator", vec![Topic::Commands, Topic::Regions]),
            ("circuit", vec![Topic::Health]),
        ]);
        assert!(duties[0].covers(Some(Topic::Commands)) && duties[0].covers(Some(Topic::Results)));
        assert!(!duties[1].covers(Some(Topic::Commands)) && duties[1].covers(Some(Topic::Regions)));
        assert!(duties[2].covers(Some(Topic::Health)));
        assert!(DeadLetterDuty::All.covers(None));
    }
}
