//! `chaoseater agent` and `chaoseater demo-target`: the two commands that run next to a pipeline rather
//! than next to the broker. They read no chaoseater.toml.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use chaoseater_producers::agent::{Agent, AgentConfig};
use chaoseater_producers::demo_target::{self, DemoTarget, DemoTargetConfig, Resilience};

use crate::cli::DemoTargetArgs;
use crate::{EXIT_INVALID_INPUT, Exit};

/// A command that runs without the shared configuration.
#[derive(Debug)]
pub enum Standalone {
    Agent(Option<PathBuf>),
    DemoTarget(DemoTargetArgs),
}

impl Standalone {
    pub async fn run(self) -> Result<()> {
        match self {
            Standalone::Agent(config) => agent(config).await,
            Standalone::DemoTarget(args) => target(args).await,
        }
    }
}

async fn agent(config: Option<PathBuf>) -> Result<()> {
    let Some(path) = config else {
        bail!(Exit(EXIT_INVALID_INPUT, "chaoseater agent needs --config agent.toml (see examples/agent.toml)".into()));
    };
    let config = AgentConfig::load(&path).map_err(|e| Exit(EXIT_INVALID_INPUT, e))?;
    let agent = Agent::start(config).await.context("starting the agent")?;
    for leftover in &agent.cleaned {
        println!("reverted a leftover of a previous run: {leftover:?}");
    }
    match agent.core.inner.as_ref().map(|hop| hop.addr) {
        Some(inner) => println!(
            "agent API on http://{}  proxy on http://{}  inner hop on http://{inner}",
            agent.api_addr, agent.proxy_addr
        ),
        None => println!("agent API on http://{}  proxy on http://{}", agent.api_addr, agent.proxy_addr),
    }
    super::shutdown_signal().await;
    println!("stopping: reverting any active fault");
    agent.shutdown().await;
    Ok(())
}

async fn target(args: DemoTargetArgs) -> Result<()> {
    let resilience = Resilience::parse(&args.resilience).map_err(|e| Exit(EXIT_INVALID_INPUT, e))?;
    if let Some(upstream) = &args.upstream
        && !upstream.starts_with("http://")
    {
        bail!(Exit(EXIT_INVALID_INPUT, format!("--upstream {upstream:?} must be an http:// URL")));
    }
    let config = DemoTargetConfig {
        model_name: args.model_name,
        model_version: args.model_version,
        resilience,
        upstream: args.upstream,
    };
    let target = Arc::new(DemoTarget::new(config));
    if let Some(file) = args.export_probe_set {
        let json = serde_json::to_vec_pretty(target.probe_set())?;
        std::fs::write(&file, json).with_context(|| format!("writing {}", file.display()))?;
        println!("probe set ({} labelled records) written to {}", target.probe_set().labels.len(), file.display());
        return Ok(());
    }
    let listener =
        tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("demo-target listening on http://{addr} (resilience: {resilience})");
    let shutdown = chaoseater_schemas::bus::Shutdown::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        super::shutdown_signal().await;
        on_signal.trigger();
    });
    demo_target::serve(target, listener, shutdown).await?;
    Ok(())
}
