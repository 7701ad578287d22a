//! The Parquet history, in one run:
//! 1. materializing 1,000,000 result events: the materializer's own path (decode, rows, Parquet) in
//!    process (events/s, rows/s, peak RSS), and with CHAOSEATER_BENCH_BROKERS end to end from a broker;
//! 2. trends and summary over 10,000,000 experiment rows with our DataFusion path, and with DuckDB over
//!    the same files (through Python's duckdb: CHAOSEATER_BENCH_PYTHON, default the CI venv's python),
//!    each query best of three, with the ratio.
//!
//! cargo bench --bench history
//!
//! CHAOSEATER_BENCH_ONLY=queries skips materializing; CHAOSEATER_BENCH_DIR=DIR keeps the queried
//! history in DIR and reuses it on later runs.
//!
//! Targets: materializing at least 100,000 events/s; queries no slower than DuckDB.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use chaoseater_processors::analytics::{self, Analytics};
use chaoseater_processors::history::{
    Buffer, HistoryDir, HistoryOptions, HistoryStats, Materializer, synthetic, tables,
};
use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::codec::Codec;
use chaoseater_schemas::events::Event;

const EVENTS: usize = 1_000_000;
const QUERY_ROWS: usize = 10_000_000;
const END_MS: i64 = 1_795_823_999_999; // 2026-11-27T23:59:59.999Z

