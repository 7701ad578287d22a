//! A real Prometheus scrapes the exporter during an end-to-end run, and every PromQL expression of the
//! dashboard and the alert rules returns data from its HTTP API; promtool checks and unit-tests the rules
//! and checks the compose stack's Prometheus configuration.
//! Needs CHAOSEATER_PROMETHEUS, CHAOSEATER_PROMTOOL and CHAOSEATER_PUSHGATEWAY (set by .ci/run, which
//! installs Debian's packages).

mod common;

use std::time::Duration;

use common::cluster::Cluster;
use common::prom::{panel_exprs, query};
use common::*;

fn tool(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| panic!("{var} is not set: run the suite with `bash .ci/run`"))
}

fn root() -> std::path::PathBuf {
    chaoseater_schemas::package_dir!()
}

#[test]
fn promtool_checks_the_rules_and_the_low_score_alert_fires() {
    let rules = root().join("deploy/prometheus/chaoseater-rules.yml");
    let out = run(std::process::Command::new(tool("CHAOSEATER_PROMTOOL")).arg("check").arg("rules").arg(&rules));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    let out = run(std::process::Command::new(tool("CHAOSEATER_PROMTOOL"))
        .arg("test")
        .arg("rules")
        .arg(root().join("deploy/prometheus/chaoseater-rules.test.yml")));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
}

/// The compose stack's Prometheus configuration (docker-compose.yml mounts deploy/prometheus), with the
/// rules file it loads.
#[test]
fn promtool_checks_the_compose_stacks_prometheus_config() {
    let config = root().join("deploy/prometheus/prometheus.yml");
    let out = run(std::process::Command::new(tool("CHAOSEATER_PROMTOOL")).arg("check").arg("config").arg(&config));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("chaoseater-rules.yml"), "the rules file is loaded: {}", text(&out.stdout));
}

#[test]
fn prometheus_scrapes_the_exporter_and_every_dashboard_and_alert_query_returns_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = unique_prefix("prom");
    let brokers = brokers();
    let metrics_port = free_port();
    std::fs::write(
        dir.path().join("chaoseater.toml"),
        format!("[sinks]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
    )
    .expect("config");
    let cmd = || {
        let mut cmd = bin();
        cmd.current_dir(dir.path())
            .args(["--brokers", &brokers, "--topic-prefix", &prefix])
            .env("CHAOSEATER_AGENT_TOKEN", AGENT_TOKEN);
        cmd
    };
    // One region with a strict target: a model outage scores below 70 (the low-score alert's data).
    let (_target, target) = spawn_target("127.0.0.13");
    let (agent, api, _) = spawn_agent(&agent_config(&dir.path().join("agent"), "127.0.0.13", &target, ""));
    let _agent = KillOnDrop(agent);
    let serve = cmd()
        .args(["serve", "--processors", "orchestrator,dispatcher,ab,metrics"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("serve");
    let _serve = KillOnDrop(serve);
    let out = run(cmd().args(["region", "add", "solo", "--endpoint", &format!("http://{api}")]));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Prometheus scraping the exporter every second, with our rules loaded.
    let prom_port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: chaoseater\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            root().join("deploy/prometheus/chaoseater-rules.yml").display()
        ),
    )
    .expect("prometheus.yml");
    let prometheus = std::process::Command::new(tool("CHAOSEATER_PROMETHEUS"))
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("tsdb").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("prometheus");
    let _prometheus = KillOnDrop(prometheus);
    let prom = format!("127.0.0.1:{prom_port}");
    // Prometheus answers 503 until it is ready: wait for /-/ready before querying.
    wait_until(Duration::from_secs(60), "Prometheus to be ready", || {
        std::net::TcpStream::connect(&prom).is_ok() && http(&prom, "GET", "/-/ready", None, None).0 == 200
    });
    wait_until(Duration::from_secs(60), "Prometheus to scrape the exporter", || {
        query(&prom, "up{job=\"chaoseater\"}").iter().any(|r| r["value"][1] == "1")
    });

    let file = dir.path().join("run.yaml");
    std::fs::write(
        &file,
        "experiments:\n  - name: outage\n    layer: model\n    fault_type: model_unavailable\n    duration: 1\n    parameters: {failure_rate: 1.0}\n",
    )
    .expect("experiment");
    let out = run(cmd().args(["run"]).arg(&file).args(["--min-score", "0", "--timeout", "120"]));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    // An A/B test in the one region (two strengths of the outage, one sample at a time): the verdict
    // panel's data.
    let ab = dir.path().join("ab.yaml");
    std::fs::write(
        &ab,
        "ab:\n  samples: 3\n  metrics: [resilience_score]\n  variant_a: {label: full, regions: [solo], experiment: full}\n  variant_b: {label: half, regions: [solo], experiment: half}\nexperiments:\n  - {name: full, layer: model, fault_type: model_unavailable, duration: 1, parameters: {failure_rate: 1.0}}\n  - {name: half, layer: model, fault_type: model_unavailable, duration: 1, parameters: {failure_rate: 0.5}}\n",
    )
    .expect("A/B file");
    let out = run(cmd().args(["ab"]).arg(&ab).args(["--timeout", "120"]));
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));

    let mut exprs = panel_exprs();
    let alerts = chaoseater_sinks::grafana::alert_expressions(&chaoseater_sinks::grafana::AlertOptions::default());
    // The low-score alert holds as written (the outage scored below 70); the error-rate alert's threshold
    // needs a sustained error rate, so its rate is queried without the comparison.
    exprs.push(alerts[0].2.clone());
    exprs.push(alerts[1].2.split(" > ").next().expect("lhs").to_owned());
    for expr in &exprs {
        wait_until(Duration::from_secs(30), &format!("data for {expr}"), || !query(&prom, expr).is_empty());
    }

    // The exporter's page follows Prometheus's naming conventions, as promtool checks them.
    let (status, page) = http(&format!("127.0.0.1:{metrics_port}"), "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{page}");
    let mut check = std::process::Command::new(tool("CHAOSEATER_PROMTOOL"))
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    std::io::Write::write_all(&mut check.stdin.take().expect("stdin"), page.as_bytes()).expect("page to promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(out.status.success(), "promtool check metrics:\n{}{}\n{page}", text(&out.stdout), text(&out.stderr));
}

