//! Questions to a trained model: what will this fault do (predict), how hard can we hit and still meet
//! the target (suggest), and how much of the history backs the answer (support).

use std::collections::{BTreeMap, BTreeSet};

use chaoseater_schemas::faults::{self, ParamKind};
use serde_json::Value as Json;

use super::dataset::{Point, Sample};
use super::forest::Matrix;
use super::train::{self, CvFigures, Scope, ScopeModel};
use super::{Model, OptimizerError, Support, Target};

/// A past run is near a point when each numeric parameter lies within this share of its seen range.
pub const NEAR_SHARE: f64 = 0.1;
/// Fewer near runs than this, and a prediction says it extrapolates.
pub const FEW_NEAR: usize = 5;
/// How far past the seen range `suggest` searches, as a share of that range: far enough to propose the
/// next step up, not so far that the forest's flat extrapolation decides.
pub const SEARCH_BEYOND: f64 = 0.25;

/// A question as the command line puts it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Question {
    pub fault_type: String,
    /// `name=value` as given (numbers parse).
    pub params: Vec<(String, String)>,
    pub region: Option<String>,
    pub duration_s: Option<f64>,
    pub tags: BTreeMap<String, String>,
    pub target: Option<Target>,
}

/// Which model answered.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The model of this scope, whose cross-validated error beats the baseline's.
    Model(Scope),
    /// No model beats the mean of the last 50 for this fault type: that mean answers, with its own interval.
    Baseline,
}

/// A prediction with its interval and its backing.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Prediction {
    pub target: Target,
    pub fault_type: String,
    pub region: String,
    pub params: BTreeMap<String, String>,
    pub duration_s: f64,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
    /// The interval's nominal coverage, and its coverage measured in cross-validation.
    pub level: f64,
    pub measured_coverage: f64,
    pub source: Source,
    /// Cross-validated MAE and R² of what answered, and of the baseline on the same rows.
    pub cv_mae: f64,
    pub cv_r2: f64,
    pub baseline_mae: f64,
    /// Past runs of this fault type near the point, and parameters outside the range seen.
    pub near_runs: usize,
    pub outside: Vec<String>,
    pub warning: Option<String>,
}

/// The support of every fault type in `samples`; `regions` lists every region of `samples`, sorted.
pub fn support(samples: &[Sample], regions: &[String]) -> BTreeMap<String, Support> {
    let mut by_type: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        by_type.entry(s.point.fault_type.as_str()).or_default().push(s);
    }
    by_type
        .into_iter()
        .map(|(fault_type, rows)| {
            let params = numeric_params(fault_type);
            let mut lo = vec![f64::INFINITY; params.len()];
            let mut hi = vec![f64::NEG_INFINITY; params.len()];
            let mut run_index: BTreeMap<&str, u32> = BTreeMap::new();
            let mut points = Vec::with_capacity(rows.len());
            let mut runs = Vec::with_capacity(rows.len());
            let mut scores = Vec::with_capacity(rows.len());
            let mut region = Vec::with_capacity(rows.len());
            for s in &rows {
                region.push(regions.binary_search(&s.point.region).map_or(u16::MAX, |i| i as u16));
                let values: Vec<f32> = params
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let v = s.point.params.get(p).and_then(|v| v.parse::<f64>().ok());
                        if let Some(v) = v {
                            lo[i] = lo[i].min(v);
                            hi[i] = hi[i].max(v);
                        }
                        v.map_or(f32::NAN, |v| v as f32)
                    })
                    .collect();
                points.push(values);
                let next = run_index.len() as u32;
                runs.push(*run_index.entry(s.run_id.as_str()).or_insert(next));
                scores.push(s.target(Target::ResilienceScore).map(|v| v as f32));
            }
            let support = Support { params, lo, hi, points, run: runs, scores, runs: run_index.len(), region };
            (fault_type.to_owned(), support)
        })
        .collect()
}

/// The numeric parameters of a fault type, in catalogue order.
fn numeric_params(fault_type: &str) -> Vec<String> {
    faults::spec(fault_type)
        .map(|spec| {
            spec.params.iter().filter(|p| faults::numeric_bounds(p).is_some()).map(|p| p.name.to_owned()).collect()
        })
        .unwrap_or_default()
}

