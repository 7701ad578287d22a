//! `chaoseater demo`: the README's first command. With nothing installed it starts the embedded broker,
//! three regions (a demo ML target and an agent each, on 127.0.0.2–4, with different defences), the
//! processors, and runs the example campaign (a data, a model and two infrastructure experiments, in
//! parallel, sequential and blast-radius modes), showing progress and each run's aggregate report. It
//! also sends one malformed message to show the dead-letter path, and ends with an A/B test
//! (`examples/ab-test.yaml`: input validation against no defence under one data fault, 6 samples each). Everything runs in this process and
//! stops with it: nothing is left behind.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use chaoseater_producers::agent::config::InnerHop;
use chaoseater_producers::agent::{Agent, AgentConfig};
use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig, Resilience};
use chaoseater_producers::gateway::{AbOverrides, RunOverrides, parse_ab_test, parse_experiments};
use chaoseater_schemas::bus::producer::RawMessage;
use chaoseater_schemas::bus::{EventConsumer, EventProducer, Shutdown, StartFrom};
use chaoseater_schemas::events::{Event, RegionRegistered};
use chaoseater_schemas::ids::{RegionName, TimestampMs};
use chaoseater_schemas::topics::Topic;
use chaoseater_sinks::grafana::AlertOptions;
use chaoseater_sinks::grafana::sink::GrafanaSink;
use chaoseater_sinks::metrics::{ServiceHealth, names};

use super::follow::{self, RunView};
use crate::cli::DemoArgs;
use crate::config::Config;
use crate::{broker, commands};

const CAMPAIGN: &str = include_str!("../../examples/campaign.yaml");
const AB_TEST: &str = include_str!("../../examples/ab-test.yaml");
/// Samples per variant of the demo's A/B test: enough for a clear difference to be significant at the
/// judge's 98% confidence (6 against 6 all apart: p = 0.005), few enough to keep the demo short.
const AB_SAMPLES: i64 = 6;
/// The A/B test's samples run a pair at a time, a few seconds a pair.
const AB_TIMEOUT: Duration = Duration::from_secs(120);
const DEADLINE: Duration = Duration::from_secs(60);
/// The campaign must be done well within the two minutes the demo promises.
const RUNS_TIMEOUT: Duration = Duration::from_secs(90);

/// The demo's regions: name, priority, loopback address, the gateway's defences.
const REGIONS: [(&str, i32, &str, &str); 3] = [
    ("eu-west", 3, "127.0.0.2", "validate,retry"),
    ("us-east", 2, "127.0.0.3", "none"),
    ("ap-south", 1, "127.0.0.4", "retry,fallback"),
];

/// One region: its target and its agent, both in this process.
struct Region {
    name: &'static str,
    priority: i32,
    resilience: &'static str,
    agent: Agent,
}

async fn start_region(
    (name, priority, ip, resilience): (&'static str, i32, &'static str, &'static str),
    state_dir: &std::path::Path,
    token: &str,
) -> Result<Region> {
    // A model server (no defences of its own) behind a gateway with the region's defences, the agent on
    // both hops: data faults before the gateway, model and infrastructure faults between the two.
    let bind = |what: &'static str| async move {
        tokio::net::TcpListener::bind((ip, 0)).await.with_context(|| format!("binding the demo {what} on {ip}"))
    };
    let model_listener = bind("model server").await?;
    let model = model_listener.local_addr()?;
    tokio::spawn(demo_target::serve(
        Arc::new(DemoTarget::new(DemoTargetConfig::default())),
        model_listener,
        Shutdown::new(),
    ));
    // Bound before the agent starts, served once the agent's inner hop has its address.
    let gateway_listener = bind("gateway").await?;
    let gateway = gateway_listener.local_addr()?;
    let dir = state_dir.join("demo").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("token"), token)?;
    let ip: std::net::IpAddr = ip.parse().with_context(|| format!("demo region address {ip}"))?;
    // Short probe windows and caps sized for a demo: each experiment takes seconds.
    let mut agent = AgentConfig::new(format!("http://{gateway}"), format!("http://{model}/probe-set"));
    agent.listen = (ip, 0).into();
    agent.proxy_listen = (ip, 0).into();
    agent.inner =
        Some(InnerHop { listen: (ip, 0).into(), upstream: format!("http://{model}"), alternates: Default::default() });
    agent.state_dir = dir.join("state");
    agent.token_file = Some(dir.join("token"));
    agent.probe.interval_ms = 40;
    agent.probe.baseline_ms = 800;
    agent.probe.window_ms = 250;
    agent.slo.stability_window_ms = 750;
    agent.slo.recovery_timeout_ms = 10_000;
    agent.caps.max_memory_mb = 256;
    agent.caps.max_disk_bytes = 64 << 20;
    agent.caps.max_duration_s = 60.0;
    agent.validate().map_err(anyhow::Error::msg)?;
    let agent = Agent::start(agent).await?;
    let inner = agent.core.inner.as_ref().map(|hop| hop.addr).context("the agent's inner hop")?;
    let config = DemoTargetConfig {
        resilience: Resilience::parse(resilience).map_err(anyhow::Error::msg)?,
        upstream: Some(format!("http://{inner}")),
        ..DemoTargetConfig::default()
    };
    tokio::spawn(demo_target::serve(Arc::new(DemoTarget::new(config)), gateway_listener, Shutdown::new()));
    Ok(Region { name, priority, resilience, agent })
}

