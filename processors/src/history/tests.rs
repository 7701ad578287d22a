use chaoseater_schemas::events::{Event, EventKind};
use chaoseater_schemas::samples;

use super::tables::{self, EXPERIMENTS, PARAMETERS, TAGS};
use super::*;

const DAY: i64 = 86_400_000;
const NOV_27_2026: i64 = 1_795_737_600_000;

#[test]
fn days_are_utc_calendar_days() {
    assert_eq!(day(0), "1970-01-01");
    assert_eq!(day(NOV_27_2026), "2026-11-27");
    assert_eq!(day(NOV_27_2026 - 1), "2026-11-26");
    assert_eq!(day(951_782_400_000), "2000-02-29");
    assert_eq!(day(-1), "1969-12-31");
}

/// Every kept event's rows fill their table's columns with cells of the columns' types (a cell of another
/// type trips a debug assertion), and a result makes one experiments row, a row per parameter and per tag.
#[test]
fn every_kept_event_makes_rows_of_its_schema() {
    for event in samples::all() {
        let mut rows = tables::Rows::default();
        let n = rows.push(&event);
        let batches = rows.finish().expect("batches of the tables' schemas");
        assert_eq!(batches.iter().map(|(_, _, b)| b.num_rows()).sum::<usize>(), n, "{:?}", event.kind());
        for (table, _, batch) in &batches {
            assert_eq!(batch.schema(), tables::schema(table), "{:?}", event.kind());
        }
    }
    let Event::RegionResult(r) = samples::sample(EventKind::RegionResult) else { unreachable!() };
    let batches = tables::Rows::of_results([&r]).finish().expect("batches");
    let count = |t: &str| batches.iter().filter(|(table, ..)| *table == t).map(|(.., b)| b.num_rows()).sum::<usize>();
    assert_eq!((count(EXPERIMENTS), count(PARAMETERS), count(TAGS)), (1, r.parameters.len(), r.tags.len()));
}

/// The history keeps rollback strategies and triggers as the events' Avro symbols.
#[test]
fn rollback_rows_carry_the_avro_symbols() {
    use arrow::array::{Array, StringArray};
    let event = samples::sample(EventKind::RollbackStarted);
    let Event::RollbackStarted(started) = &event else { unreachable!() };
    let mut rows = tables::Rows::default();
    rows.push(&event);
    let (_, _, batch) = rows.finish().expect("batch").remove(0);
    for (column, symbol) in [
        ("strategy", serde_json::to_value(started.strategy).expect("json")),
        ("trigger", serde_json::to_value(started.trigger).expect("json")),
    ] {
        let array =
            arrow::compute::cast(batch.column_by_name(column).expect("column"), &arrow::datatypes::DataType::Utf8)
                .expect("cast");
        let array = array.as_any().downcast_ref::<StringArray>().expect("strings");
        assert_eq!(Some(array.value(0)), symbol.as_str(), "{column}");
    }
}

/// Rows of `n` synthetic results on the day before `day_ms` (the seed follows the day: distinct ids).
fn rows_for(n: usize, day_ms: i64) -> tables::Rows {
    let results: Vec<_> = synthetic::results(n, 1, day_ms as u64, day_ms).collect();
    tables::Rows::of_results(&results)
}

fn experiment_rows(dir: &HistoryDir) -> usize {
    let mut n = 0;
    for entry in walk(&dir.table_dir(EXPERIMENTS)) {
        n += files::read_parquet(&entry).expect("read").iter().map(|b| b.num_rows()).sum::<usize>();
    }
    n
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for day in std::fs::read_dir(dir).expect("dir") {
        let day = day.expect("entry").path();
        if day.is_dir() {
            for f in std::fs::read_dir(&day).expect("day") {
                out.push(f.expect("file").path());
            }
        }
    }
    out
}

#[test]
fn segments_resume_where_the_last_committed_one_ended_and_a_crashed_flush_leaves_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    dir.write_segment("t.results", 0, 0, 10, rows_for(10, NOV_27_2026)).expect("segment");
    dir.write_segment("t.results", 0, 10, 25, rows_for(15, NOV_27_2026 + DAY)).expect("segment");
    dir.write_segment("t.health", 1, 0, 3, tables::Rows::default())
        .expect("an empty segment still records its offsets");
    // A flush that crashed: its data file was renamed into place, its manifest never written.
    let crashed = rows_for(5, NOV_27_2026 + DAY).finish().expect("batches");
    let (_, _, batch) = crashed.into_iter().find(|(table, ..)| *table == EXPERIMENTS).expect("experiments");
    let orphan = dir
        .table_dir(EXPERIMENTS)
        .join("date=2026-11-28")
        .join("t.results~0~00000000000000000025~00000000000000000030.parquet");
    std::fs::create_dir_all(orphan.parent().expect("day")).expect("day dir");
    let file = std::fs::File::create(&orphan).expect("orphan");
    let mut writer = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).expect("writer");
    writer.write(&batch).expect("write");
    writer.close().expect("close");
    std::fs::write(orphan.with_file_name("x.parquet.tmp"), b"half").expect("tmp");

    drop(dir); // releases the writer's lock, as a process exiting would
    let (dir, recovery) = HistoryDir::open(tmp.path()).expect("reopen");
    assert_eq!(recovery.orphan_files, 1, "{recovery:?} {:?}", dir.segments());
    assert!(!orphan.exists());
    let positions = dir.positions().expect("positions");
    assert_eq!(positions.get(&("t.results".to_owned(), 0)), Some(&25));
    assert_eq!(positions.get(&("t.health".to_owned(), 1)), Some(&3));
    assert_eq!(experiment_rows(&dir), 25, "{:?}", walk(&dir.table_dir(EXPERIMENTS)));
    assert_eq!(dir.experiment_ids().expect("ids").len(), 25);
}