impl Support {
    /// Distinct runs near `values` (one per `self.params`).
    pub fn near_runs(&self, values: &[f64]) -> usize {
        self.near_runs_in(values, None)
    }

    /// Distinct runs near `values` in one region (an index into the model's regions), or in any.
    pub fn near_runs_in(&self, values: &[f64], region: Option<u16>) -> usize {
        let mut near = BTreeSet::new();
        for (row, point) in self.points.iter().enumerate() {
            if let Some(r) = region
                && self.region.get(row).is_some_and(|&at| at != r)
            {
                continue;
            }
            let close = point.iter().enumerate().all(|(i, v)| {
                let v = f64::from(*v);
                let q = values[i];
                if v.is_nan() || q.is_nan() {
                    return v.is_nan() && q.is_nan();
                }
                let range = self.hi[i] - self.lo[i];
                let tolerance = if range > 0.0 { NEAR_SHARE * range } else { NEAR_SHARE * q.abs().max(1e-9) };
                (v - q).abs() <= tolerance
            });
            if close {
                near.insert(self.run[row]);
            }
        }
        near.len()
    }

    /// The parameters of `values` outside the range seen.
    pub fn outside(&self, values: &[f64]) -> Vec<String> {
        self.params
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                let v = values[*i];
                !v.is_nan() && self.lo[*i].is_finite() && (v < self.lo[*i] || v > self.hi[*i])
            })
            .map(|(_, p)| p.clone())
            .collect()
    }

    pub fn values(&self, params: &BTreeMap<String, String>) -> Vec<f64> {
        self.params.iter().map(|p| params.get(p).and_then(|v| v.parse().ok()).unwrap_or(f64::NAN)).collect()
    }
}

impl Model {
    /// Checks a question against the catalogue and the history, and makes its point: parameters with the
    /// catalogue's defaults filled in, the duration the fault type's median when not given.
    pub fn point(&self, question: &Question) -> Result<Point, OptimizerError> {
        let fault_type = question.fault_type.as_str();
        let spec = faults::spec(fault_type).ok_or_else(|| {
            let known: Vec<&str> = faults::CATALOGUE.iter().map(|s| s.fault_type).collect();
            OptimizerError::invalid(
                "fault_type",
                format!("unknown fault type {fault_type:?}; known: {}", known.join(", ")),
            )
        })?;
        let given = given_params(question.params.iter().map(|(k, v)| (k, v)));
        let params = faults::validate(spec.layer, fault_type, &given)
            .map_err(|e| OptimizerError::invalid(&format!("--param {}", e.field), e.message))?;
        let rows = self.rows_by_fault_type.get(fault_type).copied().unwrap_or(0);
        if rows < train::MIN_ROWS {
            return Err(OptimizerError::TooLittle(format!(
                "{fault_type}: {rows} results in the model's history, at least {} are needed to predict; \
                 run more experiments of it (or `chaoseater optimizer train` over more --days)",
                train::MIN_ROWS
            )));
        }
        if let Some(region) = &question.region
            && !self.regions.contains(region)
        {
            return Err(OptimizerError::invalid(
                "--region",
                format!("{region:?} is not in the model's history; seen: {}", self.regions.join(", ")),
            ));
        }
        if let Some(d) = question.duration_s
            && !(d.is_finite() && d > 0.0)
        {
            return Err(OptimizerError::invalid(
                "--duration",
                format!("must be a positive number of seconds, got {d}"),
            ));
        }
        Ok(Point {
            fault_type: fault_type.to_owned(),
            layer: spec.layer.to_string(),
            region: question.region.clone().unwrap_or_default(),
            params: params.iter().map(|(k, v)| (k.clone(), param_string(v))).collect(),
            tags: question.tags.clone(),
            duration_s: question.duration_s.or_else(|| self.median_duration_s.get(fault_type).copied()).unwrap_or(60.0),
        })
    }

    /// The regions a question is about: the one asked, else every region seen.
    fn regions_for(&self, point: &Point) -> Vec<String> {
        if point.region.is_empty() { self.regions.clone() } else { vec![point.region.clone()] }
    }

