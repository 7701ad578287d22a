//! Typed faults: the catalogue's parameter maps turned into what the injectors act on, with the agent's own
//! checks (caps, known upstreams) so that an invalid fault is refused before anything is injected.

use std::collections::BTreeMap;
use std::path::{Component, PathBuf};
use std::time::Duration;

use chaoseater_schemas::experiment::{Layer, ParamValue};
use chaoseater_schemas::faults::{self, FaultError};
use chaoseater_schemas::limits;

use super::config::AgentConfig;

/// How a schema_drift changes the record's shape.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaDrift {
    AddColumn {
        name: String,
    },
    RemoveColumn {
        name: String,
    },
    RenameColumn {
        old: String,
        new: String,
    },
    /// Numbers in the column become strings.
    TypeChange {
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CorruptionKind {
    Random,
    Bias,
    Flip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeFailure {
    /// Connections refused.
    Crash,
    /// Connections accepted, never answered.
    Hang,
    /// Heavy delay.
    Slow,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DiskFill {
    Percent(f64),
    Bytes(u64),
}

/// One fault, typed.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    DataCorruption { rate: f64, columns: Option<Vec<String>> },
    MissingData { rate: f64, columns: Option<Vec<String>> },
    SchemaDrift(SchemaDrift),
    DistributionDrift { magnitude: f64, columns: Option<Vec<String>> },
    OutlierInjection { rate: f64, magnitude: f64, columns: Option<Vec<String>> },
    LatencyInjection { delay: Duration },
    DuplicateRecords { rate: f64 },
    ModelDrift { rate: f64, gradual: bool },
    WrongVersion { upstream: String },
    SlowInference { latency: Duration, variance: f64 },
    MemoryLeak { mb_per_second: f64 },
    PredictionCorruption { rate: f64, kind: CorruptionKind },
    ModelUnavailable { rate: f64 },
    ParameterDegradation { factor: f64 },
    BatchProcessingFailure { rate: f64 },
    NetworkLatency { latency: Duration, jitter: Duration },
    PacketLoss { rate: f64 },
    NodeFailure { kind: NodeFailure, target_service: Option<String> },
    GpuUnavailable,
    StorageBottleneck { iops: u64, path: Option<PathBuf>, cgroup: Option<String> },
    DiskFull { fill: DiskFill, path: Option<PathBuf> },
    CpuThrottle { percent: f64, cgroup: Option<String> },
    MemoryPressure { mb: u64 },
    NetworkPartition { hosts: Vec<String> },
    DnsFailure { rate: f64 },
}

/// How much delay a `node_failure` of kind `slow` adds to every request.
pub const NODE_SLOW_DELAY: Duration = Duration::from_secs(3);

struct Params<'a>(&'a BTreeMap<String, ParamValue>);

impl Params<'_> {
    fn f64(&self, name: &str) -> f64 {
        // The catalogue filled every default and checked every type: absence here is a catalogue bug.
        self.0.get(name).and_then(ParamValue::as_f64).unwrap_or_default()
    }
    fn ms(&self, name: &str) -> Duration {
        Duration::from_millis(self.f64(name).max(0.0) as u64)
    }
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name) {
            Some(ParamValue::Text(t)) => Some(t.clone()),
            _ => None,
        }
    }
    fn list(&self, name: &str) -> Option<Vec<String>> {
        match self.0.get(name) {
            Some(ParamValue::List(items)) => Some(items.clone()),
            Some(ParamValue::Text(t)) => Some(vec![t.clone()]),
            _ => None,
        }
    }
}