/// Peak resident set since the last reset (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resets the peak so that it measures what follows (Linux: `5` to clear_refs).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// The materializer's own path over 1,000,000 encoded RegionResult messages: decode, rows, Parquet
/// segments every 100,000 rows (what `run` does between the consumer and the disk).
fn materialize_path(dir: &Path) {
    let codec = Codec::new().expect("codec");
    let encoded: Vec<Vec<u8>> = synthetic::results(EVENTS, 30, 5, END_MS)
        .map(|r| codec.encode(&Event::RegionResult(r)).expect("encode"))
        .collect();
    let started = Instant::now();
    for payload in &encoded {
        std::hint::black_box(codec.decode(payload).expect("decode"));
    }
    println!("  decoding alone: {:>8.0} events/s", EVENTS as f64 / started.elapsed().as_secs_f64());
    reset_peak_rss();
    let rss_before = peak_rss_mib();
    let (history, _) = HistoryDir::open(dir).expect("history");
    let options = HistoryOptions::default();
    let mut buffer = Buffer::new(Default::default());
    let topics = chaoseater_schemas::topics::TopicNames::with_prefix("bench");
    let mut stats = HistoryStats::default();
    let started = Instant::now();
    let mut rows = 0u64;
    for (offset, payload) in encoded.iter().enumerate() {
        buffer.absorb(&codec, &topics, ("bench.results", 0, offset as i64), payload, &mut stats).expect("decode");
        if buffer.due(&options) || offset + 1 == EVENTS {
            for ((topic, partition), p) in buffer.take() {
                rows += history.write_segment(&topic, partition, p.start, p.end, p.rows).expect("segment").rows;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "  materializer path: {EVENTS} events ({rows} rows in 3 tables) in {elapsed:.1} s: {:>8.0} events/s, {:>9.0} rows/s, peak RSS {:.0} MiB (holding the encoded input: {:.0} MiB)",
        EVENTS as f64 / elapsed,
        rows as f64 / elapsed,
        peak_rss_mib(),
        rss_before,
    );
}

/// End to end on a real broker (CHAOSEATER_BENCH_BROKERS): 1,000,000 results published, then the
/// materializer reading them from the start until every one is in the history. (Not on the embedded
/// broker: the mock cluster keeps only its most recent segments and cannot replay a million.)
async fn materialize_live(brokers: &str, dir: &Path) {
    let ctx = common::context(&format!("benchh{}", std::process::id()), brokers, None).await;
    let producer = EventProducer::new(&ctx).expect("producer");
    let started = Instant::now();
    let mut results = synthetic::results(EVENTS, 30, 6, END_MS).map(Event::RegionResult).peekable();
    while results.peek().is_some() {
        let chunk: Vec<Event> = results.by_ref().take(20_000).collect();
        producer.publish_all(&chunk).await.expect("publish");
    }
    let published = started.elapsed().as_secs_f64();
    let options = HistoryOptions { max_rows: 200_000, max_age: Duration::from_secs(1), ..Default::default() };
    let materializer = Materializer::open(ctx.clone(), dir, options).expect("materializer");
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let task = tokio::spawn(materializer.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let reader = HistoryDir::read_only(dir);
    let rows = |reader: &HistoryDir| -> u64 { reader.segments().map(|s| s.iter().map(|s| s.rows).sum()).unwrap_or(0) };
    while rows(&reader) < 4 * EVENTS as u64 {
        assert!(started.elapsed() < Duration::from_secs(600), "not materialized within 10 minutes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    task.await.expect("task").expect("materializer");
    println!(
        "  end to end from {brokers}: published in {published:.1} s; read and materialized in {elapsed:.1} s: {:>8.0} events/s",
        EVENTS as f64 / elapsed
    );
}

/// Writes QUERY_ROWS experiment rows (no parameters or tags: only experiments is queried).
fn generate(dir: &Path) {
    let started = Instant::now();
    let (history, _) = HistoryDir::open(dir).expect("history");
    let mut results = synthetic::results(QUERY_ROWS, 30, 9, END_MS).peekable();
    let mut offset = 0i64;
    while results.peek().is_some() {
        let mut rows = tables::Rows::default();
        results.by_ref().take(500_000).for_each(|r| rows.push_result(&r, Some(tables::EXPERIMENTS)));
        let next = offset + rows.len() as i64;
        history.write_segment("bench", 0, offset, next, rows).expect("segment");
        offset = next;
    }
    println!("  generated {QUERY_ROWS} experiment rows in {:.1} s", started.elapsed().as_secs_f64());
}

async fn best_of_three<F, Fut>(mut f: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        f().await;
        best = best.min(started.elapsed().as_secs_f64());
    }
    best
}

/// Times `queries` (name → SQL over the table `t`) in DuckDB, best of three each; None without DuckDB.
fn duckdb(dir: &Path, queries: &[(String, Vec<String>)]) -> Option<Vec<f64>> {
    let python = std::env::var("CHAOSEATER_BENCH_PYTHON").unwrap_or_else(|_| {
        std::env::var("HOME").map(|h| format!("{h}/.cache/chaoseater/venv/bin/python")).unwrap_or_default()
    });
    let script = format!(
        r#"
import json, sys, time, duckdb
con = duckdb.connect()
con.execute("CREATE VIEW t AS SELECT * FROM read_parquet('{}/experiments/*/*.parquet', hive_partitioning = true)")
out = []
for group in json.loads(sys.stdin.read()):
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for sql in group:
            con.execute(sql).fetchall()
        best = min(best, time.perf_counter() - started)
    out.append(best)
print(json.dumps(out))
"#,
        dir.display()
    );
    let groups: Vec<&Vec<String>> = queries.iter().map(|(_, q)| q).collect();
    let mut child = std::process::Command::new(&python)
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    use std::io::Write;
    child.stdin.take()?.write_all(serde_json::to_string(&groups).ok()?.as_bytes()).ok()?;
    let output = child.wait_with_output().ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

async fn queries(dir: &Path) {
    let analytics = Analytics::open(dir).await.expect("analytics");
    let ours_trends = best_of_three(|| async {
        analytics.trends("latency-eu", 30, END_MS).await.expect("trends");
    })
    .await;
    let ours_summary = best_of_three(|| async {
        analytics.summary().await.expect("summary");
    })
    .await;
    // summary's own statement run by DataFusion's SQL engine alone (no dictionary-code grouping), for
    // comparison: the speed an analyst's GROUP BY over these columns gets.
    let statement = analytics::summary_sql("experiments");
    let sql_summary = best_of_three(|| async {
        analytics.sql(&statement).await.expect("summary statement");
    })
    .await;
    let (totals, daily) = analytics::trends_sql("latency-eu", 30, END_MS, None, "t");
    let summary = vec![analytics::summary_sql("t")];
    let groups = vec![("trends".to_owned(), vec![totals, daily]), ("summary".to_owned(), summary)];
    let theirs = duckdb(dir, &groups);
    for (i, (name, ours)) in [("trends", ours_trends), ("summary", ours_summary)].into_iter().enumerate() {
        match &theirs {
            Some(t) => println!(
                "  {name:<8} over {QUERY_ROWS} rows: DataFusion {:>7.3} s  DuckDB {:>7.3} s  ratio (ours / DuckDB) {:.2}",
                ours,
                t[i],
                ours / t[i]
            ),
            None => println!("  {name:<8} over {QUERY_ROWS} rows: DataFusion {ours:>7.3} s  (DuckDB not available)"),
        }
    }
    match &theirs {
        Some(t) => println!(
            "  summary as one SQL statement, DataFusion's GROUP BY: {sql_summary:>7.3} s  ratio (to DuckDB) {:.2}",
            sql_summary / t[1]
        ),
        None => println!("  summary as one SQL statement, DataFusion's GROUP BY: {sql_summary:>7.3} s"),
    }
}

#[tokio::main]
async fn main() {
    println!("history: materialize {EVENTS} result events; trends and summary over {QUERY_ROWS} rows");
    let tmp = tempfile::tempdir().expect("tempdir");
    if std::env::var("CHAOSEATER_BENCH_ONLY").as_deref() != Ok("queries") {
        materialize_path(&tmp.path().join("path"));
        if let Ok(brokers) = std::env::var("CHAOSEATER_BENCH_BROKERS") {
            materialize_live(&brokers, &tmp.path().join("live")).await;
        }
    }
    // CHAOSEATER_BENCH_DIR keeps the queried history there and reuses it on the next run (for profiling
    // a query with `chaoseater sql --history DIR "EXPLAIN ANALYZE ..."`).
    let dir = std::env::var_os("CHAOSEATER_BENCH_DIR").map_or_else(|| tmp.path().join("queried"), Into::into);
    if dir.join(tables::EXPERIMENTS).exists() && std::env::var_os("CHAOSEATER_BENCH_DIR").is_some() {
        println!("  reusing the experiment rows under {}", dir.display());
    } else {
        generate(&dir);
    }
    queries(&dir).await;
}
