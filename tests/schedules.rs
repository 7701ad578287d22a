//! Schedules end to end on the real broker, on a controlled clock: `chaoseater serve --processors
//! scheduler` and the `schedule` commands run under libfaketime, their wall clock frozen at a time the
//! test writes to a file (monotonic time is not faked, so timeouts and tick intervals run as usual).
//! The test plays the orchestrator: it publishes the RunStarted and RunCompleted of scheduled runs.
//!
//! Fake times lie two days back: Kafka 4 refuses records stamped more than an hour ahead, and two days is
//! well inside the topics' retention.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::events::{Event, EventKind, RunCompleted, RunStarted, RunStatus};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{RunId, ScheduleId, TimestampMs};
use chaoseater_schemas::samples;
use chaoseater_schemas::topics::Topic;
use common::cluster::*;
use common::*;
use serde_json::Value;

const MIN: i64 = 60_000;

/// A wall clock the test sets, for the processes it starts.
struct FakeClock {
    file: PathBuf,
    library: PathBuf,
}

impl FakeClock {
    /// Frozen at `at`.
    fn new(dir: &std::path::Path, at: i64) -> Self {
        let library = std::env::var_os("CHAOSEATER_LIBFAKETIME")
            .map_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"), PathBuf::from);
        assert!(
            library.exists(),
            "libfaketime not found at {} (apt-get install faketime; `bash .ci/run` installs it and sets \
             CHAOSEATER_LIBFAKETIME)",
            library.display()
        );
        let clock = Self { file: dir.join("fake-clock"), library };
        clock.set(at);
        clock
    }

    /// Moves the clock to `at` (ms since the epoch; whole seconds), written whole by a rename so a
    /// process never reads half a time.
    fn set(&self, at: i64) {
        let text = chrono_text(at);
        let tmp = self.file.with_extension("tmp");
        std::fs::write(&tmp, text).expect("clock file");
        std::fs::rename(&tmp, &self.file).expect("clock file");
    }

    /// Runs `cmd` on this clock.
    fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("LD_PRELOAD", &self.library)
            .env("FAKETIME_TIMESTAMP_FILE", &self.file)
            .env("FAKETIME_NO_CACHE", "1")
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
            .env("TZ", "UTC")
    }
}

