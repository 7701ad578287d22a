//! Points as the numbers a forest splits on. A fault type's model sees that fault's numeric and choice
//! parameters, the duration, the region and the run's tags; the pooled model also sees the fault type and
//! the layer. Categories are one-hot (a tree then asks "is it ap-south?", never "is it after eu-west?");
//! a choice parameter is its index in the catalogue's list; a numeric parameter absent from a run is -1
//! (every numeric parameter of the catalogue is at least 0).

use std::collections::{BTreeMap, BTreeSet};

use chaoseater_schemas::faults::{self, ParamKind};

use super::dataset::{Point, Sample};

/// A tag key is a feature when it takes 2 to this many values in the training rows: a campaign or a
/// team is a property of runs worth learning from; an id that differs per run is not.
pub const MAX_TAG_VALUES: usize = 16;
/// Tags the A/B coordinator and the planner set: bookkeeping, not properties of the pipeline.
const BOOKKEEPING_TAGS: [&str; 5] = ["ab_test", "ab_variant", "ab_label", "ab_sample", "proposal"];
/// What an absent numeric parameter encodes as.
pub const ABSENT: f64 = -1.0;

/// How one parameter is encoded.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ParamFeature {
    Numeric { name: String },
    Choice { name: String, choices: Vec<String> },
}

impl ParamFeature {
    pub fn name(&self) -> &str {
        match self {
            ParamFeature::Numeric { name } | ParamFeature::Choice { name, .. } => name,
        }
    }
}

/// The encoding of one model's points, learnt from its training rows.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Encoder {
    /// Pooled models: the fault types and layers seen, one-hot.
    pub fault_types: Vec<String>,
    pub layers: Vec<String>,
    pub params: Vec<ParamFeature>,
    pub regions: Vec<String>,
    /// `key=value` pairs, one-hot.
    pub tags: Vec<(String, String)>,
}

impl Encoder {
    /// The encoding of `rows`; `pooled` adds the fault type and layer.
    pub fn fit(rows: &[&Sample], pooled: bool) -> Self {
        let distinct = |f: &dyn Fn(&Sample) -> String| -> Vec<String> {
            rows.iter().map(|s| f(s)).collect::<BTreeSet<_>>().into_iter().collect()
        };
        let fault_types = distinct(&|s| s.point.fault_type.clone());
        let mut params = Vec::new();
        let mut seen = BTreeSet::new();
        for fault_type in &fault_types {
            let Some(spec) = faults::spec(fault_type) else { continue };
            for p in spec.params {
                if !seen.insert(p.name) {
                    continue;
                }
                match p.kind {
                    ParamKind::Rate | ParamKind::Float { .. } | ParamKind::Int { .. } => {
                        params.push(ParamFeature::Numeric { name: p.name.to_owned() });
                    }
                    ParamKind::Choice(choices) => params.push(ParamFeature::Choice {
                        name: p.name.to_owned(),
                        choices: choices.iter().map(|c| (*c).to_owned()).collect(),
                    }),
                    ParamKind::Text | ParamKind::List => {}
                }
            }
        }
        let mut tag_values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in rows {
            for (k, v) in &s.point.tags {
                tag_values.entry(k).or_default().insert(v);
            }
        }
        let tags = tag_values
            .into_iter()
            .filter(|(k, values)| !BOOKKEEPING_TAGS.contains(k) && (2..=MAX_TAG_VALUES).contains(&values.len()))
            .flat_map(|(k, values)| values.into_iter().map(move |v| (k.to_owned(), v.to_owned())))
            .collect();
        Self {
            layers: if pooled { distinct(&|s| s.point.layer.clone()) } else { Vec::new() },
            fault_types: if pooled { fault_types } else { Vec::new() },
            params,
            regions: distinct(&|s| s.point.region.clone()),
            tags,
        }
    }

    /// How many numbers a point becomes.
    pub fn width(&self) -> usize {
        self.fault_types.len() + self.layers.len() + self.params.len() + 1 + self.regions.len() + self.tags.len()
    }

    /// The numbers of `point`, appended to `out`.
    pub fn encode_into(&self, point: &Point, out: &mut Vec<f64>) {
        let one_hot = |values: &[String], value: &str, out: &mut Vec<f64>| {
            out.extend(values.iter().map(|v| if v == value { 1.0 } else { 0.0 }));
        };
        one_hot(&self.fault_types, &point.fault_type, out);
        one_hot(&self.layers, &point.layer, out);
        for param in &self.params {
            let text = point.params.get(param.name());
            out.push(match param {
                ParamFeature::Numeric { .. } => text.and_then(|t| t.parse::<f64>().ok()).unwrap_or(ABSENT),
                ParamFeature::Choice { choices, .. } => {
                    text.and_then(|t| choices.iter().position(|c| c == t)).map_or(ABSENT, |i| i as f64)
                }
            });
        }
        out.push(point.duration_s);
        one_hot(&self.regions, &point.region, out);
        out.extend(self.tags.iter().map(|(k, v)| if point.tags.get(k) == Some(v) { 1.0 } else { 0.0 }));
    }

    pub fn encode(&self, point: &Point) -> Vec<f64> {
        let mut out = Vec::with_capacity(self.width());
        self.encode_into(point, &mut out);
        out
    }

    /// The feature names, in encoding order (for importances).
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::with_capacity(self.width());
        names.extend(self.fault_types.iter().map(|f| format!("fault_type={f}")));
        names.extend(self.layers.iter().map(|l| format!("layer={l}")));
        names.extend(self.params.iter().map(|p| p.name().to_owned()));
        names.push("duration_s".to_owned());
        names.extend(self.regions.iter().map(|r| format!("region={r}")));
        names.extend(self.tags.iter().map(|(k, v)| format!("tag:{k}={v}")));
        names
    }
}
