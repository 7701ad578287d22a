//! A processor's state store: committing batches of applied event ids from three partitions (what every
//! processor does per batch, with its offsets and state), looking them up (every event consumed), and
//! forgetting the ids older than the dedupe window.
//!
//! cargo bench --bench state

use std::time::{Duration, Instant};

use chaoseater_schemas::bus::StateStore;
use chaoseater_schemas::bus::state::{Applied, Commit};

const IDS: usize = 200_000;
const BATCH: usize = 1_000;
const DAYS: i64 = 10;
const DAY_MS: i64 = 86_400_000;

fn id(i: usize) -> String {
    // The shape of a derived event id (a UUID's 36 characters).
    format!(
        "{:08x}-{:04x}-5{:03x}-8{:03x}-{:012x}",
        i * 2_654_435_761 % 0xffff_ffff,
        i % 0xffff,
        i % 0xfff,
        i % 0xfff,
        i
    )
}

fn main() {
    println!("state store: {IDS} applied ids in commits of {BATCH}, event times over {DAYS} days");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path()).expect("store");
    let started = Instant::now();
    for batch in 0..IDS / BATCH {
        let applied = (batch * BATCH..(batch + 1) * BATCH)
            .map(|i| Applied {
                id: id(i),
                at: i as i64 * DAYS * DAY_MS / IDS as i64,
                topic: "bench.results".to_owned(),
                partition: (i % 3) as i32,
            })
            .collect();
        let mut commit = Commit { applied, ..Commit::default() };
        commit.offsets.insert(("bench.results".to_owned(), 0), ((batch + 1) * BATCH) as i64);
        store.commit(commit).expect("commit");
    }
    store.flush().expect("flush");
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  commit: {:>9.0} ids/s ({:.2} ms a commit of {BATCH})",
        IDS as f64 / elapsed,
        elapsed * 1e3 / (IDS / BATCH) as f64
    );
    let started = Instant::now();
    let found = (0..IDS).filter(|i| store.was_applied(&id(*i)).expect("lookup")).count();
    println!("  was_applied: {:>9.0} lookups/s ({found} found)", IDS as f64 / started.elapsed().as_secs_f64());
    let started = Instant::now();
    let forgotten = store.forget_applied(Duration::from_secs(3 * 86_400), DAYS * DAY_MS).expect("forget");
    println!(
        "  forget (3-day window): {forgotten} ids in {:.3} s ({:>9.0} ids/s); {} remembered",
        started.elapsed().as_secs_f64(),
        forgotten as f64 / started.elapsed().as_secs_f64(),
        store.applied_ids()
    );
    let started = Instant::now();
    let again = store.forget_applied(Duration::from_secs(3 * 86_400), DAYS * DAY_MS).expect("forget");
    println!("  forget with nothing to forget: {again} ids in {:.6} s", started.elapsed().as_secs_f64());
}
