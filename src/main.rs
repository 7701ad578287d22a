//! The `chaoseater` binary: parse arguments, set up tracing, load the configuration once, and hand it to
//! the subcommand. Everything else lives in the role crates.

mod broker;
mod cli;
mod commands;
mod config;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::Cli;
use crate::config::{Config, FlagOverrides};

/// Exit code for input the user must fix (an invalid experiment file, a bad query).
pub const EXIT_INVALID_INPUT: u8 = 2;

/// An error that carries its own exit code.
#[derive(Debug)]
pub struct Exit(pub u8, pub String);

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.1)
    }
}

impl std::error::Error for Exit {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("CHAOSEATER_LOG").unwrap_or_else(|_| EnvFilter::new(default_filter(&cli.command))),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let flags = FlagOverrides {
        config: cli.global.config.clone(),
        brokers: cli.global.brokers.clone(),
        state_dir: cli.global.state_dir.clone(),
        topic_prefix: cli.global.topic_prefix.clone(),
    };
    // The agent and the demo target stand alone: no broker, no chaoseater.toml (`--config` is agent.toml).
    let standalone = match cli.command {
        cli::Command::Agent => Some(commands::agent::Standalone::Agent(cli.global.config.clone())),
        cli::Command::DemoTarget(ref args) => Some(commands::agent::Standalone::DemoTarget(args.clone())),
        _ => None,
    };
    if let Some(standalone) = standalone {
        return finish(
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(standalone.run())),
        );
    }
    let result = Config::load(&flags, std::env::vars()).and_then(|config| {
        let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        runtime.block_on(commands::run(cli.command, config))
    });
    finish(result)
}

/// The demo and `run` show their own progress; their logs would only repeat it.
fn default_filter(command: &cli::Command) -> &'static str {
    match command {
        cli::Command::Demo(_) | cli::Command::Run(_) | cli::Command::Ab(_) => "warn,librdkafka=error",
        _ => "info,librdkafka=warn",
    }
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(Exit(code, message)) = err.downcast_ref::<Exit>() {
                eprintln!("error: {message}");
                return ExitCode::from(*code);
            }
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
