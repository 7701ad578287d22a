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

const AB_FILE: &str = r#"
ab:
  samples: 6
  metrics: [resilience_score, recovery_time_s]
  variant_a: {label: none, regions: [us-east]}
  variant_b: {label: validate, regions: [eu-west]}
experiments:
  - name: corrupt
    layer: data
    fault_type: data_corruption
    duration: 2s
"#;

fn parse_ab(text: &str, samples: Option<i64>) -> Result<chaoseater_schemas::events::AbTestRequested, GatewayError> {
    parse_ab_test("ab.yaml", text, &AbOverrides { samples }, "tester", TimestampMs(1))
}

#[test]
fn an_ab_file_becomes_one_validated_request() {
    let request = parse_ab(AB_FILE, None).unwrap();
    assert_eq!(request.samples_per_variant, 6);
    assert_eq!(request.experiment.fault_type, "data_corruption");
    assert_eq!((request.variant_a.label.as_str(), request.variant_a.regions[0].as_str()), ("none", "us-east"));
    assert!(request.variant_b.experiment.is_none(), "both run the file's one experiment");
    let names: Vec<&str> = request.metrics.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["resilience_score", "recovery_time_s"]);
    assert_eq!((request.confidence, request.tolerance), (0.98, 0.25));
    assert_eq!(parse_ab(AB_FILE, Some(9)).unwrap().samples_per_variant, 9, "--samples wins");
    // `submit` refuses it, naming the command that runs it.
    let refused = parse(AB_FILE).unwrap_err();
    assert_eq!(refused.field.as_deref(), Some("ab"));
    assert!(refused.message.contains("chaoseater ab"));
}

#[test]
fn variants_may_run_different_experiments_of_the_file_in_the_same_regions() {
    let text = r#"
ab:
  variant_a: {label: short, experiment: short, regions: [eu-west]}
  variant_b: {label: long, experiment: long, regions: [eu-west]}
experiments:
  - {name: short, layer: data, fault_type: data_corruption, duration: 1s}
  - {name: long, layer: data, fault_type: data_corruption, duration: 3s}
"#;
    let request = parse_ab(text, None).unwrap();
    assert_eq!(request.experiment.duration_ms, 1_000);
    assert_eq!(request.variant_b.experiment.as_ref().map(|e| e.duration_ms), Some(3_000));
    assert_eq!(request.samples_per_variant, 10, "the default");
}

#[test]
fn bad_ab_files_are_refused_naming_the_field() {
    let cases = [
        (AB_FILE.replace("samples: 6", "samples: 2"), "ab.samples"),
        (AB_FILE.replace("recovery_time_s]", "vibes]"), "ab.metrics"),
        (AB_FILE.replace("samples: 6", "confidence: 1.5"), "ab.confidence"),
        (AB_FILE.replace("[eu-west]", "[us-east]"), "ab.variant_b"),
        (AB_FILE.replace("[eu-west]", "[eu-west, us-east]"), "ab.variant_b.regions"),
        (AB_FILE.replace("  variant_b: {label: validate, regions: [eu-west]}\n", ""), "ab.variant_b"),
        (AB_FILE.replace("label: validate, ", "label: validate, experiment: nope, "), "ab.variant_b.experiment"),
    ];
    for (text, field) in cases {
        let err = parse_ab(&text, None).unwrap_err();
        assert_eq!(err.field.as_deref(), Some(field), "{err}");
    }
    assert_eq!(parse_ab(AB_FILE, Some(0)).unwrap_err().field.as_deref(), Some("ab.samples"));
}

#[test]
fn the_python_tools_prometheus_block_is_read_and_checked() {
    let file = |block: &str| format!("{PYTHON_TOOL_FILE}{block}");
    let parsed =
        |text: &str| super::file::parse_file("config.yaml", text, &RunOverrides::default(), "t", TimestampMs(1));
    let with = parsed(&file("prometheus:\n  pushgateway_url: localhost:9091\n  job_name: chaos_engineering\n"))
        .expect("the Python tool's config.example.yaml shape");
    let block = with.prometheus.expect("the block");
    assert_eq!(block.url(), "http://localhost:9091", "a bare host:port is http, as push_to_gateway reads it");
    assert_eq!(block.job_name, "chaos_engineering");
    let defaulted = parsed(&file("prometheus:\n  pushgateway_url: http://pg:9091/\n")).expect("job_name defaults");
    assert_eq!(defaulted.prometheus.expect("block").job_name, "chaos_engineering");
    assert!(parsed(PYTHON_TOOL_FILE).expect("no block").prometheus.is_none());
    for (block, expected) in [
        ("prometheus:\n  pushgateway_url: https://pg:9091\n", "only http://"),
        ("prometheus:\n  pushgateway_url: \"http://\"\n", "with a host"),
        ("prometheus:\n  pushgateway_url: http://pg:9091\n  job_name: \"\"\n", "job_name"),
        ("prometheus:\n  pushgateway_url: http://pg:9091\n  job: x\n", "unknown field"),
    ] {
        let error = parsed(&file(block)).err().expect(block).to_string();
        assert!(error.contains("prometheus") && error.contains(expected), "{block}: {error}");
    }
}