pub async fn run(args: DemoArgs, config: &Config) -> Result<()> {
    let started = Instant::now();
    let (name, text) = match &args.experiments {
        Some(path) => (path.display().to_string(), std::fs::read_to_string(path)?),
        None => ("examples/campaign.yaml".to_owned(), CAMPAIGN.to_owned()),
    };
    let requests =
        parse_experiments(&name, &text, &RunOverrides::default(), &commands::submit::requester(), TimestampMs::now())
            .map_err(|e| crate::Exit(crate::EXIT_INVALID_INPUT, e.to_string()))?;
    let ab_request = parse_ab_test(
        "examples/ab-test.yaml",
        AB_TEST,
        &AbOverrides { samples: Some(AB_SAMPLES) },
        &commands::submit::requester(),
        TimestampMs::now(),
    )
    .map_err(|e| crate::Exit(crate::EXIT_INVALID_INPUT, e.to_string()))?;

    println!("== ChaosEater demo ==");
    let (ctx, embedded) = broker::service_context(config)?;
    commands::ensure_topics(&ctx, embedded.is_some()).await?;
    match &embedded {
        Some(_) => println!("broker     embedded (librdkafka mock cluster) at {}", ctx.brokers),
        None => println!("broker     {}", ctx.brokers),
    }

    // Three regions, each a demo ML target behind an agent.
    let token = uuid_token();
    let mut regions = Vec::new();
    for spec in REGIONS {
        regions.push(start_region(spec, &config.state_dir, &token).await?);
    }
    println!("regions    (each: agent ─▶ gateway with the region's defences ─▶ agent's inner hop ─▶ model server)");
    for r in &regions {
        println!(
            "  {:<9} priority {}  agent http://{}  proxy http://{}  gateway defences: {}",
            r.name, r.priority, r.agent.api_addr, r.agent.proxy_addr, r.resilience
        );
    }

    // Register them, then start the processors: they read the registry before any command.
    let producer = EventProducer::new(&ctx)?;
    let at = TimestampMs::now();
    let registrations: Vec<Event> = regions
        .iter()
        .map(|r| {
            Event::RegionRegistered(RegionRegistered {
                event_id: RegionRegistered::id_for(&RegionName::new(r.name), at),
                occurred_at: at,
                region: RegionName::new(r.name),
                endpoint: format!("http://{}", r.agent.api_addr),
                priority: r.priority,
                metadata: [("demo".to_owned(), "true".to_owned())].into(),
            })
        })
        .collect();
    producer.publish_all(&registrations).await?;

    // Every component `serve` runs by default but the Grafana sink (the demo writes Grafana's files
    // instead), chosen from the same catalog, with settings sized for a demo: health every 2 s, metrics on a free port, the regions'
    // token in a tokens file of its own.
    let mut demo_config = config.clone();
    demo_config.dispatcher.health_interval_s = 2.0;
    demo_config.sinks.metrics_listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let tokens_file = config.state_dir.join("demo").join("tokens.toml");
    let tokens: String = REGIONS.iter().map(|(name, ..)| format!("\"{name}\" = \"{token}\"\n")).collect();
    std::fs::write(&tokens_file, tokens)?;
    demo_config.dispatcher.tokens_file = Some(tokens_file);
    demo_config.dispatcher.tokens_from_environment = false;
    // Segments every second instead of every ten: the A/B report reaches the history before the demo
    // stops, so `ab report` finds it afterwards.
    demo_config.history.max_age_s = 1.0;
    let shutdown = Shutdown::new();
    let mut handles = Vec::new();
    let (mut metrics_addr, mut started_names) = (None, Vec::new());
    let mut catalog = commands::serve::catalog(&demo_config, &ServiceHealth::new());
    // The demo trains the optimizer itself, once, at the end: a background trainer would compete with the
    // campaign for the CPU.
    catalog.retain(|c| c.name() != GrafanaSink::NAME && c.name() != chaoseater_processors::optimizer::Trainer::NAME);
    for (component, duty) in commands::serve::select(catalog, None)? {
        let name = component.name();
        started_names.push(name);
        let env = commands::serve::env(&ctx, &demo_config, embedded.is_some(), name, duty);
        let mut prepared = component.prepare(env).with_context(|| format!("preparing {name}"))?;
        metrics_addr = metrics_addr.or(prepared.listening());
        handles.push(prepared.start(shutdown.clone()).with_context(|| format!("starting {name}"))?);
    }
    let metrics_addr = metrics_addr.context("the metrics sink did not listen")?;
    println!(
        "processors {} (the dispatcher with its health monitor; state in {})",
        started_names.join(", "),
        config.state_dir.display()
    );
    println!("metrics    http://{metrics_addr}/metrics (Prometheus text format, while the demo runs)");
    let grafana_dir = config.state_dir.join("grafana");
    std::fs::create_dir_all(&grafana_dir)?;
    commands::grafana::write_dashboard(&grafana_dir.join("dashboard.json"))?;
    let rule_files = commands::grafana::write_rules(&grafana_dir, &AlertOptions::default())?;
    println!(
        "grafana    dashboard {} and alert rules {}",
        grafana_dir.join("dashboard.json").display(),
        rule_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    );

    let events: Vec<Event> = requests.iter().cloned().map(Event::RunRequested).collect();
    producer.publish_all(&events).await?;
    println!("\nsubmitted {} runs from {name}:", requests.len());
    for request in &requests {
        let e = &request.experiment;
        println!(
            "  {}  {:<20} {:<15} {:<18} {:<13} over {}",
            request.run_id,
            e.name,
            e.layer.as_str(),
            e.fault_type,
            request.mode.as_str(),
            request.regions.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
        );
    }
    println!();
    let views: Vec<RunView> = requests
        .iter()
        .map(|r| RunView::new(r.run_id.clone(), &r.experiment.name, r.experiment.duration_ms, r.min_score))
        .collect();
    let finished = follow::follow(&ctx, views, RUNS_TIMEOUT).await;

    // A malformed command, as a broken producer elsewhere might send: it lands in the DLQ, nothing stops.
    let marker = format!("malformed-{}", TimestampMs::now().0);
    producer
        .publish_raw(&[RawMessage {
            topic: ctx.topics.name(Topic::Commands),
            key: Some(marker.clone().into_bytes()),
            payload: b"{\"this is\": \"not avro\"}".to_vec(),
            headers: Vec::new(),
        }])
        .await?;
    let dlq = EventConsumer::assign(
        &ctx,
        "chaoseater-demo",
        &[&ctx.topics.name(Topic::Dlq)],
        &Default::default(),
        StartFrom::Beginning,
    )
    .await?;
    let dead = wait_for_dead_letter(&dlq, &marker).await?;

    // What a Prometheus scrape sees now.
    let scraped = scrape(metrics_addr, requests.len()).await;

    // The A/B test, through the coordinator and the same saga as every run.
    producer.publish(&Event::AbTestRequested(ab_request.clone())).await?;
    println!("\n{}", commands::ab::describe(&ab_request));
    let ab_report = commands::ab::follow(&ctx, &ab_request, AB_TIMEOUT).await;
    if ab_report.is_ok() {
        wait_for_history(&config.history_dir(), &ab_request.run_id).await;
    }

    // Where a plan may put experiments, as the registry, the circuits and the agents tell it now (the
    // optimizer's section plans after the agents have stopped).
    let plan_space = commands::plan::space(&ctx).await;

    // Stop everything before reporting: processors, then agents (each reverts what it injected).
    shutdown.trigger();
    for handle in handles {
        handle.join().await?;
    }
    for region in regions {
        region.agent.shutdown().await;
    }
    drop(dlq);
    drop(producer);

    let finished = finished?;
    println!("\n== reports ==");
    let mut out = std::io::stdout().lock();
    for view in &finished {
        follow::print_report(view, &mut out)?;
        let threshold = view.min_score.unwrap_or(commands::runs::DEFAULT_MIN_SCORE);
        use std::io::Write;
        writeln!(
            out,
            "  gate (min score {threshold}): {}\n",
            if view.passes(threshold) { "passed" } else { "FAILED" }
        )?;
    }
    drop(out);
    println!("a scrape of http://{metrics_addr}/metrics during the demo (resilience scores):");
    match scraped {
        Ok(text) => {
            for line in text
                .lines()
                .filter(|l| l.strip_prefix(names::RESILIENCE_SCORE).is_some_and(|rest| rest.starts_with('{')))
            {
                println!("  {line}");
            }
        }
        Err(e) => println!("  (scrape failed: {e})"),
    }
    println!();
    println!("malformed message sent to {} -> dead-lettered:", ctx.topics.name(Topic::Commands));
    println!("  {}", commands::tail::render(&ctx.codec, &dead));
    println!("\n== A/B test ==");
    let ab_report = ab_report?;
    commands::ab_report::print(&ab_report, commands::ab_report::Format::Text, &mut std::io::stdout().lock())?;
    println!("  again, from the history: chaoseater ab report {} [--format markdown|json]", ab_report.run_id);
    println!("\n== optimizer ==");
    if let Err(e) = optimizer_section(config, &ctx, plan_space).await {
        println!("  (the optimizer could not run: {e:#})");
    }
    println!(
        "\nhistory    {} (Parquet; try: chaoseater sql \"SELECT experiment_name, region, status, resilience_score FROM experiments ORDER BY finished_at DESC LIMIT 10\")",
        config.history_dir().display()
    );
    println!("\ndemo finished in {:.1} s; everything it started has stopped.", started.elapsed().as_secs_f64());
    drop(embedded);
    Ok(())
}

