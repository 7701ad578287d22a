//! Broker failover on Apache Kafka itself: a three-node KRaft cluster (replication factor 3,
//! `min.insync.replicas=2`) loses, to SIGKILL, the leader of the commands, then the results, then the
//! rollback partitions while campaigns run (parallel runs over three regions, each fault lifted by a
//! gradual rollback, the history materializer writing Parquet); then every broker restarts in turn
//! during another campaign. Every acknowledged event stays in the log, every run completes, history
//! rows equal results, and nothing is applied twice. The figures are printed (README "Tests").

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chaoseater_schemas::topics::Topic;
use common::cluster::*;
use common::*;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

const REGIONS: [&str; 3] = ["eu", "us", "ap"];

/// The node (1..=3, as kafka.sh numbers them) leading partition 0 of `topic` now.
fn leader_of(c: &Cluster, topic: Topic) -> u32 {
    let ctx = context(&c.brokers, &c.prefix);
    let name = ctx.topics.name(topic);
    let consumer: BaseConsumer = ctx.client_config().create().expect("consumer");
    let metadata = consumer.fetch_metadata(Some(&name), Duration::from_secs(30)).expect("metadata");
    let partition = metadata.topics()[0].partitions().iter().find(|p| p.id() == 0).expect("partition 0");
    u32::try_from(partition.leader()).expect("a leader")
}

/// Waits until every partition of the test's topics has all three replicas in sync again, so the next
/// broker down leaves two (`min.insync.replicas`) for every write.
fn await_in_sync(c: &Cluster, node: u32) {
    let ctx = context(&c.brokers, &c.prefix);
    let consumer: BaseConsumer = ctx.client_config().create().expect("consumer");
    wait_until(Duration::from_secs(180), &format!("node {node} back in every ISR"), || {
        Topic::ALL.iter().all(|&topic| {
            let name = ctx.topics.name(topic);
            consumer.fetch_metadata(Some(&name), Duration::from_secs(10)).is_ok_and(|m| {
                m.topics()
                    .iter()
                    .all(|t| !t.partitions().is_empty() && t.partitions().iter().all(|p| p.isr().len() == 3))
            })
        })
    });
}

/// Submits three parallel runs over every region; each a 2-second latency fault lifted in 3 steps.
fn submit_batch(c: &Cluster, batch: &str) -> Vec<String> {
    let mut yaml = String::from("experiments:\n");
    for i in 0..3 {
        yaml.push_str(&format!(
            "  - name: {batch}-{i}\n    layer: infrastructure\n    fault_type: network_latency\n    duration: 2\n    \
             parameters: {{latency_ms: 20, jitter_ms: 0}}\n    rollback: {{strategy: gradual, gradual_steps: 3, \
             health_check_interval: 0.3, timeout_seconds: 120}}\n"
        ));
    }
    let file = c.write(&format!("{batch}.yaml"), &yaml);
    let out = c.run(&["submit", file.to_str().expect("path"), "--regions", &REGIONS.join(","), "--mode", "parallel"]);
    assert!(out.status.success(), "submit {batch}: {}\n{}", text(&out.stdout), text(&out.stderr));
    let ids = run_ids(&out);
    assert_eq!(ids.len(), 3, "{}", text(&out.stdout));
    ids
}

/// Experiments the agents ran for these runs, over every region.
fn dispatched(apis: &[String], runs: &[String]) -> usize {
    apis.iter().map(|api| runs.iter().map(|run| ran(api, run)).sum::<usize>()).sum()
}

/// Waits until every run of the batch reached at least one agent: commands, the orchestrator, the
/// dispatch topic and the dispatcher all moved with a broker down.
fn await_progress(apis: &[String], runs: &[String], what: &str) {
    wait_until(Duration::from_secs(180), what, || runs.iter().all(|run| apis.iter().any(|api| ran(api, run) > 0)));
}

