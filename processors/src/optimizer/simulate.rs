//! A simulated pipeline for the closed loop: the truth is [`synthetic::truth`] (known to the caller), a
//! run measures it with [`synthetic::NOISE`], and a learning curve follows the model's error over rounds of
//! choose → run → retrain, choosing by [`Model::plan`] or at random from the same space. The plan bench
//! prints both curves; a test checks that planning learns faster.

use std::collections::BTreeMap;

use chaoseater_schemas::rng::Rng;

use super::plan::{Caps, PlanRequest, RegionLimits};
use super::query::number_text;
use super::synthetic::{self, NOISE, REGIONS};
use super::{ForestParams, Model, OptimizerError, Point, Sample, Target};

/// How the next experiments are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `chaoseater plan`'s proposals.
    Plan,
    /// Uniformly at random over the space the error is measured on (the fault types, regions and ranges of
    /// [`test_points`]).
    Random,
}

/// The model's error after each round.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Rows trained on, per round (round 0 is the starting history).
    pub rows: Vec<usize>,
    /// Mean absolute error against the truth over [`test_points`], per round.
    pub mae: Vec<f64>,
}

/// A fault type, its layer and its parameters.
type Corner = (&'static str, &'static str, &'static [(&'static str, f64)]);

/// The starting history: 16 runs over the three regions, spread thinly over the space [`test_points`]
/// covers, its corners included (corruption rates 0 and 1, latencies 0 and 2,000 ms with jitter 0 and
/// 100), so that the range seen is the space the error is measured on and only the choices differ.
pub fn starting_history(seed: u64) -> Vec<Sample> {
    let mut history = synthetic::labelled(12, 1.0, 2_000.0, 20_000.0, seed);
    let mut noise = Rng::new(seed ^ 0xc0de);
    let corners: [Corner; 4] = [
        ("data_corruption", "data", &[("corruption_rate", 0.0)]),
        ("data_corruption", "data", &[("corruption_rate", 1.0)]),
        ("network_latency", "infrastructure", &[("latency_ms", 0.0), ("jitter_ms", 0.0)]),
        ("network_latency", "infrastructure", &[("latency_ms", 2_000.0), ("jitter_ms", 100.0)]),
    ];
    for (i, (fault_type, layer, params)) in corners.into_iter().enumerate() {
        for region in REGIONS {
            let day = 20_000.0 + (12 + i) as f64 / 96.0;
            let chosen = point(fault_type, layer, region, params).0;
            history.push(measure(chosen, &format!("start-{seed}-{i}"), day, &mut noise));
        }
    }
    history
}

/// Where the error is measured: corruption rates 0 to 1 and latencies 0 to 2,000 ms (jitter 0, 50, 100),
/// in every region.
pub fn test_points() -> Vec<(Point, f64)> {
    let mut out = Vec::new();
    for region in REGIONS {
        for step in 0..=20 {
            let rate = step as f64 / 20.0;
            out.push(point("data_corruption", "data", region, &[("corruption_rate", rate)]));
            for jitter in [0.0, 50.0, 100.0] {
                let latency = step as f64 * 100.0;
                out.push(point(
                    "network_latency",
                    "infrastructure",
                    region,
                    &[("latency_ms", latency), ("jitter_ms", jitter)],
                ));
            }
        }
    }
    out
}

fn point(fault_type: &str, layer: &str, region: &str, params: &[(&str, f64)]) -> (Point, f64) {
    let values: BTreeMap<String, f64> = params.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect();
    let truth = synthetic::truth(fault_type, region, &values);
    let point = Point {
        fault_type: fault_type.to_owned(),
        layer: layer.to_owned(),
        region: region.to_owned(),
        params: values.iter().map(|(k, v)| (k.clone(), number_text(*v))).collect(),
        tags: BTreeMap::from([("source".to_owned(), "synthetic".to_owned())]),
        duration_s: 30.0,
    };
    (point, truth)
}