/// Trains the optimizer on the demo's history, seeded with labelled synthetic runs where it has too few of
/// its own, and shows a prediction, a suggestion, the analysis's top findings and one plan proposal.
async fn optimizer_section(
    config: &Config,
    ctx: &chaoseater_schemas::bus::BusContext,
    plan_space: Result<(Vec<chaoseater_processors::optimizer::plan::RegionLimits>, Vec<String>)>,
) -> Result<()> {
    use chaoseater_processors::optimizer::{self, ForestParams, Model, Target, synthetic, train};
    let analytics = chaoseater_processors::analytics::Analytics::open(&config.history_dir()).await?;
    let window = optimizer::dataset::Window::newest(&analytics, None).await?;
    let own = optimizer::dataset::load(&analytics, &window).await?;
    let corruption = own.iter().filter(|s| s.point.fault_type == "data_corruption").count();
    let mut samples = own.clone();
    let mut seeded = 0;
    if corruption < 5 * train::MIN_ROWS {
        let today = TimestampMs::now().0 as f64 / 86_400_000.0;
        let synthetic = synthetic::labelled(200, 0.6, 3_000.0, today - 3.0, 17);
        seeded = synthetic.len();
        samples.extend(synthetic);
        samples.sort_by(|a, b| a.finished_day.total_cmp(&b.finished_day));
    }
    let model = tokio::task::spawn_blocking(move || {
        Model::train(&samples, &[Target::ResilienceScore], None, &ForestParams::default(), &mut |_, _, _| {})
            .map(|m| (m, samples))
    })
    .await??;
    let (model, samples) = model;
    let path = model.save(&config.state_dir)?;
    println!(
        "trained on {} results of this history{} in {:.1} s (saved: {}):",
        own.len(),
        if seeded > 0 {
            format!(" + {seeded} labelled synthetic ones (tag source=synthetic: too few of its own)")
        } else {
            String::new()
        },
        model.seconds,
        path.display()
    );
    for s in model.scopes.iter().filter(|s| s.cv.rows >= train::MIN_ROWS) {
        println!(
            "  {:<18} {:>5} results  CV MAE {:>5.2} (baseline, the mean of the last 50: {:>5.2})  R² {:>5.2}  90% intervals held {:.0}%  {}",
            s.scope.to_string(),
            s.cv.rows,
            s.cv.model_mae,
            s.cv.baseline_mae,
            s.cv.model_r2,
            100.0 * s.cv.coverage,
            if s.cv.beats_baseline() { "used" } else { "not used: the baseline answers" }
        );
    }
    let question = |params: &[(&str, &str)], region: Option<&str>| optimizer::query::Question {
        fault_type: "data_corruption".into(),
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        region: region.map(str::to_owned),
        ..Default::default()
    };
    if let Some(p) = model.predict(&question(&[("corruption_rate", "0.3")], Some("us-east")))?.first() {
        println!(
            "predict    data_corruption corruption_rate=0.3 in us-east: {:.1}, 90% interval [{:.1}, {:.1}], {} past runs near",
            p.value, p.lower, p.upper, p.near_runs
        );
    }
    let suggestion = model.suggest(&question(&[], None), 70.0)?;
    println!(
        "suggest    the harshest data_corruption still scoring 70 (lower bound, every region): {} (searched {} points)",
        suggestion.params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(", "),
        suggestion.points_searched
    );
    let analysis = optimizer::analyze::analyze(&samples, &window);
    println!(
        "analyze    {} weak points, {} anomalies, {} recommendations; the first:",
        analysis.weak_points.len(),
        analysis.anomalies.len(),
        analysis.recommendations.len()
    );
    for r in analysis.recommendations.iter().take(2) {
        println!("  [{}] {}\n    {}", r.category.as_str(), r.title, r.evidence);
    }
    let (regions, notes) = plan_space?;
    let request = optimizer::plan::PlanRequest {
        budget: 1,
        regions,
        fault_types: Vec::new(),
        target_score: 70.0,
        skip: Vec::new(),
    };
    let mut plan = model.plan(&request)?;
    plan.notes.splice(0..0, notes);
    for (i, line) in commands::plan::plan_text(&plan).lines().filter(|l| !l.is_empty()).enumerate() {
        println!("{}{line}", if i == 0 { "plan       " } else { "  " });
    }
    let events: Vec<Event> = plan
        .proposals
        .iter()
        .map(|p| p.event(&model.model_id, TimestampMs::now(), "cli").map(Event::ExperimentProposed))
        .collect::<Result<_, _>>()?;
    EventProducer::new(ctx)?.publish_all(&events).await?;
    println!("  published as ExperimentProposed; with `serve` running, `chaoseater plan approve ID` would run it");
    println!(
        "  try: chaoseater optimizer predict data_corruption --param corruption_rate=0.5; optimizer analyze; plan"
    );
    Ok(())
}

