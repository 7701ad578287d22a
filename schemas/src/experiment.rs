//! The experiment as events carry it: a validated fault, its duration, rollback configuration and tags.
//!
//! These records are embedded in several events (RunRequested, RegionDispatched, AbTestRequested); their
//! Avro definitions are repeated in each .avsc file so that every file stands alone for other systems.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The pipeline layer a fault acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Layer {
    /// Feature records on their way to the model.
    Data,
    /// The model endpoint's responses and routing.
    Model,
    /// Network, nodes and host resources.
    Infrastructure,
}

impl Layer {
    /// Every layer.
    pub const ALL: [Layer; 3] = [Layer::Data, Layer::Model, Layer::Infrastructure];

    /// The name used in experiment files (`data`, `model`, `infrastructure`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Data => "data",
            Layer::Model => "model",
            Layer::Infrastructure => "infrastructure",
        }
    }

    /// Parses the name used in experiment files.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|layer| layer.as_str() == value)
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run's regions are dispatched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunMode {
    /// At most `max_concurrent` regions in flight.
    Parallel,
    /// One region at a time, highest priority first.
    Sequential,
    /// Only `max(1, floor(n * percent / 100))` regions, lowest priority first.
    BlastRadius,
}

impl RunMode {
    /// The name used in experiment files and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            RunMode::Parallel => "parallel",
            RunMode::Sequential => "sequential",
            RunMode::BlastRadius => "blast-radius",
        }
    }
}

/// The five rollback strategies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RollbackStrategy {
    /// 100% at once.
    Immediate,
    /// `gradual_steps` equal steps with a health check after each.
    Gradual,
    /// `canary_percentage` first, then the rest.
    Canary,
    /// Switch traffic to a second upstream, retire the first.
    BlueGreen,
    /// Rolled back when the region's circuit opens.
    CircuitBreaker,
}

impl RollbackStrategy {
    /// Every strategy.
    pub const ALL: [RollbackStrategy; 5] = [
        RollbackStrategy::Immediate,
        RollbackStrategy::Gradual,
        RollbackStrategy::Canary,
        RollbackStrategy::BlueGreen,
        RollbackStrategy::CircuitBreaker,
    ];

    /// The name used in experiment files.
    pub fn as_str(self) -> &'static str {
        match self {
            RollbackStrategy::Immediate => "immediate",
            RollbackStrategy::Gradual => "gradual",
            RollbackStrategy::Canary => "canary",
            RollbackStrategy::BlueGreen => "blue_green",
            RollbackStrategy::CircuitBreaker => "circuit_breaker",
        }
    }

    /// Parses the name used in experiment files.
    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// Whether the rollback takes over when the fault's time ends (the agent holds the fault until the
    /// steps reach 100%). Immediate and circuit-breaker rollbacks let the fault end on time by itself.
    pub fn holds_fault(self) -> bool {
        matches!(self, RollbackStrategy::Gradual | RollbackStrategy::Canary | RollbackStrategy::BlueGreen)
    }
}

/// How a fault is rolled back. Defaults are the Python tool's: 300 / 5 / 0.1 / 10 / 5 / true.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RollbackConfig {
    /// Rollback strategy.
    pub strategy: RollbackStrategy,
    /// A rollback not finished after this many seconds fails.
    pub timeout_seconds: i64,
    /// Seconds between health checks while rolling back.
    pub health_check_interval_s: f64,
    /// Error rate in [0, 1] above which rollback steps halt.
    pub failure_threshold: f64,
    /// Percentage rolled back first by the canary strategy.
    pub canary_percentage: f64,
    /// Steps of the gradual strategy.
    pub gradual_steps: i32,
    /// Pause when a health check fails.
    pub auto_pause_on_error: bool,
}

impl Default for RollbackConfig {
    fn default() -> Self {
        Self {
            strategy: RollbackStrategy::Immediate,
            timeout_seconds: 300,
            health_check_interval_s: 5.0,
            failure_threshold: 0.1,
            canary_percentage: 10.0,
            gradual_steps: 5,
            auto_pause_on_error: true,
        }
    }
}

/// One fault parameter value. On the wire: the Avro union `[boolean, long, double, string, array<string>]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ParamValue {
    /// A switch.
    Bool(bool),
    /// A whole number (milliseconds, megabytes, counts).
    Int(i64),
    /// A rate or magnitude.
    Float(f64),
    /// A name or choice.
    Text(String),
    /// Column names, hosts.
    List(Vec<String>),
}

impl ParamValue {
    /// The value as a float, for numeric parameters (integers widen).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            ParamValue::Int(v) => Some(*v as f64),
            ParamValue::Float(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Text(v) => write!(f, "{v:?}"),
            ParamValue::List(v) => write!(f, "{v:?}"),
        }
    }
}

/// One validated experiment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentSpec {
    /// Experiment name.
    pub name: String,
    /// Layer the fault acts on.
    pub layer: Layer,
    /// Fault type from the catalogue.
    pub fault_type: String,
    /// Validated parameters with defaults filled in.
    pub parameters: BTreeMap<String, ParamValue>,
    /// Fault duration in milliseconds.
    pub duration_ms: i64,
    /// Rollback configuration.
    pub rollback: RollbackConfig,
    /// Free-form tags.
    pub tags: BTreeMap<String, String>,
}
