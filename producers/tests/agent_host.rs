//! Host faults on this machine: memory, disk, CPU and storage I/O, each applied, measured and reverted.
//! A test binary of their own, so that the resident-set measurements see no other test's allocations.

mod common;

use std::time::{Duration, Instant};

use chaoseater_producers::agent::host::{self, Journal, Leftover};
use common::{Opts, Rig, experiment};
use serde_json::json;

const MB: f64 = 1024.0 * 1024.0;

/// One host test at a time: they measure this process's memory and CPU, which the others would disturb.
static HOST: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_mb() -> f64 {
    host::rss_bytes().expect("RSS from /proc") as f64 / MB
}

/// CPU seconds this process has used (user + system).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("stat").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_pressure_and_leak_raise_rss_and_release_it() {
    let _host = HOST.lock().await;
    let rig = Rig::start(Opts::default()).await;
    let before = rss_mb();
    let id = rig.inject(experiment("infrastructure", "memory_pressure", json!({"memory_mb": 200}), 1.0)).await;
    let during = rss_mb();
    assert!(during - before >= 190.0, "RSS {before:.0} → {during:.0} MB");
    rig.outcome(&id).await;
    let after = rss_mb();
    assert!(after - before <= 40.0, "released: {before:.0} → {after:.0} MB");

    // A leak of 200 MB/s against the cap of 512 MB: grows, then everything goes on revert.
    let before = rss_mb();
    let id = rig.inject(experiment("model", "memory_leak", json!({"leak_rate_mb": 200}), 1.5)).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let early = rss_mb();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = rss_mb();
    assert!(later > early + 50.0, "leaking: {early:.0} → {later:.0} MB");
    rig.outcome(&id).await;
    let after = rss_mb();
    assert!(after - before <= 40.0, "released: {before:.0} → {after:.0} MB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_writes_its_file_and_removes_it() {
    let _host = HOST.lock().await;
    let rig = Rig::start(Opts::default()).await;
    let dir = rig.dir.path().join("fill");
    std::fs::create_dir_all(&dir).expect("fill dir");
    let id = rig
        .inject(experiment("infrastructure", "disk_full", json!({"bytes": 20_000_000, "path": dir.to_str()}), 1.0))
        .await;
    let files: Vec<_> = std::fs::read_dir(&dir).expect("dir").filter_map(Result::ok).collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].metadata().expect("meta").len(), 20_000_000);
    let journal = std::fs::read_to_string(rig.dir.path().join("state/journal.json")).expect("journal");
    assert!(journal.contains("chaoseater-disk-full"), "recorded before written: {journal}");
    let status = rig.status(&id).await;
    assert!(status["mechanism"].as_str().is_some_and(|m| m.contains("20000000 bytes")), "{status}");
    rig.outcome(&id).await;
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "fill file removed");
    let journal = std::fs::read_to_string(rig.dir.path().join("state/journal.json")).expect("journal");
    assert_eq!(journal.trim(), "[]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_throttle_burns_its_share_without_a_cgroup_and_sets_cpu_max_with_one() {
    let _host = HOST.lock().await;
    let rig = Rig::start(Opts::default()).await;
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) as f64;
    let id = rig.inject(experiment("infrastructure", "cpu_throttle", json!({"throttle_percent": 50}), 2.0)).await;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let share = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() / cores;
    // 50% is asked; a loaded machine gives less, but threads that do not burn would give ~0%.
    assert!(share >= 0.25, "busy threads took {:.0}% of the host", share * 100.0);
    let status = rig.status(&id).await;
    assert!(status["mechanism"].as_str().is_some_and(|m| m.contains("busy thread")), "{status}");
    rig.outcome(&id).await;
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = (cpu_seconds() - cpu0) / t0.elapsed().as_secs_f64() / cores;
    assert!(idle < 0.2, "threads stopped: {:.0}%", idle * 100.0);

    // With a target cgroup, cpu.max is written and put back. (This machine has no writable cgroup v2
    // controller, so the cgroup root is a directory standing in for it: this checks what we write.)
    let cgroup = rig.dir.path().join("cgroup/pipeline");
    std::fs::create_dir_all(&cgroup).expect("cgroup dir");
    std::fs::write(cgroup.join("cpu.max"), "max 100000\n").expect("cpu.max");
    let id = rig
        .inject(experiment(
            "infrastructure",
            "cpu_throttle",
            json!({"throttle_percent": 50, "cgroup": "pipeline"}),
            1.0,
        ))
        .await;
    let quota = (0.5 * cores * 100_000.0) as u64;
    assert_eq!(std::fs::read_to_string(cgroup.join("cpu.max")).expect("cpu.max"), format!("{quota} 100000"));
    rig.outcome(&id).await;
    assert_eq!(std::fs::read_to_string(cgroup.join("cpu.max")).expect("cpu.max"), "max 100000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_bottleneck_competes_for_io_or_caps_iops_in_a_cgroup() {
    let _host = HOST.lock().await;
    let rig = Rig::start(Opts::default()).await;
    let dir = rig.dir.path().join("io");
    std::fs::create_dir_all(&dir).expect("io dir");
    let id = rig
        .inject(experiment(
            "infrastructure",
            "storage_bottleneck",
            json!({"iops_limit": 50, "path": dir.to_str()}),
            1.0,
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scratch: u64 = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(scratch > 0, "competing writes landed");
    let status = rig.status(&id).await;
    assert!(status["mechanism"].as_str().is_some_and(|m| m.contains("competing")), "{status}");
    rig.outcome(&id).await;
    assert_eq!(std::fs::read_dir(&dir).expect("dir").count(), 0, "scratch files removed");

    let cgroup = rig.dir.path().join("cgroup/pipeline");
    std::fs::create_dir_all(&cgroup).expect("cgroup dir");
    std::fs::write(cgroup.join("io.max"), "").expect("io.max");
    let id = rig
        .inject(experiment(
            "infrastructure",
            "storage_bottleneck",
            json!({"iops_limit": 50, "path": dir.to_str(), "cgroup": "pipeline"}),
            1.0,
        ))
        .await;
    let written = std::fs::read_to_string(cgroup.join("io.max")).expect("io.max");
    assert!(written.ends_with(" riops=50 wiops=50"), "{written}");
    rig.outcome(&id).await;
    let restored = std::fs::read_to_string(cgroup.join("io.max")).expect("io.max");
    assert!(restored.ends_with(" riops=max wiops=max"), "{restored}");
}

#[test]
fn journal_reverts_what_a_killed_agent_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fill = dir.path().join("left.fill");
    let cgroup_file = dir.path().join("cpu.max");
    std::fs::write(&fill, vec![0u8; 4096]).expect("fill");
    std::fs::write(&cgroup_file, "5000 100000").expect("cpu.max");
    {
        let (journal, cleaned) = Journal::open(dir.path()).expect("journal");
        assert!(cleaned.is_empty());
        journal.record(Leftover::File { path: fill.clone() }).expect("record");
        journal
            .record(Leftover::CgroupValue { file: cgroup_file.clone(), previous: "max 100000".into() })
            .expect("record");
        // Dropped without reverting: what a SIGKILL leaves.
    }
    let (journal, cleaned) = Journal::open(dir.path()).expect("journal reopened");
    assert_eq!(cleaned.len(), 2);
    assert!(!fill.exists());
    assert_eq!(std::fs::read_to_string(&cgroup_file).expect("cpu.max"), "max 100000");
    assert!(journal.entries().is_empty());
}

#[test]
fn an_unreadable_journal_stops_the_agent_and_is_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("journal.json");
    let torn = r#"[{"kind":"file","path":"/var/tmp/left.fi"#;
    std::fs::write(&path, torn).expect("journal");
    let error = Journal::open(dir.path()).expect_err("refused").to_string();
    assert!(error.contains("journal.json is unreadable") && error.contains("by hand"), "{error}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), torn, "the journal is left as it was");
}

#[test]
fn a_panic_reverts_the_host_fault_through_its_drop_guard() {
    use chaoseater_producers::agent::AgentConfig;
    use chaoseater_producers::agent::faults::{DiskFill, Fault};
    let dir = tempfile::tempdir().expect("tempdir");
    let config = AgentConfig::parse(&format!(
        "upstream = \"http://127.0.0.1:1\"\nstate_dir = \"{}\"\n[probe]\nset = \"unused.json\"\n",
        dir.path().join("state").display()
    ))
    .expect("config");
    let (journal, _) = Journal::open(&config.state_dir).expect("journal");
    let fault = Fault::DiskFull { fill: DiskFill::Bytes(1_000_000), path: Some(dir.path().join("fill")) };
    let fill_dir = dir.path().join("fill");
    std::fs::create_dir_all(&fill_dir).expect("fill dir");
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _applied = host::HostFault::apply(&fault, &config, journal.clone(), "panic").expect("applied");
        assert_eq!(std::fs::read_dir(&fill_dir).expect("dir").count(), 1);
        panic!("an injector bug");
    }));
    assert!(outcome.is_err());
    assert_eq!(std::fs::read_dir(&fill_dir).expect("dir").count(), 0, "reverted while unwinding");
    assert!(journal.entries().is_empty());
}
