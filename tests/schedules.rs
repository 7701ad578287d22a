//! Schedules end to end on the real broker: `chaoseater serve --processors scheduler`, the `schedule`
//! commands, and a schedule firing every minute on a controlled clock: the file that
//! `CHAOSEATER_SCHEDULE_CLOCK` names, which the scheduler's decisions and the commands' stamps read
//! (the bus and the runner keep the system clock). The test moves the time from tick to tick and plays
//! the orchestrator: it publishes the RunStarted and RunCompleted of scheduled runs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use chaoseater_processors::scheduler::clock::ScheduleClock;
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

/// One test's cluster and scheduler.
struct Rig {
    c: Cluster,
    scheduler: Option<Child>,
    file: PathBuf,
    clock: PathBuf,
}

impl Rig {
    fn new(name: &str) -> Self {
        let c = Cluster::new(name);
        let file = c.write("nightly.yaml", &experiment("nightly", "network_latency", "{latency_ms: 10}", ""));
        let clock = c.dir.path().join("clock");
        Self { c, scheduler: None, file, clock }
    }

    /// Sets the schedules' clock to `at` (written aside and renamed, so no reader sees half a time).
    fn set_clock(&self, at: i64) {
        let aside = self.clock.with_extension("new");
        std::fs::write(&aside, at.to_string()).expect("write the clock");
        std::fs::rename(&aside, &self.clock).expect("move the clock");
    }

    /// Sets the clock half a minute before a minute boundary, and returns the boundary: the first tick
    /// of a `* * * * *` schedule added now.
    fn begin(&self) -> i64 {
        let t0 = TimestampMs::now().0.div_euclid(MIN) * MIN + 2 * MIN;
        self.set_clock(t0 - 30_000);
        t0
    }

    /// A rig with the schedule `nightly` (every minute, with `extra` options) added and the scheduler
    /// started, once it has fired its first tick; returns the rig and that tick.
    fn first_tick(name: &str, extra: &[&str]) -> (Self, i64) {
        let mut r = Self::new(name);
        let t0 = r.begin();
        r.add("nightly", "* * * * *", extra);
        r.start();
        r.set_clock(t0);
        r.wait_fired("nightly", &[t0]);
        (r, t0)
    }

    /// Stops the scheduler, runs the command `args` at the time `at`, and starts the scheduler again:
    /// started, it reads the change before it decides a tick.
    fn while_stopped(&mut self, at: i64, args: &[&str]) {
        self.stop();
        self.set_clock(at);
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        self.start();
    }

