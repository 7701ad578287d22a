//! Training: a forest per fault type and one pooled over all of them (the fault type a feature), each
//! cross-validated against the Python tool's predictor, with prediction intervals whose coverage is
//! measured on held-out rows.
//!
//! - **Folds** (k = [`FOLDS`]) are drawn by run: every region of a run sits on one side, since a run's
//!   regions share its fault and its moment and would otherwise leak into their own test.
//! - **Baseline**: the mean of the last [`BASELINE_LAST`] training rows of the same fault type, what the
//!   Python tool predicted. A model is used only where its cross-validated MAE beats the baseline's.
//! - **Intervals**: normalized split-conformal on the cross-validated residuals. A held-out row's score is
//!   its error over the sub-forests' spread there (plus a floor); the interval at a new point is the
//!   prediction ± the scores' 90% conformal quantile × the spread at that point, so it is wide where the
//!   model is unsure. Coverage is measured, not assumed: each fold's rows are checked against the
//!   quantile of the other folds' scores.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chaoseater_schemas::rng::Rng;

use super::dataset::Sample;
use super::features::Encoder;
use super::forest::{Forest, ForestParams, Matrix};
use super::{OptimizerError, Target};

/// Rows a fault type needs before it gets a model (and before anything is predicted for it).
pub const MIN_ROWS: usize = 20;
/// Cross-validation folds.
pub const FOLDS: usize = 5;
/// The baseline's window: the Python tool's "mean of the last 50".
pub const BASELINE_LAST: usize = 50;
/// The intervals' nominal coverage.
pub const LEVEL: f64 = 0.9;

/// Cross-validated quality of one model and of the baseline beside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CvFigures {
    pub folds: usize,
    pub rows: usize,
    pub runs: usize,
    pub model_mae: f64,
    pub model_r2: f64,
    pub baseline_mae: f64,
    pub baseline_r2: f64,
    /// Share of held-out rows inside their interval (nominal: `level`).
    pub coverage: f64,
    pub level: f64,
    /// Median width of the held-out rows' intervals.
    pub median_width: f64,
}

impl CvFigures {
    /// Whether the model predicts better than the mean of the last 50.
    pub fn beats_baseline(&self) -> bool {
        self.model_mae < self.baseline_mae
    }
}

/// Which rows a model learnt from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every fault type, the fault type a feature.
    Pooled,
    FaultType(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Pooled => f.write_str("pooled"),
            Scope::FaultType(t) => f.write_str(t),
        }
    }
}

/// One trained model with everything needed to predict with it and to judge it.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ScopeModel {
    pub target: Target,
    pub scope: Scope,
    pub encoder: Encoder,
    pub forest: Forest,
    pub cv: CvFigures,
    /// Per fault type in a pooled model: (model MAE, baseline MAE) on that type's held-out rows.
    pub by_fault_type: BTreeMap<String, (f64, f64)>,
    /// The conformal quantile of the normalized scores, and the spread's floor.
    pub quantile: f64,
    pub floor: f64,
    /// The baseline's own interval: the 90% conformal quantile of its absolute held-out errors.
    pub baseline_quantile: f64,
    /// The baseline's prediction per fault type: the mean of its last 50 rows.
    pub baseline: BTreeMap<String, f64>,
    /// (feature, importance), largest first.
    pub importances: Vec<(String, f64)>,
}

impl ScopeModel {
    /// Whether this model (rather than the baseline) answers for `fault_type`.
    pub fn usable_for(&self, fault_type: &str) -> bool {
        match &self.scope {
            Scope::FaultType(t) => t == fault_type && self.cv.beats_baseline(),
            Scope::Pooled => self.by_fault_type.get(fault_type).is_some_and(|(model, baseline)| model < baseline),
        }
    }
}

