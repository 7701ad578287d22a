//! The command gateway: experiment files in, validated commands out (`RunRequested` per experiment, or
//! one `AbTestRequested` for a file with an `ab:` section).

mod ab;
mod file;

pub use ab::{AbOverrides, AbSection, parse_ab_test};
pub use file::{ExperimentPlan, GatewayError, PrometheusBlock, RunOverrides, load_experiment_file, parse_experiments};

#[cfg(test)]
mod tests;