    fn cmd(&self) -> Command {
        let mut cmd = self.c.cmd();
        cmd.env(ScheduleClock::ENV, &self.clock);
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        run(self.cmd().args(args))
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
        let mut cmd = self.cmd();
        cmd.args(["serve", "--processors", "scheduler"]).env("CHAOSEATER_LOG", "info");
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

    /// The runs the schedule `id` requested: run id → its tick (ms) and the distinct event ids of its
    /// RunRequested messages.
    fn requested(&self, id: &str) -> BTreeMap<String, (i64, BTreeSet<String>)> {
        let mut runs: BTreeMap<String, (i64, BTreeSet<String>)> = BTreeMap::new();
        for e in self.c.events(Topic::Commands, "RunRequested") {
            let tags = &e["experiment"]["tags"];
            if tags["schedule"] != id {
                continue;
            }
            let tick: i64 = tags["schedule_tick"].as_str().and_then(|t| t.parse().ok()).expect("tick tag");
            let entry = runs.entry(e["run_id"].as_str().expect("run id").to_owned()).or_default();
            entry.0 = tick;
            entry.1.insert(e["event_id"].as_str().expect("event id").to_owned());
        }
        runs
    }

    /// The ticks (ms) the schedule `id` fired, in order.
    fn fired(&self, id: &str) -> Vec<i64> {
        let mut ticks: Vec<i64> = self.requested(id).values().map(|(tick, _)| *tick).collect();
        ticks.sort_unstable();
        ticks
    }

    fn wait_fired(&self, id: &str, ticks: &[i64]) {
        wait_until(Duration::from_secs(150), &format!("{id} to fire {ticks:?}"), || {
            let fired = self.fired(id);
            ticks.iter().all(|t| fired.contains(t))
        });
    }

    /// The skip reports of the schedule `id`.
    fn skipped(&self, id: &str) -> Vec<Value> {
        self.c.results("ScheduleTicksSkipped").into_iter().filter(|e| e["schedule_id"] == id).collect()
    }

    fn run_id(&self, id: &str, tick: i64) -> RunId {
        RunId::for_tick(&ScheduleId::new(id), TimestampMs(tick))
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
    let (mut r, t0) = Rig::first_tick("sched-kill", &["--concurrency", "allow", "--starting-deadline", "10m"]);
    // At each of the next ticks the scheduler is killed as the clock reaches it or a little after (it
    // reads the clock once a second: before it decides, while it commits, after it publishes), then
    // started again.
    for (k, delay) in [0, 350, 700, 1050].into_iter().enumerate() {
        let tick = t0 + (k as i64 + 1) * MIN;
        r.set_clock(tick);
        std::thread::sleep(Duration::from_millis(delay));
        r.kill();
        r.start();
        r.wait_fired("nightly", &[tick]);
    }
    r.set_clock(t0 + 5 * MIN);
    r.wait_fired("nightly", &[t0 + 5 * MIN]);
    let runs = r.requested("nightly");
    let expected: Vec<i64> = (0..=5).map(|k| t0 + k * MIN).collect();
    assert_eq!(r.fired("nightly"), expected, "one run per minute: {runs:?}");
    for (run_id, (tick, event_ids)) in &runs {
        assert_eq!(*run_id, r.run_id("nightly", *tick).to_string(), "the run id is derived from the schedule and tick");
        assert_eq!(event_ids.len(), 1, "copies of the tick's request carry one event id: {event_ids:?}");
    }
    assert!(r.skipped("nightly").is_empty(), "{:?}", r.skipped("nightly"));
}

#[test]
fn forbid_skips_a_tick_while_the_previous_run_is_in_flight() {
    let (mut r, t0) = Rig::first_tick("sched-forbid", &["--concurrency", "forbid"]);
    let first = r.run_id("nightly", t0);
    r.started(&first, t0 + 1_000);
    r.set_clock(t0 + MIN);
    wait_until(Duration::from_secs(60), "the next tick to be skipped", || !r.skipped("nightly").is_empty());
    let skipped = r.skipped("nightly");
    assert_eq!(skipped[0]["reason"], "IN_FLIGHT", "{skipped:?}");
    assert_eq!(skipped[0]["in_flight_run_id"], first.as_str(), "{skipped:?}");
    assert_eq!(skipped[0]["first_tick"], t0 + MIN, "{skipped:?}");
    assert_eq!(r.fired("nightly"), vec![t0]);

    // The run ends while the scheduler is stopped; started again, it reads the results up to their end
    // before its first tick, and the next tick fires (the skipped one never does).
    r.stop();
    r.completed(&first, t0 + MIN + 30_000);
    r.start();
    r.set_clock(t0 + 2 * MIN);
    r.wait_fired("nightly", &[t0 + 2 * MIN]);
    assert_eq!(r.fired("nightly"), vec![t0, t0 + 2 * MIN]);
    assert_eq!(r.skipped("nightly").len(), 1, "{:?}", r.skipped("nightly"));
    let out = r.run(&["schedule", "status", "nightly"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains(&format!("{first}  completed")), "{stdout}");
    assert!(stdout.contains(&format!("{}  requested", r.run_id("nightly", t0 + 2 * MIN))), "{stdout}");
    assert!(stdout.contains("in_flight"), "{stdout}");
}

#[test]
fn after_a_downtime_ticks_inside_the_deadline_run_once_each_and_older_ones_are_reported() {
    let (mut r, t0) = Rig::first_tick("sched-downtime", &["--concurrency", "allow", "--starting-deadline", "150s"]);
    r.kill();
    // Down until 10 s after the fifth tick that follows: the first two are more than 150 s late and are
    // reported, the last three run once each.
    r.set_clock(t0 + 5 * MIN + 10_000);
    r.start();
    r.wait_fired("nightly", &[t0 + 3 * MIN, t0 + 4 * MIN, t0 + 5 * MIN]);
    wait_until(Duration::from_secs(60), "the missed ticks' report", || !r.skipped("nightly").is_empty());
    let skipped = r.skipped("nightly");
    let report = &skipped[0];
    assert_eq!(report["reason"], "MISSED_DEADLINE", "{skipped:?}");
    assert_eq!((report["count"].as_i64(), report["truncated"].as_bool()), (Some(2), Some(false)), "{report}");
    assert_eq!((report["first_tick"].as_i64(), report["last_tick"].as_i64()), (Some(t0 + MIN), Some(t0 + 2 * MIN)));
    // Killed and started again, it decides nothing twice.
    r.kill();
    r.start();
    r.set_clock(t0 + 6 * MIN);
    r.wait_fired("nightly", &[t0 + 6 * MIN]);
    let expected: Vec<i64> = [0, 3, 4, 5, 6].iter().map(|k| t0 + k * MIN).collect();
    assert_eq!(r.fired("nightly"), expected);
    let ids: BTreeSet<String> = r.skipped("nightly").iter().map(|s| s["event_id"].to_string()).collect();
    assert_eq!(ids.len(), 1, "one report of the missed ticks: {:?}", r.skipped("nightly"));
}

#[test]
fn a_schedule_edited_paused_resumed_or_removed_takes_effect_at_the_next_tick() {
    let mut r = Rig::new("sched-edit");
    let t0 = r.begin();
    // A witness fires every minute: once it has fired a tick, the scheduler has decided that time.
    r.add("witness", "* * * * *", &["--concurrency", "allow"]);
    // Once a year, on the first of January at midnight: it does not fire during the test.
    r.add("nightly", "0 0 1 1 *", &["--concurrency", "allow"]);
    r.start();
    r.set_clock(t0);
    r.wait_fired("witness", &[t0]);
    assert!(r.fired("nightly").is_empty());

    // Edited to every minute at t0: its first tick is the first after the edit.
    r.add("nightly", "* * * * *", &["--concurrency", "allow", "--replace"]);
    r.set_clock(t0 + MIN);
    r.wait_fired("nightly", &[t0 + MIN]);
    assert_eq!(r.fired("nightly"), vec![t0 + MIN]);

    // Each later change is made while the scheduler is stopped, so that it reads the change before it
    // decides the next tick. Paused: the witness goes on, the schedule fires nothing.
    r.while_stopped(t0 + MIN + 20_000, &["schedule", "pause", "nightly"]);
    for k in [2, 3] {
        r.set_clock(t0 + k * MIN);
        r.wait_fired("witness", &[t0 + k * MIN]);
    }
    // Resumed: it counts from the resume, so the ticks it slept through are neither run nor reported.
    r.while_stopped(t0 + 3 * MIN + 20_000, &["schedule", "resume", "nightly"]);
    r.set_clock(t0 + 4 * MIN);
    r.wait_fired("nightly", &[t0 + 4 * MIN]);
    assert_eq!(r.fired("nightly"), vec![t0 + MIN, t0 + 4 * MIN]);
    assert!(r.skipped("nightly").is_empty(), "{:?}", r.skipped("nightly"));

    // Removed: it fires no more; the witness goes on.
    r.while_stopped(t0 + 4 * MIN + 20_000, &["schedule", "remove", "nightly"]);
    r.set_clock(t0 + 5 * MIN);
    r.wait_fired("witness", &[t0 + 5 * MIN]);
    assert_eq!(r.fired("nightly"), vec![t0 + MIN, t0 + 4 * MIN]);
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
    assert!(
        text(&out.stdout).contains("no schedules"),
        "nothing was published: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = c.run(&["schedule", "pause", "nope"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}