/// Fetches the metrics page, waiting until the exporter has seen every run's results.
async fn scrape(addr: std::net::SocketAddr, runs: usize) -> Result<String> {
    let client = chaoseater_net::http::HttpClient::new();
    let url = format!("http://{addr}/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = client.json(hyper::Method::GET, &url, None, None, Duration::from_secs(5)).await?;
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let completed: f64 = text
            .lines()
            .filter(|l| l.strip_prefix(names::RUNS_TOTAL).is_some_and(|rest| rest.starts_with('{')))
            .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
            .sum();
        if completed >= runs as f64 || Instant::now() > deadline {
            return Ok(text);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (a few seconds at most) until the A/B report is in the history, so that `ab report` finds it
/// once the demo has stopped; says so when it is not.
async fn wait_for_history(dir: &std::path::Path, test_id: &chaoseater_schemas::ids::RunId) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(analytics) = chaoseater_processors::analytics::Analytics::open(dir).await
            && matches!(analytics.ab_report(test_id.as_str()).await, Ok(Some(_)))
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    eprintln!("the A/B report did not reach the history at {} within 20 s", dir.display());
}

/// A token for this demo's agents, never printed.
fn uuid_token() -> String {
    format!("demo-{}", chaoseater_schemas::ids::RunId::random())
}

/// Waits for the dead letter keyed `marker` (a broker that outlives one demo holds older ones too).
async fn wait_for_dead_letter(dlq: &EventConsumer, marker: &str) -> Result<chaoseater_schemas::bus::Received> {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        for message in dlq.next_batch(100, Duration::from_millis(500)).await? {
            if message.key.as_deref() == Some(marker.as_bytes()) {
                return Ok(message);
            }
        }
    }
    bail!("the malformed message did not reach the dead-letter topic within {} s", DEADLINE.as_secs())
}
