//! A past A/B test's report, rebuilt from the history's `ab_tests` and `ab_samples` tables: the same
//! AbTestConcluded the coordinator published, so `ab report` prints what `ab FILE` printed then.

use std::collections::BTreeMap;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int32Type, TimestampMillisecondType};
use chaoseater_schemas::events::{
    AbDirection, AbJudgement, AbLabel, AbMetricJudgement, AbSample, AbSide, AbTestConcluded, AbTestStatus, AbVerdict,
    RunStatus,
};
use chaoseater_schemas::ids::{EventId, RunId, TimestampMs};

use super::{Analytics, AnalyticsError, Result, literal};
use crate::history::tables::{AB_SAMPLES, AB_TESTS};

/// Reads the cells of one row by column name.
struct Row<'a> {
    batch: &'a RecordBatch,
    index: usize,
}

impl Row<'_> {
    fn column(&self, name: &str) -> Result<arrow::array::ArrayRef> {
        let column = self
            .batch
            .column_by_name(name)
            .ok_or_else(|| AnalyticsError::Engine(format!("the history has no column {name}")))?;
        let wanted = match column.data_type() {
            DataType::Utf8View | DataType::Utf8 | DataType::LargeUtf8 => DataType::Utf8,
            other => other.clone(),
        };
        arrow::compute::cast(column, &wanted).map_err(|e| AnalyticsError::Engine(e.to_string()))
    }

    fn text(&self, name: &str) -> Result<Option<String>> {
        let column = self.column(name)?;
        let strings = column.as_string::<i32>();
        Ok(strings.is_valid(self.index).then(|| strings.value(self.index).to_owned()))
    }

    fn required(&self, name: &str) -> Result<String> {
        self.text(name)?.ok_or_else(|| AnalyticsError::Engine(format!("{name} is null")))
    }

    fn float(&self, name: &str) -> Result<Option<f64>> {
        let column = self.column(name)?;
        let values = column.as_primitive::<Float64Type>();
        Ok(values.is_valid(self.index).then(|| values.value(self.index)))
    }

    fn int(&self, name: &str) -> Result<Option<i32>> {
        let column = self.column(name)?;
        let values = column.as_primitive::<Int32Type>();
        Ok(values.is_valid(self.index).then(|| values.value(self.index)))
    }

    fn time(&self, name: &str) -> Result<i64> {
        let column = self.column(name)?;
        Ok(column.as_primitive::<TimestampMillisecondType>().value(self.index))
    }
}

fn rows(batches: &[RecordBatch]) -> impl Iterator<Item = Row<'_>> {
    batches.iter().flat_map(|batch| (0..batch.num_rows()).map(move |index| Row { batch, index }))
}

