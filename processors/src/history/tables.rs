//! The history's tables: their Arrow schemas and the rows each event contributes. Real types throughout
//! (timestamps in UTC milliseconds, floats, integers; strings dictionary-encoded by Parquet), one table
//! per kind of fact, so analysts query columns rather than JSON.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, StringDictionaryBuilder,
    TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef, TimeUnit};
use chaoseater_schemas::events::{Event, RegionResult};
use chaoseater_schemas::experiment::ParamValue;

pub const EXPERIMENTS: &str = "experiments";
pub const PARAMETERS: &str = "parameters";
pub const TAGS: &str = "tags";
pub const ROLLBACK_EVENTS: &str = "rollback_events";
pub const HEALTH_SAMPLES: &str = "health_samples";

/// Every table, in the order they are listed.
pub const TABLES: [&str; 5] = [EXPERIMENTS, PARAMETERS, TAGS, ROLLBACK_EVENTS, HEALTH_SAMPLES];

/// The hive partition column every table has (not stored in the files: it is the directory).
pub const DATE: &str = "date";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
}

/// A low-cardinality string column (layer, region, status, names): dictionary-encoded in Arrow and in
/// the Parquet files, so grouping and filtering work on small integer keys.
fn dict() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

fn col(name: &str, data_type: DataType, nullable: bool) -> Field {
    Field::new(name, data_type, nullable)
}

/// The columns of `table` as written in its files.
pub fn schema(table: &str) -> SchemaRef {
    use DataType::{Float64, Int32, Int64, Utf8};
    let fields = match table {
        EXPERIMENTS => vec![
            col("event_id", Utf8, false),
            col("run_id", Utf8, false),
            col("experiment_name", dict(), false),
            col("layer", dict(), false),
            col("fault_type", dict(), false),
            col("region", dict(), false),
            col("status", dict(), false),
            col("resilience_score", Float64, true),
            col("score_version", Int32, false),
            col("pipeline_downtime_s", Float64, true),
            col("recovery_time_s", Float64, true),
            col("accuracy_degradation", Float64, true),
            col("error_count", Int64, true),
            col("requests_total", Int64, true),
            col("latency_p50_ms", Float64, true),
            col("latency_p95_ms", Float64, true),
            col("latency_p99_ms", Float64, true),
            col("baseline_accuracy", Float64, true),
            col("baseline_latency_p50_ms", Float64, true),
            col("baseline_availability", Float64, true),
            col("message", Utf8, true),
            col("started_at", ts(), false),
            col("finished_at", ts(), false),
            col("duration_s", Float64, false),
        ],
        PARAMETERS => vec![
            col("event_id", Utf8, false),
            col("run_id", Utf8, false),
            col("region", dict(), false),
            col("name", dict(), false),
            col("value", Utf8, false),
            col("number", Float64, true),
            col("finished_at", ts(), false),
        ],
        TAGS => vec![
            col("event_id", Utf8, false),
            col("run_id", Utf8, false),
            col("region", dict(), false),
            col("key", dict(), false),
            col("value", Utf8, false),
            col("finished_at", ts(), false),
        ],
        ROLLBACK_EVENTS => vec![
            col("event_id", Utf8, false),
            col("occurred_at", ts(), false),
            col("kind", dict(), false),
            col("run_id", Utf8, true),
            col("region", dict(), false),
            col("strategy", dict(), true),
            col("trigger", dict(), true),
            col("step", Int32, true),
            col("percentage", Float64, true),
            col("steps", Int32, true),
            col("duration_ms", Int64, true),
            col("from_state", dict(), true),
            col("to_state", dict(), true),
            col("reason", Utf8, true),
        ],
        HEALTH_SAMPLES => vec![
            col("event_id", Utf8, false),
            col("occurred_at", ts(), false),
            col("region", dict(), false),
            col("status", dict(), false),
            col("latency_ms", Float64, true),
            col("http_status", Int32, true),
            col("error_rate", Float64, true),
            col("message", Utf8, true),
        ],
        other => unreachable!("no table {other}"),
    };
    Arc::new(Schema::new(fields))
}

/// One cell, before it becomes a column.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Text(Option<String>),
    Float(Option<f64>),
    Int(Option<i64>),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl Cell {
    fn text(s: impl Into<String>) -> Self {
        Cell::Text(Some(s.into()))
    }
}

/// One row of one table, with the day (UTC) it is filed under.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: &'static str,
    /// Milliseconds since the epoch that decide the `date=` partition.
    pub at: i64,
    pub cells: Vec<Cell>,
}