    /// Predictions at `points` (all of one fault type) for `target`.
    pub fn predict_points(&self, points: &[Point], target: Target) -> Result<Vec<Prediction>, OptimizerError> {
        let Some(first) = points.first() else { return Ok(Vec::new()) };
        let fault_type = first.fault_type.as_str();
        let answering = self.answering(fault_type, target)?;
        let support = self.support.get(fault_type).cloned().unwrap_or_default();
        let (values, spreads, cv) = match answering {
            Answer::Model(scope) => {
                let mut x = Matrix::new(scope.encoder.width());
                for p in points {
                    scope.encoder.encode_into(p, &mut x.values);
                }
                let (v, s) = scope.forest.predict(&x)?;
                (v, s, &scope.cv)
            }
            Answer::Baseline(scope) => {
                let mean = scope.baseline.get(fault_type).copied().unwrap_or(f64::NAN);
                (vec![mean; points.len()], vec![0.0; points.len()], &scope.cv)
            }
        };
        let (lo_bound, hi_bound) = if target == Target::ResilienceScore { (0.0, 100.0) } else { (0.0, f64::INFINITY) };
        Ok(points
            .iter()
            .zip(values.iter().zip(&spreads))
            .map(|(p, (&v, &s))| {
                let half = match answering {
                    Answer::Model(scope) => scope.quantile * (s + scope.floor),
                    Answer::Baseline(scope) => scope.baseline_quantile,
                };
                let at = support.values(&p.params);
                let near_runs = support.near_runs(&at);
                let outside = support.outside(&at);
                let warning = if !outside.is_empty() {
                    Some(format!("extrapolating: {} outside the range seen", outside.join(", ")))
                } else if near_runs < FEW_NEAR {
                    Some(format!("extrapolating: only {near_runs} past runs near this point"))
                } else {
                    None
                };
                Prediction {
                    target,
                    fault_type: p.fault_type.clone(),
                    region: p.region.clone(),
                    params: p.params.clone(),
                    duration_s: p.duration_s,
                    value: v.clamp(lo_bound, hi_bound),
                    lower: (v - half).clamp(lo_bound, hi_bound),
                    upper: (v + half).clamp(lo_bound, hi_bound),
                    level: cv.level,
                    measured_coverage: cv.coverage,
                    source: match answering {
                        Answer::Model(scope) => Source::Model(scope.scope.clone()),
                        Answer::Baseline(_) => Source::Baseline,
                    },
                    cv_mae: answering.mae(fault_type),
                    cv_r2: match answering {
                        Answer::Model(scope) => scope.cv.model_r2,
                        Answer::Baseline(scope) => scope.cv.baseline_r2,
                    },
                    baseline_mae: answering.baseline_mae(fault_type),
                    near_runs,
                    outside,
                    warning,
                }
            })
            .collect())
    }

    /// A question's prediction in its region, or in every region seen when it names none.
    pub fn predict(&self, question: &Question) -> Result<Vec<Prediction>, OptimizerError> {
        let point = self.point(question)?;
        let points: Vec<Point> =
            self.regions_for(&point).into_iter().map(|region| Point { region, ..point.clone() }).collect();
        self.predict_points(&points, question.target.unwrap_or(Target::ResilienceScore))
    }

