//! The demo target's data set: sensor readings of a machine, labelled with its condition.
//!
//! Generated from a fixed seed so that every machine trains the same model and gets the same probe set.
//! Four numeric features and one categorical one: the categorical cell is what a corrupted or strict
//! pipeline chokes on (data faults null it), the numeric ones are what noise and drift move.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

use chaoseater_schemas::rng::Rng;

/// Numeric feature names, in the order array-shaped instances use.
pub const NUMERIC: [&str; 4] = ["temperature", "vibration", "pressure", "current"];
/// The categorical feature, last in array-shaped instances.
pub const CATEGORICAL: &str = "site";
pub const SITES: [&str; 3] = ["north", "south", "east"];
pub const CLASSES: [&str; 3] = ["healthy", "degraded", "failing"];

/// Class centres of the numeric features; neighbours are 1.5 standard deviations apart on every feature,
/// so the classes overlap and accuracy is high but not perfect (about 90%), leaving room to lose.
const CENTRES: [[f64; 4]; 3] = [[60.0, 0.50, 100.0, 10.0], [67.5, 1.025, 94.0, 12.25], [75.0, 1.55, 88.0, 14.5]];
const STDS: [f64; 4] = [5.0, 0.35, 4.0, 1.5];
/// P(site | class): each condition is more common at one site.
const SITE_GIVEN_CLASS: [[f64; 3]; 3] = [[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]];

pub const TRAIN_SEED: u64 = 0xC4A0_5EA7;
pub const PROBE_SEED: u64 = 0x9B0B_E5E7;

/// One labelled record.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub numeric: [f64; 4],
    pub site: usize,
    pub label: usize,
}

impl Sample {
    /// The record as a JSON object, the shape clients send.
    pub fn to_json(&self) -> Json {
        let mut row = Map::new();
        for (name, value) in NUMERIC.iter().zip(self.numeric) {
            row.insert((*name).to_owned(), Json::from((value * 1000.0).round() / 1000.0));
        }
        row.insert(CATEGORICAL.to_owned(), Json::from(SITES[self.site]));
        Json::Object(row)
    }
}

/// `per_class` samples of each class, shuffled, from `seed`.
pub fn generate(seed: u64, per_class: usize) -> Vec<Sample> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(per_class * CLASSES.len());
    for label in 0..CLASSES.len() {
        for _ in 0..per_class {
            let mut numeric = [0.0; 4];
            for (i, value) in numeric.iter_mut().enumerate() {
                *value = CENTRES[label][i] + STDS[i] * rng.normal();
            }
            let u = rng.next_f64();
            let mut acc = 0.0;
            let mut site = SITES.len() - 1;
            for (s, p) in SITE_GIVEN_CLASS[label].iter().enumerate() {
                acc += p;
                if u < acc {
                    site = s;
                    break;
                }
            }
            out.push(Sample { numeric, site, label });
        }
    }
    // Fisher–Yates, so batches of the probe set mix classes.
    for i in (1..out.len()).rev() {
        let j = rng.index(i + 1);
        out.swap(i, j);
    }
    out
}

/// The labelled probe set the agent measures accuracy with (`GET /probe-set`, `demo-target --export-probe-set`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSet {
    /// Model name in the serving protocol's paths.
    pub model: String,
    /// `v1` (TF-Serving/KServe v1) or `v2` (Open Inference Protocol).
    pub protocol: String,
    /// The request path probes are sent to.
    pub path: String,
    /// Feature names in the order array-shaped instances use.
    pub features: Vec<String>,
    /// Class names; a prediction's argmax indexes this list.
    pub classes: Vec<String>,
    /// The records, as clients send them.
    pub instances: Vec<Json>,
    /// The true class of each record (index into `classes`).
    pub labels: Vec<usize>,
}

impl ProbeSet {
    pub fn demo(model: &str, per_class: usize) -> Self {
        let samples = generate(PROBE_SEED, per_class);
        Self {
            model: model.to_owned(),
            protocol: "v1".to_owned(),
            path: format!("/v1/models/{model}:predict"),
            features: NUMERIC.iter().map(|s| (*s).to_owned()).chain([CATEGORICAL.to_owned()]).collect(),
            classes: CLASSES.iter().map(|s| (*s).to_owned()).collect(),
            instances: samples.iter().map(Sample::to_json).collect(),
            labels: samples.iter().map(|s| s.label).collect(),
        }
    }
}
