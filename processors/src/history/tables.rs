//! The history's tables: their Arrow schemas and the rows each event contributes. Real types throughout
//! (timestamps in UTC milliseconds, floats, integers; strings dictionary-encoded by Parquet), one table
//! per kind of fact, so analysts query columns rather than JSON.
//!
//! Rows go straight from the decoded event into Arrow column builders ([`Rows`]): a row is a slice of
//! cells borrowed from the event, so materializing allocates per column, not per cell.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Float64Builder, Int32Builder, Int64Builder, RecordBatch, StringBuilder, TimestampMillisecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use chaoseater_schemas::events::{Event, RegionResult};
use chaoseater_schemas::experiment::ParamValue;

mod ab;

pub const EXPERIMENTS: &str = "experiments";
pub const PARAMETERS: &str = "parameters";
pub const TAGS: &str = "tags";
pub const ROLLBACK_EVENTS: &str = "rollback_events";
pub const HEALTH_SAMPLES: &str = "health_samples";
pub const AB_TESTS: &str = "ab_tests";
pub const AB_SAMPLES: &str = "ab_samples";

/// Every table, in the order they are listed.
pub const TABLES: [&str; 7] = [EXPERIMENTS, PARAMETERS, TAGS, ROLLBACK_EVENTS, HEALTH_SAMPLES, AB_TESTS, AB_SAMPLES];

/// The hive partition column every table has (not stored in the files: it is the directory).
pub const DATE: &str = "date";

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
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
            col("experiment_name", Utf8, false),
            col("layer", Utf8, false),
            col("fault_type", Utf8, false),
            col("region", Utf8, false),
            col("status", Utf8, false),
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
            // A/B samples (the tags the coordinator sets); null for other runs and in files written
            // before these columns existed.
            col("ab_test_id", Utf8, true),
            col("ab_variant", Utf8, true),
            col("ab_sample", Int32, true),
            // Added with score_version 2; null for version 1 and in files written before.
            col("slo_latency_ms", Float64, true),
            col("slo_latency_quantile", Float64, true),
            col("latency_within_objective", Float64, true),
            col("slow_count", Int64, true),
            col("coverage", Float64, true),
            col("accuracy_degradation_low", Float64, true),
            col("accuracy_degradation_high", Float64, true),
            col("baseline_latency_p95_ms", Float64, true),
            col("baseline_latency_p99_ms", Float64, true),
        ],
        PARAMETERS => vec![
            col("event_id", Utf8, false),
            col("run_id", Utf8, false),
            col("region", Utf8, false),
            col("name", Utf8, false),
            col("value", Utf8, false),
            col("number", Float64, true),
            col("finished_at", ts(), false),
        ],
        TAGS => vec![
            col("event_id", Utf8, false),
            col("run_id", Utf8, false),
            col("region", Utf8, false),
            col("key", Utf8, false),
            col("value", Utf8, false),
            col("finished_at", ts(), false),
        ],
        ROLLBACK_EVENTS => vec![
            col("event_id", Utf8, false),
            col("occurred_at", ts(), false),
            col("kind", Utf8, false),
            col("run_id", Utf8, true),
            col("region", Utf8, false),
            col("strategy", Utf8, true),
            col("trigger", Utf8, true),
            col("step", Int32, true),
            col("percentage", Float64, true),
            col("steps", Int32, true),
            col("duration_ms", Int64, true),
            col("from_state", Utf8, true),
            col("to_state", Utf8, true),
            col("reason", Utf8, true),
        ],
        HEALTH_SAMPLES => vec![
            col("event_id", Utf8, false),
            col("occurred_at", ts(), false),
            col("region", Utf8, false),
            col("status", Utf8, false),
            col("latency_ms", Float64, true),
            col("http_status", Int32, true),
            col("error_rate", Float64, true),
            col("message", Utf8, true),
        ],
        AB_TESTS | AB_SAMPLES => ab::fields(table),
        other => unreachable!("no table {other}"),
    };
    Arc::new(Schema::new(fields))
}

/// The columns of `table` as queries see them: strings as string views, which is how DataFusion reads
/// Parquet strings by default. Its readers decode dictionary-encoded pages (all our low-cardinality
/// columns) straight into views, and it groups and compares views column-wise; Arrow dictionary columns
/// would go through its slower row format instead (measured: `benches/README.md`, history).
pub fn read_schema(table: &str) -> SchemaRef {
    let fields: Vec<Field> = schema(table)
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 => f.as_ref().clone().with_data_type(DataType::Utf8View),
            _ => f.as_ref().clone(),
        })
        .collect();
    Arc::new(Schema::new(fields))
}

