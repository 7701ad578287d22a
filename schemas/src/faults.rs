//! The fault catalogue (every fault type, its layer and parameters) and validation of fault parameters.
//!
//! Validation happens at the edges (the submit command, the HTTP gateway, the agent) so that an invalid
//! experiment is refused before anything is injected. The result is a parameter map with every default
//! filled in, which is what events carry; the agent turns it into its typed injectors.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value as Json;

use crate::experiment::{Layer, ParamValue};

/// What kind of value a parameter takes, with its bounds.
#[derive(Debug, Clone, Copy)]
pub enum ParamKind {
    /// A fraction in [0, 1].
    Rate,
    /// A number in [min, max].
    Float { min: f64, max: f64 },
    /// A whole number in [min, max].
    Int { min: i64, max: i64 },
    /// One of a fixed set of names.
    Choice(&'static [&'static str]),
    /// A free-form name.
    Text,
    /// A list of names (columns, hosts); a single string is taken as a list of one.
    List,
}

/// A parameter's default.
#[derive(Debug, Clone, Copy)]
pub enum ParamDefault {
    /// Required unless a rule of the fault says otherwise.
    Required,
    /// Absent unless given (for example `columns`: all columns).
    Absent,
    Float(f64),
    Int(i64),
    Text(&'static str),
}

/// One parameter of a fault.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: ParamDefault,
}

/// One fault type of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct FaultSpec {
    pub fault_type: &'static str,
    pub layer: Layer,
    pub params: &'static [ParamSpec],
}

const fn p(name: &'static str, kind: ParamKind, default: ParamDefault) -> ParamSpec {
    ParamSpec { name, kind, default }
}

use ParamDefault as D;
use ParamKind as K;

const MAX_DELAY_MS: i64 = 600_000;

