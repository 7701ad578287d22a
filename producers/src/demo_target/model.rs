//! The demo classifier: softmax regression on standardised features (the primary model) and a
//! nearest-centroid model on the numeric features alone (the fallback), both trained deterministically.

use serde_json::Value as Json;

use super::data::{CATEGORICAL, CLASSES, NUMERIC, SITES, Sample};

const N_NUM: usize = NUMERIC.len();
const N_CLASS: usize = CLASSES.len();
/// Inputs of the softmax model: standardised numeric features, one-hot site, bias.
const N_IN: usize = N_NUM + SITES.len() + 1;
/// A numeric value this many training standard deviations from the mean is implausible for a sensor;
/// input validation treats it as missing.
const MAX_ABS_Z: f64 = 4.0;

/// Which defences the target runs with (`--resilience`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resilience {
    /// Validate inputs: impute missing, null or implausible cells, coerce numeric strings, ignore extra columns.
    pub validate: bool,
    /// Retry failed calls to the upstream model server (gateway mode).
    pub retry: bool,
    /// Answer with the fallback model when the primary cannot (unusable input, upstream down).
    pub fallback: bool,
}

impl Resilience {
    /// Parses `none` or a comma-separated list of `validate`, `retry`, `fallback`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut out = Self::default();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "none" => {}
                "validate" => out.validate = true,
                "retry" => out.retry = true,
                "fallback" => out.fallback = true,
                other => return Err(format!("unknown resilience {other:?}; known: none, validate, retry, fallback")),
            }
        }
        Ok(out)
    }
}

impl std::fmt::Display for Resilience {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = [(self.validate, "validate"), (self.retry, "retry"), (self.fallback, "fallback")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        if names.is_empty() { f.write_str("none") } else { f.write_str(&names.join(",")) }
    }
}

/// The trained models and the training statistics input validation uses.
#[derive(Debug, Clone)]
pub struct Model {
    mean: [f64; N_NUM],
    std: [f64; N_NUM],
    site_mode: usize,
    weights: [[f64; N_IN]; N_CLASS],
    /// Class centroids in standardised units.
    centroids: [[f64; N_NUM]; N_CLASS],
}

/// An instance the primary model can score.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Full {
    numeric: [f64; N_NUM],
    site: usize,
}

impl Model {
    /// Trains both models on `samples` by full-batch gradient descent (deterministic: no shuffling).
    // Small dense matrix code: indices read more plainly than zipped iterators here.
    #[allow(clippy::needless_range_loop)]
    pub fn train(samples: &[Sample]) -> Self {
        let n = samples.len() as f64;
        let mut mean = [0.0; N_NUM];
        let mut std = [0.0; N_NUM];
        for i in 0..N_NUM {
            mean[i] = samples.iter().map(|s| s.numeric[i]).sum::<f64>() / n;
            std[i] = (samples.iter().map(|s| (s.numeric[i] - mean[i]).powi(2)).sum::<f64>() / n).sqrt().max(1e-9);
        }
        let mut site_counts = [0usize; SITES.len()];
        samples.iter().for_each(|s| site_counts[s.site] += 1);
        let site_mode = (0..SITES.len()).max_by_key(|&i| site_counts[i]).unwrap_or(0);

        let mut model =
            Self { mean, std, site_mode, weights: [[0.0; N_IN]; N_CLASS], centroids: [[0.0; N_NUM]; N_CLASS] };
        let inputs: Vec<[f64; N_IN]> =
            samples.iter().map(|s| model.inputs(&Full { numeric: s.numeric, site: s.site })).collect();
        let rate = 0.5;
        for _ in 0..400 {
            let mut grad = [[0.0; N_IN]; N_CLASS];
            for (x, sample) in inputs.iter().zip(samples) {
                let p = softmax(model.logits(x));
                for c in 0..N_CLASS {
                    let err = p[c] - if c == sample.label { 1.0 } else { 0.0 };
                    for j in 0..N_IN {
                        grad[c][j] += err * x[j];
                    }
                }
            }
            for c in 0..N_CLASS {
                for j in 0..N_IN {
                    model.weights[c][j] -= rate * grad[c][j] / n;
                }
            }
        }
        for c in 0..N_CLASS {
            let members: Vec<&Sample> = samples.iter().filter(|s| s.label == c).collect();
            for i in 0..N_NUM {
                let m = members.iter().map(|s| s.numeric[i]).sum::<f64>() / members.len().max(1) as f64;
                model.centroids[c][i] = (m - mean[i]) / std[i];
            }
        }
        model
    }