#[test]
fn compaction_merges_small_segments_and_a_crash_midway_is_undone_at_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let all: Vec<_> = synthetic::results(40, 1, NOV_27_2026 as u64, NOV_27_2026).collect();
    for (i, chunk) in all.chunks(10).enumerate() {
        let rows = tables::Rows::of_results(chunk);
        dir.write_segment("t.results", 0, i as i64 * 10, (i as i64 + 1) * 10, rows).expect("segment");
    }
    let before: Vec<Segment> = dir.segments().expect("segments");
    assert_eq!(dir.compact(1_000_000).expect("compact"), 4);
    let after = dir.segments().expect("segments");
    assert_eq!(after.len(), 1);
    assert_eq!((after[0].start, after[0].end), (0, 40));
    assert_eq!(experiment_rows(&dir), 40);
    assert_eq!(walk(&dir.table_dir(EXPERIMENTS)).len(), 1, "one file per table and day");
    // Merged experiments stay sorted by name (so that a query for one name skips other names' pages).
    let merged = files::read_parquet(&walk(&dir.table_dir(EXPERIMENTS))[0]).expect("read");
    let names = crate::analytics::render::strings(&merged, 2);
    assert!(names.len() == 40 && names.windows(2).all(|w| w[0] <= w[1]), "{names:?}");
    assert!(names.first() != names.last(), "several experiment names: {names:?}");

    // As if the compaction crashed after committing the merged segment, before removing the old ones.
    let old = &before[1];
    std::fs::write(
        tmp.path().join("_segments").join(format!("{}.json", old.name())),
        serde_json::to_vec(old).expect("json"),
    )
    .expect("manifest");
    drop(dir); // releases the writer's lock, as a process exiting would
    let (dir, recovery) = HistoryDir::open(tmp.path()).expect("reopen");
    assert_eq!(recovery.superseded_segments, 1);
    assert_eq!(dir.segments().expect("segments").len(), 1);
    assert_eq!(experiment_rows(&dir), 40);
}

#[test]
fn pruning_removes_old_days_and_the_rows_of_their_results_elsewhere() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let old: Vec<_> = synthetic::results(6, 1, 1, NOV_27_2026 - 10 * DAY).collect();
    let new: Vec<_> = synthetic::results(6, 1, 2, NOV_27_2026).collect();
    let mut rows = tables::Rows::of_results(old.iter().chain(&new));
    // A tag of an old run filed under a recent day (as a late rollback would be): it must go too.
    let mut late = 0;
    tables::each_result_row(&old[0], &mut |table, _, cells| {
        if table == TAGS && late == 0 {
            rows.append(TAGS, NOV_27_2026, cells);
            late += 1;
        }
    });
    assert_eq!(late, 1, "a tag row");
    dir.write_segment("t.results", 0, 0, 12, rows).expect("segment");
    let pruned = dir.prune(&day(NOV_27_2026 - 5 * DAY)).expect("prune");
    assert_eq!(pruned.partitions, 3, "experiments, parameters and tags of the old day");
    assert_eq!(pruned.runs, 2);
    assert_eq!(pruned.rewritten_files, 1);
    assert_eq!(experiment_rows(&dir), 6);
    assert_eq!(dir.positions().expect("positions").get(&("t.results".to_owned(), 0)), Some(&12), "offsets survive");
}

#[test]
fn status_names_in_the_history_are_the_avro_symbols() {
    use chaoseater_schemas::events::{HealthStatus, RegionStatus};
    let wire = |v: serde_json::Value| v.as_str().map(str::to_owned).expect("a symbol");
    for s in [RegionStatus::Completed, RegionStatus::Failed, RegionStatus::Aborted] {
        assert_eq!(s.as_str(), wire(serde_json::to_value(s).expect("json")));
    }
    for s in [HealthStatus::Healthy, HealthStatus::Degraded, HealthStatus::Failed] {
        assert_eq!(s.as_str(), wire(serde_json::to_value(s).expect("json")));
    }
}

/// The dedupe keys of result ids: the same string is seen once; ids that differ as strings (case, hyphens,
/// non-UUID ids) stay apart.
#[test]
fn seen_ids_tell_apart_ids_that_differ_as_strings() {
    let mut seen = SeenIds::default();
    let id = "a70e5cc5-bc55-540a-942e-946519ac31f0";
    assert!(seen.insert(id));
    assert!(!seen.insert(id));
    assert!(seen.insert(&id.to_uppercase()));
    assert!(seen.insert(&id.replace('-', "")));
    assert!(seen.insert("run-7/eu-west"));
    assert!(!seen.insert("run-7/eu-west"));
    assert_eq!(seen.len(), 4);
}
