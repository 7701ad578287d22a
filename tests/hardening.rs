//! Hostile input, as an attacker or an unlucky user would send it, against `serve` and the agent on the
//! real broker: messages that once stopped a processor, forged event types on every topic, a region
//! registration that would redirect its token, and a flood of idle connections.

mod common;

use std::io::BufRead;
use std::net::TcpStream;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chaoseater_schemas::bus::producer::RawMessage;
use chaoseater_schemas::bus::{BusContext, EventConsumer, EventProducer, Received};
use chaoseater_schemas::events::{Event, EventKind, RegionDispatched, RegionRegistered, RunRequested};
use chaoseater_schemas::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::samples::sample;
use chaoseater_schemas::topics::{Topic, headers};
use common::cluster::*;
use common::*;

fn block_on<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Runtime::new().expect("runtime").block_on(f)
}

fn publish(ctx: &BusContext, messages: &[RawMessage]) {
    block_on(async { EventProducer::new(ctx).expect("producer").publish_raw(messages).await.expect("published") });
}

/// `event`'s bytes sent to `topic` (whichever topic its type belongs to).
fn forged(ctx: &BusContext, topic: Topic, key: &str, event: &Event) -> RawMessage {
    RawMessage {
        topic: ctx.topics.name(topic),
        key: Some(key.as_bytes().to_vec()),
        payload: ctx.codec.encode(event).expect("encode"),
        headers: Vec::new(),
    }
}

fn dead_letters(ctx: &BusContext) -> Vec<Received> {
    let dlq = ctx.topics.name(Topic::Dlq);
    block_on(EventConsumer::read_to_end(ctx, "test-dlq-reader", &[&dlq])).expect("read the DLQ")
}

fn header(m: &Received, name: &str) -> Option<String> {
    m.headers.iter().find(|(k, _)| *k == name).map(|(_, v)| text(v))
}

/// A server that answers 200 to anything and counts the requests it got (and those with a token).
fn recording_server() -> (String, Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let (hits, auth) = (Arc::new(AtomicUsize::new(0)), Arc::new(Mutex::new(Vec::new())));
    let (hits_in, auth_in) = (hits.clone(), auth.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            hits_in.fetch_add(1, Ordering::SeqCst);
            let mut reader = std::io::BufReader::new(stream);
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if line.to_ascii_lowercase().starts_with("authorization:") {
                    auth_in.lock().expect("lock").push(line.trim().to_owned());
                }
                line.clear();
            }
            use std::io::Write;
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}");
        }
    });
    (addr, hits, auth)
}

fn latency_file(c: &Cluster, name: &str) -> String {
    c.write(&format!("{name}.yaml"), &experiment(name, "network_latency", "{latency_ms: 5, jitter_ms: 0}", ""))
        .to_str()
        .expect("path")
        .to_owned()
}

