use std::collections::BTreeMap;

use chaoseater_schemas::bus::state::Commit;
use chaoseater_schemas::bus::{Origin, Processor, StateStore, StateView};
use chaoseater_schemas::events::EventKind;
use chaoseater_schemas::ids::{RunId, TimestampMs};
use chaoseater_schemas::samples;

use super::*;

#[test]
fn files_run_events_in_order_and_counts_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let store = StateStore::open(dir.path()).unwrap();
    let mut ledger = RunLedger;
    let mut pending = BTreeMap::new();
    let kinds =
        [EventKind::RunRequested, EventKind::RunStarted, EventKind::RunCompleted, EventKind::CircuitStateChanged];
    for (offset, kind) in kinds.into_iter().enumerate() {
        let origin = Origin { topic: "t".into(), partition: 1, offset: offset as i64, now: TimestampMs(0) };
        let mut view = StateView::new(&store, &mut pending);
        ledger.apply(&samples::sample(kind), &origin, &mut view).unwrap();
    }
    store.commit(Commit { state: pending, ..Commit::default() }).unwrap();

    let run = RunId::new("7d3c1a52-0d4e-4b9a-9a55-0c1f3e2b8a01");
    let timeline = RunLedger::timeline(&store, &run).unwrap();
    let types: Vec<_> = timeline.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["RunRequested", "RunStarted", "RunCompleted"]);
    assert_eq!(RunLedger::applied_counts(&store).unwrap(), vec![("t".to_owned(), 1, 4)]);
}