/// Every fault type with its parameters and defaults (the Python tool's).
pub const CATALOGUE: &[FaultSpec] = &[
    // Data layer: the agent rewrites feature records on their way to the model.
    FaultSpec {
        fault_type: "data_corruption",
        layer: Layer::Data,
        params: &[p("corruption_rate", K::Rate, D::Float(0.1)), p("columns", K::List, D::Absent)],
    },
    FaultSpec {
        fault_type: "missing_data",
        layer: Layer::Data,
        params: &[p("missing_rate", K::Rate, D::Float(0.2)), p("columns", K::List, D::Absent)],
    },
    FaultSpec {
        fault_type: "schema_drift",
        layer: Layer::Data,
        params: &[
            p(
                "drift_type",
                K::Choice(&["add_column", "remove_column", "rename_column", "type_change"]),
                D::Text("add_column"),
            ),
            p("column_name", K::Text, D::Absent),
            p("old_name", K::Text, D::Absent),
            p("new_name", K::Text, D::Absent),
        ],
    },
    FaultSpec {
        fault_type: "distribution_drift",
        layer: Layer::Data,
        params: &[p("magnitude", K::Float { min: 0.0, max: 10.0 }, D::Float(0.5)), p("columns", K::List, D::Absent)],
    },
    FaultSpec {
        fault_type: "outlier_injection",
        layer: Layer::Data,
        params: &[
            p("outlier_rate", K::Rate, D::Float(0.05)),
            p("magnitude", K::Float { min: 0.0, max: 100.0 }, D::Float(3.0)),
            p("columns", K::List, D::Absent),
        ],
    },
    FaultSpec {
        fault_type: "latency_injection",
        layer: Layer::Data,
        params: &[p("delay_ms", K::Int { min: 0, max: MAX_DELAY_MS }, D::Int(1000))],
    },
    FaultSpec {
        fault_type: "duplicate_records",
        layer: Layer::Data,
        params: &[p("duplication_rate", K::Rate, D::Float(0.1))],
    },
    // Model layer: the agent acts on the model endpoint's responses or routing.
    FaultSpec {
        fault_type: "model_drift",
        layer: Layer::Model,
        params: &[
            p("drift_rate", K::Rate, D::Float(0.1)),
            p("drift_type", K::Choice(&["gradual", "sudden"]), D::Text("gradual")),
        ],
    },
    FaultSpec { fault_type: "wrong_version", layer: Layer::Model, params: &[p("fallback_model", K::Text, D::Absent)] },
    FaultSpec {
        fault_type: "slow_inference",
        layer: Layer::Model,
        params: &[
            p("latency_ms", K::Int { min: 0, max: MAX_DELAY_MS }, D::Int(500)),
            p("variance", K::Rate, D::Float(0.2)),
        ],
    },
    FaultSpec {
        fault_type: "memory_leak",
        layer: Layer::Model,
        params: &[p("leak_rate_mb", K::Float { min: 0.001, max: 10_240.0 }, D::Float(10.0))],
    },
    FaultSpec {
        fault_type: "prediction_corruption",
        layer: Layer::Model,
        params: &[
            p("corruption_rate", K::Rate, D::Float(0.1)),
            p("type", K::Choice(&["random", "bias", "flip"]), D::Text("random")),
        ],
    },
    FaultSpec {
        fault_type: "model_unavailable",
        layer: Layer::Model,
        params: &[p("failure_rate", K::Rate, D::Float(1.0))],
    },
    FaultSpec {
        fault_type: "parameter_degradation",
        layer: Layer::Model,
        params: &[p("degradation_factor", K::Rate, D::Float(0.1))],
    },
    FaultSpec {
        fault_type: "batch_processing_failure",
        layer: Layer::Model,
        params: &[p("failure_rate", K::Rate, D::Float(0.2))],
    },
    // Infrastructure layer: at the proxy (network) or on the agent's host (resources).
    FaultSpec {
        fault_type: "network_latency",
        layer: Layer::Infrastructure,
        params: &[
            p("latency_ms", K::Int { min: 0, max: MAX_DELAY_MS }, D::Int(100)),
            p("jitter_ms", K::Int { min: 0, max: MAX_DELAY_MS }, D::Int(20)),
        ],
    },
    FaultSpec {
        fault_type: "packet_loss",
        layer: Layer::Infrastructure,
        params: &[p("loss_rate", K::Rate, D::Float(0.1))],
    },
    FaultSpec {
        fault_type: "node_failure",
        layer: Layer::Infrastructure,
        params: &[
            p("failure_type", K::Choice(&["crash", "hang", "slow"]), D::Text("crash")),
            p("target_service", K::Text, D::Absent),
        ],
    },
    FaultSpec { fault_type: "gpu_unavailable", layer: Layer::Infrastructure, params: &[] },
    FaultSpec {
        fault_type: "storage_bottleneck",
        layer: Layer::Infrastructure,
        params: &[
            p("iops_limit", K::Int { min: 1, max: 1_000_000 }, D::Int(100)),
            p("path", K::Text, D::Absent),
            p("cgroup", K::Text, D::Absent),
        ],
    },
    FaultSpec {
        fault_type: "disk_full",
        layer: Layer::Infrastructure,
        params: &[
            p("fill_percent", K::Float { min: 0.0, max: 100.0 }, D::Absent),
            p("bytes", K::Int { min: 1, max: i64::MAX }, D::Absent),
            p("path", K::Text, D::Absent),
        ],
    },
    FaultSpec {
        fault_type: "cpu_throttle",
        layer: Layer::Infrastructure,
        params: &[
            p("throttle_percent", K::Float { min: 1.0, max: 100.0 }, D::Float(50.0)),
            p("cgroup", K::Text, D::Absent),
        ],
    },
    FaultSpec {
        fault_type: "memory_pressure",
        layer: Layer::Infrastructure,
        params: &[p("memory_mb", K::Int { min: 1, max: 1_048_576 }, D::Int(1024))],
    },
    FaultSpec {
        fault_type: "network_partition",
        layer: Layer::Infrastructure,
        params: &[p("blocked_hosts", K::List, D::Required)],
    },
    FaultSpec {
        fault_type: "dns_failure",
        layer: Layer::Infrastructure,
        params: &[p("failure_rate", K::Rate, D::Float(0.5))],
    },
];

/// A fault that cannot be run, naming the field at fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct FaultError {
    /// The offending field (`fault_type`, `layer`, or the parameter name).
    pub field: String,
    /// What was wrong and what is allowed.
    pub message: String,
}

impl FaultError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_owned(), message: message.into() }
    }
}

/// Looks a fault type up.
pub fn spec(fault_type: &str) -> Option<&'static FaultSpec> {
    CATALOGUE.iter().find(|spec| spec.fault_type == fault_type)
}

/// Whether a smaller value of a numeric parameter is the harsher fault: an IOPS limit strangles more the
/// lower it is; every other numeric parameter (rates, delays, sizes, percentages) hurts more as it grows.
pub fn lower_is_harsher(param: &str) -> bool {
    param == "iops_limit"
}

/// The bounds of a numeric parameter (rates are [0, 1]); `None` for the others.
pub fn numeric_bounds(param: &ParamSpec) -> Option<(f64, f64)> {
    match param.kind {
        K::Rate => Some((0.0, 1.0)),
        K::Float { min, max } => Some((min, max)),
        K::Int { min, max } => Some((min as f64, max as f64)),
        K::Choice(_) | K::Text | K::List => None,
    }
}