fn param_text(value: &ParamValue) -> (String, Option<f64>) {
    match value {
        ParamValue::Bool(b) => (b.to_string(), Some(if *b { 1.0 } else { 0.0 })),
        ParamValue::Int(i) => (i.to_string(), Some(*i as f64)),
        ParamValue::Float(f) => (f.to_string(), Some(*f)),
        ParamValue::Text(t) => (t.clone(), None),
        ParamValue::List(items) => (items.join(","), None),
    }
}

fn enum_name<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default()
}

/// The rows one RegionResult contributes: its experiments row, a parameters row per parameter, a tags
/// row per tag. All filed under the day the region finished, so pruning a day removes a result whole.
pub fn result_rows(r: &RegionResult) -> Vec<Row> {
    let at = r.finished_at.0;
    let m = r.metrics.as_ref();
    let f = |get: fn(&chaoseater_schemas::events::RegionMetrics) -> f64| Cell::Float(m.map(get));
    let mut rows = vec![Row {
        table: EXPERIMENTS,
        at,
        cells: vec![
            Cell::text(r.event_id.as_str()),
            Cell::text(r.run_id.as_str()),
            Cell::text(&r.experiment_name),
            Cell::text(r.layer.as_str()),
            Cell::text(&r.fault_type),
            Cell::text(r.region.as_str()),
            Cell::text(r.status.as_str()),
            Cell::Float(r.resilience_score),
            Cell::Int(Some(i64::from(r.score_version))),
            f(|m| m.pipeline_downtime_s),
            Cell::Float(m.and_then(|m| m.recovery_time_s)),
            f(|m| m.accuracy_degradation),
            Cell::Int(m.map(|m| m.error_count)),
            Cell::Int(m.map(|m| m.requests_total)),
            f(|m| m.latency_p50_ms),
            f(|m| m.latency_p95_ms),
            f(|m| m.latency_p99_ms),
            f(|m| m.baseline_accuracy),
            f(|m| m.baseline_latency_p50_ms),
            f(|m| m.baseline_availability),
            Cell::Text(r.message.clone()),
            Cell::Time(r.started_at.0),
            Cell::Time(r.finished_at.0),
            Cell::Float(Some((r.finished_at.0 - r.started_at.0).max(0) as f64 / 1000.0)),
        ],
    }];
    for (name, value) in &r.parameters {
        let (text, number) = param_text(value);
        rows.push(Row {
            table: PARAMETERS,
            at,
            cells: vec![
                Cell::text(r.event_id.as_str()),
                Cell::text(r.run_id.as_str()),
                Cell::text(r.region.as_str()),
                Cell::text(name),
                Cell::Text(Some(text)),
                Cell::Float(number),
                Cell::Time(at),
            ],
        });
    }
    for (key, value) in &r.tags {
        rows.push(Row {
            table: TAGS,
            at,
            cells: vec![
                Cell::text(r.event_id.as_str()),
                Cell::text(r.run_id.as_str()),
                Cell::text(r.region.as_str()),
                Cell::text(key),
                Cell::text(value),
                Cell::Time(at),
            ],
        });
    }
    rows
}

/// The cells of a rollback_events row after its first five: strategy, trigger, step, percentage, steps,
/// duration_ms, from_state, to_state, reason.
#[derive(Default)]
struct RollbackCells {
    strategy: Option<String>,
    trigger: Option<String>,
    step: Option<i64>,
    percentage: Option<f64>,
    steps: Option<i64>,
    duration_ms: Option<i64>,
    from_state: Option<String>,
    to_state: Option<String>,
    reason: Option<String>,
}

fn rollback_row(event: &Event, kind: &str, at: i64, run: Option<&str>, region: &str, c: RollbackCells) -> Vec<Row> {
    let cells = vec![
        Cell::text(event.event_id().as_str()),
        Cell::Time(at),
        Cell::text(kind),
        Cell::Text(run.map(str::to_owned)),
        Cell::text(region),
        Cell::Text(c.strategy),
        Cell::Text(c.trigger),
        Cell::Int(c.step),
        Cell::Float(c.percentage),
        Cell::Int(c.steps),
        Cell::Int(c.duration_ms),
        Cell::Text(c.from_state),
        Cell::Text(c.to_state),
        Cell::Text(c.reason),
    ];
    vec![Row { table: ROLLBACK_EVENTS, at, cells }]
}