/// Reports progress of long trainings: (what, done, of).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Trains a model per fault type with at least [`MIN_ROWS`] rows (and [`FOLDS`] runs), and a pooled one
/// when there are two fault types or more, for each target.
pub fn train_scopes(
    samples: &[Sample],
    targets: &[Target],
    params: &ForestParams,
    progress: Progress<'_>,
) -> Result<Vec<ScopeModel>, OptimizerError> {
    let mut jobs: Vec<(Target, Scope, Vec<&Sample>)> = Vec::new();
    for &target in targets {
        let rows: Vec<&Sample> = samples.iter().filter(|s| s.target(target).is_some()).collect();
        let mut by_type: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
        for s in &rows {
            by_type.entry(s.point.fault_type.as_str()).or_default().push(s);
        }
        let eligible = |rows: &[&Sample]| rows.len() >= MIN_ROWS && runs(rows) >= FOLDS;
        if by_type.len() >= 2 && eligible(&rows) {
            jobs.push((target, Scope::Pooled, rows.clone()));
        }
        for (fault_type, rows) in by_type {
            if eligible(&rows) {
                jobs.push((target, Scope::FaultType(fault_type.to_owned()), rows));
            }
        }
    }
    let total = jobs.len();
    let mut models = Vec::with_capacity(total);
    for (done, (target, scope, rows)) in jobs.into_iter().enumerate() {
        progress(&format!("{target} / {scope} ({} rows)", rows.len()), done, total);
        models.push(fit_scope(&rows, target, scope, params)?);
    }
    progress("done", total, total);
    Ok(models)
}

fn runs(rows: &[&Sample]) -> usize {
    rows.iter().map(|s| s.run_id.as_str()).collect::<BTreeSet<_>>().len()
}

/// The fold of each run: runs shuffled (seeded) and dealt round the folds.
fn folds_by_run(rows: &[&Sample], seed: u64) -> Vec<usize> {
    let mut ids: Vec<&str> = rows.iter().map(|s| s.run_id.as_str()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut rng = Rng::new(seed);
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.index(i + 1));
    }
    let fold: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i % FOLDS)).collect();
    rows.iter().map(|s| fold[s.run_id.as_str()]).collect()
}

/// The mean of the last [`BASELINE_LAST`] values per fault type, of rows in time order.
fn baseline_means<'a>(rows: impl DoubleEndedIterator<Item = (&'a str, f64)>) -> BTreeMap<String, f64> {
    let mut last: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (fault_type, y) in rows.rev() {
        let values = last.entry(fault_type).or_default();
        if values.len() < BASELINE_LAST {
            values.push(y);
        }
    }
    last.into_iter().map(|(t, v)| (t.to_owned(), v.iter().sum::<f64>() / v.len() as f64)).collect()
}