/// `chaoseater run` with the Python tool's `prometheus:` block pushes each run's results to a real
/// Pushgateway (Debian's `prometheus-pushgateway`, CHAOSEATER_PUSHGATEWAY), under the file's job name.
#[test]
fn run_pushes_each_runs_results_to_the_pushgateway_of_its_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let gateway = std::process::Command::new(tool("CHAOSEATER_PUSHGATEWAY"))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pushgateway");
    let _gateway = KillOnDrop(gateway);
    let pg = format!("127.0.0.1:{port}");
    wait_until(Duration::from_secs(60), "the Pushgateway to be ready", || {
        std::net::TcpStream::connect(&pg).is_ok() && http(&pg, "GET", "/-/ready", None, None).0 == 200
    });

    let mut c = Cluster::new("push");
    c.region("solo", "127.0.0.14", 1, "");
    c.serve("orchestrator,dispatcher");
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        format!(
            "experiments:\n  - name: pushed outage\n    layer: model\n    fault_type: model_unavailable\n    duration: 1\n    parameters: {{failure_rate: 1.0}}\nprometheus:\n  pushgateway_url: \"{pg}\"\n  job_name: chaos_ci\n"
        ),
    )
    .expect("experiment file");
    let out = c.run(&["run", file.to_str().expect("path"), "--min-score", "0", "--timeout", "120"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stderr).contains("pushgateway: pushed 1 region results"), "{}", text(&out.stderr));

    let result = c.results("RegionResult").pop().expect("a region result");
    let score = result["resilience_score"].as_f64().expect("a score");
    let (status, page) = http(&pg, "GET", "/metrics", None, None);
    assert_eq!(status, 200, "{page}");
    let line = page
        .lines()
        .find(|l| {
            l.starts_with("chaos_resilience_score{")
                && l.contains("experiment=\"pushed outage\"")
                && l.contains("job=\"chaos_ci\"")
                && l.contains("region=\"solo\"")
        })
        .unwrap_or_else(|| panic!("no pushed score in the Pushgateway's page:\n{page}"));
    let pushed: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).expect("a value");
    assert!((pushed - score).abs() < 1e-9, "pushed {pushed}, the result says {score}");
    assert!(page.contains("chaos_probe_errors{"), "{page}");
}
