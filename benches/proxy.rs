//! The agent's proxy overhead with no fault active: the same requests sent straight to the demo target
//! and through the proxy, in the same run, interleaved so both see the same machine.
//!
//! cargo bench --bench proxy            (CHAOSEATER_BENCH_SECONDS=N for longer throughput phases)
//!
//! Prints added p50/p99 latency (target: p50 under 200 µs) and the throughput kept (target: ≥ 80%), and
//! for reference the throughput a bare layer-4 relay keeps in the same run.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chaoseater_producers::agent::{Agent, AgentConfig};
use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig};
use chaoseater_producers::http::HttpClient;
use hyper::Method;
use serde_json::json;

const LATENCY_ROUNDS: usize = 3_000;
const CONCURRENCY: usize = 16;

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1e6
}

async fn one(client: &HttpClient, url: &str, body: &serde_json::Value) -> Duration {
    let started = Instant::now();
    let answer = client.json(Method::POST, url, Some(body), None, Duration::from_secs(10)).await.expect("answer");
    assert_eq!(answer.status, 200);
    started.elapsed()
}

async fn throughput(url: Arc<String>, body: Arc<serde_json::Value>, seconds: f64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY {
        let (url, body, done) = (url.clone(), body.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let client = HttpClient::new();
            while Instant::now() < deadline {
                one(&client, &url, &body).await;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    done.load(Ordering::Relaxed) as f64 / seconds
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds: f64 = std::env::var("CHAOSEATER_BENCH_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3.0);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind target");
    let target: SocketAddr = listener.local_addr().expect("addr");
    tokio::spawn(demo_target::serve(
        Arc::new(DemoTarget::new(DemoTargetConfig::default())),
        listener,
        std::future::pending(),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("token"), "bench").expect("token");
    let config = AgentConfig::parse(&format!(
        "listen = \"127.0.0.1:0\"\nproxy_listen = \"127.0.0.1:0\"\nupstream = \"http://{target}\"\nstate_dir = \"{d}/state\"\ntoken_file = \"{d}/token\"\n[probe]\nset = \"http://{target}/probe-set\"\n",
        d = dir.path().display()
    ))
    .expect("config");
    let agent = Agent::start(config).await.expect("agent");
    // Reference: a bare layer-4 relay (tokio's copy_bidirectional), the cheapest proxy a userspace
    // process can be; what it keeps is the ceiling for any proxy on this machine.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("relay");
    let relay_addr = relay.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (mut inbound, _) = relay.accept().await.expect("accept");
            tokio::spawn(async move {
                let _ = inbound.set_nodelay(true);
                let mut outbound = tokio::net::TcpStream::connect(target).await.expect("connect");
                let _ = outbound.set_nodelay(true);
                let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
            });
        }
    });
    let direct = format!("http://{target}/v1/models/demo:predict");
    let relayed = format!("http://{relay_addr}/v1/models/demo:predict");
    let proxied = format!("http://{}/v1/models/demo:predict", agent.proxy_addr);
    let set = demo_target::ProbeSet::demo("demo", 100);
    let body = json!({ "instances": set.instances[..4] });

    let client = HttpClient::new();
    for _ in 0..200 {
        one(&client, &direct, &body).await;
        one(&client, &proxied, &body).await;
    }
    let (mut d, mut p) = (Vec::with_capacity(LATENCY_ROUNDS), Vec::with_capacity(LATENCY_ROUNDS));
    for _ in 0..LATENCY_ROUNDS {
        d.push(one(&client, &direct, &body).await);
        p.push(one(&client, &proxied, &body).await);
    }
    d.sort_unstable();
    p.sort_unstable();
    println!("proxy overhead, no fault active ({LATENCY_ROUNDS} sequential requests each, 4 records per request)");
    println!(
        "  latency p50: direct {:>8.1} µs   via proxy {:>8.1} µs   added {:>7.1} µs (target < 200)",
        percentile(&d, 0.5),
        percentile(&p, 0.5),
        percentile(&p, 0.5) - percentile(&d, 0.5)
    );
    println!(
        "  latency p99: direct {:>8.1} µs   via proxy {:>8.1} µs   added {:>7.1} µs",
        percentile(&d, 0.99),
        percentile(&p, 0.99),
        percentile(&p, 0.99) - percentile(&d, 0.99)
    );
    let body = Arc::new(body);
    let direct_rps = throughput(Arc::new(direct), body.clone(), seconds).await;
    let proxied_rps = throughput(Arc::new(proxied), body.clone(), seconds).await;
    let relayed_rps = throughput(Arc::new(relayed), body, seconds).await;
    println!(
        "  throughput ({CONCURRENCY} concurrent clients, {seconds} s each): direct {direct_rps:>8.0} req/s   via proxy {proxied_rps:>8.0} req/s   kept {:.1}% (target ≥ 80)",
        proxied_rps / direct_rps * 100.0
    );
    println!(
        "  reference: a bare layer-4 relay (no HTTP, no fault checks) {relayed_rps:>8.0} req/s   kept {:.1}%",
        relayed_rps / direct_rps * 100.0
    );
    agent.shutdown().await;
}
