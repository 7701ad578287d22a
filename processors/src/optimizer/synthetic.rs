//! Labelled synthetic results for the optimizer: a known truth plus noise, for the tests, the benchmarks
//! and the demo (which has too few results of its own to learn from). Every row carries the tag
//! `source=synthetic`, so nothing mistakes them for measurements.

use std::collections::BTreeMap;

use chaoseater_schemas::rng::Rng;

use super::{Point, Sample, Target};

/// The noise added to the truth (a standard deviation, in score points).
pub const NOISE: f64 = 3.0;
/// The regions of the synthetic pipeline; ap-south validates its inputs.
pub const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// The truth: corrupted cells cost 80 points per unit of rate (40 in ap-south, whose validation drops
/// bad records); network latency costs a point per 40 ms past 200 ms (jitter counting half).
pub fn truth(fault_type: &str, region: &str, params: &BTreeMap<String, f64>) -> f64 {
    match fault_type {
        "data_corruption" => {
            let rate = params.get("corruption_rate").copied().unwrap_or(0.1);
            let cost = if region == "ap-south" { 40.0 } else { 80.0 };
            95.0 - cost * rate
        }
        "network_latency" => {
            let latency = params.get("latency_ms").copied().unwrap_or(100.0)
                + 0.5 * params.get("jitter_ms").copied().unwrap_or(20.0);
            (98.0 - (latency - 200.0).max(0.0) / 40.0).max(0.0)
        }
        _ => 90.0,
    }
}

/// `runs` runs over the three regions, alternating data corruption (rate drawn in [0, `rate_max`]) and
/// network latency (in [0, `latency_max`] ms, jitter in [0, 100]); one run every 15 minutes of day
/// `first_day` on (days since the epoch).
pub fn labelled(runs: usize, rate_max: f64, latency_max: f64, first_day: f64, seed: u64) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut samples = Vec::with_capacity(runs * REGIONS.len());
    for run in 0..runs {
        let (fault_type, layer, params) = if run % 2 == 0 {
            (
                "data_corruption",
                "data",
                BTreeMap::from([("corruption_rate".to_owned(), (rng.uniform(0.0, rate_max) * 1e4).round() / 1e4)]),
            )
        } else {
            (
                "network_latency",
                "infrastructure",
                BTreeMap::from([
                    ("latency_ms".to_owned(), rng.uniform(0.0, latency_max).round()),
                    ("jitter_ms".to_owned(), rng.uniform(0.0, 100.0).round()),
                ]),
            )
        };
        for region in REGIONS {
            let score = (truth(fault_type, region, &params) + NOISE * rng.normal()).clamp(0.0, 100.0);
            let mut targets = [None; Target::ALL.len()];
            targets[Target::ResilienceScore as usize] = Some(score);
            samples.push(Sample {
                run_id: format!("synthetic-{seed}-{run}"),
                point: Point {
                    fault_type: fault_type.to_owned(),
                    layer: layer.to_owned(),
                    region: region.to_owned(),
                    params: params.iter().map(|(k, v)| (k.clone(), v.to_string())).collect(),
                    tags: BTreeMap::from([
                        ("source".to_owned(), "synthetic".to_owned()),
                        ("team".to_owned(), if run % 3 == 0 { "a" } else { "b" }.to_owned()),
                    ]),
                    duration_s: 30.0,
                },
                finished_day: first_day + run as f64 / 96.0,
                targets,
            });
        }
    }
    samples
}
