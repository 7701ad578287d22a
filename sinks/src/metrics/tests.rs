use chaoseater_schemas::events::{Event, EventKind, RegionStatus};
use chaoseater_schemas::samples;

use super::*;

fn result(region: &str, status: RegionStatus, score: f64, errors: i64) -> Event {
    let Event::RegionResult(mut r) = samples::sample(EventKind::RegionResult) else { unreachable!("sample kind") };
    r.region = chaoseater_schemas::ids::RegionName::new(region);
    r.status = status;
    r.resilience_score = Some(score);
    r.started_at = chaoseater_schemas::ids::TimestampMs(1_000);
    r.finished_at = chaoseater_schemas::ids::TimestampMs(4_500);
    if let Some(m) = r.metrics.as_mut() {
        m.error_count = errors;
        m.recovery_time_s = Some(1.5);
    }
    Event::RegionResult(r)
}

#[test]
fn results_become_the_series_the_dashboard_queries() {
    let view = MetricsView::new();
    view.apply(&result("eu-west", RegionStatus::Completed, 88.0, 2));
    view.apply(&result("eu-west", RegionStatus::Completed, 91.0, 3));
    view.apply(&result("us-east", RegionStatus::Failed, 10.0, 7));
    let text = view.render();
    let line = |prefix: &str| {
        text.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no {prefix} in\n{text}")).to_owned()
    };
    assert!(line("chaos_resilience_score{").contains("region=\"eu-west\""));
    assert!(line("chaos_resilience_score{").ends_with(" 91"), "latest value wins: {text}");
    let completed =
        text.lines().find(|l| l.starts_with("chaos_experiments_total{") && l.contains("eu-west")).expect("counter");
    assert!(completed.contains("status=\"COMPLETED\"") && completed.ends_with(" 2"), "{completed}");
    let errors = text.lines().find(|l| l.starts_with("chaos_errors_total{") && l.contains("eu-west")).expect("errors");
    assert!(errors.ends_with(" 5"), "{errors}");
    assert!(text.contains("le=\"5\"} "), "{text}");
    let inf = text.lines().find(|l| l.contains("le=\"+Inf\"") && l.contains("eu-west")).expect("+Inf");
    assert!(inf.ends_with(" 2"), "{inf}");
    assert!(text.contains("chaos_experiment_duration_seconds_sum{"), "{text}");
    // Every sample line is name{labels} value with a number.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let (_, value) = l.rsplit_once(' ').expect("value");
        assert!(value.parse::<f64>().is_ok(), "{l}");
        assert!(l.starts_with("chaos_"), "{l}");
    }
}

#[test]
fn the_deprecated_error_count_is_rendered_only_when_asked_for() {
    let event = result("eu-west", RegionStatus::Completed, 88.0, 4);
    let current = MetricsView::new();
    current.apply(&event);
    let text = current.render();
    assert!(text.lines().any(|l| l.starts_with("chaos_probe_errors{") && l.ends_with(" 4")), "{text}");
    assert!(!text.contains("chaos_error_count"), "{text}");
    let compat = MetricsView::new().with_deprecated_names(true);
    compat.apply(&event);
    let text = compat.render();
    assert!(text.contains("# TYPE chaos_error_count gauge"), "{text}");
    assert!(text.lines().any(|l| l.starts_with("chaos_error_count{") && l.ends_with(" 4")), "{text}");
}

#[test]
fn a_concluded_ab_test_exports_its_verdict_as_a_state_set_and_its_score() {
    let view = MetricsView::new();
    view.apply(&samples::sample(EventKind::AbTestConcluded));
    let text = view.render();
    let verdicts: Vec<&str> = text.lines().filter(|l| l.starts_with("chaos_ab_verdict{")).collect();
    assert_eq!(verdicts.len(), 4, "{text}");
    let current: Vec<&&str> = verdicts.iter().filter(|l| l.ends_with(" 1")).collect();
    assert_eq!(current.len(), 1, "{text}");
    assert!(current[0].contains("verdict=\"NO_SIGNIFICANT_DIFFERENCE\""), "{text}");
    assert!(current[0].contains("label_b=\"validate\""), "{text}");
    assert!(text.lines().any(|l| l.starts_with("chaos_ab_score{") && l.ends_with(" 100")), "{text}");
    // An aborted test has no verdict to show.
    let Event::AbTestConcluded(mut aborted) = samples::sample(EventKind::AbTestConcluded) else { unreachable!() };
    aborted.run_id = chaoseater_schemas::ids::RunId::new("aborted");
    aborted.judgement = None;
    view.apply(&Event::AbTestConcluded(aborted));
    assert!(!view.render().contains("test_id=\"aborted\""));
}
