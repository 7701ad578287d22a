//! Analytics over the Parquet history with DataFusion: the history's tables registered once (hive
//! partitions `date=`), the questions the CLI asks (query, trends, compare, summary, export), and a
//! read-only SQL path for analysts. Answers are Arrow record batches; [`render`] turns them into an
//! aligned table, CSV or JSON.

pub mod ab;
pub mod groups;
pub mod render;
pub mod trend;
mod trends;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::Statement;

use crate::ab::judge::Direction;
use crate::history::tables;
mod filters;
pub use filters::{Filters, Order, check_day};
pub use trends::{TREND_ALPHA, trends_sql};
use trends::{Versions, trends_filter, with_trend};

/// What can go wrong answering a question.
#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    /// The SQL does not parse (the message names the line and column).
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The SQL would write, change the catalog, or read outside the history.
    #[error("refused: {0}")]
    Refused(String),
    /// A question the history cannot answer as asked (unknown column, bad filter value).
    #[error("{0}")]
    Invalid(String),
    /// The query needed more memory than `[sql] memory_limit_mb`, or ran past `[sql] timeout_s`.
    #[error("{0}")]
    Limit(String),
    #[error("{0}")]
    Engine(String),
}

/// How much one query may take: memory (sorts and aggregations spill to disk first; what cannot spill
/// fails with a clear error) and time. In `chaoseater.toml` as `[sql]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryLimits {
    /// Memory a query may hold, in MB.
    pub memory_limit_mb: u64,
    /// Seconds a query may run.
    pub timeout_s: f64,
}

impl Default for QueryLimits {
    fn default() -> Self {
        Self { memory_limit_mb: 1_024, timeout_s: 300.0 }
    }
}

impl QueryLimits {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        if self.memory_limit_mb == 0 {
            return Err(AnalyticsError::Invalid("sql.memory_limit_mb must be at least 1".into()));
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err(AnalyticsError::Invalid(format!("sql.timeout_s must be positive, got {}", self.timeout_s)));
        }
        Ok(())
    }
}

impl From<datafusion::error::DataFusionError> for AnalyticsError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        let text = e.to_string();
        if text.contains("table '") && text.contains("not found") {
            return AnalyticsError::Invalid(format!("{text}; the history's tables are {}", tables::TABLES.join(", ")));
        }
        if resources_exhausted(&e) {
            return AnalyticsError::Limit(format!(
                "the query needed more memory than the limit ([sql] memory_limit_mb): {}",
                chaoseater_schemas::limits::truncate(&text, 600)
            ));
        }
        match e {
            datafusion::error::DataFusionError::SQL(..) => AnalyticsError::Syntax(text),
            datafusion::error::DataFusionError::Plan(..) | datafusion::error::DataFusionError::SchemaError(..) => {
                AnalyticsError::Invalid(text)
            }
            _ => AnalyticsError::Engine(text),
        }
    }
}

pub type Result<T, E = AnalyticsError> = std::result::Result<T, E>;

/// Whether DataFusion gave up for want of memory (the error may come wrapped, from a spawned task).
fn resources_exhausted(e: &datafusion::error::DataFusionError) -> bool {
    use datafusion::error::DataFusionError as E;
    match e {
        E::ResourcesExhausted(_) => true,
        E::Context(_, inner) | E::Diagnostic(_, inner) => resources_exhausted(inner),
        E::Shared(inner) => resources_exhausted(inner),
        E::Collection(all) => all.iter().any(resources_exhausted),
        other => other.to_string().contains("Resources exhausted"),
    }
}

/// Whether a parsed query only reads: `WITH … INSERT` parses as a query whose body writes.
fn only_reads(query: &datafusion::sql::sqlparser::ast::Query) -> bool {
    use datafusion::sql::sqlparser::ast::SetExpr;
    fn body(e: &SetExpr) -> bool {
        match e {
            SetExpr::Select(_) | SetExpr::Values(_) | SetExpr::Table(_) => true,
            SetExpr::Query(q) => only_reads(q),
            SetExpr::SetOperation { left, right, .. } => body(left) && body(right),
            _ => false,
        }
    }
    body(&query.body)
}