/// A kind of fact on a topic, how many a run has, and what tells two of them apart within a run.
type Fact = (Topic, &'static str, usize, fn(&Value) -> String);

/// What the log holds for `runs` once they all completed: the figures, after the checks that every
/// fact is there exactly once.
struct Outcome {
    events: usize,
    lost: usize,
    longest_stall: Duration,
}

fn check_campaign(c: &Cluster, apis: &[String], runs: &[String], started_at: i64) -> Outcome {
    wait_until(Duration::from_secs(300), "every run to complete", || {
        let done: BTreeSet<String> =
            c.results("RunCompleted").iter().filter_map(|e| e["run_id"].as_str().map(str::to_owned)).collect();
        runs.iter().all(|r| done.contains(r))
    });
    wait_until(Duration::from_secs(120), "every rollback to complete", || {
        let done = c.rollback_events("RollbackCompleted");
        runs.iter().all(|r| done.iter().filter(|e| e["run_id"] == r.as_str()).count() >= REGIONS.len())
    });
    // Nothing applied twice: each region ran each run's experiment exactly once, at its agent.
    let per_agent: Vec<Vec<usize>> = apis.iter().map(|api| runs.iter().map(|r| ran(api, r)).collect()).collect();
    assert!(per_agent.iter().flatten().all(|&n| n == 1), "runs per agent: {per_agent:?}");

    // Every fact once, under one id (copies of a fact carry its id; a second id would be a second fact).
    let mut events = 0;
    let mut lost = 0;
    let mut times = Vec::new();
    let facts: [Fact; 6] = [
        (Topic::Commands, "RunRequested", 1, |_| String::new()),
        (Topic::Results, "RunStarted", 1, |_| String::new()),
        (Topic::Results, "RegionResult", 3, |e| e["region"].as_str().unwrap_or_default().to_owned()),
        (Topic::Results, "RunCompleted", 1, |_| String::new()),
        (Topic::Rollback, "RollbackStepApplied", 9, |e| format!("{}/{}", e["region"], e["step"])),
        (Topic::Rollback, "RollbackCompleted", 3, |e| e["region"].as_str().unwrap_or_default().to_owned()),
    ];
    for (topic, kind, per_run, meaning) in facts {
        let all = c.events(topic, kind);
        for run in runs {
            let mut by_meaning: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for e in all.iter().filter(|e| e["run_id"] == run.as_str()) {
                by_meaning.entry(meaning(e)).or_default().insert(e["event_id"].as_str().expect("id").to_owned());
                times.push(e["occurred_at"].as_i64().expect("occurred_at"));
            }
            assert!(by_meaning.values().all(|ids| ids.len() == 1), "{kind} of {run} under two ids: {by_meaning:?}");
            lost += per_run.saturating_sub(by_meaning.len());
            events += by_meaning.len();
        }
    }
    assert_eq!(lost, 0, "facts missing from the log");

    // History rows equal results, each once.
    let expected = runs.len() * REGIONS.len();
    let ids: BTreeSet<String> = c
        .results("RegionResult")
        .iter()
        .filter(|e| runs.iter().any(|r| e["run_id"] == r.as_str()))
        .filter_map(|e| e["event_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), expected);
    let list = runs.iter().map(|r| format!("'{r}'")).collect::<Vec<_>>().join(",");
    let query =
        format!("SELECT count(*) AS n, count(DISTINCT event_id) AS ids FROM experiments WHERE run_id IN ({list})");
    let want = serde_json::json!([{"n": expected, "ids": expected}]);
    let mut seen = Value::Null;
    wait_until(Duration::from_secs(120), "history to hold every result", || {
        let out = c.run(&["sql", "--format", "json", &query]);
        seen = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        seen == want
    });

    // The longest stretch with no event of the campaign at all, from its first request to its end.
    times.push(started_at);
    times.sort_unstable();
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    Outcome { events, lost, longest_stall: Duration::from_millis(u64::try_from(longest).unwrap_or(0)) }
}

/// Prints a figure even when the test passes (libtest captures `println!`, not writes to the stream).
fn report(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn now_ms() -> i64 {
    i64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis())
        .expect("ms")
}

#[test]
fn campaigns_survive_killed_leaders_and_a_rolling_restart_of_three_brokers() {
    let kafka = OwnKafka::start(3);
    let mut c = Cluster::on(&kafka.bootstrap, "failover");
    let out = c.run(&["topics", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let apis: Vec<String> =
        REGIONS.iter().enumerate().map(|(i, region)| c.region(region, &format!("127.0.0.{}", 41 + i), 1, "")).collect();
    c.serve("ledger,orchestrator,dispatcher,rollback,history");

    // Kill -9 the leader of each topic in turn, with a batch submitted while it is down.
    let started = Instant::now();
    let started_at = now_ms();
    let mut runs = Vec::new();
    let mut killed = Vec::new();
    for (topic, batch) in
        [(Topic::Commands, "kill-commands"), (Topic::Results, "kill-results"), (Topic::Rollback, "kill-rollback")]
    {
        let node = leader_of(&c, topic);
        kafka.kill(node);
        killed.push(format!("{batch}: node {node}"));
        let batch_runs = submit_batch(&c, batch);
        await_progress(&apis, &batch_runs, &format!("{batch}'s runs to reach an agent with node {node} down"));
        kafka.restart(node);
        await_in_sync(&c, node);
        runs.extend(batch_runs);
    }
    let outcome = check_campaign(&c, &apis, &runs, started_at);
    report(&format!(
        "failover ({}): {} runs, {} facts checked, {} lost, longest stall {:.1} s, all done in {:.0} s",
        killed.join(", "),
        runs.len(),
        outcome.events,
        outcome.lost,
        outcome.longest_stall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));

    // A rolling restart: each broker stopped (SIGTERM) and started again, one at a time, mid-campaign.
    let started = Instant::now();
    let started_at = now_ms();
    let runs = submit_batch(&c, "rolling");
    for node in 1..=3 {
        let before = dispatched(&apis, &runs);
        kafka.stop(node);
        // Progress with the node down, unless the batch is already fully dispatched.
        wait_until(Duration::from_secs(180), "progress with a broker stopped", || {
            let now = dispatched(&apis, &runs);
            now > before || now == runs.len() * REGIONS.len()
        });
        kafka.restart(node);
        await_in_sync(&c, node);
    }
    let outcome = check_campaign(&c, &apis, &runs, started_at);
    report(&format!(
        "rolling restart: {} runs, {} facts checked, {} lost, longest stall {:.1} s, all done in {:.0} s",
        runs.len(),
        outcome.events,
        outcome.lost,
        outcome.longest_stall.as_secs_f64(),
        started.elapsed().as_secs_f64()
    ));
}