impl Fault {
    /// Validates `parameters` against the catalogue and the agent's limits, and types them.
    pub fn parse(
        layer: Layer,
        fault_type: &str,
        parameters: &serde_json::Map<String, serde_json::Value>,
        config: &AgentConfig,
    ) -> Result<Self, FaultError> {
        let filled = faults::validate(layer, fault_type, parameters)?;
        let p = Params(&filled);
        let refuse = |field: &str, message: String| FaultError { field: field.to_owned(), message };
        let fault = match fault_type {
            "data_corruption" => Fault::DataCorruption { rate: p.f64("corruption_rate"), columns: p.list("columns") },
            "missing_data" => Fault::MissingData { rate: p.f64("missing_rate"), columns: p.list("columns") },
            "schema_drift" => Fault::SchemaDrift(match p.text("drift_type").as_deref() {
                Some("remove_column") => SchemaDrift::RemoveColumn { name: p.text("column_name").unwrap_or_default() },
                Some("rename_column") => SchemaDrift::RenameColumn {
                    old: p.text("old_name").unwrap_or_default(),
                    new: p.text("new_name").unwrap_or_default(),
                },
                Some("type_change") => SchemaDrift::TypeChange { name: p.text("column_name").unwrap_or_default() },
                _ => SchemaDrift::AddColumn { name: p.text("column_name").unwrap_or_else(|| "chaos_extra".to_owned()) },
            }),
            "distribution_drift" => {
                Fault::DistributionDrift { magnitude: p.f64("magnitude"), columns: p.list("columns") }
            }
            "outlier_injection" => Fault::OutlierInjection {
                rate: p.f64("outlier_rate"),
                magnitude: p.f64("magnitude"),
                columns: p.list("columns"),
            },
            "latency_injection" => Fault::LatencyInjection { delay: p.ms("delay_ms") },
            "duplicate_records" => Fault::DuplicateRecords { rate: p.f64("duplication_rate") },
            "model_drift" => Fault::ModelDrift {
                rate: p.f64("drift_rate"),
                gradual: p.text("drift_type").as_deref() != Some("sudden"),
            },
            "wrong_version" => {
                // The alternates of the hop model faults act on (the model server's, with an inner hop).
                let alternates = config.alternates_of(layer);
                let upstream = match p.text("fallback_model") {
                    Some(name) if alternates.contains_key(&name) => name,
                    Some(name) => {
                        return Err(refuse(
                            "fallback_model",
                            format!(
                                "fallback_model {name:?} is not one of this agent's alternates ({})",
                                names(alternates.keys())
                            ),
                        ));
                    }
                    None if alternates.len() == 1 => alternates.keys().next().cloned().unwrap_or_default(),
                    None => {
                        return Err(refuse(
                            "fallback_model",
                            format!(
                                "wrong_version needs fallback_model naming one of this agent's alternates ({})",
                                names(alternates.keys())
                            ),
                        ));
                    }
                };
                Fault::WrongVersion { upstream }
            }
            "slow_inference" => Fault::SlowInference { latency: p.ms("latency_ms"), variance: p.f64("variance") },
            "memory_leak" => Fault::MemoryLeak { mb_per_second: p.f64("leak_rate_mb") },
            "prediction_corruption" => Fault::PredictionCorruption {
                rate: p.f64("corruption_rate"),
                kind: match p.text("type").as_deref() {
                    Some("bias") => CorruptionKind::Bias,
                    Some("flip") => CorruptionKind::Flip,
                    _ => CorruptionKind::Random,
                },
            },
            "model_unavailable" => Fault::ModelUnavailable { rate: p.f64("failure_rate") },
            "parameter_degradation" => Fault::ParameterDegradation { factor: p.f64("degradation_factor") },
            "batch_processing_failure" => Fault::BatchProcessingFailure { rate: p.f64("failure_rate") },
            "network_latency" => Fault::NetworkLatency { latency: p.ms("latency_ms"), jitter: p.ms("jitter_ms") },
            "packet_loss" => Fault::PacketLoss { rate: p.f64("loss_rate") },
            "node_failure" => Fault::NodeFailure {
                kind: match p.text("failure_type").as_deref() {
                    Some("hang") => NodeFailure::Hang,
                    Some("slow") => NodeFailure::Slow,
                    _ => NodeFailure::Crash,
                },
                target_service: p.text("target_service"),
            },
            "gpu_unavailable" => Fault::GpuUnavailable,
            "storage_bottleneck" => Fault::StorageBottleneck {
                iops: p.f64("iops_limit") as u64,
                path: p.text("path").map(|path| allowed_path(&path, config)).transpose()?,
                cgroup: p.text("cgroup").map(|c| cgroup_path(&c)).transpose()?,
            },
            "disk_full" => {
                let fill = match p.0.get("bytes").and_then(ParamValue::as_f64) {
                    Some(bytes) => DiskFill::Bytes(bytes as u64),
                    None => DiskFill::Percent(p.f64("fill_percent")),
                };
                if let DiskFill::Bytes(bytes) = fill
                    && bytes > config.caps.max_disk_bytes
                {
                    return Err(refuse(
                        "bytes",
                        format!(
                            "disk_full bytes {bytes} exceeds this agent's cap max_disk_bytes {}",
                            config.caps.max_disk_bytes
                        ),
                    ));
                }
                Fault::DiskFull { fill, path: p.text("path").map(|path| allowed_path(&path, config)).transpose()? }
            }
            "cpu_throttle" => {
                let percent = p.f64("throttle_percent");
                // The cap holds in both modes: busy threads take `percent` of the host, a cgroup quota
                // takes `percent` of the CPU the cgroup's processes had.
                if percent > config.caps.max_cpu_percent {
                    return Err(refuse(
                        "throttle_percent",
                        format!(
                            "cpu_throttle {percent}% exceeds this agent's cap max_cpu_percent {}",
                            config.caps.max_cpu_percent
                        ),
                    ));
                }
                Fault::CpuThrottle { percent, cgroup: p.text("cgroup").map(|c| cgroup_path(&c)).transpose()? }
            }
            "memory_pressure" => {
                let mb = p.f64("memory_mb") as u64;
                if mb > config.caps.max_memory_mb {
                    return Err(refuse(
                        "memory_mb",
                        format!(
                            "memory_pressure {mb} MB exceeds this agent's cap max_memory_mb {}",
                            config.caps.max_memory_mb
                        ),
                    ));
                }
                Fault::MemoryPressure { mb }
            }
            "network_partition" => Fault::NetworkPartition { hosts: p.list("blocked_hosts").unwrap_or_default() },
            "dns_failure" => Fault::DnsFailure { rate: p.f64("failure_rate") },
            other => return Err(refuse("fault_type", format!("the agent has no injector for {other:?}"))),
        };
        if let Some(cgroup) = fault.cgroup() {
            let dir = config.host.cgroup_root.join(cgroup.trim_start_matches('/'));
            if cgroup.contains("..") || !dir.is_dir() {
                return Err(refuse(
                    "cgroup",
                    format!("cgroup {cgroup:?} not found under {}", config.host.cgroup_root.display()),
                ));
            }
        }
        Ok(fault)
    }