/// A batch read from a file of `table`, in this version's columns: cast to today's types (files written
/// before 2026-11-27 hold Arrow dictionaries where strings are now plain), nullable columns the file lacks
/// as nulls (a required column missing is an error).
pub fn conform(table: &str, batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = schema(table);
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => arrow::compute::cast(c, f.data_type()),
            None => Ok(arrow::array::new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

/// One cell of a row, borrowed from the event it comes from where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Text(Option<Cow<'a, str>>),
    Float(Option<f64>),
    Int(Option<i64>),
    /// Milliseconds since the epoch.
    Time(i64),
}

impl<'a> Cell<'a> {
    fn text(s: &'a str) -> Self {
        Cell::Text(Some(Cow::Borrowed(s)))
    }

    fn opt(s: Option<&'a str>) -> Self {
        Cell::Text(s.map(Cow::Borrowed))
    }
}

/// A parameter as the parameters table keeps it: its text, and its number when it has one.
pub fn param_text(value: &ParamValue) -> (Cow<'_, str>, Option<f64>) {
    match value {
        ParamValue::Bool(b) => (Cow::Borrowed(if *b { "true" } else { "false" }), Some(if *b { 1.0 } else { 0.0 })),
        ParamValue::Int(i) => (Cow::Owned(i.to_string()), Some(*i as f64)),
        ParamValue::Float(f) => (Cow::Owned(f.to_string()), Some(*f)),
        ParamValue::Text(t) => (Cow::Borrowed(t.as_str()), None),
        ParamValue::List(items) => (Cow::Owned(items.join(",")), None),
    }
}

/// Calls `row(table, at, cells)` for each row a RegionResult contributes: its experiments row, a
/// parameters row per parameter, a tags row per tag. `at` (milliseconds) decides the `date=` partition:
/// all of them the day the region finished, so pruning a day removes a result whole.
pub fn each_result_row(r: &RegionResult, row: &mut impl FnMut(&'static str, i64, &[Cell<'_>])) {
    let at = r.finished_at.0;
    let m = r.metrics.as_ref();
    let f = |get: fn(&chaoseater_schemas::events::RegionMetrics) -> f64| Cell::Float(m.map(get));
    row(
        EXPERIMENTS,
        at,
        &[
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
            Cell::opt(r.message.as_deref()),
            Cell::Time(r.started_at.0),
            Cell::Time(r.finished_at.0),
            Cell::Float(Some((r.finished_at.0 - r.started_at.0).max(0) as f64 / 1000.0)),
            Cell::opt(r.tags.get("ab_test").map(String::as_str)),
            Cell::opt(r.tags.get("ab_variant").map(String::as_str)),
            Cell::Int(r.tags.get("ab_sample").and_then(|n| n.parse().ok())),
            Cell::Float(m.and_then(|m| m.slo_latency_ms)),
            Cell::Float(m.and_then(|m| m.slo_latency_quantile)),
            Cell::Float(m.and_then(|m| m.latency_within_objective)),
            Cell::Int(m.and_then(|m| m.slow_count)),
            Cell::Float(m.and_then(|m| m.coverage)),
            Cell::Float(m.and_then(|m| m.accuracy_degradation_low)),
            Cell::Float(m.and_then(|m| m.accuracy_degradation_high)),
            Cell::Float(m.and_then(|m| m.baseline_latency_p95_ms)),
            Cell::Float(m.and_then(|m| m.baseline_latency_p99_ms)),
        ],
    );
    for (name, value) in &r.parameters {
        let (text, number) = param_text(value);
        row(
            PARAMETERS,
            at,
            &[
                Cell::text(r.event_id.as_str()),
                Cell::text(r.run_id.as_str()),
                Cell::text(r.region.as_str()),
                Cell::text(name),
                Cell::Text(Some(text)),
                Cell::Float(number),
                Cell::Time(at),
            ],
        );
    }
    for (key, value) in &r.tags {
        row(
            TAGS,
            at,
            &[
                Cell::text(r.event_id.as_str()),
                Cell::text(r.run_id.as_str()),
                Cell::text(r.region.as_str()),
                Cell::text(key),
                Cell::text(value),
                Cell::Time(at),
            ],
        );
    }
}

/// The cells of a rollback_events row after its first five: strategy, trigger, step, percentage, steps,
/// duration_ms, from_state, to_state, reason.
#[derive(Default)]
struct RollbackCells<'a> {
    strategy: Option<&'a str>,
    trigger: Option<&'a str>,
    step: Option<i64>,
    percentage: Option<f64>,
    steps: Option<i64>,
    duration_ms: Option<i64>,
    from_state: Option<&'a str>,
    to_state: Option<&'a str>,
    reason: Option<&'a str>,
}

