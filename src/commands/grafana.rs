//! `chaoseater grafana dashboard|rules|provision|push`: Grafana resources generated from the exporter's metric names.

use std::path::Path;

use anyhow::{Context, Result, bail};
use chaoseater_sinks::grafana::provisioning::{self, ProvisioningOptions};
use chaoseater_sinks::grafana::{self, AlertOptions, DashboardOptions};

use crate::cli::GrafanaCommand;
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit};

pub async fn run(command: GrafanaCommand, config: &Config) -> Result<()> {
    match command {
        GrafanaCommand::Push => {
            let Some(grafana) = &config.sinks.grafana else {
                bail!(Exit(EXIT_INVALID_INPUT, "set [sinks.grafana] url in chaoseater.toml to push to Grafana".into()));
            };
            let target = grafana.target()?;
            let mut failed = 0;
            for (item, outcome) in chaoseater_sinks::grafana::sink::push_once(&target).await {
                match outcome {
                    Ok(()) => println!("ok      {} {}", item.method, item.path),
                    Err(e) => {
                        failed += 1;
                        println!("FAILED  {} {}: {e}", item.method, item.path);
                    }
                }
            }
            if failed > 0 {
                bail!(Exit(1, format!("{failed} request(s) to Grafana failed")));
            }
        }
        GrafanaCommand::Dashboard { out, title, datasource, panel_files } => {
            let mut custom_panels = Vec::new();
            for file in &panel_files {
                let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
                let panel: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| Exit(EXIT_INVALID_INPUT, format!("{}: not JSON: {e}", file.display())))?;
                if !panel.get("type").is_some_and(serde_json::Value::is_string) {
                    bail!(Exit(EXIT_INVALID_INPUT, format!("{}: a panel needs a \"type\"", file.display())));
                }
                custom_panels.push(panel);
            }
            let board = grafana::dashboard(&DashboardOptions { title, datasource_uid: datasource, custom_panels });
            let text = serde_json::to_string_pretty(&board)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    println!("dashboard written to {}", path.display());
                }
                None => println!("{text}"),
            }
        }
        GrafanaCommand::Provision { out_dir, prometheus_url, dashboards_path } => {
            let opts = ProvisioningOptions { prometheus_url, dashboards_path, ..ProvisioningOptions::default() };
            let written = provisioning::write_all(&out_dir, &opts)
                .with_context(|| format!("writing Grafana's provisioning into {}", out_dir.display()))?;
            for path in written {
                println!("written {}", path.display());
            }
        }
        GrafanaCommand::Rules { out_dir, min_score, max_error_rate, folder, datasource } => {
            let opts = AlertOptions { min_score, max_error_rate, folder_uid: folder, datasource_uid: datasource };
            for path in write_rules(&out_dir, &opts)? {
                println!("written {}", path.display());
            }
        }
    }
    Ok(())
}

/// Writes the Grafana rule payloads, the rule group and the Prometheus rules file into `dir`.
pub fn write_rules(dir: &Path, opts: &AlertOptions) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = [
        ("grafana-alert-rules.json", serde_json::to_string_pretty(&grafana::alert_rules(opts))?),
        ("grafana-rule-group.json", serde_json::to_string_pretty(&grafana::rule_group(opts))?),
        ("chaoseater-rules.yml", grafana::prometheus_rules(opts)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// Writes the dashboard with default options into `path`.
pub fn write_dashboard(path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(&grafana::dashboard(&DashboardOptions::default()))?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