/// The rows an event contributes to the history (none for events the history does not keep).
pub fn rows(event: &Event) -> Vec<Row> {
    let run = event.run_id().map(|r| r.as_str());
    match event {
        Event::RegionResult(r) => result_rows(r),
        Event::RegionHealthSampled(s) => vec![Row {
            table: HEALTH_SAMPLES,
            at: s.occurred_at.0,
            cells: vec![
                Cell::text(s.event_id.as_str()),
                Cell::Time(s.occurred_at.0),
                Cell::text(s.region.as_str()),
                Cell::text(s.status.as_str()),
                Cell::Float(s.latency_ms),
                Cell::Int(s.http_status.map(i64::from)),
                Cell::Float(s.error_rate),
                Cell::Text(s.message.clone()),
            ],
        }],
        Event::FaultHeld(h) => {
            let cells = RollbackCells { duration_ms: Some(h.hold_limit_ms), ..Default::default() };
            rollback_row(event, "FaultHeld", h.occurred_at.0, run, h.region.as_str(), cells)
        }
        Event::RollbackStarted(s) => {
            let cells = RollbackCells {
                strategy: Some(enum_name(&s.strategy)),
                trigger: Some(enum_name(&s.trigger)),
                steps: Some(s.planned_percentages.len() as i64),
                ..Default::default()
            };
            rollback_row(event, "RollbackStarted", s.occurred_at.0, run, s.region.as_str(), cells)
        }
        Event::RollbackStepApplied(a) => {
            let cells =
                RollbackCells { step: Some(i64::from(a.step)), percentage: Some(a.percentage), ..Default::default() };
            rollback_row(event, "RollbackStepApplied", a.occurred_at.0, run, a.region.as_str(), cells)
        }
        Event::RollbackPaused(p) => {
            let cells =
                RollbackCells { step: Some(i64::from(p.step)), reason: Some(p.reason.clone()), ..Default::default() };
            rollback_row(event, "RollbackPaused", p.occurred_at.0, run, p.region.as_str(), cells)
        }
        Event::RollbackCompleted(c) => {
            let cells = RollbackCells {
                steps: Some(i64::from(c.steps)),
                duration_ms: Some(c.duration_ms),
                ..Default::default()
            };
            rollback_row(event, "RollbackCompleted", c.occurred_at.0, run, c.region.as_str(), cells)
        }
        Event::RollbackFailed(f) => {
            let cells = RollbackCells { reason: Some(f.reason.clone()), ..Default::default() };
            rollback_row(event, "RollbackFailed", f.occurred_at.0, run, f.region.as_str(), cells)
        }
        Event::CircuitStateChanged(c) => {
            let cells = RollbackCells {
                from_state: Some(c.from_state.as_str().to_owned()),
                to_state: Some(c.to_state.as_str().to_owned()),
                reason: Some(c.reason.clone()),
                ..Default::default()
            };
            rollback_row(event, "CircuitStateChanged", c.occurred_at.0, None, c.region.as_str(), cells)
        }
        _ => Vec::new(),
    }
}

/// Builds the record batch of `rows` (all of `table`).
pub fn batch(table: &str, rows: &[&Row]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = schema(table);
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (i, field) in schema.fields().iter().enumerate() {
        fn cell(row: &Row, i: usize) -> &Cell {
            const NONE: &Cell = &Cell::Text(None);
            row.cells.get(i).unwrap_or(NONE)
        }
        let array: ArrayRef = match field.data_type() {
            DataType::Utf8 => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
                for row in rows {
                    match cell(row, i) {
                        Cell::Text(v) => b.append_option(v.as_deref()),
                        other => b.append_option(Some(format!("{other:?}"))),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Dictionary(..) => {
                let mut b = StringDictionaryBuilder::<Int32Type>::new();
                for row in rows {
                    match cell(row, i) {
                        Cell::Text(v) => b.append_option(v.as_deref()),
                        other => b.append_option(Some(format!("{other:?}"))),
                    }
                }
                Arc::new(b.finish())
            }
            DataType::Float64 => {
                let mut b = Float64Builder::with_capacity(rows.len());
                rows.iter().for_each(|row| b.append_option(if let Cell::Float(v) = cell(row, i) { *v } else { None }));
                Arc::new(b.finish())
            }
            DataType::Int64 => {
                let mut b = Int64Builder::with_capacity(rows.len());
                rows.iter().for_each(|row| b.append_option(if let Cell::Int(v) = cell(row, i) { *v } else { None }));
                Arc::new(b.finish())
            }
            DataType::Int32 => {
                let mut b = Int32Builder::with_capacity(rows.len());
                rows.iter().for_each(|row| {
                    b.append_option(if let Cell::Int(v) = cell(row, i) { v.map(|v| v as i32) } else { None })
                });
                Arc::new(b.finish())
            }
            DataType::Timestamp(_, tz) => {
                let mut b = TimestampMillisecondBuilder::with_capacity(rows.len());
                rows.iter()
                    .for_each(|row| b.append_option(if let Cell::Time(v) = cell(row, i) { Some(*v) } else { None }));
                Arc::new(b.finish().with_timezone_opt(tz.clone()))
            }
            other => unreachable!("no column of type {other}"),
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema, columns)
}