/// Quotes a string as an SQL literal.
pub fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// The metrics `compare` shows, the SQL taking a run's mean over its regions, and which way is better
/// (for `--rank`; counts have none).
const COMPARE_METRICS: [(&str, &str, Option<Direction>); 14] = [
    ("regions", "CAST(count(*) AS DOUBLE)", None),
    // Which formula the run's scores used (its newest, should its regions' agents differ).
    ("score_version", "CAST(max(score_version) AS DOUBLE)", None),
    (
        "completed",
        "CAST(sum(CASE WHEN status = 'COMPLETED' THEN 1 ELSE 0 END) AS DOUBLE)",
        Some(Direction::HigherIsBetter),
    ),
    ("resilience_score", "avg(resilience_score)", Some(Direction::HigherIsBetter)),
    ("pipeline_downtime_s", "avg(pipeline_downtime_s)", Some(Direction::LowerIsBetter)),
    ("recovery_time_s", "avg(recovery_time_s)", Some(Direction::LowerIsBetter)),
    ("accuracy_degradation", "avg(accuracy_degradation)", Some(Direction::LowerIsBetter)),
    ("error_count", "avg(CAST(error_count AS DOUBLE))", Some(Direction::LowerIsBetter)),
    ("requests_total", "avg(CAST(requests_total AS DOUBLE))", None),
    ("latency_p50_ms", "avg(latency_p50_ms)", Some(Direction::LowerIsBetter)),
    ("latency_p95_ms", "avg(latency_p95_ms)", Some(Direction::LowerIsBetter)),
    ("latency_p99_ms", "avg(latency_p99_ms)", Some(Direction::LowerIsBetter)),
    ("baseline_accuracy", "avg(baseline_accuracy)", None),
    ("duration_s", "avg(duration_s)", Some(Direction::LowerIsBetter)),
];

/// The analytics session over one history directory.
pub struct Analytics {
    ctx: SessionContext,
    dir: PathBuf,
    limits: QueryLimits,
}

/// The columns `query` shows.
pub const QUERY_COLUMNS: &str = "run_id, experiment_name AS name, layer, fault_type, region, status, \
    resilience_score AS score, score_version, pipeline_downtime_s AS downtime_s, recovery_time_s AS recovery_s, \
    accuracy_degradation AS accuracy_lost_pp, error_count AS errors, finished_at";