    /// What answers for a fault type: its own model if it beats the baseline, else the pooled model if it
    /// does on this type's rows, else the baseline.
    fn answering(&self, fault_type: &str, target: Target) -> Result<Answer<'_>, OptimizerError> {
        let own = self.scopes_of(target).find(|s| s.scope == Scope::FaultType(fault_type.to_owned()));
        let pooled = self.scopes_of(target).find(|s| s.scope == Scope::Pooled);
        if let Some(own) = own.filter(|s| s.usable_for(fault_type)) {
            return Ok(Answer::Model(own));
        }
        if let Some(pooled) = pooled.filter(|s| s.usable_for(fault_type)) {
            return Ok(Answer::Model(pooled));
        }
        own.or(pooled).map(Answer::Baseline).ok_or_else(|| {
            OptimizerError::TooLittle(format!(
                "no model of {target} covers {fault_type}: the model was trained for {}",
                self.targets.iter().map(|t| t.column()).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[derive(Debug, Clone, Copy)]
enum Answer<'a> {
    Model(&'a ScopeModel),
    Baseline(&'a ScopeModel),
}

impl Answer<'_> {
    fn figures(&self, fault_type: &str) -> (f64, f64, &CvFigures) {
        let scope = match self {
            Answer::Model(s) | Answer::Baseline(s) => s,
        };
        let (model, baseline) =
            scope.by_fault_type.get(fault_type).copied().unwrap_or((scope.cv.model_mae, scope.cv.baseline_mae));
        (model, baseline, &scope.cv)
    }

    fn mae(&self, fault_type: &str) -> f64 {
        let (model, baseline, _) = self.figures(fault_type);
        if matches!(self, Answer::Model(_)) { model } else { baseline }
    }

    fn baseline_mae(&self, fault_type: &str) -> f64 {
        self.figures(fault_type).1
    }
}

/// A parameter's text as the parameters table keeps it.
pub(super) fn param_string(value: &chaoseater_schemas::experiment::ParamValue) -> String {
    crate::history::tables::param_text(value).0.into_owned()
}

/// What `suggest` found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Suggestion {
    pub fault_type: String,
    pub target_score: f64,
    /// Whether some point in the searched space meets the target in every region asked.
    pub meets_target: bool,
    /// The parameters proposed (the harshest meeting the target; when none does, the mildest searched).
    pub params: BTreeMap<String, String>,
    /// The prediction there, per region (the lowest lower bound decides).
    pub predictions: Vec<Prediction>,
    /// The space searched: per parameter (lo, hi) and how many points.
    pub searched: BTreeMap<String, (f64, f64)>,
    pub points_searched: usize,
    /// The harshest past run of this fault type that scored at least the target, and whether the
    /// suggestion goes further.
    pub harshest_past: Option<BTreeMap<String, f64>>,
    pub harsher_than_past: Option<bool>,
}

impl Model {
    /// The harshest parameters within the catalogue's bounds (and a little past the range seen) whose
    /// predicted lower bound meets `target_score` in every region asked, by searching the model over a
    /// grid of the fault's numeric parameters. Parameters given in the question are held fixed.
    pub fn suggest(&self, question: &Question, target_score: f64) -> Result<Suggestion, OptimizerError> {
        if !(0.0..=100.0).contains(&target_score) || !target_score.is_finite() {
            return Err(OptimizerError::invalid("--target-score", format!("must be within 0-100, got {target_score}")));
        }
        let base = self.point(question)?;
        let support = self.support.get(&base.fault_type).cloned().unwrap_or_default();
        let fixed: BTreeSet<&str> = question.params.iter().map(|(k, _)| k.as_str()).collect();
        let axes: Vec<Axis> =
            self.axes(&base.fault_type).into_iter().filter(|a| !fixed.contains(a.name.as_str())).collect();
        let levels = match axes.len() {
            0 => 1,
            1 => 101,
            2 => 41,
            3 => 15,
            _ => 7,
        };
        let mut grid: Vec<BTreeMap<String, f64>> = vec![BTreeMap::new()];
        for axis in &axes {
            let mut next = Vec::with_capacity(grid.len() * levels);
            for g in &grid {
                for step in 0..levels {
                    let share = if levels == 1 { 0.0 } else { step as f64 / (levels - 1) as f64 };
                    let mut g = g.clone();
                    g.insert(axis.name.clone(), axis.at(share));
                    next.push(g);
                }
            }
            grid = next;
        }
        let harshness = |values: &BTreeMap<String, f64>| -> f64 {
            axes.iter()
                .map(|a| {
                    let share = if a.hi > a.lo { (values[&a.name] - a.lo) / (a.hi - a.lo) } else { 0.0 };
                    if a.lower_is_harsher { 1.0 - share } else { share }
                })
                .sum()
        };
        let regions = self.regions_for(&base);
        let mut points = Vec::with_capacity(grid.len() * regions.len());
        for g in &grid {
            for region in &regions {
                let mut p = Point { region: region.clone(), ..base.clone() };
                for (name, v) in g {
                    p.params.insert(name.clone(), number_text(*v));
                }
                points.push(p);
            }
        }
        let predictions = self.predict_points(&points, Target::ResilienceScore)?;
        let per_point: Vec<&[Prediction]> = predictions.chunks(regions.len()).collect();
        let worst = |preds: &[Prediction]| preds.iter().map(|p| p.lower).fold(f64::INFINITY, f64::min);
        let best = (0..grid.len()).filter(|&i| worst(per_point[i]) >= target_score).max_by(|&a, &b| {
            harshness(&grid[a])
                .total_cmp(&harshness(&grid[b]))
                .then(worst(per_point[a]).total_cmp(&worst(per_point[b])))
        });
        let meets_target = best.is_some();
        let chosen = best.unwrap_or_else(|| {
            (0..grid.len()).min_by(|&a, &b| harshness(&grid[a]).total_cmp(&harshness(&grid[b]))).unwrap_or(0)
        });
        // The harshest past run that met the target, on the same axes.
        let mut harshest_past: Option<(f64, BTreeMap<String, f64>)> = None;
        for (row, point) in support.points.iter().enumerate() {
            if support.scores[row].is_none_or(|s| f64::from(s) < target_score) {
                continue;
            }
            let mut values = BTreeMap::new();
            for axis in &axes {
                let i = support.params.iter().position(|n| *n == axis.name).expect("axes come from support");
                values.insert(axis.name.clone(), f64::from(point[i]));
            }
            if values.values().any(|v| v.is_nan()) {
                continue;
            }
            let h = harshness(&values);
            if harshest_past.as_ref().is_none_or(|(best, _)| h > *best) {
                harshest_past = Some((h, values));
            }
        }
        let harsher_than_past = harshest_past
            .as_ref()
            .filter(|_| meets_target && !axes.is_empty())
            .map(|(h, _)| harshness(&grid[chosen]) > *h);
        Ok(Suggestion {
            fault_type: base.fault_type.clone(),
            target_score,
            meets_target,
            params: points[chosen * regions.len()].params.clone(),
            predictions: per_point[chosen].to_vec(),
            searched: axes.iter().map(|a| (a.name.clone(), (a.lo, a.hi))).collect(),
            points_searched: grid.len(),
            harshest_past: harshest_past.map(|(_, v)| v),
            harsher_than_past,
        })
    }
}

/// Parameters given as text, as the catalogue's validation takes them: integers, other numbers, else text.
pub(super) fn given_params<'a>(
    params: impl Iterator<Item = (&'a String, &'a String)>,
) -> serde_json::Map<String, Json> {
    params
        .map(|(name, text)| {
            let value = if let Ok(i) = text.parse::<i64>() {
                Json::from(i)
            } else if let Some(n) = text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
                Json::Number(n)
            } else {
                Json::String(text.clone())
            };
            (name.clone(), value)
        })
        .collect()
}

/// A numeric parameter searched by `suggest` and `plan`: its range and how to step along it.
#[derive(Debug, Clone, PartialEq)]
pub struct Axis {
    pub name: String,
    pub lo: f64,
    pub hi: f64,
    pub int: bool,
    pub lower_is_harsher: bool,
}

impl Axis {
    /// The value at `share` (0 to 1) of the range, rounded for an integer parameter.
    pub fn at(&self, share: f64) -> f64 {
        let v = self.lo + (self.hi - self.lo) * share;
        if self.int { v.round() } else { v }
    }
}

impl Model {
    /// The numeric parameters of `fault_type` the history has seen, each searched over its seen range
    /// widened by [`SEARCH_BEYOND`] and clipped to the catalogue's bounds. A parameter never seen has no
    /// axis: a search holds it at its default.
    pub fn axes(&self, fault_type: &str) -> Vec<Axis> {
        let (Some(spec), Some(support)) = (faults::spec(fault_type), self.support.get(fault_type)) else {
            return Vec::new();
        };
        spec.params
            .iter()
            .filter_map(|p| {
                let (min, max) = faults::numeric_bounds(p)?;
                let i = support.params.iter().position(|n| n == p.name)?;
                if !support.lo[i].is_finite() {
                    return None;
                }
                let range = (support.hi[i] - support.lo[i]).max(0.0);
                Some(Axis {
                    name: p.name.to_owned(),
                    lo: (support.lo[i] - SEARCH_BEYOND * range).max(min),
                    hi: (support.hi[i] + SEARCH_BEYOND * range).min(max),
                    int: matches!(p.kind, ParamKind::Int { .. }),
                    lower_is_harsher: faults::lower_is_harsher(p.name),
                })
            })
            .collect()
    }
}

/// A number as a parameter's text: whole numbers without a decimal point.
pub(super) fn number_text(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 9e15 { format!("{}", v as i64) } else { format!("{}", (v * 1e6).round() / 1e6) }
}