/// Calls `row(table, at, cells)` for each row an event contributes to the history (none for events the
/// history does not keep).
pub fn each_row(event: &Event, row: &mut impl FnMut(&'static str, i64, &[Cell<'_>])) {
    let run = event.run_id().map(|r| r.as_str());
    let mut rollback = |kind: &str, at: i64, run: Option<&str>, region: &str, c: RollbackCells<'_>| {
        row(
            ROLLBACK_EVENTS,
            at,
            &[
                Cell::text(event.event_id().as_str()),
                Cell::Time(at),
                Cell::text(kind),
                Cell::opt(run),
                Cell::text(region),
                Cell::opt(c.strategy),
                Cell::opt(c.trigger),
                Cell::Int(c.step),
                Cell::Float(c.percentage),
                Cell::Int(c.steps),
                Cell::Int(c.duration_ms),
                Cell::opt(c.from_state),
                Cell::opt(c.to_state),
                Cell::opt(c.reason),
            ],
        )
    };
    match event {
        Event::RegionResult(r) => each_result_row(r, row),
        Event::AbTestConcluded(c) => ab::each_row(c, row),
        Event::RegionHealthSampled(s) => row(
            HEALTH_SAMPLES,
            s.occurred_at.0,
            &[
                Cell::text(s.event_id.as_str()),
                Cell::Time(s.occurred_at.0),
                Cell::text(s.region.as_str()),
                Cell::text(s.status.as_str()),
                Cell::Float(s.latency_ms),
                Cell::Int(s.http_status.map(i64::from)),
                Cell::Float(s.error_rate),
                Cell::opt(s.message.as_deref()),
            ],
        ),
        Event::FaultHeld(h) => {
            let cells = RollbackCells { duration_ms: Some(h.hold_limit_ms), ..Default::default() };
            rollback("FaultHeld", h.occurred_at.0, run, h.region.as_str(), cells)
        }
        Event::RollbackStarted(s) => {
            // The Avro symbols (`GRADUAL`, `DURATION_ENDED`), as the event carries them.
            let (strategy, trigger) =
                (s.strategy.as_str().to_ascii_uppercase(), s.trigger.as_str().to_ascii_uppercase());
            let cells = RollbackCells {
                strategy: Some(&strategy),
                trigger: Some(&trigger),
                steps: Some(s.planned_percentages.len() as i64),
                ..Default::default()
            };
            rollback("RollbackStarted", s.occurred_at.0, run, s.region.as_str(), cells)
        }
        Event::RollbackStepApplied(a) => {
            let cells =
                RollbackCells { step: Some(i64::from(a.step)), percentage: Some(a.percentage), ..Default::default() };
            rollback("RollbackStepApplied", a.occurred_at.0, run, a.region.as_str(), cells)
        }
        Event::RollbackPaused(p) => {
            let cells = RollbackCells { step: Some(i64::from(p.step)), reason: Some(&p.reason), ..Default::default() };
            rollback("RollbackPaused", p.occurred_at.0, run, p.region.as_str(), cells)
        }
        Event::RollbackCompleted(c) => {
            let cells = RollbackCells {
                steps: Some(i64::from(c.steps)),
                duration_ms: Some(c.duration_ms),
                ..Default::default()
            };
            rollback("RollbackCompleted", c.occurred_at.0, run, c.region.as_str(), cells)
        }
        Event::RollbackFailed(f) => {
            let cells = RollbackCells { reason: Some(&f.reason), ..Default::default() };
            rollback("RollbackFailed", f.occurred_at.0, run, f.region.as_str(), cells)
        }
        Event::CircuitStateChanged(c) => {
            let cells = RollbackCells {
                from_state: Some(c.from_state.as_str()),
                to_state: Some(c.to_state.as_str()),
                reason: Some(&c.reason),
                ..Default::default()
            };
            rollback("CircuitStateChanged", c.occurred_at.0, None, c.region.as_str(), cells)
        }
        _ => {}
    }
}

/// One column being built.
enum Column {
    Text(StringBuilder),
    Float(Float64Builder),
    Int64(Int64Builder),
    Int32(Int32Builder),
    Time(TimestampMillisecondBuilder, Option<Arc<str>>),
}

impl Column {
    fn new(data_type: &DataType) -> Self {
        match data_type {
            DataType::Utf8 => Column::Text(StringBuilder::new()),
            DataType::Float64 => Column::Float(Float64Builder::new()),
            DataType::Int64 => Column::Int64(Int64Builder::new()),
            DataType::Int32 => Column::Int32(Int32Builder::new()),
            DataType::Timestamp(_, tz) => Column::Time(TimestampMillisecondBuilder::new(), tz.clone()),
            other => unreachable!("no column of type {other}"),
        }
    }