fn fit_scope(
    rows: &[&Sample],
    target: Target,
    scope: Scope,
    params: &ForestParams,
) -> Result<ScopeModel, OptimizerError> {
    let encoder = Encoder::fit(rows, scope == Scope::Pooled);
    let mut x = Matrix::new(encoder.width());
    for s in rows {
        encoder.encode_into(&s.point, &mut x.values);
    }
    let y: Vec<f64> = rows.iter().map(|s| s.target(target).unwrap_or(f64::NAN)).collect();
    let fold = folds_by_run(rows, params.seed);
    let n = rows.len();
    let (mut pred, mut spread, mut base) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
    for k in 0..FOLDS {
        let train: Vec<usize> = (0..n).filter(|&i| fold[i] != k).collect();
        let test: Vec<usize> = (0..n).filter(|&i| fold[i] == k).collect();
        if test.is_empty() {
            continue;
        }
        let train_y: Vec<f64> = train.iter().map(|&i| y[i]).collect();
        let forest = Forest::fit(&x.select(&train), &train_y, params)?;
        let (p, s) = forest.predict(&x.select(&test))?;
        let means = baseline_means(train.iter().map(|&i| (rows[i].point.fault_type.as_str(), y[i])));
        let overall = train_y.iter().sum::<f64>() / train_y.len() as f64;
        for (j, &i) in test.iter().enumerate() {
            pred[i] = p[j];
            spread[i] = s[j];
            base[i] = means.get(rows[i].point.fault_type.as_str()).copied().unwrap_or(overall);
        }
    }
    let floor = (0.1 * median(&spread)).max(1e-6);
    let scores: Vec<f64> = (0..n).map(|i| (y[i] - pred[i]).abs() / (spread[i] + floor)).collect();
    let quantile = conformal_quantile(&scores, LEVEL);
    // Coverage as a user would meet it: each fold against the quantile of the other folds' scores.
    let mut covered = 0usize;
    let mut widths = Vec::with_capacity(n);
    for k in 0..FOLDS {
        let others: Vec<f64> = (0..n).filter(|&i| fold[i] != k).map(|i| scores[i]).collect();
        let q = conformal_quantile(&others, LEVEL);
        for i in (0..n).filter(|&i| fold[i] == k) {
            covered += usize::from(scores[i] <= q);
            widths.push(2.0 * q * (spread[i] + floor));
        }
    }
    let baseline_errors: Vec<f64> = (0..n).map(|i| (y[i] - base[i]).abs()).collect();
    let cv = CvFigures {
        folds: FOLDS,
        rows: n,
        runs: runs(rows),
        model_mae: mae(&y, &pred),
        model_r2: r2(&y, &pred),
        baseline_mae: mae(&y, &base),
        baseline_r2: r2(&y, &base),
        coverage: covered as f64 / n as f64,
        level: LEVEL,
        median_width: median(&widths),
    };
    let mut by_fault_type = BTreeMap::new();
    if scope == Scope::Pooled {
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in rows.iter().enumerate() {
            groups.entry(s.point.fault_type.as_str()).or_default().push(i);
        }
        for (fault_type, idx) in groups {
            let pick = |v: &[f64]| idx.iter().map(|&i| v[i]).collect::<Vec<_>>();
            let ys = pick(&y);
            by_fault_type.insert(fault_type.to_owned(), (mae(&ys, &pick(&pred)), mae(&ys, &pick(&base))));
        }
    }
    let forest = Forest::fit(&x, &y, params)?;
    let mut importances: Vec<(String, f64)> = encoder.names().into_iter().zip(forest.importances()).collect();
    importances.sort_by(|a, b| b.1.total_cmp(&a.1));
    Ok(ScopeModel {
        target,
        baseline: baseline_means(rows.iter().map(|s| s.point.fault_type.as_str()).zip(y.iter().copied())),
        baseline_quantile: conformal_quantile(&baseline_errors, LEVEL),
        scope,
        encoder,
        forest,
        cv,
        by_fault_type,
        quantile,
        floor,
        importances,
    })
}

/// The ⌈(n + 1)·level⌉-th smallest score: split-conformal's quantile (the largest when n is small).
pub fn conformal_quantile(scores: &[f64], level: f64) -> f64 {
    if scores.is_empty() {
        return f64::INFINITY;
    }
    let mut sorted = scores.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((sorted.len() + 1) as f64 * level).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// Mean absolute error.
pub fn mae(y: &[f64], predicted: &[f64]) -> f64 {
    y.iter().zip(predicted).map(|(a, b)| (a - b).abs()).sum::<f64>() / y.len().max(1) as f64
}

/// Coefficient of determination, 1 − SS_res / SS_tot; 0 for a constant target (nothing to explain).
pub fn r2(y: &[f64], predicted: &[f64]) -> f64 {
    let mean = y.iter().sum::<f64>() / y.len().max(1) as f64;
    let total: f64 = y.iter().map(|v| (v - mean).powi(2)).sum();
    let residual: f64 = y.iter().zip(predicted).map(|(a, b)| (a - b).powi(2)).sum();
    if total == 0.0 { 0.0 } else { 1.0 - residual / total }
}