impl std::fmt::Debug for Analytics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Analytics").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Analytics {
    /// Registers the history's tables under `dir` (an empty or missing history gives empty tables),
    /// with the default [`QueryLimits`].
    pub async fn open(dir: &Path) -> Result<Self> {
        Self::open_with(dir, QueryLimits::default()).await
    }

    /// As [`Analytics::open`], each query within `limits`.
    pub async fn open_with(dir: &Path, limits: QueryLimits) -> Result<Self> {
        limits.validate()?;
        let config = SessionConfig::new().with_information_schema(true);
        let bytes = usize::try_from(limits.memory_limit_mb.saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        // The whole limit for queries (fraction 1.0): the rest of the process is small beside it.
        let runtime =
            datafusion::execution::runtime_env::RuntimeEnvBuilder::new().with_memory_limit(bytes, 1.0).build_arc()?;
        let ctx = SessionContext::new_with_config_rt(config, runtime);
        for table in tables::TABLES {
            let path = dir.join(table);
            std::fs::create_dir_all(&path)
                .map_err(|e| AnalyticsError::Invalid(format!("history {}: {e}", path.display())))?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(vec![(tables::DATE.to_owned(), DataType::Utf8)]);
            let url = format!("{}/", path.canonicalize().unwrap_or(path.clone()).display());
            ctx.register_listing_table(table, &url, options, Some(tables::read_schema(table)), None).await?;
        }
        Ok(Self { ctx, dir: dir.to_owned(), limits })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Runs one read-only query. Anything but a query (DDL, DML, COPY, SET, several statements) is
    /// refused before planning; reading anything but the history's tables fails as an unknown table.
    pub async fn sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        let statements = DFParser::parse_sql(sql).map_err(|e| {
            let text = e.to_string();
            if text.contains("Line:") {
                return AnalyticsError::Syntax(text);
            }
            // The parser gives no position when the query ends too early: it is the end.
            let line = sql.lines().count().max(1);
            let column = sql.lines().last().map_or(0, |l| l.chars().count()) + 1;
            AnalyticsError::Syntax(format!("{text} at Line: {line}, Column: {column} (the end of the query)"))
        })?;
        if statements.len() != 1 {
            return Err(AnalyticsError::Refused(format!("one query at a time (got {} statements)", statements.len())));
        }
        let reads = |s: &DfStatement| matches!(s, DfStatement::Statement(s) if matches!(&**s, Statement::Query(q) if only_reads(q)));
        match &statements[0] {
            s if reads(s) => {}
            // EXPLAIN [ANALYZE] of a query: shows (and times) the plan, reads nothing else.
            DfStatement::Explain(e) if reads(&e.statement) => {}
            DfStatement::Statement(s) if matches!(**s, Statement::Query(_)) => {
                return Err(AnalyticsError::Refused(
                    "WITH … INSERT/UPDATE/DELETE: the SQL path is read-only; only SELECT (and WITH … SELECT) queries run"
                        .into(),
                ));
            }
            DfStatement::Statement(s) => {
                let keyword = s.to_string().split_whitespace().next().unwrap_or_default().to_uppercase();
                return Err(AnalyticsError::Refused(format!(
                    "{keyword}: the SQL path is read-only; only SELECT (and WITH … SELECT) queries run"
                )));
            }
            DfStatement::CopyTo(_) => {
                return Err(AnalyticsError::Refused("COPY: the SQL path does not write files".into()));
            }
            DfStatement::CreateExternalTable(_) => {
                return Err(AnalyticsError::Refused(
                    "CREATE EXTERNAL TABLE: the SQL path reads only the history's tables".into(),
                ));
            }
            other => {
                let keyword = other.to_string().split_whitespace().next().unwrap_or_default().to_uppercase();
                return Err(AnalyticsError::Refused(format!("{keyword}: only SELECT queries run")));
            }
        }
        // A second guard: the planner refuses anything that writes or changes state.
        let options = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        let frame = self.ctx.sql_with_options(sql, options).await.map_err(|e| {
            let text = e.to_string();
            let quoted_path = text.contains("table '") && (text.contains('/') || text.contains(".parquet"));
            if quoted_path {
                AnalyticsError::Refused(format!(
                    "only the history's tables can be read ({}), not paths: {text}",
                    tables::TABLES.join(", ")
                ))
            } else {
                AnalyticsError::from(e)
            }
        })?;
        self.collect(frame).await
    }

    /// Runs a planned query within the time limit (the memory limit is the session's pool).
    async fn collect(&self, frame: datafusion::dataframe::DataFrame) -> Result<Vec<RecordBatch>> {
        let limit = std::time::Duration::from_secs_f64(self.limits.timeout_s);
        // Dropping the collection on time-out cancels the query's tasks.
        match tokio::time::timeout(limit, frame.collect()).await {
            Ok(batches) => Ok(batches?),
            Err(_) => Err(AnalyticsError::Limit(format!(
                "the query ran past the time limit of {} s ([sql] timeout_s); stopped",
                self.limits.timeout_s
            ))),
        }
    }

    /// Experiments matching `filters`, newest first by default.
    pub async fn query(&self, filters: &Filters) -> Result<Vec<RecordBatch>> {
        let limit = filters.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
        let sql = format!(
            "SELECT {QUERY_COLUMNS} FROM experiments{} ORDER BY {}{limit}",
            filters.clause()?,
            filters.order.sql()
        );
        self.sql(&sql).await
    }

    /// One experiment over the `days` days up to the day of `today_ms`: the totals (runs, success rate,
    /// mean, median and p95 score, mean recovery time, and the score's trend: Theil-Sen slope per day
    /// with its 95% interval, Mann-Kendall p-value and direction, see [`trend`]) and the daily series.
    pub async fn trends(&self, name: &str, days: u32, today_ms: i64) -> Result<(Vec<RecordBatch>, Vec<RecordBatch>)> {
        let versions = self.versions(&trends_filter(name, days, today_ms, None)).await?;
        let (totals, daily) = trends_sql(name, days, today_ms, versions.newest, "experiments");
        let totals = self.sql(&totals).await?;
        let points = self
            .sql(&format!(
                "SELECT CAST(date_part('epoch', finished_at) AS DOUBLE) / 86400.0, resilience_score FROM experiments \
                 WHERE {} AND resilience_score IS NOT NULL",
                trends_filter(name, days, today_ms, versions.newest)
            ))
            .await?;
        let points: Vec<(f64, f64)> = render::floats(&points, 0)
            .into_iter()
            .zip(render::floats(&points, 1))
            .filter_map(|(t, v)| Some((t?, v?)))
            .collect();
        let trend = trend::trend(&points, TREND_ALPHA);
        Ok((vec![with_trend(&totals, &trend, versions)?], self.sql(&daily).await?))
    }

    /// The newest score version among the scored rows `filter` selects, and the runs of older ones (a
    /// failed region has no score, so no version to compare).
    async fn versions(&self, filter: &str) -> Result<Versions> {
        let rows = self
            .sql(&format!(
                "SELECT CAST(score_version AS DOUBLE) AS v, CAST(count(DISTINCT run_id) AS DOUBLE) AS runs \
                 FROM experiments WHERE ({filter}) AND resilience_score IS NOT NULL GROUP BY score_version ORDER BY v"
            ))
            .await?;
        let (versions, runs) = (render::floats(&rows, 0), render::floats(&rows, 1));
        let newest = versions.last().copied().flatten().map(|v| v as i32);
        let older_runs = runs.iter().rev().skip(1).map(|n| n.unwrap_or(0.0) as i64).sum();
        Ok(Versions { newest, older_runs })
    }

    /// Runs side by side: a row per metric, a column per run (the mean over its regions).
    pub async fn compare(&self, run_ids: &[String]) -> Result<Vec<RecordBatch>> {
        if run_ids.is_empty() {
            return Err(AnalyticsError::Invalid("compare: name at least one run id".into()));
        }
        self.check_runs(run_ids).await?;
        let columns: Vec<String> = run_ids
            .iter()
            .enumerate()
            .map(|(i, _)| format!("round(max(CASE WHEN run = {i} THEN v END), 3) AS \"{}\"", run_ids[i]))
            .collect();
        let unions: Vec<String> = run_ids
            .iter()
            .enumerate()
            .flat_map(|(i, id)| {
                COMPARE_METRICS.iter().enumerate().map(move |(m, (label, expr, _))| {
                    format!(
                        "SELECT {m} AS ord, '{label}' AS metric, {i} AS run, {expr} AS v FROM experiments WHERE run_id = {}",
                        literal(id)
                    )
                })
            })
            .collect();
        let sql = format!(
            "SELECT metric, {} FROM ({}) GROUP BY ord, metric ORDER BY ord",
            columns.join(", "),
            unions.join(" UNION ALL ")
        );
        self.sql(&sql).await
    }

    /// The runs ranked by `metric` (its mean over each run's regions, to the three decimals shown), best
    /// first; ties share a rank and runs with no value come last.
    pub async fn rank(&self, run_ids: &[String], metric: &str) -> Result<Vec<RecordBatch>> {
        let Some((label, expr, Some(direction))) = COMPARE_METRICS.iter().find(|(label, ..)| *label == metric) else {
            let rankable: Vec<&str> = COMPARE_METRICS.iter().filter(|m| m.2.is_some()).map(|m| m.0).collect();
            return Err(AnalyticsError::Invalid(format!("--rank {metric:?}: one of {}", rankable.join(", "))));
        };
        if run_ids.is_empty() {
            return Err(AnalyticsError::Invalid("compare: name at least one run id".into()));
        }
        self.check_runs(run_ids).await?;
        if *label == "resilience_score" {
            let ids = run_ids.iter().map(|r| literal(r)).collect::<Vec<_>>().join(", ");
            let versions = self.versions(&format!("run_id IN ({ids})")).await?;
            if versions.older_runs > 0 {
                return Err(AnalyticsError::Invalid(format!(
                    "--rank resilience_score: {} of these runs were scored with an older score version than the \
                     others (version {}); scores of different versions are not comparable: rank runs of one \
                     version, or by another metric",
                    versions.older_runs,
                    versions.newest.unwrap_or_default()
                )));
            }
        }
        let order = match direction {
            Direction::HigherIsBetter => "DESC",
            Direction::LowerIsBetter => "ASC",
        };
        let ids = run_ids.iter().map(|r| literal(r)).collect::<Vec<_>>().join(", ");
        self.sql(&format!(
            "SELECT rank() OVER (ORDER BY v {order} NULLS LAST) AS rank, run_id, v AS \"{label}\" \
             FROM (SELECT run_id, round({expr}, 3) AS v FROM experiments WHERE run_id IN ({ids}) GROUP BY run_id) \
             ORDER BY rank, run_id"
        ))
        .await
    }

    /// Refuses run ids the history does not hold.
    async fn check_runs(&self, run_ids: &[String]) -> Result<()> {
        let known = self
            .sql(&format!(
                "SELECT DISTINCT run_id FROM experiments WHERE run_id IN ({})",
                run_ids.iter().map(|r| literal(r)).collect::<Vec<_>>().join(", ")
            ))
            .await?;
        let present = render::strings(&known, 0);
        let missing: Vec<&String> = run_ids.iter().filter(|r| !present.contains(r)).collect();
        if !missing.is_empty() {
            return Err(AnalyticsError::Invalid(format!("no run {missing:?} in the history")));
        }
        Ok(())
    }

    /// Totals by layer, fault type, region and status: (title, table) each.
    pub async fn summary(&self) -> Result<Vec<(String, Vec<RecordBatch>)>> {
        let groups = groups::experiment_groups(&self.dir.join(tables::EXPERIMENTS)).await?;
        let ctx = SessionContext::new();
        ctx.register_batch("g", groups)?;
        let batches = ctx.sql(&summary_rollup_sql("g")).await?.collect().await?;
        let schema = batches.first().map_or_else(summary_schema, RecordBatch::schema);
        let all =
            arrow::compute::concat_batches(&schema, &batches).map_err(|e| AnalyticsError::Engine(e.to_string()))?;
        SUMMARY_DIMENSIONS
            .iter()
            .map(|(title, column)| {
                let section = summary_section(&all, column).map_err(|e| AnalyticsError::Engine(e.to_string()))?;
                Ok(((*title).to_owned(), vec![section]))
            })
            .collect()
    }

    /// The summary's totals by score version: which formulas the summary's scores mix.
    pub async fn score_versions(&self) -> Result<Vec<RecordBatch>> {
        self.sql(
            "SELECT CAST(score_version AS VARCHAR) AS score_version, count(*) AS runs, \
                   round(100.0 * avg(CASE WHEN status = 'COMPLETED' THEN 1.0 ELSE 0.0 END), 2) AS success_rate_pct, \
                   round(avg(resilience_score), 2) AS mean_score, round(min(resilience_score), 2) AS min_score, \
                   round(max(resilience_score), 2) AS max_score \
                 FROM experiments GROUP BY score_version ORDER BY score_version",
        )
        .await
    }
}