    /// Appends a cell (null when the row has none or, a bug the tests catch, one of another type).
    fn append(&mut self, cell: Option<&Cell<'_>>) {
        match (self, cell) {
            (Column::Text(b), Some(Cell::Text(v))) => b.append_option(v.as_deref()),
            (Column::Float(b), Some(Cell::Float(v))) => b.append_option(*v),
            (Column::Int64(b), Some(Cell::Int(v))) => b.append_option(*v),
            (Column::Int32(b), Some(Cell::Int(v))) => b.append_option(v.and_then(|v| i32::try_from(v).ok())),
            (Column::Time(b, _), Some(Cell::Time(v))) => b.append_value(*v),
            (column, cell) => {
                debug_assert!(cell.is_none(), "a cell {cell:?} in a column of another type");
                column.append_null();
            }
        }
    }

    fn append_null(&mut self) {
        match self {
            Column::Text(b) => b.append_null(),
            Column::Float(b) => b.append_null(),
            Column::Int64(b) => b.append_null(),
            Column::Int32(b) => b.append_null(),
            Column::Time(b, _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Column::Text(b) => Arc::new(b.finish()),
            Column::Float(b) => Arc::new(b.finish()),
            Column::Int64(b) => Arc::new(b.finish()),
            Column::Int32(b) => Arc::new(b.finish()),
            Column::Time(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
        }
    }
}

/// The rows of one table and day, column by column.
struct TableRows {
    schema: SchemaRef,
    columns: Vec<Column>,
}

impl TableRows {
    fn new(table: &str) -> Self {
        let schema = schema(table);
        let columns = schema.fields().iter().map(|f| Column::new(f.data_type())).collect();
        Self { schema, columns }
    }

    fn append(&mut self, cells: &[Cell<'_>]) {
        for (i, column) in self.columns.iter_mut().enumerate() {
            column.append(cells.get(i));
        }
    }

    fn finish(mut self, table: &str) -> Result<RecordBatch, arrow::error::ArrowError> {
        let columns = self.columns.iter_mut().map(Column::finish).collect();
        let batch = RecordBatch::try_new(self.schema, columns)?;
        sorted(table, batch)
    }
}

/// Experiments rows sorted by experiment name, then finish time: each Parquet page then holds few names,
/// so a query for one experiment (trends) skips the pages of the others by their statistics.
pub(crate) fn sorted(table: &str, batch: RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    if table != EXPERIMENTS || batch.num_rows() < 2 {
        return Ok(batch);
    }
    let key = |name: &str| arrow::compute::SortColumn {
        values: batch.column_by_name(name).expect("an experiments column").clone(),
        options: None,
    };
    let order = arrow::compute::lexsort_to_indices(&[key("experiment_name"), key("finished_at")], None)?;
    arrow::compute::take_record_batch(&batch, &order)
}

/// Rows of any tables and days, built as Arrow columns as they come.
#[derive(Default)]
pub struct Rows {
    tables: BTreeMap<(&'static str, i64), TableRows>,
    len: usize,
}

impl std::fmt::Debug for Rows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rows").field("len", &self.len).field("parts", &self.tables.len()).finish()
    }
}

impl Rows {
    /// Appends one row of `table`, filed under the day of `at` (milliseconds since the epoch).
    pub fn append(&mut self, table: &'static str, at: i64, cells: &[Cell<'_>]) {
        self.tables.entry((table, at.div_euclid(86_400_000))).or_insert_with(|| TableRows::new(table)).append(cells);
        self.len += 1;
    }

    /// Appends the rows an event contributes; returns how many.
    pub fn push(&mut self, event: &Event) -> usize {
        let before = self.len;
        each_row(event, &mut |table, at, cells| self.append(table, at, cells));
        self.len - before
    }

    /// Appends a RegionResult's rows, or only those of table `only` (benchmarks query experiments alone).
    pub fn push_result(&mut self, r: &RegionResult, only: Option<&str>) {
        each_result_row(r, &mut |table, at, cells| {
            if only.is_none_or(|t| t == table) {
                self.append(table, at, cells);
            }
        });
    }

    /// The rows of many results.
    pub fn of_results<'r>(results: impl IntoIterator<Item = &'r RegionResult>) -> Self {
        let mut rows = Self::default();
        results.into_iter().for_each(|r| rows.push_result(r, None));
        rows
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One record batch per table and day: (table, day number since the epoch, batch).
    pub fn finish(self) -> Result<Vec<(&'static str, i64, RecordBatch)>, arrow::error::ArrowError> {
        self.tables.into_iter().map(|((table, day), rows)| Ok((table, day, rows.finish(table)?))).collect()
    }
}
