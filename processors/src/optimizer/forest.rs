//! The regression model: smartcore's random forest, fitted as a few independent sub-forests (different
//! seeds) so that their disagreement at a point measures how unsure the model is there. smartcore keeps a
//! forest's trees to itself, so the spread comes from the sub-forests' means: where the data are dense
//! they agree, where the model extrapolates they part. The intervals scale with that spread
//! (normalized conformal prediction, see `train`).

use smartcore::ensemble::random_forest_regressor::{RandomForestRegressor, RandomForestRegressorParameters};
use smartcore::linalg::basic::matrix::DenseMatrix;

use super::OptimizerError;

type Rf = RandomForestRegressor<f64, f64, DenseMatrix<f64>, Vec<f64>>;

/// How the forest grows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ForestParams {
    /// Sub-forests (at least 2: their spread is the uncertainty).
    pub parts: usize,
    /// Trees in each sub-forest.
    pub trees: usize,
    /// Deepest split; bounds the saved model's size (2^depth leaves a tree at most).
    pub max_depth: u16,
    pub min_samples_leaf: usize,
    pub seed: u64,
}

impl Default for ForestParams {
    /// 4 × 12 trees, depth 10 (at most 1,024 leaves a tree), leaves of 3 rows or more. Measured in
    /// `benches/optimizer.rs`: 100,000 rows train (with 5-fold cross-validation) within the 30 s target.
    fn default() -> Self {
        Self { parts: 4, trees: 12, max_depth: 10, min_samples_leaf: 3, seed: 17 }
    }
}

/// A fitted forest.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Forest {
    width: usize,
    parts: Vec<Rf>,
}

/// Rows of features, all of one width.
#[derive(Debug, Clone)]
pub struct Matrix {
    pub width: usize,
    /// Row-major.
    pub values: Vec<f64>,
}

impl Matrix {
    pub fn new(width: usize) -> Self {
        Self { width, values: Vec::new() }
    }

    pub fn rows(&self) -> usize {
        self.values.len().checked_div(self.width).unwrap_or(0)
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.width..(i + 1) * self.width]
    }

    /// The rows at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Matrix {
        let mut values = Vec::with_capacity(indices.len() * self.width);
        for &i in indices {
            values.extend_from_slice(self.row(i));
        }
        Matrix { width: self.width, values }
    }

    fn dense(&self) -> Result<DenseMatrix<f64>, OptimizerError> {
        DenseMatrix::new(self.rows(), self.width, self.values.clone(), false)
            .map_err(|e| OptimizerError::Model(e.to_string()))
    }
}

impl Forest {
    /// Fits the sub-forests, two at a time (the machines this runs on have 2 cores or more).
    pub fn fit(x: &Matrix, y: &[f64], params: &ForestParams) -> Result<Self, OptimizerError> {
        if x.rows() != y.len() || y.is_empty() {
            return Err(OptimizerError::Model(format!("{} rows of features for {} values", x.rows(), y.len())));
        }
        let dense = x.dense()?;
        let y = y.to_vec();
        // Every feature is a split candidate (scikit-learn's default for regression): ours are few and
        // mostly one-hot, and drawing a third of them left most splits on columns that carry nothing
        // (measured on the planted-effect tests: MAE 4.2 against 2.6 with all of them).
        let m = x.width;
        let fit_part = |part: usize| -> Result<Rf, OptimizerError> {
            let parameters = RandomForestRegressorParameters::default()
                .with_n_trees(params.trees)
                .with_max_depth(params.max_depth)
                .with_min_samples_leaf(params.min_samples_leaf)
                .with_min_samples_split(2 * params.min_samples_leaf)
                .with_m(m)
                .with_seed(params.seed.wrapping_add(1_000 * part as u64));
            Rf::fit(&dense, &y, parameters).map_err(|e| OptimizerError::Model(e.to_string()))
        };
        let parts: Vec<Result<Rf, OptimizerError>> =
            std::thread::scope(|scope| {
                let threads = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, params.parts.max(1));
                let mut handles = Vec::new();
                for t in 0..threads {
                    let fit_part = &fit_part;
                    handles.push(scope.spawn(move || {
                        (t..params.parts).step_by(threads).map(|p| (p, fit_part(p))).collect::<Vec<_>>()
                    }));
                }
                let mut all: Vec<(usize, Result<Rf, OptimizerError>)> = handles
                    .into_iter()
                    .flat_map(|h| {
                        h.join().unwrap_or_else(|_| vec![(0, Err(OptimizerError::Model("a fit panicked".into())))])
                    })
                    .collect();
                all.sort_by_key(|(p, _)| *p);
                all.into_iter().map(|(_, r)| r).collect()
            });
        Ok(Self { width: x.width, parts: parts.into_iter().collect::<Result<_, _>>()? })
    }

    /// The prediction (mean of the sub-forests) and the spread (their standard deviation) at each row.
    pub fn predict(&self, x: &Matrix) -> Result<(Vec<f64>, Vec<f64>), OptimizerError> {
        if x.width != self.width {
            return Err(OptimizerError::Model(format!("{} features, the model takes {}", x.width, self.width)));
        }
        if x.rows() == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let dense = x.dense()?;
        let per_part: Vec<Vec<f64>> = self
            .parts
            .iter()
            .map(|p| p.predict(&dense).map_err(|e| OptimizerError::Model(e.to_string())))
            .collect::<Result<_, _>>()?;
        let k = per_part.len() as f64;
        let mut mean = vec![0.0; x.rows()];
        let mut spread = vec![0.0; x.rows()];
        for i in 0..x.rows() {
            let m = per_part.iter().map(|p| p[i]).sum::<f64>() / k;
            let var = per_part.iter().map(|p| (p[i] - m).powi(2)).sum::<f64>() / (k - 1.0).max(1.0);
            mean[i] = m;
            spread[i] = var.sqrt();
        }
        Ok((mean, spread))
    }

    /// Each feature's share of the splits' error reduction, averaged over the sub-forests.
    pub fn importances(&self) -> Vec<f64> {
        let mut total = vec![0.0; self.width];
        for part in &self.parts {
            if let Ok(values) = part.compute_feature_importances() {
                for (t, v) in total.iter_mut().zip(values) {
                    *t += v / self.parts.len() as f64;
                }
            }
        }
        total
    }
}
