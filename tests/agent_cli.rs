//! `chaoseater agent` and `chaoseater demo-target` as processes: host faults reverted on SIGTERM, leftovers
//! of a SIGKILLed agent reverted by the next start, configuration errors reported clearly.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};

use std::time::Duration;

use common::{
    AGENT_TOKEN, KillOnDrop, addresses, agent_config, bin, http, run, spawn_agent, spawn_target, terminate, text,
    wait_until,
};

const TOKEN: &str = AGENT_TOKEN;

fn start_target() -> (KillOnDrop, String) {
    spawn_target("127.0.0.1")
}

fn config_for(dir: &Path, target: &str) -> std::path::PathBuf {
    agent_config(
        dir,
        "127.0.0.1",
        target,
        &format!("[caps]\nmax_disk_bytes = 104857600\n[host]\nallowed_paths = [\"{}\"]", dir.display()),
    )
}

fn start_agent(config: &Path) -> (Child, String, String) {
    spawn_agent(config)
}

/// Starts a long disk_full into `fill_dir` and waits until it is injected.
fn fill(api: &str, fill_dir: &Path) {
    let body = format!(
        r#"{{"name": "fill", "layer": "infrastructure", "fault_type": "disk_full", "parameters": {{"bytes": 5000000, "path": "{}"}}, "duration": 60}}"#,
        fill_dir.display()
    );
    let (status, answer) = http(api, "POST", "/api/v1/experiments", Some(&body), Some(TOKEN));
    assert_eq!(status, 202, "{answer}");
    wait_until(Duration::from_secs(30), "the fill file", || count(fill_dir) == 1);
}

fn count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// A demo target and an agent whose disk_full fault is injected: (dir, target, agent, config, fill dir).
fn agent_filling() -> (tempfile::TempDir, KillOnDrop, KillOnDrop, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (target_process, target) = start_target();
    let config = config_for(dir.path(), &target);
    let fill_dir = dir.path().join("fill");
    std::fs::create_dir_all(&fill_dir).expect("fill dir");
    let (agent, api, _proxy) = start_agent(&config);
    let agent = KillOnDrop(agent);
    fill(&api, &fill_dir);
    (dir, target_process, agent, config, fill_dir)
}

#[test]
fn sigterm_reverts_host_faults_before_exit() {
    let (dir, _target, mut agent, _config, fill_dir) = agent_filling();
    terminate(&agent.0);
    let status = agent.0.wait().expect("agent exits");
    assert!(status.success(), "clean exit: {status:?}");
    assert_eq!(count(&fill_dir), 0, "the fill file is gone when the agent has exited");
    let journal = std::fs::read_to_string(dir.path().join("state/journal.json")).expect("journal");
    assert_eq!(journal.trim(), "[]");
}

#[test]
fn a_restart_after_sigkill_reverts_leftovers_before_serving() {
    let (_dir, _target, mut agent, config, fill_dir) = agent_filling();
    agent.0.kill().expect("SIGKILL");
    agent.0.wait().expect("reaped");
    assert_eq!(count(&fill_dir), 1, "a killed agent cannot clean up");
    let mut restarted = bin()
        .args(["agent", "--config"])
        .arg(&config)
        .env("CHAOSEATER_AGENT_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .spawn()
        .expect("restart agent");
    let reverted = addresses(&mut restarted, "reverted a leftover");
    let _restarted = KillOnDrop(restarted);
    assert!(reverted.is_empty());
    assert_eq!(count(&fill_dir), 0, "the restart removed the fill file before serving");
}

#[test]
fn proxy_and_api_work_through_the_binary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_target, target) = start_target();
    let config = config_for(dir.path(), &target);
    let (agent, api, proxy) = start_agent(&config);
    let _agent = KillOnDrop(agent);
    let (status, health) = http(&api, "GET", "/health", None, None);
    assert_eq!(status, 200, "{health}");
    let (status, body) =
        http(&proxy, "POST", "/v1/models/demo:predict", Some(r#"{"instances": [[60, 0.5, 100, 10, "north"]]}"#), None);
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("predictions"), "{body}");
    let (status, _) = http(&api, "POST", "/api/v1/experiments/run", Some("{}"), None);
    assert_eq!(status, 401);
}

#[test]
fn configuration_errors_are_reported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = run(bin().arg("agent"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--config"), "{}", text(&out.stderr));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "upstream = \"http://127.0.0.1:1\"\nlisten_addr = \"x\"\n[probe]\nset = \"x.json\"\n")
        .expect("write");
    let out = run(bin().args(["agent", "--config"]).arg(&bad));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("listen_addr"), "{}", text(&out.stderr));

    let config = config_for(dir.path(), "127.0.0.1:1");
    let out = run(bin().args(["agent", "--config"]).arg(&config).env_remove("CHAOSEATER_AGENT_TOKEN"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("CHAOSEATER_AGENT_TOKEN"), "{}", text(&out.stderr));

    let out = run(bin().args(["demo-target", "--resilience", "magic"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("magic"));

    let file = dir.path().join("probe.json");
    let out = run(bin().args(["demo-target", "--export-probe-set"]).arg(&file));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let set: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).expect("probe set")).expect("JSON");
    assert_eq!(set["labels"].as_array().map(Vec::len), Some(300));
    assert_eq!(set["instances"].as_array().map(Vec::len), Some(300));
}