/// The model's mean absolute error against the truth over `test`.
pub fn error(model: &Model, test: &[(Point, f64)]) -> Result<f64, OptimizerError> {
    let mut total = 0.0;
    for fault_type in ["data_corruption", "network_latency"] {
        let (points, truths): (Vec<Point>, Vec<f64>) =
            test.iter().filter(|(p, _)| p.fault_type == fault_type).cloned().unzip();
        let predictions = model.predict_points(&points, Target::ResilienceScore)?;
        total += predictions.iter().zip(&truths).map(|(p, t)| (p.value - t).abs()).sum::<f64>();
    }
    Ok(total / test.len() as f64)
}

/// Runs `rounds` rounds of `budget` experiments chosen by `strategy`, each measured in its one region,
/// retraining after each; the same `seed` gives both strategies the same start and the same noise stream.
pub fn learning_curve(strategy: Strategy, rounds: usize, budget: usize, seed: u64) -> Result<Curve, OptimizerError> {
    let mut history = starting_history(seed);
    let test = test_points();
    let mut noise = Rng::new(seed ^ 0x5eed);
    let mut pick = Rng::new(seed ^ 0xa11ce);
    let params = ForestParams::default();
    let mut curve = Curve { rows: Vec::new(), mae: Vec::new() };
    let mut day = history.last().map_or(20_000.0, |s| s.finished_day);
    for round in 0..=rounds {
        let model = Model::train(&history, &[Target::ResilienceScore], None, &params, &mut |_, _, _| {})?;
        curve.rows.push(history.len());
        curve.mae.push(error(&model, &test)?);
        if round == rounds {
            break;
        }
        let points: Vec<Point> = match strategy {
            Strategy::Plan => {
                let request = PlanRequest {
                    budget,
                    regions: REGIONS
                        .iter()
                        .map(|r| RegionLimits { region: (*r).to_owned(), caps: Caps::default() })
                        .collect(),
                    fault_types: Vec::new(),
                    target_score: 70.0,
                    skip: Vec::new(),
                };
                let plan = model.plan(&request)?;
                plan.proposals.into_iter().map(|p| p.point).collect()
            }
            Strategy::Random => (0..budget).map(|_| random_point(&mut pick)).collect(),
        };
        for (i, p) in points.into_iter().enumerate() {
            day += 1.0 / 96.0;
            history.push(measure(p, &format!("sim-{seed}-{round}-{i}"), day, &mut noise));
        }
    }
    Ok(curve)
}

/// A point drawn uniformly from the space the error is measured on: a fault type, a region, each
/// parameter within the test's bounds.
fn random_point(rng: &mut Rng) -> Point {
    let region = REGIONS[rng.index(REGIONS.len())];
    if rng.chance(0.5) {
        point("data_corruption", "data", region, &[("corruption_rate", rng.next_f64())]).0
    } else {
        let (latency, jitter) = (rng.uniform(0.0, 2_000.0).round(), rng.uniform(0.0, 100.0).round());
        point("network_latency", "infrastructure", region, &[("latency_ms", latency), ("jitter_ms", jitter)]).0
    }
}

/// One run of `point` on the simulated pipeline: the truth plus noise.
/// Both strategies' points are rebuilt alike (numeric parameters, the synthetic tag, 30 s), so only where
/// they land differs.
fn measure(chosen: Point, run_id: &str, day: f64, rng: &mut Rng) -> Sample {
    let values: Vec<(&str, f64)> =
        chosen.params.iter().filter_map(|(k, v)| v.parse().ok().map(|v| (k.as_str(), v))).collect();
    let (point, truth) = point(&chosen.fault_type, &chosen.layer, &chosen.region, &values);
    let score = (truth + NOISE * rng.normal()).clamp(0.0, 100.0);
    let mut targets = [None; Target::ALL.len()];
    targets[Target::ResilienceScore as usize] = Some(score);
    Sample { run_id: run_id.to_owned(), point, finished_day: day, targets }
}