    fn cgroup(&self) -> Option<&str> {
        match self {
            Fault::StorageBottleneck { cgroup, .. } | Fault::CpuThrottle { cgroup, .. } => cgroup.as_deref(),
            _ => None,
        }
    }

    /// Faults that act on the agent's host rather than on traffic through the proxy.
    pub fn is_host(&self) -> bool {
        matches!(
            self,
            Fault::MemoryLeak { .. }
                | Fault::StorageBottleneck { .. }
                | Fault::DiskFull { .. }
                | Fault::CpuThrottle { .. }
                | Fault::MemoryPressure { .. }
        )
    }
}

fn names<'a>(keys: impl Iterator<Item = &'a String>) -> String {
    let all: Vec<&str> = keys.map(String::as_str).collect();
    if all.is_empty() { "none configured".to_owned() } else { all.join(", ") }
}

/// A fault's `path`: an absolute directory under the agent's scratch directory or one of
/// `[host] allowed_paths`, with no `..` (checked on the text, before anything touches the disk). Only
/// the scratch directory itself is ever created; any other directory must exist.
fn allowed_path(path: &str, config: &AgentConfig) -> Result<PathBuf, FaultError> {
    let refuse = |message: String| FaultError { field: "path".to_owned(), message };
    let given = PathBuf::from(path);
    if !given.is_absolute() || given.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_))) {
        return Err(refuse(format!("{} must be an absolute path without . or .. parts", limits::shown(path))));
    }
    let scratch = config.scratch_dir();
    let roots: Vec<&std::path::Path> =
        std::iter::once(scratch.as_path()).chain(config.host.allowed_paths.iter().map(PathBuf::as_path)).collect();
    if !roots.iter().any(|root| given.starts_with(root)) {
        return Err(refuse(format!(
            "{} is outside the agent's scratch directory {} and [host] allowed_paths",
            limits::shown(path),
            scratch.display()
        )));
    }
    if given != scratch && !given.is_dir() {
        return Err(refuse(format!("{} is not an existing directory", limits::shown(path))));
    }
    Ok(given)
}

/// A fault's `cgroup`: a path relative to the cgroup root, with no `..` (it must not name a file
/// outside the hierarchy).
fn cgroup_path(cgroup: &str) -> Result<String, FaultError> {
    let relative = cgroup.trim_start_matches('/');
    let ok = !relative.is_empty()
        && std::path::Path::new(relative).components().all(|c| matches!(c, Component::Normal(_)))
        && !relative.contains(char::is_control);
    if !ok {
        return Err(FaultError {
            field: "cgroup".to_owned(),
            message: format!(
                "{} must be a cgroup path under the cgroup root, without . or .. parts",
                limits::shown(cgroup)
            ),
        });
    }
    Ok(relative.to_owned())
}
