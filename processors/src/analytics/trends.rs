//! The SQL of `trends` (DuckDB runs it unchanged) and the trend columns added to its totals.

use std::sync::Arc;

use super::{AnalyticsError, RecordBatch, Result, literal, trend};

/// The two queries of `trends` over `table` (totals, daily series), in SQL that DuckDB runs unchanged
/// (the benchmark compares the engines on exactly these); `score_version` keeps to one formula's scores.
pub fn trends_sql(name: &str, days: u32, today_ms: i64, score_version: Option<i32>, table: &str) -> (String, String) {
    let filter = trends_filter(name, days, today_ms, score_version);
    let measures = "count(*) AS runs, \
        round(100.0 * avg(CASE WHEN status = 'COMPLETED' THEN 1.0 ELSE 0.0 END), 2) AS success_rate_pct, \
        round(avg(resilience_score), 2) AS mean_score, round(median(resilience_score), 2) AS median_score, \
        round(percentile_cont(0.95) WITHIN GROUP (ORDER BY resilience_score), 2) AS p95_score, \
        round(avg(recovery_time_s), 3) AS mean_recovery_s";
    (
        format!("SELECT {measures} FROM {table} WHERE {filter}"),
        format!("SELECT date AS day, {measures} FROM {table} WHERE {filter} GROUP BY date ORDER BY date"),
    )
}

/// The rows of one experiment in the `days` days up to the day of `today_ms` (of one score version).
pub(super) fn trends_filter(name: &str, days: u32, today_ms: i64, score_version: Option<i32>) -> String {
    let today = crate::history::day(today_ms);
    let since = crate::history::day(today_ms - i64::from(days.max(1) - 1) * 86_400_000);
    // Unscored rows (failed regions) belong to every version: they count in the success rate.
    let version =
        score_version.map(|v| format!(" AND (score_version = {v} OR resilience_score IS NULL)")).unwrap_or_default();
    format!(
        "experiment_name = {} AND date >= {} AND date <= {}{version}",
        literal(name),
        literal(&since),
        literal(&today)
    )
}

/// Which score version `trends` reports (the newest in its span) and how many older-version runs that
/// leaves out: a trend across a change of formula would show the change, not the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Versions {
    pub newest: Option<i32>,
    pub older_runs: i64,
}

/// Significance of the trends `trends` reports (two-sided).
pub const TREND_ALPHA: f64 = 0.05;

/// `totals` (one row) with the trend's columns after its own: the slope and its interval are null when
/// the runs span too little time to carry one, and `trend` then says why.
pub(super) fn with_trend(totals: &[RecordBatch], trend: &trend::Trend, versions: Versions) -> Result<RecordBatch> {
    use arrow::array::{ArrayRef, Float64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let engine = |e: arrow::error::ArrowError| AnalyticsError::Engine(e.to_string());
    let schema = totals.first().map(RecordBatch::schema).ok_or_else(|| AnalyticsError::Engine("no totals".into()))?;
    let base = arrow::compute::concat_batches(&schema, totals).map_err(engine)?;
    let round = |v: f64, places: i32| (v * 10f64.powi(places)).round() / 10f64.powi(places);
    let float = |v: Option<f64>| Arc::new(Float64Array::from(vec![v; base.num_rows()])) as ArrayRef;
    let text = |v: String| Arc::new(StringArray::from(vec![v; base.num_rows()])) as ArrayRef;
    let mut words = match &trend.note {
        Some(note) => format!("{}: {note}", trend.direction.as_str()),
        None => trend.direction.as_str().to_owned(),
    };
    if versions.older_runs > 0 {
        words.push_str(&format!(" ({} runs of an older score version left out)", versions.older_runs));
    }
    let version = Arc::new(arrow::array::Int32Array::from(vec![versions.newest; base.num_rows()])) as ArrayRef;
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    let mut columns = base.columns().to_vec();
    for (name, column) in [
        ("score_version", version),
        ("score_slope_per_day", float(trend.slope_per_day.map(|v| round(v, 4)))),
        ("slope_low", float(trend.slope_interval.map(|i| round(i.0, 4)))),
        ("slope_high", float(trend.slope_interval.map(|i| round(i.1, 4)))),
        ("trend_p_value", float(trend.p_value.map(|p| round(p, 4)))),
        ("trend", text(words)),
    ] {
        fields.push(Field::new(name, column.data_type().clone(), true));
        columns.push(column);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(engine)
}