    #[allow(clippy::needless_range_loop)]
    fn inputs(&self, x: &Full) -> [f64; N_IN] {
        let mut v = [0.0; N_IN];
        for i in 0..N_NUM {
            v[i] = (x.numeric[i] - self.mean[i]) / self.std[i];
        }
        v[N_NUM + x.site] = 1.0;
        v[N_IN - 1] = 1.0;
        v
    }

    fn logits(&self, x: &[f64; N_IN]) -> [f64; N_CLASS] {
        let mut out = [0.0; N_CLASS];
        for (c, w) in self.weights.iter().enumerate() {
            out[c] = w.iter().zip(x).map(|(a, b)| a * b).sum();
        }
        out
    }

    fn primary(&self, x: &Full) -> [f64; N_CLASS] {
        softmax(self.logits(&self.inputs(x)))
    }

    /// Nearest centroid over the numeric cells that are present, as probabilities (softmax of −d²/2).
    fn fallback(&self, numeric: &[Option<f64>; N_NUM]) -> Option<[f64; N_CLASS]> {
        if numeric.iter().all(Option::is_none) {
            return None;
        }
        let mut logits = [0.0; N_CLASS];
        for (c, centroid) in self.centroids.iter().enumerate() {
            let d2: f64 = (0..N_NUM)
                .filter_map(|i| numeric[i].map(|x| ((x - self.mean[i]) / self.std[i] - centroid[i]).powi(2)))
                .sum();
            logits[c] = -d2 / 2.0;
        }
        Some(softmax(logits))
    }

    /// Scores one instance (a JSON object keyed by feature, or an array in feature order) under `resilience`.
    pub fn predict(&self, instance: &Json, resilience: Resilience) -> Result<[f64; N_CLASS], String> {
        if resilience.validate {
            return Ok(self.primary(&self.repair(instance)));
        }
        match strict(instance) {
            Ok(full) => Ok(self.primary(&full)),
            Err(message) if resilience.fallback => self.fallback(&numeric_cells(instance)).ok_or(message),
            Err(message) => Err(message),
        }
    }

    /// The record `validate` would score, as a JSON object keyed by feature: what a gateway with input
    /// validation forwards to the model server behind it.
    pub fn validated(&self, instance: &Json) -> Json {
        let full = self.repair(instance);
        let mut record = serde_json::Map::new();
        for (name, value) in NUMERIC.iter().zip(full.numeric) {
            record.insert((*name).to_owned(), Json::from(value));
        }
        record.insert(CATEGORICAL.to_owned(), Json::from(SITES[full.site]));
        Json::Object(record)
    }

    /// Input validation and imputation: every cell that is missing, null, not a number or implausible
    /// becomes the training mean (numeric) or the most common site.
    fn repair(&self, instance: &Json) -> Full {
        let cells = numeric_cells(instance);
        let mut numeric = [0.0; N_NUM];
        for i in 0..N_NUM {
            numeric[i] = match cells[i] {
                Some(x) if ((x - self.mean[i]) / self.std[i]).abs() <= MAX_ABS_Z => x,
                _ => self.mean[i],
            };
        }
        let site = cell(instance, N_NUM, CATEGORICAL)
            .and_then(Json::as_str)
            .and_then(|s| SITES.iter().position(|k| k.eq_ignore_ascii_case(s.trim())))
            .unwrap_or(self.site_mode);
        Full { numeric, site }
    }
}

fn softmax(logits: [f64; N_CLASS]) -> [f64; N_CLASS] {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exp = logits.map(|l| (l - max).exp());
    let sum: f64 = exp.iter().sum();
    exp.map(|e| e / sum)
}

