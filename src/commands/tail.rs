//! `chaoseater tail [TOPIC...]`: a real-time subscriber printing decoded events as JSON lines.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaoseater_schemas::bus::{EventConsumer, Received, StartFrom};
use chaoseater_schemas::codec::Codec;
use chaoseater_schemas::topics::Topic;
use serde_json::{Map, Value, json};

use crate::broker;
use crate::cli::TailArgs;
use crate::config::Config;

pub async fn run(args: TailArgs, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    let names: Vec<String> = if args.topics.is_empty() {
        Topic::ALL.iter().map(|&t| ctx.topics.name(t)).collect()
    } else {
        let mut names = Vec::new();
        for topic in &args.topics {
            match Topic::parse(topic) {
                Some(role) if !topic.contains('.') => names.push(ctx.topics.name(role)),
                Some(_) => names.push(topic.clone()),
                None => {
                    bail!("unknown topic {topic:?}; one of commands, regions, dispatch, results, health, rollback, dlq")
                }
            }
        }
        names
    };
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let start = if args.from_beginning { StartFrom::Beginning } else { StartFrom::End };
    let consumer = EventConsumer::assign(&ctx, "chaoseater-tail", &refs, &Default::default(), start).await?;
    let idle = args.idle_timeout.map(Duration::from_secs_f64);
    let mut printed = 0u64;
    let mut last = Instant::now();
    let stdout = std::io::stdout();
    let mut shutdown = std::pin::pin!(super::shutdown_signal());
    loop {
        let batch = tokio::select! {
            () = &mut shutdown => return Ok(()),
            batch = consumer.next_batch(500, Duration::from_millis(200)) => batch?,
        };
        if batch.is_empty() {
            if idle.is_some_and(|idle| last.elapsed() >= idle) {
                return Ok(());
            }
            continue;
        }
        last = Instant::now();
        let mut out = stdout.lock();
        for message in batch {
            writeln!(out, "{}", render(&ctx.codec, &message))?;
            printed += 1;
            if args.max_messages.is_some_and(|max| printed >= max) {
                out.flush()?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

/// One message as a JSON line: where it came from and the decoded event, or why it did not decode (with
/// its headers, which on the DLQ name the error and origin).
pub fn render(codec: &Codec, message: &Received) -> Value {
    let mut line = Map::new();
    line.insert("topic".into(), json!(&*message.topic));
    line.insert("partition".into(), json!(message.partition));
    line.insert("offset".into(), json!(message.offset));
    line.insert("key".into(), json!(message.key.as_deref().map(String::from_utf8_lossy)));
    match codec.decode(message.payload.as_deref().unwrap_or_default()) {
        Ok(event) => {
            line.insert("event".into(), serde_json::to_value(&event).unwrap_or(Value::Null));
        }
        Err(err) => {
            line.insert("error".into(), json!(err.to_string()));
            line.insert("payload_len".into(), json!(message.payload.as_ref().map_or(0, |p| p.len())));
        }
    }
    if !message.headers.is_empty() {
        let headers: Map<String, Value> =
            message.headers.iter().map(|(k, v)| (k.to_owned(), json!(String::from_utf8_lossy(v)))).collect();
        line.insert("headers".into(), Value::Object(headers));
    }
    Value::Object(line)
}
