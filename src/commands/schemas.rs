//! `chaoseater schemas list|show|export|decode`.

use std::io::Read;

use anyhow::{Context, Result, anyhow};
use chaoseater_schemas::events::EventKind;

use crate::cli::SchemasCommand;
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

pub fn run(command: SchemasCommand, config: &Config) -> Result<()> {
    let codec = broker::codec(config)?;
    match command {
        SchemasCommand::List => {
            println!("{:<24} {:<24} {:<18} FILE", "EVENT", "TOPIC", "FINGERPRINT");
            for &kind in EventKind::ALL {
                let (fp, _) = codec.store().current(kind);
                println!(
                    "{:<24} {:<24} {:<18} {}",
                    kind.name(),
                    format!("{}.{}", config.topic_prefix, kind.topic()),
                    format!("{fp:016x}"),
                    kind.file_name()
                );
            }
        }
        SchemasCommand::Show { name } => {
            let kind = EventKind::from_name(&name).ok_or_else(|| {
                let names: Vec<_> = EventKind::ALL.iter().map(|k| k.name()).collect();
                Exit(EXIT_INVALID_INPUT, format!("unknown event {name:?}; one of {}", names.join(", ")))
            })?;
            print!("{}", kind.schema_text());
        }
        SchemasCommand::Export { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            for &kind in EventKind::ALL {
                let path = dir.join(kind.file_name());
                std::fs::write(&path, kind.schema_text())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            println!("wrote {} schemas to {}", EventKind::ALL.len(), dir.display());
        }
        SchemasCommand::Decode { file } => {
            let mut bytes = Vec::new();
            match &file {
                Some(path) => bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
                None => {
                    std::io::stdin().read_to_end(&mut bytes).context("cannot read standard input")?;
                }
            }
            let event = codec.decode(&bytes).map_err(|e| anyhow!(Exit(EXIT_INVALID_INPUT, e.to_string())))?;
            println!("{}", serde_json::to_string(&event)?);
        }
    }
    Ok(())
}