fn cell<'a>(instance: &'a Json, index: usize, name: &str) -> Option<&'a Json> {
    match instance {
        Json::Object(map) => map.get(name),
        Json::Array(items) => items.get(index),
        _ => None,
    }
}

/// Numeric cells that hold a finite number (or, leniently, a string holding one).
fn numeric_cells(instance: &Json) -> [Option<f64>; N_NUM] {
    let mut out = [None; N_NUM];
    for (i, name) in NUMERIC.iter().enumerate() {
        out[i] = cell(instance, i, name)
            .and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok())))
            .filter(|x: &f64| x.is_finite());
    }
    out
}

/// The strict reading a pipeline without defences does: the exact schema or an error naming the cell.
fn strict(instance: &Json) -> Result<Full, String> {
    let width = N_NUM + 1;
    match instance {
        Json::Object(map) => {
            if let Some(extra) = map.keys().find(|k| !NUMERIC.contains(&k.as_str()) && k.as_str() != CATEGORICAL) {
                return Err(format!("unexpected feature {extra:?}"));
            }
        }
        Json::Array(items) if items.len() != width => {
            return Err(format!("expected {width} features, got {}", items.len()));
        }
        Json::Array(_) => {}
        _ => return Err("an instance must be an object or an array".to_owned()),
    }
    let mut numeric = [0.0; N_NUM];
    for (i, name) in NUMERIC.iter().enumerate() {
        numeric[i] = match cell(instance, i, name) {
            None => return Err(format!("feature {name:?} is missing")),
            Some(Json::Null) => return Err(format!("feature {name:?} is null")),
            Some(v) => {
                v.as_f64().filter(|x| x.is_finite()).ok_or_else(|| format!("feature {name:?} is not a number"))?
            }
        };
    }
    let site = match cell(instance, N_NUM, CATEGORICAL) {
        None => return Err(format!("feature {CATEGORICAL:?} is missing")),
        Some(Json::Null) => return Err(format!("feature {CATEGORICAL:?} is null")),
        Some(v) => v
            .as_str()
            .and_then(|s| SITES.iter().position(|k| *k == s))
            .ok_or_else(|| format!("feature {CATEGORICAL:?} must be one of {}", SITES.join(", ")))?,
    };
    Ok(Full { numeric, site })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo_target::data::{PROBE_SEED, TRAIN_SEED, generate};

    fn accuracy(model: &Model, samples: &[Sample], resilience: Resilience) -> f64 {
        let correct = samples
            .iter()
            .filter(|s| {
                let p = model.predict(&s.to_json(), resilience).expect("clean input scores");
                let best = (0..N_CLASS).max_by(|&a, &b| p[a].total_cmp(&p[b])).expect("classes");
                best == s.label
            })
            .count();
        correct as f64 / samples.len() as f64
    }

    #[test]
    fn trains_deterministically_to_a_useful_accuracy() {
        let train = generate(TRAIN_SEED, 300);
        let probe = generate(PROBE_SEED, 100);
        let a = Model::train(&train);
        let b = Model::train(&train);
        assert_eq!(a.weights, b.weights);
        let acc = accuracy(&a, &probe, Resilience::default());
        assert!((0.82..0.99).contains(&acc), "probe accuracy {acc}");
    }

    #[test]
    fn strict_rejects_what_validation_repairs_and_fallback_scores() {
        let model = Model::train(&generate(TRAIN_SEED, 300));
        let mut broken = generate(PROBE_SEED, 1)[0].to_json();
        broken["site"] = Json::Null;
        broken["temperature"] = Json::Null;
        let err = model.predict(&broken, Resilience::default()).expect_err("strict refuses a null");
        assert!(err.contains("null"), "{err}");
        let validate = Resilience { validate: true, ..Resilience::default() };
        let fallback = Resilience { fallback: true, ..Resilience::default() };
        assert!(model.predict(&broken, validate).is_ok());
        assert!(model.predict(&broken, fallback).is_ok());
        assert_eq!(Resilience::parse("validate,fallback").map(|r| r.to_string()), Ok("validate,fallback".to_owned()));
        assert!(Resilience::parse("magic").is_err());
    }
}
