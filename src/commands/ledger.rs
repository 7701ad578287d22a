//! `chaoseater ledger RUN_ID`: a run's timeline as the ledger processor recorded it.

use anyhow::{Context, Result, bail};
use chaoseater_processors::ledger::RunLedger;
use chaoseater_schemas::bus::StateStore;
use chaoseater_schemas::ids::RunId;

use crate::cli::LedgerArgs;
use crate::config::Config;

pub fn run(args: LedgerArgs, config: &Config) -> Result<()> {
    let dir = super::processor_state_dir(config, config.brokers.is_none(), RunLedger::NAME);
    if !dir.exists() {
        bail!("no ledger state in {}; run `chaoseater serve` first", dir.display());
    }
    let store = StateStore::open(&dir)
        .with_context(|| format!("cannot open {} (is `chaoseater serve` still running?)", dir.display()))?;
    if args.counts {
        let stats = store.stats()?;
        println!(
            "applied {}\tduplicates_dropped {}\tdead_lettered {}\tpublished {}",
            stats.applied, stats.duplicates_dropped, stats.dead_lettered, stats.published
        );
        for (topic, partition, count) in RunLedger::applied_counts(&store)? {
            println!("{topic}\t{partition}\t{count}");
        }
        return Ok(());
    }
    let Some(run_id) = args.run_id else { bail!("give a RUN_ID, or --counts") };
    let timeline = RunLedger::timeline(&store, &RunId::new(run_id.clone()))?;
    if timeline.is_empty() {
        bail!("no events recorded for run {run_id}");
    }
    for entry in timeline {
        println!(
            "{}\t{}\t{}@{}:{}\t{}",
            entry.occurred_at, entry.event_type, entry.topic, entry.partition, entry.offset, entry.event_id
        );
    }
    Ok(())
}
