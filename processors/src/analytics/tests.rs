//! Golden tests: a fixed synthetic history in, the answers of query / trends / compare / summary out,
//! compared with the files under `tests/golden/analytics/` (`UPDATE_GOLDEN=1` rewrites them on purpose).

use super::render::{self, Format};
use super::*;
use crate::history::{HistoryDir, synthetic, tables};

const NOV_27_2026_END: i64 = 1_795_823_999_999; // 2026-11-27T23:59:59.999Z

async fn fixture() -> (tempfile::TempDir, Analytics) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let results: Vec<_> = synthetic::results(120, 10, 42, NOV_27_2026_END).collect();
    dir.write_segment("t.results", 0, 0, 120, tables::Rows::of_results(&results)).expect("segment");
    let analytics = Analytics::open(tmp.path()).await.expect("analytics");
    (tmp, analytics)
}

fn golden(name: &str, actual: &str) {
    let path = chaoseater_schemas::package_dir!().join("tests/golden/analytics").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().expect("dir")).expect("golden dir");
        std::fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, expected, "{name} differs from {}", path.display());
}

#[tokio::test]
async fn query_trends_compare_and_summary_match_their_golden_answers() {
    let (_tmp, a) = fixture().await;
    let filters = Filters {
        layer: Some("infrastructure".into()),
        min_score: Some(60.0),
        tags: vec![("team".into(), "ml-platform".into())],
        since: Some("2026-11-20".into()),
        limit: Some(8),
        order: Order::ScoreDesc,
        ..Filters::default()
    };
    golden("query.txt", &render::table(&a.query(&filters).await.expect("query")));
    let (totals, daily) = a.trends("latency-eu", 7, NOV_27_2026_END).await.expect("trends");
    golden("trends.txt", &format!("{}\n{}", render::table(&totals), render::table(&daily)));
    let runs = render::strings(
        &a.sql("SELECT DISTINCT run_id FROM experiments ORDER BY run_id LIMIT 2").await.expect("ids"),
        0,
    );
    golden("compare.txt", &render::table(&a.compare(&runs).await.expect("compare")));
    let mut summary = String::new();
    for (title, batches) in a.summary().await.expect("summary") {
        summary.push_str(&format!("{title}\n{}\n", render::table(&batches)));
    }
    golden("summary.txt", &summary);
    let csv = render::render(&a.query(&Filters { limit: Some(3), ..filters.clone() }).await.expect("q"), Format::Csv)
        .expect("csv");
    golden("query.csv", &csv);
    let json = render::render(
        &a.sql("SELECT layer, count(*) AS n FROM experiments GROUP BY layer ORDER BY layer").await.expect("sql"),
        Format::Json,
    )
    .expect("json");
    golden("layers.json", &json);
}