/// Fault types of one layer, for error messages and help.
pub fn fault_types(layer: Layer) -> Vec<&'static str> {
    CATALOGUE.iter().filter(|s| s.layer == layer).map(|s| s.fault_type).collect()
}

/// Validates a fault: its type, its layer, and every parameter's name, type and range. Returns the
/// parameters with defaults filled in.
pub fn validate(
    layer: Layer,
    fault_type: &str,
    params: &serde_json::Map<String, Json>,
) -> Result<BTreeMap<String, ParamValue>, FaultError> {
    let spec = spec(fault_type).ok_or_else(|| {
        FaultError::new(
            "fault_type",
            format!("unknown fault_type {fault_type:?} for layer {layer}; known: {}", fault_types(layer).join(", ")),
        )
    })?;
    if spec.layer != layer {
        return Err(FaultError::new(
            "layer",
            format!("fault_type {fault_type:?} belongs to layer {}, not {layer}", spec.layer),
        ));
    }
    for name in params.keys() {
        if !spec.params.iter().any(|p| p.name == name) {
            let known: Vec<_> = spec.params.iter().map(|p| p.name).collect();
            return Err(FaultError::new(
                name,
                format!(
                    "unknown parameter {name:?} for fault_type {fault_type}; known: {}",
                    if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                ),
            ));
        }
    }
    let mut out = BTreeMap::new();
    for param in spec.params {
        let value = match params.get(param.name) {
            Some(Json::Null) | None => match param.default {
                D::Required => {
                    return Err(FaultError::new(
                        param.name,
                        format!("fault_type {fault_type} needs parameter {:?}", param.name),
                    ));
                }
                D::Absent => continue,
                D::Float(v) => ParamValue::Float(v),
                D::Int(v) => ParamValue::Int(v),
                D::Text(v) => ParamValue::Text(v.to_owned()),
            },
            Some(given) => check(param, given)?,
        };
        out.insert(param.name.to_owned(), value);
    }
    check_rules(fault_type, &out)?;
    Ok(out)
}

fn check(param: &ParamSpec, given: &Json) -> Result<ParamValue, FaultError> {
    let name = param.name;
    let shown = Shown(given);
    match param.kind {
        K::Rate => {
            let v = given.as_f64().ok_or_else(|| {
                FaultError::new(name, format!("fault parameter {name:?} must be a number, got {shown}"))
            })?;
            in_range(name, v, 0.0, 1.0).map(|()| ParamValue::Float(v))
        }
        K::Float { min, max } => {
            let v = given.as_f64().ok_or_else(|| {
                FaultError::new(name, format!("fault parameter {name:?} must be a number, got {shown}"))
            })?;
            in_range(name, v, min, max).map(|()| ParamValue::Float(v))
        }
        K::Int { min, max } => {
            let v = given
                .as_i64()
                .or_else(|| given.as_f64().filter(|f| f.fract() == 0.0 && f.abs() < 9e15).map(|f| f as i64))
                .ok_or_else(|| {
                    FaultError::new(name, format!("fault parameter {name:?} must be a whole number, got {shown}"))
                })?;
            if v < min || v > max {
                return Err(FaultError::new(
                    name,
                    format!("fault parameter {name:?} must be in [{min}, {max}], got {v}"),
                ));
            }
            Ok(ParamValue::Int(v))
        }
        K::Choice(choices) => {
            let v = given.as_str().filter(|v| choices.contains(v)).ok_or_else(|| {
                FaultError::new(
                    name,
                    format!("fault parameter {name:?} must be one of {}, got {shown}", choices.join(", ")),
                )
            })?;
            Ok(ParamValue::Text(v.to_owned()))
        }
        K::Text => {
            let v = given.as_str().filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                FaultError::new(name, format!("fault parameter {name:?} must be a non-empty string, got {shown}"))
            })?;
            Ok(ParamValue::Text(v.to_owned()))
        }
        K::List => {
            let items = match given {
                Json::String(s) => vec![s.clone()],
                Json::Array(items) => {
                    items.iter().map(|item| item.as_str().map(str::to_owned)).collect::<Option<Vec<_>>>().ok_or_else(
                        || {
                            FaultError::new(
                                name,
                                format!("fault parameter {name:?} must be a list of strings, got {shown}"),
                            )
                        },
                    )?
                }
                _ => {
                    return Err(FaultError::new(
                        name,
                        format!("fault parameter {name:?} must be a list of strings, got {shown}"),
                    ));
                }
            };
            if items.is_empty() || items.iter().any(|s| s.trim().is_empty()) {
                return Err(FaultError::new(
                    name,
                    format!("fault parameter {name:?} must list at least one non-empty name"),
                ));
            }
            Ok(ParamValue::List(items))
        }
    }
}

