//! The Parquet history end to end on the real broker: the materializer (`serve --processors history`)
//! SIGKILLed at random points while it consumes 100,000 results loses and duplicates nothing; the SQL
//! path refuses what is not a query, with exit code 2.

mod common;

use std::time::{Duration, Instant};

use chaoseater_processors::history::{HistoryDir, day, synthetic};
use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::events::Event;
use common::cluster::*;
use common::*;
use serde_json::Value;

const RESULTS: usize = 100_000;

/// `chaoseater sql --format json` over the cluster's history.
fn sql(c: &Cluster, query: &str) -> Value {
    let out = c.run(&["sql", "--format", "json", query]);
    assert!(out.status.success(), "{query}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

fn committed(c: &Cluster) -> i64 {
    let dir = HistoryDir::read_only(&c.dir.path().join("state").join("history"));
    dir.positions().map(|p| p.values().sum()).unwrap_or(0)
}

#[test]
fn a_materializer_killed_at_random_points_keeps_every_result_exactly_once() {
    let mut c = Cluster::new("history-kill").with_config("[history]\nmax_rows = 4000\nmax_age_s = 0.3\n");
    let ctx = context(&c.brokers, &c.prefix);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        create_topics(&ctx).await;
        let producer = EventProducer::new(&ctx).expect("producer");
        let events: Vec<Event> =
            synthetic::results(RESULTS, 30, 11, 1_795_823_999_999).map(Event::RegionResult).collect();
        for chunk in events.chunks(10_000) {
            producer.publish_all(chunk).await.expect("publish");
        }
    });

    // Kill it four times, each at a random moment after it has committed something more.
    let mut rng = 0x5EED_u64;
    let mut service = c.serve("history");
    for round in 0..4 {
        let before = committed(&c);
        // (Or everything: a fast materializer may have caught up before the last rounds.)
        wait_until(Duration::from_secs(60), "the materializer to commit more", || {
            let now = committed(&c);
            now > before || now >= RESULTS as i64
        });
        rng = rng.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        std::thread::sleep(Duration::from_millis((rng >> 33) % 400));
        c.services[service].0.kill().expect("SIGKILL");
        let _ = c.services[service].0.wait();
        eprintln!("round {round}: killed with {} offsets committed", committed(&c));
        service = c.serve("history");
    }
    let started = Instant::now();
    wait_until(Duration::from_secs(120), "every result to be committed", || committed(&c) >= RESULTS as i64);
    eprintln!("caught up {:?} after the last restart", started.elapsed());
    c.services[service].0.kill().expect("stop");
    let _ = c.services[service].0.wait();

    let counts = sql(&c, "SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM experiments");
    assert_eq!(counts, serde_json::json!([{"n": RESULTS, "ids": RESULTS}]));
    let tags = sql(&c, "SELECT count(*) AS n, count(DISTINCT event_id || key) AS ids FROM tags");
    assert_eq!(tags, serde_json::json!([{"n": 2 * RESULTS, "ids": 2 * RESULTS}]), "two tags per result");
}

#[test]
fn the_sql_command_refuses_writes_and_paths_and_reports_syntax_errors_with_their_position() {
    let c = Cluster::new("history-sql");
    let out = c.run(&["history", "generate", "--rows", "300", "--days", "3"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for query in [
        "DROP TABLE experiments",
        "INSERT INTO experiments SELECT * FROM experiments",
        "COPY experiments TO '/tmp/chaoseater-copy.parquet'",
        "SELECT * FROM '/etc/passwd'",
    ] {
        let out = c.run(&["sql", query]);
        assert_eq!(out.status.code(), Some(2), "{query}: {}", text(&out.stdout));
        assert!(text(&out.stderr).contains("refused"), "{query}: {}", text(&out.stderr));
    }
    assert!(!std::path::Path::new("/tmp/chaoseater-copy.parquet").exists());
    let out = c.run(&["sql", "SELECT count(*) FROM experiments WHERE"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("syntax error") && text(&out.stderr).contains("Column"),
        "{}",
        text(&out.stderr)
    );
    let out = c.run(&["sql", "SELECT count(*) AS n FROM experiments"]);
    assert!(text(&out.stdout).contains("300"), "{}", text(&out.stdout));
    // The other questions answer over the same history.
    for args in [
        vec!["query", "--layer", "model", "--limit", "3", "--order", "highest"],
        vec!["trends", "latency-eu", "--days", "3"],
        vec!["summary"],
        vec!["export", "--status", "FAILED"],
    ] {
        let out = c.run(&args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        assert!(!text(&out.stdout).trim().is_empty(), "{args:?}");
    }
    let out = c.run(&["history", "prune", "--older-than", "1d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    let cutoff = day(now - 86_400_000);
    let left = c.run(&["sql", "--format", "csv", "SELECT min(date) AS first, count(*) AS n FROM experiments"]);
    let line = text(&left.stdout).lines().nth(1).unwrap_or_default().to_owned();
    let (first, n) = line.split_once(',').expect("two columns");
    assert!(first >= cutoff.as_str() && n.parse::<i64>().expect("count") < 300, "pruned before {cutoff}: {line}");
}

#[test]
fn a_query_over_its_memory_or_time_limit_fails_clearly_and_a_missing_history_is_an_error() {
    let c = Cluster::new("history-limits").with_config("[sql]\nmemory_limit_mb = 64\ntimeout_s = 120\n");
    let out = c.run(&["history", "generate", "--rows", "2000", "--days", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Eight copies of the table crossed and sorted: far past 64 MB (6.2 GB unbounded, as reported).
    let tables: Vec<String> = (0..8).map(|i| format!("experiments e{i}")).collect();
    let cross = format!("SELECT e0.run_id FROM {} ORDER BY e0.resilience_score, e7.run_id", tables.join(", "));
    let out = c.run(&["sql", &cross]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("memory"), "{}", text(&out.stderr));
    // The same session answers the next query: nothing stays held.
    let out = c.run(&["sql", "SELECT count(*) AS n FROM experiments"]);
    assert!(text(&out.stdout).contains("2000"), "{}", text(&out.stdout));

    // A query that holds little memory but runs for minutes (8e9 rows summed as they stream), so only the
    // time limit can end it: the sorted cross join above may reach the default memory limit first.
    let slow = Cluster::new("history-slow").with_config("[sql]\ntimeout_s = 0.5\n");
    let out = slow.run(&["history", "generate", "--rows", "2000", "--days", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let long = "SELECT sum(a.resilience_score + b.resilience_score + c.resilience_score) AS s \
                FROM experiments a, experiments b, experiments c";
    let out = slow.run(&["sql", long]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("time limit"), "{}", text(&out.stderr));

    let out = c.run(&["sql", "WITH x AS (SELECT 1) INSERT INTO experiments SELECT * FROM experiments"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("refused"), "{}", text(&out.stderr));

    let out = run(bin().args(["--state-dir"]).arg(c.dir.path().join("no-such-state")).args(["sql", "SELECT 1"]));
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no history at"), "{}", text(&out.stderr));
    assert!(!c.dir.path().join("no-such-state").exists(), "nothing was created");
}