#[tokio::test]
async fn the_sql_path_is_read_only() {
    let (tmp, a) = fixture().await;
    for (sql, expect) in [
        ("DROP TABLE experiments", "DROP"),
        ("INSERT INTO experiments SELECT * FROM experiments", "INSERT"),
        ("COPY experiments TO '/tmp/out.parquet'", "COPY"),
        ("CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'", "CREATE EXTERNAL TABLE"),
        ("CREATE TABLE x AS SELECT 1", "CREATE"),
        ("SET datafusion.execution.batch_size = 1", "SET"),
        ("SELECT 1; SELECT 2", "one query at a time"),
        ("SELECT * FROM '/etc/passwd'", "not paths"),
        ("EXPLAIN COPY experiments TO '/tmp/out.parquet'", "EXPLAIN"),
        ("EXPLAIN ANALYZE INSERT INTO experiments SELECT * FROM experiments", "EXPLAIN"),
    ] {
        match a.sql(sql).await {
            Err(AnalyticsError::Refused(message)) => assert!(message.contains(expect), "{sql}: {message}"),
            other => panic!("{sql}: expected a refusal, got {other:?}"),
        }
    }
    match a.sql("SELEC count(*) FROM experiments").await {
        Err(AnalyticsError::Syntax(message)) => assert!(message.contains("Line: 1, Column"), "{message}"),
        other => panic!("expected a syntax error, got {other:?}"),
    }
    match a.sql("SELECT count(*) FROM nope").await {
        Err(AnalyticsError::Invalid(message)) => assert!(message.contains("experiments, parameters"), "{message}"),
        other => panic!("expected an unknown table, got {other:?}"),
    }
    assert!(!std::path::Path::new("/tmp/out.parquet").exists() || tmp.path().exists());
    // EXPLAIN [ANALYZE] of a query runs: analysts can see where a query spends its time.
    let plan =
        a.sql("EXPLAIN ANALYZE SELECT count(*) FROM experiments WHERE resilience_score > 50").await.expect("plan");
    assert!(render::table(&plan).contains("DataSourceExec"), "{}", render::table(&plan));
    let counts = a.sql("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM experiments").await.expect("count");
    assert_eq!(render::render(&counts, Format::Json).expect("json"), r#"[{"n":120,"ids":120}]"#);
}

/// summary folds its groups on the Parquet dictionary codes; its one SQL statement (what DuckDB runs in
/// the benchmark) must give the same sections: over several segments (files, days), a file in the older
/// layout (Arrow dictionaries) cut into many row groups, and runs without a score.
#[tokio::test]
async fn summary_from_dictionary_codes_matches_its_sql() {
    use arrow::datatypes::{Field, Schema};
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let results: Vec<_> = synthetic::results(3_000, 10, 7, NOV_27_2026_END).collect();
    for (i, chunk) in results.chunks(1_000).enumerate() {
        let start = i as i64 * 1_000;
        dir.write_segment("t.results", 0, start, start + 1_000, tables::Rows::of_results(chunk)).expect("segment");
    }
    let unscored: Vec<_> = synthetic::results(500, 3, 9, NOV_27_2026_END)
        .enumerate()
        .map(|(i, mut r)| {
            if i % 3 == 0 {
                r.resilience_score = None;
            }
            r
        })
        .collect();
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    for (table, day, batch) in tables::Rows::of_results(&unscored).finish().expect("rows") {
        if table != tables::EXPERIMENTS {
            continue;
        }
        let (fields, columns): (Vec<Field>, Vec<_>) = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| match f.data_type() {
                DataType::Utf8 => (
                    f.as_ref().clone().with_data_type(dictionary.clone()),
                    arrow::compute::cast(c, &dictionary).expect("cast"),
                ),
                _ => (f.as_ref().clone(), c.clone()),
            })
            .unzip();
        let old = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).expect("batch");
        let folder = tmp.path().join(table).join(format!("date={}", crate::history::day(day * 86_400_000)));
        std::fs::create_dir_all(&folder).expect("folder");
        let file = std::fs::File::create(folder.join("old~0~0~500.parquet")).expect("file");
        let props =
            parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(37)).build();
        let mut writer = parquet::arrow::ArrowWriter::try_new(file, old.schema(), Some(props)).expect("writer");
        writer.write(&old).expect("write");
        writer.close().expect("close");
    }
    let a = Analytics::open(tmp.path()).await.expect("analytics");
    let statement = a.sql(&summary_sql("experiments")).await.expect("statement");
    let statement = arrow::compute::concat_batches(&statement[0].schema(), &statement).expect("concat");
    let sections = a.summary().await.expect("summary");
    let mut rows = 0;
    for ((title, batches), (_, column)) in sections.iter().zip(SUMMARY_DIMENSIONS) {
        let expected = summary_section(&statement, column).expect("section");
        rows += expected.num_rows();
        assert_eq!(render::table(batches), render::table(&[expected]), "{title}");
    }
    assert!(rows > 10, "the sections hold {rows} rows");
    let total = a.sql("SELECT count(*) AS n FROM experiments").await.expect("count");
    assert_eq!(render::render(&total, Format::Json).expect("json"), r#"[{"n":3500}]"#);
}

#[tokio::test]
async fn rank_orders_runs_best_first_in_each_metrics_direction_and_ties_share_a_rank() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let mut results: Vec<_> = synthetic::results(12, 2, 7, NOV_27_2026_END).collect();
    // A copy of the first run under another id: the same means, so a tie on every metric.
    let first = results[0].run_id.clone();
    let copies: Vec<_> = results
        .iter()
        .filter(|r| r.run_id == first)
        .map(|r| {
            let mut copy = r.clone();
            copy.run_id = chaoseater_schemas::ids::RunId::new("twin");
            copy.dispatch_id = chaoseater_schemas::ids::DispatchId::for_region(&copy.run_id, &copy.region);
            copy.event_id = chaoseater_schemas::events::RegionResult::id_for(&copy.dispatch_id);
            copy
        })
        .collect();
    results.extend(copies);
    dir.write_segment("t.results", 0, 0, results.len() as i64, tables::Rows::of_results(&results)).expect("segment");
    let a = Analytics::open(tmp.path()).await.expect("analytics");
    let mut runs: Vec<String> = results.iter().map(|r| r.run_id.to_string()).collect();
    runs.dedup();
    for (metric, higher_is_better) in [("resilience_score", true), ("error_count", false)] {
        let ranked = a.rank(&runs, metric).await.expect("ranked");
        let ranks = render::strings(&ranked, 0);
        let ids = render::strings(&ranked, 1);
        let values: Vec<f64> = render::strings(&ranked, 2).iter().map(|v| v.parse().expect("value")).collect();
        assert_eq!(ids.len(), runs.len(), "{metric}: every run once");
        for pair in values.windows(2) {
            assert!(if higher_is_better { pair[0] >= pair[1] } else { pair[0] <= pair[1] }, "{metric}: {values:?}");
        }
        let rank_of = |id: &str| ranks[ids.iter().position(|i| i == id).expect("ranked")].clone();
        assert_eq!(rank_of("twin"), rank_of(first.as_str()), "{metric}: ties share a rank");
        assert_eq!(ranks[0], "1");
    }
    let err = a.rank(&runs, "regions").await.expect_err("not rankable").to_string();
    assert!(err.contains("resilience_score") && !err.contains("regions,"), "{err}");
}

