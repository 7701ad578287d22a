//! The A/B tables: `ab_tests` (a row per concluded test and judged metric) and `ab_samples` (a row per
//! sample and metric it measured), from AbTestConcluded.

use arrow::datatypes::{DataType, Field};
use chaoseater_schemas::events::AbTestConcluded;

use super::{AB_SAMPLES, AB_TESTS, Cell, col, ts};

/// The columns of an A/B table as written in its files.
pub(super) fn fields(table: &str) -> Vec<Field> {
    use DataType::{Float64, Int32, Utf8};
    match table {
        // One row per concluded test and judged metric (one row with no metric for a test not judged).
        AB_TESTS => vec![
            col("event_id", Utf8, false),
            col("test_id", Utf8, false),
            col("status", Utf8, false),
            col("reason", Utf8, true),
            col("label_a", Utf8, false),
            col("label_b", Utf8, false),
            col("samples_per_variant", Int32, false),
            col("confidence", Float64, false),
            col("tolerance", Float64, false),
            col("verdict", Utf8, true),
            col("score", Float64, true),
            col("mde", Float64, true),
            col("metric", Utf8, true),
            // The metric's place in the report (0-based).
            col("metric_position", Int32, true),
            col("direction", Utf8, true),
            col("n_a", Int32, true),
            col("n_b", Int32, true),
            col("u", Float64, true),
            col("z", Float64, true),
            col("p_value", Float64, true),
            col("hl_estimate", Float64, true),
            col("ci_low", Float64, true),
            col("ci_high", Float64, true),
            col("mean_ratio", Float64, true),
            col("prob_superiority", Float64, true),
            col("label", Utf8, true),
            col("metric_mde", Float64, true),
            col("concluded_at", ts(), false),
        ],
        // One row per sample of a concluded test and metric it measured.
        AB_SAMPLES => vec![
            col("event_id", Utf8, false),
            col("test_id", Utf8, false),
            col("variant", Utf8, false),
            col("number", Int32, false),
            col("run_id", Utf8, false),
            col("status", Utf8, false),
            col("metric", Utf8, false),
            col("value", Float64, false),
            col("concluded_at", ts(), false),
        ],
        other => unreachable!("no A/B table {other}"),
    }
}

/// The rows of a concluded A/B test: an ab_tests row per judged metric (or one without a metric), an
/// ab_samples row per sample and metric it measured; all on the day it concluded.
pub(super) fn each_row(c: &AbTestConcluded, row: &mut impl FnMut(&'static str, i64, &[Cell<'_>])) {
    let at = c.occurred_at.0;
    let judgement = c.judgement.as_ref();
    let test = [
        Cell::text(c.event_id.as_str()),
        Cell::text(c.run_id.as_str()),
        Cell::text(c.status.as_str()),
        Cell::opt(c.reason.as_deref()),
        Cell::text(&c.label_a),
        Cell::text(&c.label_b),
        Cell::Int(Some(i64::from(c.samples_per_variant))),
        Cell::Float(Some(c.confidence)),
        Cell::Float(Some(c.tolerance)),
        Cell::opt(judgement.map(|j| j.verdict.as_str())),
        Cell::Float(judgement.map(|j| j.score)),
        Cell::Float(judgement.map(|j| j.mde).filter(|m| m.is_finite())),
    ];
    let metrics = judgement.map(|j| j.metrics.as_slice()).unwrap_or_default();
    if metrics.is_empty() {
        let mut cells = test.to_vec();
        let (text, int, float) = (Cell::Text(None), Cell::Int(None), Cell::Float(None));
        cells.extend([text.clone(), int.clone(), text.clone(), int.clone(), int]);
        cells.extend(std::iter::repeat_n(float.clone(), 8));
        cells.extend([text, float, Cell::Time(at)]);
        row(AB_TESTS, at, &cells);
    }
    for (position, m) in metrics.iter().enumerate() {
        let mut cells = test.to_vec();
        cells.extend([
            Cell::text(&m.metric),
            Cell::Int(Some(position as i64)),
            Cell::text(m.direction.as_str()),
            Cell::Int(Some(i64::from(m.n_a))),
            Cell::Int(Some(i64::from(m.n_b))),
            Cell::Float(Some(m.u)),
            Cell::Float(Some(m.z)),
            Cell::Float(Some(m.p_value)),
            Cell::Float(Some(m.hl_estimate)),
            Cell::Float(Some(m.ci_low)),
            Cell::Float(Some(m.ci_high)),
            Cell::Float(m.mean_ratio),
            Cell::Float(Some(m.prob_superiority)),
            Cell::text(m.label.as_str()),
            Cell::Float(Some(m.mde).filter(|v| v.is_finite())),
            Cell::Time(at),
        ]);
        row(AB_TESTS, at, &cells);
    }
    for sample in &c.samples {
        for (metric, value) in &sample.values {
            row(
                AB_SAMPLES,
                at,
                &[
                    Cell::text(c.event_id.as_str()),
                    Cell::text(c.run_id.as_str()),
                    Cell::text(sample.variant.as_str()),
                    Cell::Int(Some(i64::from(sample.number))),
                    Cell::text(sample.run_id.as_str()),
                    Cell::text(sample.status.as_str()),
                    Cell::text(metric),
                    Cell::Float(Some(*value)),
                    Cell::Time(at),
                ],
            );
        }
    }
}