fn in_range(name: &str, v: f64, min: f64, max: f64) -> Result<(), FaultError> {
    if v.is_finite() && v >= min && v <= max {
        Ok(())
    } else {
        Err(FaultError::new(name, format!("fault parameter {name:?} must be in [{min}, {max}], got {v}")))
    }
}

/// Rules that tie parameters of one fault together.
fn check_rules(fault_type: &str, params: &BTreeMap<String, ParamValue>) -> Result<(), FaultError> {
    let has = |name: &str| params.contains_key(name);
    match fault_type {
        "schema_drift" => {
            let drift = match params.get("drift_type") {
                Some(ParamValue::Text(t)) => t.as_str(),
                _ => "add_column",
            };
            let needed: &[&str] = match drift {
                "rename_column" => &["old_name", "new_name"],
                "remove_column" | "type_change" => &["column_name"],
                _ => &[],
            };
            if let Some(missing) = needed.iter().find(|n| !has(n)) {
                return Err(FaultError::new(
                    missing,
                    format!("schema_drift with drift_type {drift} needs parameter {missing:?}"),
                ));
            }
        }
        "disk_full" => match (has("fill_percent"), has("bytes")) {
            (true, true) => {
                return Err(FaultError::new("bytes", "disk_full takes fill_percent or bytes, not both"));
            }
            (false, false) => {
                return Err(FaultError::new("fill_percent", "disk_full needs fill_percent (0-100) or bytes"));
            }
            _ => {}
        },
        _ => {}
    }
    Ok(())
}

/// Shows a JSON value in an error message the way the user wrote it.
struct Shown<'a>(&'a Json);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn params(value: Json) -> serde_json::Map<String, Json> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn fills_defaults() {
        let out = validate(Layer::Infrastructure, "network_latency", &params(json!({}))).unwrap();
        assert_eq!(out["latency_ms"], ParamValue::Int(100));
        assert_eq!(out["jitter_ms"], ParamValue::Int(20));
    }

    #[test]
    fn rate_out_of_range_names_the_parameter() {
        let err = validate(Layer::Infrastructure, "packet_loss", &params(json!({"loss_rate": 1.5}))).unwrap_err();
        assert_eq!(err.field, "loss_rate");
        assert_eq!(err.message, r#"fault parameter "loss_rate" must be in [0, 1], got 1.5"#);
    }

    #[test]
    fn refuses_unknown_types_parameters_and_wrong_layers() {
        let err = validate(Layer::Data, "data_explosion", &params(json!({}))).unwrap_err();
        assert_eq!(err.field, "fault_type");
        assert!(err.message.contains("data_corruption"), "{}", err.message);
        let err = validate(Layer::Data, "data_corruption", &params(json!({"rate": 0.1}))).unwrap_err();
        assert_eq!(err.field, "rate");
        let err = validate(Layer::Model, "packet_loss", &params(json!({}))).unwrap_err();
        assert_eq!(err.field, "layer");
    }

    #[test]
    fn checks_types_and_cross_rules() {
        let err = validate(Layer::Model, "slow_inference", &params(json!({"latency_ms": 1.5}))).unwrap_err();
        assert_eq!(err.field, "latency_ms");
        let err =
            validate(Layer::Data, "schema_drift", &params(json!({"drift_type": "rename_column", "old_name": "a"})))
                .unwrap_err();
        assert_eq!(err.field, "new_name");
        assert!(validate(Layer::Infrastructure, "disk_full", &params(json!({}))).is_err());
        assert!(validate(Layer::Infrastructure, "disk_full", &params(json!({"bytes": 1024}))).is_ok());
        assert!(validate(Layer::Infrastructure, "network_partition", &params(json!({}))).is_err());
        let out =
            validate(Layer::Infrastructure, "network_partition", &params(json!({"blocked_hosts": "db"}))).unwrap();
        assert_eq!(out["blocked_hosts"], ParamValue::List(vec!["db".into()]));
    }

    #[test]
    fn every_layer_has_faults_and_names_are_unique() {
        for layer in Layer::ALL {
            assert!(!fault_types(layer).is_empty());
        }
        let mut names: Vec<_> = CATALOGUE.iter().map(|s| s.fault_type).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), CATALOGUE.len());
    }
}