/// `at` as libfaketime's absolute time, `YYYY-MM-DD hh:mm:ss` (UTC, since its processes run with TZ=UTC).
fn chrono_text(at: i64) -> String {
    let secs = at.div_euclid(1000);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The start of the hour two days ago: the test's time zero.
fn base() -> i64 {
    let two_days_ago = TimestampMs::now().0 - 2 * 86_400_000;
    two_days_ago - two_days_ago.rem_euclid(60 * MIN)
}

/// One test's cluster, clock and scheduler.
struct Rig {
    c: Cluster,
    clock: FakeClock,
    t0: i64,
    scheduler: Option<Child>,
    file: PathBuf,
}

impl Rig {
    fn new(name: &str) -> Self {
        let c = Cluster::new(name);
        let t0 = base();
        let clock = FakeClock::new(c.dir.path(), t0 + 30_000);
        let file = c.write("nightly.yaml", &experiment("nightly", "network_latency", "{latency_ms: 10}", ""));
        Self { c, clock, t0, scheduler: None, file }
    }

    /// The clock at `minutes` and `seconds` after time zero.
    fn at(&self, minutes: i64, seconds: i64) -> i64 {
        self.t0 + minutes * MIN + seconds * 1000
    }

    fn set(&self, minutes: i64, seconds: i64) {
        self.clock.set(self.at(minutes, seconds));
    }

    /// Runs a `chaoseater` command on the fake clock.
    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = self.c.cmd();
        self.clock.apply(cmd.args(args));
        run(&mut cmd)
    }

    /// Adds the schedule `id` of the rig's experiment file.
    fn add(&self, id: &str, cron: &str, extra: &[&str]) {
        let mut args = vec!["schedule", "add", self.file.to_str().expect("path"), "--id", id, "--cron", cron];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        assert!(out.status.success(), "schedule add: {}\n{}", text(&out.stdout), text(&out.stderr));
    }

    fn start(&mut self) {
        assert!(self.scheduler.is_none(), "one scheduler at a time");
        let mut cmd = self.c.cmd();
        self.clock.apply(cmd.args(["serve", "--processors", "scheduler"])).env("CHAOSEATER_LOG", "info");
        if let Some(dir) = std::env::var_os("CHAOSEATER_TEST_LOGS") {
            let log = std::path::Path::new(&dir).join(format!("{}-scheduler.log", self.c.prefix));
            let file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
            cmd.stderr(file);
        } else {
            cmd.stderr(std::process::Stdio::null());
        }
        self.scheduler = Some(cmd.stdin(std::process::Stdio::null()).spawn().expect("spawn serve"));
    }

    /// SIGKILL: no shutdown, no last commit.
    fn kill(&mut self) {
        let mut child = self.scheduler.take().expect("running");
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
    }

    /// SIGTERM, and wait for the exit.
    fn stop(&mut self) {
        let mut child = self.scheduler.take().expect("running");
        terminate(&child);
        let status = child.wait().expect("reaped");
        assert!(status.success(), "serve exited with {status}");
    }

    /// The runs the schedule `id` requested: run id → the distinct event ids of its RunRequested
    /// messages, and each run's tick in minutes after time zero.
    fn requested(&self, id: &str) -> BTreeMap<String, (i64, BTreeSet<String>)> {
        let mut runs: BTreeMap<String, (i64, BTreeSet<String>)> = BTreeMap::new();
        for e in self.c.events(Topic::Commands, "RunRequested") {
            let tags = &e["experiment"]["tags"];
            if tags["schedule"] != id {
                continue;
            }
            let tick: i64 = tags["schedule_tick"].as_str().and_then(|t| t.parse().ok()).expect("tick tag");
            let entry = runs.entry(e["run_id"].as_str().expect("run id").to_owned()).or_default();
            entry.0 = (tick - self.t0) / MIN;
            entry.1.insert(e["event_id"].as_str().expect("event id").to_owned());
        }
        runs
    }

    /// The ticks (minutes after time zero) the schedule `id` fired, in order.
    fn fired(&self, id: &str) -> Vec<i64> {
        let mut ticks: Vec<i64> = self.requested(id).values().map(|(tick, _)| *tick).collect();
        ticks.sort_unstable();
        ticks
    }

    fn wait_fired(&self, id: &str, ticks: &[i64]) {
        wait_until(Duration::from_secs(60), &format!("{id} to fire {ticks:?}"), || {
            let fired = self.fired(id);
            ticks.iter().all(|t| fired.contains(t))
        });
    }

    /// The skip reports of the schedule `id`.
    fn skipped(&self, id: &str) -> Vec<Value> {
        self.c.results("ScheduleTicksSkipped").into_iter().filter(|e| e["schedule_id"] == id).collect()
    }

    fn run_id(&self, id: &str, minutes: i64) -> RunId {
        RunId::for_tick(&ScheduleId::new(id), TimestampMs(self.at(minutes, 0)))
    }

    /// Publishes what the orchestrator would say of a run.
    fn publish(&self, event: Event) {
        let ctx = context(&self.c.brokers, &self.c.prefix);
        let rt = tokio::runtime::Runtime::new().expect("runtime");
        rt.block_on(async { EventProducer::new(&ctx).expect("producer").publish(&event).await }).expect("published");
    }

    fn started(&self, run_id: &RunId, at: i64) {
        self.publish(Event::RunStarted(RunStarted {
            event_id: RunStarted::id_for(run_id),
            occurred_at: TimestampMs(at),
            run_id: run_id.clone(),
            experiment_name: "nightly".into(),
            regions: vec![],
            mode: RunMode::Parallel,
        }));
    }

    fn completed(&self, run_id: &RunId, at: i64) {
        let Event::RunCompleted(sample) = samples::sample(EventKind::RunCompleted) else { unreachable!() };
        self.publish(Event::RunCompleted(RunCompleted {
            event_id: RunCompleted::id_for(run_id),
            occurred_at: TimestampMs(at),
            run_id: run_id.clone(),
            experiment_name: "nightly".into(),
            status: RunStatus::Completed,
            ..sample
        }));
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        if let Some(mut child) = self.scheduler.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn a_tick_fires_exactly_once_across_a_sigkill_at_the_tick() {
    let mut r = Rig::new("sched-kill");
    r.add("nightly", "*/10 * * * *", &["--concurrency", "allow", "--starting-deadline", "30m"]);
    r.start();
    // Each tick: the clock moves past it and the scheduler is killed at once or a little later (before
    // it decides, while it commits, after it publishes), then started again.
    let ticks = [10, 20, 30, 40, 50];
    for (k, tick) in ticks.iter().enumerate() {
        r.set(*tick, 5);
        std::thread::sleep(Duration::from_millis([0, 150, 400, 700, 1100][k]));
        r.kill();
        r.start();
        r.wait_fired("nightly", &ticks[..=k]);
    }
    // Another tick with no kill, so the last restart is seen through a decision too.
    r.set(60, 5);
    r.wait_fired("nightly", &[60]);
    let runs = r.requested("nightly");
    assert_eq!(r.fired("nightly"), vec![10, 20, 30, 40, 50, 60], "one run per tick: {runs:?}");
    for (run_id, (tick, event_ids)) in &runs {
        assert_eq!(*run_id, r.run_id("nightly", *tick).to_string(), "the run id is derived from the schedule and tick");
        assert_eq!(event_ids.len(), 1, "copies of the tick's request carry one event id: {event_ids:?}");
    }
    assert!(r.skipped("nightly").is_empty(), "{:?}", r.skipped("nightly"));
}

#[test]
fn forbid_skips_a_tick_while_the_previous_run_is_in_flight() {
    let mut r = Rig::new("sched-forbid");
    r.add("nightly", "*/10 * * * *", &["--concurrency", "forbid"]);
    r.start();
    r.set(10, 5);
    r.wait_fired("nightly", &[10]);
    let first = r.run_id("nightly", 10);
    r.started(&first, r.at(10, 6));
    r.set(20, 5);
    wait_until(Duration::from_secs(60), "the tick at 20 to be skipped", || !r.skipped("nightly").is_empty());
    let skipped = r.skipped("nightly");
    assert_eq!(skipped[0]["reason"], "IN_FLIGHT", "{skipped:?}");
    assert_eq!(skipped[0]["in_flight_run_id"], first.as_str(), "{skipped:?}");
    assert_eq!(skipped[0]["first_tick"], r.at(20, 0), "{skipped:?}");
    assert_eq!(r.fired("nightly"), vec![10]);

    // The run ends while the scheduler is stopped; started again, it reads the results up to their end
    // before its first tick, and the next tick fires.
    r.stop();
    r.completed(&first, r.at(25, 0));
    r.set(30, 5);
    r.start();
    r.wait_fired("nightly", &[30]);
    assert_eq!(r.fired("nightly"), vec![10, 30]);
    let out = r.run(&["schedule", "status", "nightly"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(&format!("{first}  completed")), "{stdout}");
    assert!(stdout.contains("in_flight"), "{stdout}");
}

#[test]
fn after_a_downtime_ticks_inside_the_deadline_run_once_each_and_older_ones_are_reported() {
    let mut r = Rig::new("sched-downtime");
    r.add("nightly", "*/10 * * * *", &["--concurrency", "allow", "--starting-deadline", "25m"]);
    r.start();
    r.set(10, 5);
    r.wait_fired("nightly", &[10]);
    r.kill();
    // Down from 00:10 to 01:02: the ticks at 20, 30 and 40 are more than 25 minutes late, 50 and 60 not.
    r.set(62, 0);
    r.start();
    r.wait_fired("nightly", &[50, 60]);
    wait_until(Duration::from_secs(60), "the missed ticks' report", || !r.skipped("nightly").is_empty());
    let skipped = r.skipped("nightly");
    let report = &skipped[0];
    assert_eq!(report["reason"], "MISSED_DEADLINE", "{skipped:?}");
    assert_eq!((report["count"].as_i64(), report["truncated"].as_bool()), (Some(3), Some(false)), "{report}");
    assert_eq!((report["first_tick"].as_i64(), report["last_tick"].as_i64()), (Some(r.at(20, 0)), Some(r.at(40, 0))));
    // And after a restart at the same time, nothing is decided twice.
    r.kill();
    r.start();
    r.set(70, 5);
    r.wait_fired("nightly", &[70]);
    assert_eq!(r.fired("nightly"), vec![10, 50, 60, 70]);
    let ids: BTreeSet<String> = r.skipped("nightly").iter().map(|s| s["event_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one report of the missed ticks: {:?}", r.skipped("nightly"));
}

#[test]
fn a_schedule_edited_or_removed_takes_effect_at_the_next_tick() {
    let mut r = Rig::new("sched-edit");
    // A witness fires every ten minutes: once it has fired a tick, the scheduler has decided that time.
    r.add("witness", "*/10 * * * *", &["--concurrency", "allow"]);
    r.add("nightly", "0 * * * *", &["--concurrency", "allow"]);
    r.start();
    r.set(10, 5);
    r.wait_fired("witness", &[10]);
    // At 00:20 the hourly schedule becomes every ten minutes: its first tick is 00:30, never 00:10 or
    // 00:20, which the new expression had before the edit.
    r.set(20, 0);
    r.add("nightly", "*/10 * * * *", &["--concurrency", "allow", "--replace"]);
    r.set(30, 5);
    r.wait_fired("nightly", &[30]);
    r.wait_fired("witness", &[30]);
    assert_eq!(r.fired("nightly"), vec![30]);

    // Paused (while the scheduler is stopped, so that it reads the pause before its next tick), it lets
    // ticks pass; resumed, it fires from the next one, however late it reads the resume.
    r.stop();
    let out = r.run(&["schedule", "pause", "nightly"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    r.set(40, 5);
    r.start();
    r.wait_fired("witness", &[40]);
    let out = r.run(&["schedule", "resume", "nightly"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    r.set(50, 5);
    r.wait_fired("nightly", &[50]);

    // Removed while the scheduler is stopped (so that it reads the removal before its next tick), it
    // fires no more.
    r.stop();
    let out = r.run(&["schedule", "remove", "nightly"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    r.set(60, 5);
    r.start();
    r.wait_fired("witness", &[60]);
    r.set(70, 5);
    r.wait_fired("witness", &[70]);
    assert_eq!(r.fired("nightly"), vec![30, 50]);
    let out = r.run(&["schedule", "list"]);
    let stdout = text(&out.stdout);
    assert!(stdout.contains("witness") && !stdout.contains("nightly"), "{stdout}");
}

#[test]
fn a_bad_cron_expression_or_time_zone_is_refused_with_exit_2_naming_it() {
    let c = Cluster::new("sched-bad");
    let file = c.write("e.yaml", &experiment("e", "network_latency", "{latency_ms: 10}", ""));
    let path = file.to_str().expect("path");
    for (args, named) in [
        (vec!["--cron", "61 3 * * *"], "61 3 * * *"),
        (vec!["--cron", "0 0 3 * * *"], "0 0 3 * * *"),
        (vec!["--cron", "0 3 * * *", "--tz", "Europe/Pariss"], "Europe/Pariss"),
        (vec!["--cron", "0 3 * * *", "--concurrency", "sometimes"], "sometimes"),
        (vec!["--cron", "0 3 * * *", "--starting-deadline", "soon"], "soon"),
    ] {
        let mut all = vec!["schedule", "add", path];
        all.extend(args);
        let out = c.run(&all);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {}", text(&out.stderr));
        assert!(text(&out.stderr).contains(named), "{all:?}: {}", text(&out.stderr));
    }
    let out = c.run(&["schedule", "list"]);
    assert!(text(&out.stdout).contains("no schedules"), "nothing was published: {}", text(&out.stdout));
    let out = c.run(&["schedule", "pause", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