/// The sections of `summary`: (title, the column grouped by).
const SUMMARY_DIMENSIONS: [(&str, &str); 4] =
    [("by layer", "layer"), ("by fault type", "fault_type"), ("by region", "region"), ("by status", "status")];

/// The columns `summary_sql` answers with (what an empty history's sections have).
fn summary_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("dimension", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("runs", DataType::Int64, true),
        Field::new("success_rate_pct", DataType::Float64, true),
        Field::new("mean_score", DataType::Float64, true),
        Field::new("min_score", DataType::Float64, true),
        Field::new("max_score", DataType::Float64, true),
    ]))
}

/// The rows of one dimension, its value column named after it (`layer`, `region`, ...), in the
/// statement's order (most runs first).
fn summary_section(all: &RecordBatch, column: &str) -> std::result::Result<RecordBatch, arrow::error::ArrowError> {
    use arrow::array::{Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    let utf8 = |i: usize| arrow::compute::cast(all.column(i), &DataType::Utf8);
    let dimension = utf8(0)?;
    let dimension = dimension.as_any().downcast_ref::<StringArray>().expect("cast to Utf8");
    let mask: arrow::array::BooleanArray = dimension.iter().map(|d| Some(d == Some(column))).collect();
    let mut columns = vec![arrow::compute::filter(&utf8(1)?, &mask)?];
    let mut fields = vec![Field::new(column, DataType::Utf8, true)];
    for (field, array) in all.schema().fields().iter().zip(all.columns()).skip(2) {
        columns.push(arrow::compute::filter(array, &mask)?);
        fields.push(field.as_ref().clone());
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

/// The one statement of `summary` over `table`, DuckDB-compatible: one scan folds the rows into their
/// (layer, fault type, region, status) groups, a few hundred at most, and the four sections are rolled up
/// from those with GROUPING SETS. Rows: dimension (`layer`, `fault_type`, `region`, `status`), value,
/// runs, success rate, mean/min/max score; by dimension, most runs first.
///
/// `Analytics::summary` answers the same with the groups from [`groups::experiment_groups`] and
/// [`summary_rollup_sql`] over them.
pub fn summary_sql(table: &str) -> String {
    format!(
        "WITH g AS (\
           SELECT layer, fault_type, region, status, count(*) AS n, \
             sum(resilience_score) AS s, count(resilience_score) AS c, \
             min(resilience_score) AS lo, max(resilience_score) AS hi \
           FROM {table} GROUP BY layer, fault_type, region, status) {}",
        summary_rollup_sql("g")
    )
}

/// The sections of `summary` rolled up from `groups` (the columns of [`groups::schema`]). A group's
/// runs all share its status, so the successful ones are counted here, per group, not per row.
pub fn summary_rollup_sql(groups: &str) -> String {
    format!(
        "SELECT CASE WHEN grouping(layer) = 0 THEN 'layer' WHEN grouping(fault_type) = 0 THEN 'fault_type' \
             WHEN grouping(region) = 0 THEN 'region' ELSE 'status' END AS dimension, \
           CAST(coalesce(layer, fault_type, region, status) AS VARCHAR) AS value, \
           CAST(sum(n) AS BIGINT) AS runs, \
           round(100.0 * (CAST(sum(CASE WHEN status = 'COMPLETED' THEN n ELSE 0 END) AS DOUBLE) \
             / CAST(sum(n) AS DOUBLE)), 2) AS success_rate_pct, \
           round(sum(s) / CAST(nullif(sum(c), 0) AS DOUBLE), 2) AS mean_score, \
           round(min(lo), 2) AS min_score, round(max(hi), 2) AS max_score \
         FROM {groups} GROUP BY GROUPING SETS ((layer), (fault_type), (region), (status)) \
         ORDER BY dimension, runs DESC, value"
    )
}

#[cfg(test)]
mod tests;
