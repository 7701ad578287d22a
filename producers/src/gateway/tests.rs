use chaoseater_schemas::experiment::{Layer, ParamValue, RollbackStrategy, RunMode};
use chaoseater_schemas::ids::TimestampMs;

use super::*;

fn parse(text: &str) -> Result<Vec<chaoseater_schemas::events::RunRequested>, GatewayError> {
    parse_experiments("exp.yaml", text, &RunOverrides::default(), "tester", TimestampMs(1))
}

const PYTHON_TOOL_FILE: &str = r#"
experiments:
  - name: data-corruption-test
    description: corrupt 10% of cells
    layer: data
    fault_type: data_corruption
    duration: 60
    parameters:
      corruption_rate: 0.1
    rollback_strategy: auto
  - name: latency
    layer: infrastructure
    fault_type: network_latency
    duration: 1500ms
    rollback_strategy: gradual
"#;

#[test]
fn reads_the_python_tools_format() {
    let runs = parse(PYTHON_TOOL_FILE).unwrap();
    assert_eq!(runs.len(), 2);
    let first = &runs[0].experiment;
    assert_eq!(first.layer, Layer::Data);
    assert_eq!(first.duration_ms, 60_000);
    assert_eq!(first.parameters["corruption_rate"], ParamValue::Float(0.1));
    assert_eq!(first.rollback.strategy, RollbackStrategy::Immediate);
    let second = &runs[1];
    assert_eq!(second.experiment.duration_ms, 1_500);
    assert_eq!(second.experiment.parameters["latency_ms"], ParamValue::Int(100));
    assert_eq!(second.experiment.rollback.strategy, RollbackStrategy::Gradual);
    assert_eq!(second.mode, RunMode::Parallel);
    assert_ne!(runs[0].run_id, runs[1].run_id);
    assert_eq!(runs[0].event_id, chaoseater_schemas::events::RunRequested::id_for(&runs[0].run_id));
}

#[test]
fn extensions_and_precedence() {
    let text = r#"
regions: [eu, us]
mode: sequential
fail_fast: true
experiments:
  - name: a
    layer: model
    fault_type: model_unavailable
    duration: 2
    mode: blast-radius
    blast_radius_percent: 50
    tags: {team: ml}
    rollback: {strategy: canary, canary_percentage: 20, gradual_steps: 4}
"#;
    let runs = parse(text).unwrap();
    let run = &runs[0];
    assert_eq!(run.mode, RunMode::BlastRadius);
    assert!(run.fail_fast);
    assert_eq!(run.regions.len(), 2);
    assert_eq!(run.blast_radius_percent, 50.0);
    assert_eq!(run.experiment.rollback.strategy, RollbackStrategy::Canary);
    assert_eq!(run.experiment.rollback.canary_percentage, 20.0);
    assert_eq!(run.experiment.rollback.timeout_seconds, 300);
    assert_eq!(run.experiment.tags["team"], "ml");

    let overrides =
        RunOverrides { mode: Some("parallel".into()), regions: Some(vec!["ap".into()]), ..Default::default() };
    let runs = parse_experiments("f", text, &overrides, "t", TimestampMs(1)).unwrap();
    assert_eq!(runs[0].mode, RunMode::Parallel);
    assert_eq!(runs[0].regions[0].as_str(), "ap");
}

fn error_of(text: &str) -> String {
    parse(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_file_experiment_and_field() {
    let err = error_of("experiments:\n  - {name: x, layer: data, fault_type: data_explosion, duration: 1}\n");
    assert!(err.starts_with("exp.yaml: experiment 1 (\"x\"): field fault_type: unknown fault_type"), "{err}");

    let err = error_of(
        "experiments:\n  - {name: x, layer: infrastructure, fault_type: packet_loss, duration: 1, parameters: {loss_rate: 1.5}}\n",
    );
    assert_eq!(
        err,
        r#"exp.yaml: experiment 1 ("x"): field parameters.loss_rate: fault parameter "loss_rate" must be in [0, 1], got 1.5"#
    );

    let err = error_of("experiments:\n  - {name: x, layer: model, fault_type: model_drift}\n");
    assert!(err.contains("field duration: missing"), "{err}");

    let err = error_of("experiments:\n  - {name: x, layer: model\n");
    assert!(err.starts_with("exp.yaml: not a valid experiment file"), "{err}");
    assert!(err.contains("line"), "{err}");

    let err =
        error_of("experiments:\n  - {name: x, layer: model, fault_type: model_drift, duration: 1, colour: red}\n");
    assert!(err.contains("unknown field `colour`"), "{err}");

    let err = error_of("experiments:\n  - {name: x, layer: model, fault_type: model_drift, duration: -1}\n");
    assert!(err.contains("field duration: must be positive"), "{err}");

    let err = error_of(
        "experiments:\n  - {name: x, layer: model, fault_type: model_drift, duration: 1, rollback: {failure_threshold: 2}}\n",
    );
    assert!(err.contains("field rollback.failure_threshold"), "{err}");

    let err = error_of("experiments: []\n");
    assert!(err.contains("nothing to run"), "{err}");
}
