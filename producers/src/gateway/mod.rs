//! The command gateway: experiment files in, validated `RunRequested` commands out.

mod file;

pub use file::{GatewayError, RunOverrides, load_experiment_file, parse_experiments};

#[cfg(test)]
mod tests;
