//! The rows the optimizer learns from: one per region result in the history's window, with the fault's
//! parameters and the run's tags joined on (run, region), read through DataFusion.

use std::collections::{BTreeMap, HashMap};

use crate::analytics::{Analytics, literal, render};

use super::{OptimizerError, Target};

/// Where a fault struck and how hard: what the model is asked about.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Point {
    pub fault_type: String,
    pub layer: String,
    pub region: String,
    /// Parameters as the history keeps them (text; numbers parse).
    pub params: BTreeMap<String, String>,
    pub tags: BTreeMap<String, String>,
    /// How long the region's run took, in seconds.
    pub duration_s: f64,
}

/// One region result of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub run_id: String,
    pub point: Point,
    /// When it finished, in days since the epoch.
    pub finished_day: f64,
    /// The measured values, by [`Target::ALL`]'s order; `None` where the history has none.
    pub targets: [Option<f64>; Target::ALL.len()],
}

impl Sample {
    pub fn target(&self, target: Target) -> Option<f64> {
        self.targets[target as usize]
    }
}

/// Which history rows the optimizer learns from: finished since a day, and of one score version, the
/// newest in that span (scores of different versions measure different things, so one model never
/// mixes them).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Window {
    /// `YYYY-MM-DD`, inclusive; `None`: all of it.
    pub since: Option<String>,
    /// `None` when the span holds no rows.
    pub score_version: Option<i32>,
}

impl Window {
    /// The span from `since` with its newest score version.
    pub async fn newest(analytics: &Analytics, since: Option<&str>) -> Result<Self, OptimizerError> {
        let during = since.map(|d| format!(" AND date >= {}", literal(d))).unwrap_or_default();
        let rows = analytics
            .sql(&format!(
                "SELECT CAST(max(score_version) AS DOUBLE) FROM experiments WHERE resilience_score IS NOT NULL{during}"
            ))
            .await?;
        let score_version = render::floats(&rows, 0).first().copied().flatten().map(|v| v as i32);
        Ok(Self { since: since.map(str::to_owned), score_version })
    }

    /// The window as SQL conditions on the experiments table, each after an `AND`.
    pub fn and(&self) -> String {
        let mut out = self.since.as_ref().map(|d| format!(" AND date >= {}", literal(d))).unwrap_or_default();
        if let Some(v) = self.score_version {
            // Unscored rows (failed regions) have no version to keep apart.
            out.push_str(&format!(" AND (score_version = {v} OR resilience_score IS NULL)"));
        }
        out
    }
}

/// The history's rows in `window`, oldest first.
pub async fn load(analytics: &Analytics, window: &Window) -> Result<Vec<Sample>, OptimizerError> {
    let columns: Vec<&str> = Target::ALL.iter().map(|t| t.column()).collect();
    let rows = analytics
        .sql(&format!(
            "SELECT run_id, region, layer, fault_type, duration_s, \
               CAST(date_part('epoch', finished_at) AS DOUBLE) / 86400.0, {} \
             FROM experiments WHERE true{} ORDER BY finished_at, run_id, region",
            columns.iter().map(|c| format!("CAST({c} AS DOUBLE)")).collect::<Vec<_>>().join(", "),
            window.and()
        ))
        .await?;
    let text = |i: usize| render::strings(&rows, i);
    let (run_ids, regions, layers, fault_types) = (text(0), text(1), text(2), text(3));
    let (durations, finished) = (render::floats(&rows, 4), render::floats(&rows, 5));
    let targets: Vec<Vec<Option<f64>>> = (0..columns.len()).map(|i| render::floats(&rows, 6 + i)).collect();
    let mut samples: Vec<Sample> = (0..run_ids.len())
        .map(|i| Sample {
            run_id: run_ids[i].clone(),
            point: Point {
                fault_type: fault_types[i].clone(),
                layer: layers[i].clone(),
                region: regions[i].clone(),
                params: BTreeMap::new(),
                tags: BTreeMap::new(),
                duration_s: durations[i].unwrap_or(0.0),
            },
            finished_day: finished[i].unwrap_or(0.0),
            targets: std::array::from_fn(|t| targets[t][i].filter(|v| v.is_finite())),
        })
        .collect();
    let index: HashMap<(String, String), usize> =
        samples.iter().enumerate().map(|(i, s)| ((s.run_id.clone(), s.point.region.clone()), i)).collect();
    // These tables have no score version: their rows join onto the samples' (run, region) or are skipped.
    let during = window.since.as_ref().map(|d| format!(" WHERE date >= {}", literal(d))).unwrap_or_default();
    for (table, key, value) in [("parameters", "name", "value"), ("tags", "key", "value")] {
        let rows = analytics.sql(&format!("SELECT run_id, region, {key}, {value} FROM {table}{during}")).await?;
        let (runs, regions, keys, values) = (
            render::strings(&rows, 0),
            render::strings(&rows, 1),
            render::strings(&rows, 2),
            render::strings(&rows, 3),
        );
        for i in 0..runs.len() {
            let Some(&at) = index.get(&(runs[i].clone(), regions[i].clone())) else { continue };
            let point = &mut samples[at].point;
            let map = if table == "parameters" { &mut point.params } else { &mut point.tags };
            map.insert(keys[i].clone(), values[i].clone());
        }
    }
    Ok(samples)
}
