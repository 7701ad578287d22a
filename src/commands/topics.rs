//! `chaoseater topics create|list`.

use anyhow::Result;
use chaoseater_schemas::bus::admin;
use chaoseater_schemas::topics::Topic;

use crate::broker;
use crate::cli::TopicsCommand;
use crate::config::Config;

pub async fn run(command: TopicsCommand, config: &Config) -> Result<()> {
    let ctx = broker::client_context(config)?;
    match command {
        TopicsCommand::Create => {
            if config.brokers.is_none() {
                // The mock cluster has no CreateTopics API; it made every topic when it started.
                println!("the embedded broker created every topic when it started:");
                for role in Topic::ALL {
                    println!("  {}", ctx.topics.name(role));
                }
                return Ok(());
            }
            for (name, outcome) in admin::ensure_topics(&ctx, &Topic::ALL).await? {
                let what = match outcome {
                    admin::TopicOutcome::Created => "created",
                    admin::TopicOutcome::AlreadyExisted => "exists",
                };
                println!("{what:8} {name}");
            }
        }
        TopicsCommand::List => {
            for (name, partitions) in admin::list_topics(&ctx).await? {
                println!("{name}\t{partitions} partition(s)");
            }
        }
    }
    Ok(())
}