/// An A/B report written to the history reads back as the event that concluded the test, and its rows
/// are there for SQL; a test not judged reads back without a judgement.
#[tokio::test]
async fn an_ab_report_is_rebuilt_from_the_history_as_it_concluded() {
    use chaoseater_schemas::events::{AbTestStatus, Event, EventKind};
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let Event::AbTestConcluded(concluded) = chaoseater_schemas::samples::sample(EventKind::AbTestConcluded) else {
        unreachable!("sample kind")
    };
    let mut aborted = concluded.clone();
    aborted.run_id = chaoseater_schemas::ids::RunId::new("aborted-test");
    aborted.status = AbTestStatus::Aborted;
    aborted.reason = Some("aborted: enough".into());
    aborted.judgement = None;
    let mut rows = tables::Rows::default();
    rows.push(&Event::AbTestConcluded(concluded.clone()));
    rows.push(&Event::AbTestConcluded(aborted.clone()));
    dir.write_segment("t.results", 0, 0, 2, rows).expect("segment");
    let a = Analytics::open(tmp.path()).await.expect("analytics");
    assert_eq!(a.ab_report(concluded.run_id.as_str()).await.expect("report"), Some(concluded));
    assert_eq!(a.ab_report("aborted-test").await.expect("report"), Some(aborted));
    assert_eq!(a.ab_report("nope").await.expect("report"), None);
    let counted = a
        .sql(
            "SELECT CAST(count(*) AS VARCHAR) AS n FROM ab_samples WHERE metric = 'resilience_score' AND variant = 'B'",
        )
        .await
        .expect("sql");
    assert_eq!(render::strings(&counted, 0), ["6"], "both tests' B samples");
}

/// Scores of different formula versions are never mixed unannounced: trends keep to the newest version
/// and say how many runs they left out, ranking by score refuses a mix, and query filters by version.
#[tokio::test]
async fn score_versions_are_kept_apart() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("open");
    let mut results: Vec<_> = synthetic::results(60, 2, 11, NOV_27_2026_END).collect();
    // The newer half was scored with version 2, 40 points lower: mixed, the trend would be that change.
    results.sort_by_key(|r| r.finished_at.0);
    let half = results.len() / 2;
    for r in &mut results[half..] {
        r.score_version = 2;
        r.resilience_score = r.resilience_score.map(|s| (s - 40.0).max(0.0));
    }
    dir.write_segment("t.results", 0, 0, results.len() as i64, tables::Rows::of_results(&results)).expect("segment");
    let a = Analytics::open(tmp.path()).await.expect("analytics");
    let name = results[0].experiment_name.clone();
    let (totals, _) = a.trends(&name, 400, NOV_27_2026_END).await.expect("trends");
    let column = |title: &str| {
        let i = totals[0].schema().index_of(title).expect(title);
        render::strings(&totals, i)[0].clone()
    };
    assert_eq!(column("score_version"), "2");
    assert!(column("trend").contains("of an older score version left out"), "{}", column("trend"));
    // Version 2's rows, and the failed regions of either (no score, so no version: they count as runs).
    let v2_runs = results
        .iter()
        .enumerate()
        .filter(|(i, r)| r.experiment_name == name && (*i >= half || r.resilience_score.is_none()))
        .count();
    assert_eq!(column("runs"), v2_runs.to_string(), "only version 2's scored rows");
    assert!(results[..half].iter().any(|r| r.experiment_name == name && r.resilience_score.is_none()));

    let mut runs: Vec<String> = results.iter().map(|r| r.run_id.to_string()).collect();
    runs.dedup();
    let err = a.rank(&runs, "resilience_score").await.expect_err("mixed versions").to_string();
    assert!(err.contains("not comparable"), "{err}");
    a.rank(&runs, "error_count").await.expect("other metrics rank across versions");

    let only_v1 = a.query(&Filters { score_version: Some(1), ..Filters::default() }).await.expect("query");
    let versions = render::strings(&only_v1, 7);
    assert_eq!(versions.len(), half);
    assert!(versions.iter().all(|v| v == "1"), "{versions:?}");
    let by_version = a.score_versions().await.expect("versions");
    assert_eq!(render::strings(&by_version, 0), ["1", "2"]);
}