#[test]
fn an_oversized_message_and_a_control_character_command_leave_every_processor_running() {
    let mut c = Cluster::new("hostile");
    c.region("eu", "127.0.0.31", 1, "");
    c.serve("ledger,orchestrator,dispatcher,rollback");
    let ctx = context(&c.brokers, &c.prefix);

    // Near the broker's message limit: with the DLQ's headers it would not fit our producer's.
    let mut big = ctx.clone();
    big.properties.insert("message.max.bytes".into(), "1048576".into());
    let huge = RawMessage {
        topic: ctx.topics.name(Topic::Commands),
        key: Some(b"huge".to_vec()),
        payload: vec![0xAB; 999_000],
        headers: vec![("from".into(), b"another system".to_vec())],
    };
    publish(&big, &[huge]);
    // A valid command whose fault type is 250 KB of control characters.
    let Event::RunRequested(mut request) = sample(EventKind::RunRequested) else { unreachable!() };
    request.run_id = RunId::random();
    request.event_id = RunRequested::id_for(&request.run_id);
    request.regions = vec![RegionName::new("eu")];
    request.experiment.fault_type = "\u{1}".repeat(250_000);
    let bad_run = request.run_id.to_string();
    publish(&ctx, &[forged(&ctx, Topic::Commands, &bad_run, &Event::RunRequested(request))]);

    // The next valid run completes.
    let file = latency_file(&c, "after");
    let out = c.run(&["run", &file, "--regions", "eu", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    let rejected = c.results("RunRejected");
    let reason = rejected
        .iter()
        .find(|r| r["run_id"] == bad_run.as_str())
        .and_then(|r| r["reason"].as_str().map(str::to_owned))
        .expect("the control-character run is rejected");
    assert!(reason.contains("fault_type") && reason.len() < 1_000, "{} bytes: {}", reason.len(), &reason[..80]);

    let dead = dead_letters(&ctx);
    let copies: Vec<&Received> = dead.iter().filter(|m| m.key.as_deref() == Some(b"huge")).collect();
    assert_eq!(copies.len(), 1, "one DLQ copy, from one designated consumer");
    assert_eq!(header(copies[0], headers::DLQ_DROPPED).as_deref(), Some("payload"));
    assert_eq!(header(copies[0], headers::DLQ_PAYLOAD_BYTES).as_deref(), Some("999000"));
    assert_eq!(header(copies[0], "from").as_deref(), Some("another system"));
    assert!(c.services[0].0.try_wait().expect("status").is_none(), "serve is still running");
}

#[test]
fn forged_event_types_on_every_topic_are_dead_lettered_once_and_never_applied() {
    let mut c = Cluster::new("forged");
    let api = c.region("real", "127.0.0.32", 1, "");
    let (evil, hits, _) = recording_server();
    c.serve("ledger,orchestrator,dispatcher,circuit,rollback");
    let ctx = context(&c.brokers, &c.prefix);

    let register = |name: &str| {
        Event::RegionRegistered(RegionRegistered {
            event_id: EventId::derive("RegionRegistered", &[name, "forged"]),
            occurred_at: TimestampMs::now(),
            region: RegionName::new(name),
            endpoint: format!("http://{evil}"),
            priority: 9,
            metadata: Default::default(),
        })
    };
    let dispatch = |run: &str| {
        let run_id = RunId::new(run);
        let region = RegionName::new("real");
        let Event::RegionDispatched(sampled) = sample(EventKind::RegionDispatched) else { unreachable!() };
        let dispatch_id = DispatchId::for_region(&run_id, &region);
        Event::RegionDispatched(RegionDispatched {
            event_id: EventId::derive("RegionDispatched", &[dispatch_id.as_str()]),
            run_id,
            dispatch_id,
            region,
            ..sampled
        })
    };
    let Event::RunRequested(mut request) = sample(EventKind::RunRequested) else { unreachable!() };
    request.run_id = RunId::new("ghost-request");
    request.event_id = RunRequested::id_for(&request.run_id);
    request.regions = vec![RegionName::new("real")];
    let request = Event::RunRequested(request);
    let messages = [
        forged(&ctx, Topic::Commands, "evil", &register("evil")),
        forged(&ctx, Topic::Commands, "ghost-1", &dispatch("ghost-1")),
        forged(&ctx, Topic::Regions, "ghost-request", &request),
        forged(&ctx, Topic::Dispatch, "evil2", &register("evil2")),
        forged(&ctx, Topic::Results, "ghost-2", &dispatch("ghost-2")),
        forged(&ctx, Topic::Health, "ghost-request", &request),
        forged(&ctx, Topic::Rollback, "ghost-3", &dispatch("ghost-3")),
    ];
    publish(&ctx, &messages);

    // A real run after them: every processor has read past the forgeries when it completes.
    let file = latency_file(&c, "real");
    let out = c.run(&["run", &file, "--regions", "real", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    wait_until(Duration::from_secs(60), "seven dead letters", || dead_letters(&ctx).len() >= 7);
    // Give every consumer time to have written a copy it should not have (a run of the health monitor).
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
    }
    let dead = dead_letters(&ctx);
    let mut origins: Vec<String> = dead.iter().filter_map(|m| header(m, headers::DLQ_TOPIC)).collect();
    origins.sort();
    let name = |t: Topic| ctx.topics.name(t);
    let mut expected = vec![
        name(Topic::Commands),
        name(Topic::Commands),
        name(Topic::Regions),
        name(Topic::Dispatch),
        name(Topic::Results),
        name(Topic::Health),
        name(Topic::Rollback),
    ];
    expected.sort();
    assert_eq!(origins, expected, "one copy of each forgery");
    for m in &dead {
        let error = header(m, headers::DLQ_ERROR).unwrap_or_default();
        assert!(error.contains("does not belong on topic"), "{error}");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing was sent to the forged endpoint");
    for ghost in ["ghost-1", "ghost-2", "ghost-3", "ghost-request"] {
        assert_eq!(ran(&api, ghost), 0, "{ghost} never ran");
    }
    assert!(c.results("RunStarted").iter().all(|r| r["run_id"] != "ghost-request"));
    let out = c.run(&["region", "list"]);
    assert!(!text(&out.stdout).contains("evil"), "{}", text(&out.stdout));
}

#[test]
fn a_region_token_never_reaches_another_endpoint() {
    let mut c = Cluster::new("tokens");
    let api = c.region("real", "127.0.0.34", 1, "");
    let (evil, hits, auth) = recording_server();
    c.serve("ledger,orchestrator,dispatcher");
    // A first run pins the region's endpoint in the dispatcher (it is also pinned at registration).
    let file = latency_file(&c, "first");
    let out = c.run(&["run", &file, "--regions", "real", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    // An event alone tries to move the region to another endpoint.
    c.register("real", &format!("http://{evil}"), 1);
    let out = c.run(&["run", &file, "--regions", "real", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let id = run_ids(&out).remove(0);
    assert_eq!(ran(&api, &id), 1, "the run went to the region's own agent");
    assert_eq!(hits.load(Ordering::SeqCst), 0, "nothing reached the other endpoint");
    assert!(auth.lock().expect("lock").is_empty());
    let ctx = context(&c.brokers, &c.prefix);
    let refused = dead_letters(&ctx);
    assert!(
        refused.iter().any(|m| header(m, headers::DLQ_ERROR).is_some_and(|e| e.contains("[dispatcher.endpoints]"))),
        "the registration is dead-lettered with the way to move a region"
    );
}

/// Starts an agent with at most 1,024 file descriptors; returns it, its API and proxy addresses.
fn agent_with_few_fds(config: &std::path::Path, log: &std::path::Path) -> (KillOnDrop, String, String) {
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=1024:1024", "--"])
        .arg(env!("CARGO_BIN_EXE_chaoseater"))
        .args(["agent", "--config"])
        .arg(config)
        .env("CHAOSEATER_AGENT_TOKEN", AGENT_TOKEN)
        .env("CHAOSEATER_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn agent under prlimit");
    let found = addresses(&mut child, "agent API on");
    (KillOnDrop(child), found[0].clone(), found[1].clone())
}

/// `GET /health` with short deadlines: the status, or `None` when no answer came within 2 s.
fn quick_health(addr: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let socket: std::net::SocketAddr = addr.parse().ok()?;
    let mut stream = TcpStream::connect_timeout(&socket, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.write_all(format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.split_whitespace().nth(1).and_then(|s| s.parse().ok())
}

fn idle_connections(addr: &str, n: usize) -> Vec<TcpStream> {
    (0..n).filter_map(|_| TcpStream::connect(addr).ok()).collect()
}

#[test]
fn two_thousand_idle_connections_leave_the_agent_answering_with_a_bounded_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_target, target) = spawn_target("127.0.0.35");
    let config = agent_config(&dir.path().join("a"), "127.0.0.35", &target, "");
    let log = dir.path().join("a.log");
    let (_agent, api, proxy) = agent_with_few_fds(&config, &log);

    let mut idle = idle_connections(&api, 1_000);
    idle.extend(idle_connections(&proxy, 1_000));
    assert_eq!(idle.len(), 2_000, "the kernel queued every connection");
    let started = Instant::now();
    let (status, body) = http(&api, "GET", "/health", None, None);
    let took = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(took < Duration::from_secs(1), "/health took {took:?} behind 2,000 idle connections");
    let (status, body) = http(&proxy, "GET", "/health", None, None);
    assert_eq!(status, 200, "the proxy answers too: {body}");
    drop(idle);
    let size = std::fs::metadata(&log).expect("log").len();
    assert!(size < 100_000, "the log stayed small: {size} bytes");

    // With the connection limit set above the descriptors there are, accepting fails (EMFILE): the
    // agent backs off and logs it at most once per 10 s, and answers again once idle ones time out.
    let limits = "[limits.api]\nmax_connections = 5000\nheader_read_timeout_s = 1\nidle_timeout_s = 1\n";
    let config = agent_config(&dir.path().join("b"), "127.0.0.35", &target, limits);
    let log = dir.path().join("b.log");
    let (_agent, api, _) = agent_with_few_fds(&config, &log);
    // About 1,000 accepted until descriptors run out, the rest queued by the kernel.
    let idle = idle_connections(&api, 1_500);
    let answered = (0..40).any(|_| quick_health(&api) == Some(200));
    assert!(answered, "the agent answers once the idle connections time out");
    drop(idle);
    let logged = std::fs::read_to_string(&log).expect("log");
    let lines = logged.lines().filter(|l| l.contains("Cannot accept connections")).count();
    assert!(lines <= 3, "{lines} accept-error lines; the log is {} bytes", logged.len());
    assert!(logged.len() < 100_000, "the log stayed small: {} bytes", logged.len());
}

#[test]
fn the_agent_checks_the_token_strictly_and_before_the_body() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_target, target) = spawn_target("127.0.0.36");
    let config = agent_config(&dir.path().join("a"), "127.0.0.36", &target, "");
    let (agent, api, _) = spawn_agent(&config);
    let _agent = KillOnDrop(agent);
    let body = r#"{"name":"x","layer":"infrastructure","fault_type":"network_latency","duration":1}"#;
    // (Trailing spaces never reach the server: HTTP strips a header value's surrounding whitespace.)
    for token in [format!(" {AGENT_TOKEN}"), format!("{AGENT_TOKEN} x"), format!("{AGENT_TOKEN}x")] {
        let (status, _) = http(&api, "POST", "/api/v1/experiments", Some(body), Some(&token));
        assert_eq!(status, 401, "token {token:?}");
    }
    // A 2 MB body without a token is refused from its headers: the answer comes before it is sent.
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(&api).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let head = format!(
        "POST /api/v1/experiments HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\nContent-Length: 2000000\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).expect("send head");
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer).expect("an answer before the body");
    assert!(text(&answer[..n]).starts_with("HTTP/1.1 401"), "{}", text(&answer[..n]));
    // Ids that would leave the agent's directory or break its id log are refused.
    for id in ["../escape", "a\nb", "x/y"] {
        let request = format!(
            r#"{{"id":{},"name":"x","layer":"infrastructure","fault_type":"network_latency","duration":1}}"#,
            serde_json::to_string(id).expect("json")
        );
        let (status, answer) = http(&api, "POST", "/api/v1/experiments", Some(&request), Some(AGENT_TOKEN));
        assert_eq!(status, 400, "{id:?}: {answer}");
    }
}

#[test]
fn runs_sharing_a_busy_region_queue_and_all_complete() {
    let mut c = Cluster::new("queued");
    let api = c.region("busy", "127.0.0.37", 1, "");
    c.serve("ledger,orchestrator,dispatcher");
    // Ten 3-second runs at once on one region (an agent runs one experiment at a time): ~40 s of work,
    // past one dispatch's timeout (duration + 30 s). Each waits its turn at the dispatcher, its timeout
    // counted from its start; polling a busy agent instead, the last ones timed out.
    let mut yaml = String::from("experiments:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - name: q{i}\n    layer: infrastructure\n    fault_type: network_latency\n    duration: 3\n    parameters: {{latency_ms: 5}}\n"
        ));
    }
    let file = c.write("queued.yaml", &yaml);
    let out = c.run(&["run", file.to_str().expect("path"), "--regions", "busy", "--timeout", "300"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert_eq!(stdout.matches("(parallel): COMPLETED").count(), 10, "{stdout}");
    for id in run_ids(&out) {
        assert_eq!(ran(&api, &id), 1, "{id} ran once");
    }
}