fn symbol<T>(field: &str, text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T> {
    parse(text).ok_or_else(|| AnalyticsError::Engine(format!("{field}: unknown value {text:?} in the history")))
}

fn status(text: &str) -> Option<AbTestStatus> {
    [AbTestStatus::Concluded, AbTestStatus::Aborted, AbTestStatus::Failed].into_iter().find(|s| s.as_str() == text)
}

fn verdict(text: &str) -> Option<AbVerdict> {
    [AbVerdict::BBetter, AbVerdict::BWorse, AbVerdict::Mixed, AbVerdict::NoSignificantDifference]
        .into_iter()
        .find(|v| v.as_str() == text)
}

fn label(text: &str) -> Option<AbLabel> {
    [AbLabel::Better, AbLabel::Worse, AbLabel::NoDifference].into_iter().find(|l| l.as_str() == text)
}

fn direction(text: &str) -> Option<AbDirection> {
    [AbDirection::HigherIsBetter, AbDirection::LowerIsBetter].into_iter().find(|d| d.as_str() == text)
}

fn run_status(text: &str) -> Option<RunStatus> {
    [RunStatus::Completed, RunStatus::Failed, RunStatus::Aborted].into_iter().find(|s| s.as_str() == text)
}

impl Analytics {
    /// The report of test `test_id` as it concluded, or `None` when the history has no such test.
    pub async fn ab_report(&self, test_id: &str) -> Result<Option<AbTestConcluded>> {
        let id = literal(test_id);
        let tests =
            self.sql(&format!("SELECT * FROM {AB_TESTS} WHERE test_id = {id} ORDER BY metric_position")).await?;
        let Some(first) = rows(&tests).next() else { return Ok(None) };
        let verdict_text = first.text("verdict")?;
        let mut metrics: Vec<AbMetricJudgement> = Vec::new();
        for row in rows(&tests) {
            let Some(metric) = row.text("metric")? else { continue };
            let float = |name: &str| row.float(name).map(|v| v.unwrap_or(f64::NAN));
            metrics.push(AbMetricJudgement {
                metric,
                direction: symbol("direction", &row.required("direction")?, direction)?,
                samples_a: Vec::new(),
                samples_b: Vec::new(),
                n_a: row.int("n_a")?.unwrap_or(0),
                n_b: row.int("n_b")?.unwrap_or(0),
                u: float("u")?,
                z: float("z")?,
                p_value: float("p_value")?,
                hl_estimate: float("hl_estimate")?,
                ci_low: float("ci_low")?,
                ci_high: float("ci_high")?,
                confidence: row.float("confidence")?.unwrap_or(f64::NAN),
                mean_ratio: row.float("mean_ratio")?,
                prob_superiority: float("prob_superiority")?,
                label: symbol("label", &row.required("label")?, label)?,
                mde: float("metric_mde")?,
            });
        }
        let samples = self
            .sql(&format!(
                "SELECT variant, number, run_id, status, metric, value FROM {AB_SAMPLES} WHERE test_id = {id} \
                 ORDER BY number, variant, metric"
            ))
            .await?;
        // Samples in start order (A1, B1, A2, ...), each with every value it measured.
        let mut by_sample: BTreeMap<(i32, AbSide), AbSample> = BTreeMap::new();
        for row in rows(&samples) {
            let side = if row.required("variant")? == "A" { AbSide::A } else { AbSide::B };
            let number = row.int("number")?.unwrap_or(0);
            let sample = by_sample.entry((number, side)).or_insert(AbSample {
                variant: side,
                number,
                run_id: RunId::new(row.required("run_id")?),
                status: symbol("status", &row.required("status")?, run_status).unwrap_or(RunStatus::Failed),
                values: BTreeMap::new(),
            });
            if let Some(value) = row.float("value")? {
                sample.values.insert(row.required("metric")?, value);
            }
        }
        let samples: Vec<AbSample> = by_sample.into_values().collect();
        for m in &mut metrics {
            let of = |side| {
                samples.iter().filter(move |s| s.variant == side).filter_map(|s| s.values.get(&m.metric).copied())
            };
            m.samples_a = of(AbSide::A).collect();
            m.samples_b = of(AbSide::B).collect();
        }
        let judgement = match verdict_text {
            Some(text) => Some(AbJudgement {
                metrics,
                verdict: symbol("verdict", &text, verdict)?,
                score: first.float("score")?.unwrap_or(f64::NAN),
                mde: first.float("mde")?.unwrap_or(f64::NAN),
            }),
            None => None,
        };
        Ok(Some(AbTestConcluded {
            event_id: EventId::new(first.required("event_id")?),
            occurred_at: TimestampMs(first.time("concluded_at")?),
            run_id: RunId::new(first.required("test_id")?),
            status: symbol("status", &first.required("status")?, status)?,
            reason: first.text("reason")?,
            label_a: first.required("label_a")?,
            label_b: first.required("label_b")?,
            samples_per_variant: first.int("samples_per_variant")?.unwrap_or(0),
            confidence: first.float("confidence")?.unwrap_or(f64::NAN),
            tolerance: first.float("tolerance")?.unwrap_or(f64::NAN),
            samples,
            judgement,
        }))
    }
}
