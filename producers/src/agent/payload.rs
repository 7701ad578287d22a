//! Reading and rewriting the bodies that pass through the proxy: feature records in requests (data faults)
//! and predictions in answers (model faults), for the v1, v2 (Open Inference Protocol) and plain-records
//! shapes. A body the proxy cannot read passes unchanged: the fault then shows as "no effect" in the
//! measured metrics, and the proxy counts it as unrecognised rather than pretending.

use std::collections::HashMap;

use serde_json::{Map, Value as Json};

use super::config::Protocol;
use chaoseater_schemas::rng::Rng;

/// A row of cells, in their order on the wire.
pub type Row = Vec<(String, Json)>;

#[derive(Debug, Clone)]
enum Shape {
    /// v1 instances as objects (`key` is `instances` or `inputs`).
    V1Objects { key: &'static str },
    /// v1 instances as arrays in feature order.
    V1Arrays { key: &'static str },
    /// v2: one tensor per column; the datatypes the client used.
    V2Columns { datatypes: HashMap<String, String> },
    /// v2: one `[n, k]` tensor.
    V2Matrix { name: String, datatype: String },
    /// Plain records at a JSON pointer.
    Records { pointer: String },
}

/// The feature records of one request body.
#[derive(Debug, Clone)]
pub struct Batch {
    shape: Shape,
    pub rows: Vec<Row>,
}

fn row_from(value: &Json, features: &[String]) -> Option<Row> {
    match value {
        Json::Object(map) => Some(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Json::Array(items) => Some(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| (features.get(i).cloned().unwrap_or_else(|| i.to_string()), v.clone()))
                .collect(),
        ),
        _ => None,
    }
}

fn object(row: &Row) -> Json {
    Json::Object(row.iter().cloned().collect::<Map<String, Json>>())
}

impl Batch {
    /// Finds the records in `body`, or `None` when the body has no shape this protocol knows.
    pub fn read(body: &Json, protocol: Protocol, pointer: Option<&str>, features: &[String]) -> Option<Self> {
        match protocol {
            Protocol::V1 => {
                let key = if body.get("instances").is_some() { "instances" } else { "inputs" };
                let items = body.get(key)?.as_array()?;
                let arrays = items.first().is_some_and(Json::is_array);
                let rows = items.iter().map(|v| row_from(v, features)).collect::<Option<Vec<_>>>()?;
                let shape = if arrays { Shape::V1Arrays { key } } else { Shape::V1Objects { key } };
                Some(Self { shape, rows })
            }
            Protocol::V2 => {
                let inputs = body.get("inputs")?.as_array()?;
                if let [single] = inputs.as_slice() {
                    let shape = single.get("shape")?.as_array()?;
                    if shape.len() == 2 && shape[1].as_u64()? > 1 {
                        let width = shape[1].as_u64()? as usize;
                        let data: Vec<Json> = flatten(single.get("data")?.as_array()?);
                        let rows = data
                            .chunks(width)
                            .map(|c| row_from(&Json::Array(c.to_vec()), features))
                            .collect::<Option<_>>()?;
                        return Some(Self {
                            shape: Shape::V2Matrix {
                                name: single.get("name")?.as_str()?.to_owned(),
                                datatype: single.get("datatype").and_then(Json::as_str).unwrap_or("FP64").to_owned(),
                            },
                            rows,
                        });
                    }
                }
                let mut rows: Vec<Row> = Vec::new();
                let mut datatypes = HashMap::new();
                for input in inputs {
                    let name = input.get("name")?.as_str()?.to_owned();
                    let data = flatten(input.get("data")?.as_array()?);
                    if rows.is_empty() {
                        rows = vec![Vec::new(); data.len()];
                    }
                    if rows.len() != data.len() {
                        return None;
                    }
                    for (row, value) in rows.iter_mut().zip(data) {
                        row.push((name.clone(), value));
                    }
                    datatypes.insert(name, input.get("datatype").and_then(Json::as_str).unwrap_or("FP64").to_owned());
                }
                Some(Self { shape: Shape::V2Columns { datatypes }, rows })
            }
            Protocol::Records => {
                let pointer = pointer?;
                let items = body.pointer(pointer)?.as_array()?;
                let rows = items.iter().map(|v| row_from(v, features)).collect::<Option<Vec<_>>>()?;
                Some(Self { shape: Shape::Records { pointer: pointer.to_owned() }, rows })
            }
        }
    }

    /// Puts the (rewritten) records back into `body`, in the shape they came in.
    pub fn write(&self, body: &mut Json) {
        match &self.shape {
            Shape::V1Objects { key } => body[*key] = Json::Array(self.rows.iter().map(object).collect()),
            Shape::V1Arrays { key } => {
                body[*key] = Json::Array(
                    self.rows.iter().map(|r| Json::Array(r.iter().map(|(_, v)| v.clone()).collect())).collect(),
                )
            }
            Shape::Records { pointer } => {
                if let Some(slot) = body.pointer_mut(pointer) {
                    *slot = Json::Array(self.rows.iter().map(object).collect());
                }
            }
            Shape::V2Matrix { name, datatype } => {
                let width = self.rows.iter().map(Vec::len).max().unwrap_or(0);
                let data: Vec<Json> = self
                    .rows
                    .iter()
                    .flat_map(|r| (0..width).map(move |i| r.get(i).map(|(_, v)| v.clone()).unwrap_or(Json::Null)))
                    .collect();
                body["inputs"] = serde_json::json!([{
                    "name": name, "datatype": datatype, "shape": [self.rows.len(), width], "data": data,
                }]);
            }
            Shape::V2Columns { datatypes } => {
                let mut names: Vec<String> = Vec::new();
                for (name, _) in self.rows.iter().flatten() {
                    if !names.contains(name) {
                        names.push(name.clone());
                    }
                }
                let inputs: Vec<Json> = names
                    .iter()
                    .map(|name| {
                        let data: Vec<Json> = self
                            .rows
                            .iter()
                            .map(|r| r.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or(Json::Null))
                            .collect();
                        let numeric = data.iter().all(|v| v.is_number() || v.is_null());
                        let datatype = match datatypes.get(name) {
                            Some(d) if numeric || d == "BYTES" => d.clone(),
                            _ if numeric => "FP64".to_owned(),
                            _ => "BYTES".to_owned(),
                        };
                        serde_json::json!({"name": name, "datatype": datatype, "shape": [data.len()], "data": data})
                    })
                    .collect();
                body["inputs"] = Json::Array(inputs);
            }
        }
    }
}

fn flatten(data: &[Json]) -> Vec<Json> {
    data.iter().flat_map(|v| if let Json::Array(a) = v { a.clone() } else { vec![v.clone()] }).collect()
}

/// Mean and standard deviation of each numeric column, from the probe set (never constants).
#[derive(Debug, Clone, Default)]
pub struct ColumnStats {
    by_name: HashMap<String, (f64, f64)>,
}

impl ColumnStats {
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = &'a Row>) -> Self {
        let mut sums: HashMap<String, (f64, f64, f64)> = HashMap::new();
        for (name, value) in rows.into_iter().flatten() {
            if let Some(x) = value.as_f64() {
                let e = sums.entry(name.clone()).or_default();
                e.0 += 1.0;
                e.1 += x;
                e.2 += x * x;
            }
        }
        let by_name = sums
            .into_iter()
            .filter(|(_, (n, _, _))| *n >= 2.0)
            .map(|(k, (n, s, s2))| {
                let mean = s / n;
                (k, (mean, ((s2 / n - mean * mean).max(0.0)).sqrt()))
            })
            .collect();
        Self { by_name }
    }

    pub fn get(&self, column: &str) -> Option<(f64, f64)> {
        self.by_name.get(column).copied()
    }
}

/// Which cells a data fault may touch.
fn selected(columns: &Option<Vec<String>>, name: &str) -> bool {
    columns.as_ref().is_none_or(|c| c.iter().any(|n| n == name))
}

/// Statistics for a column: the probe set's, else those of this batch (a running estimate over one batch).
fn stats_for(stats: &ColumnStats, rows: &[Row], column: &str) -> Option<(f64, f64)> {
    stats.get(column).or_else(|| {
        let batch = ColumnStats::from_rows(rows);
        batch.get(column)
    })
}

/// `data_corruption`: numeric cells get Gaussian noise with the column's std; other cells become null.
pub fn corrupt(rows: &mut [Row], rate: f64, columns: &Option<Vec<String>>, stats: &ColumnStats, rng: &mut Rng) {
    let snapshot = rows.to_vec();
    for row in rows.iter_mut() {
        for (name, value) in row.iter_mut() {
            if !selected(columns, name) || !rng.chance(rate) {
                continue;
            }
            *value = match value.as_f64() {
                Some(x) => {
                    let std = stats_for(stats, &snapshot, name).map(|(_, s)| s).unwrap_or(x.abs());
                    Json::from(x + std * rng.normal())
                }
                None => Json::Null,
            };
        }
    }
}

/// `missing_data`: cells become null.
pub fn blank(rows: &mut [Row], rate: f64, columns: &Option<Vec<String>>, rng: &mut Rng) {
    for (name, value) in rows.iter_mut().flatten() {
        if selected(columns, name) && rng.chance(rate) {
            *value = Json::Null;
        }
    }
}

/// `schema_drift`: the record's shape changes.
pub fn drift_schema(rows: &mut [Row], drift: &super::faults::SchemaDrift) {
    use super::faults::SchemaDrift as S;
    for row in rows.iter_mut() {
        match drift {
            S::AddColumn { name } => row.push((name.clone(), Json::from(1.0))),
            S::RemoveColumn { name } => row.retain(|(k, _)| k != name),
            S::RenameColumn { old, new } => {
                row.iter_mut().filter(|(k, _)| k == old).for_each(|(k, _)| *k = new.clone())
            }
            S::TypeChange { name } => row.iter_mut().filter(|(k, _)| k == name).for_each(|(_, v)| {
                let changed = match &*v {
                    Json::Number(n) => Json::String(n.to_string()),
                    Json::String(s) => s.parse::<f64>().map(Json::from).unwrap_or(Json::Null),
                    other => Json::String(other.to_string()),
                };
                *v = changed;
            }),
        }
    }
}

/// `distribution_drift`: x' = (x + mean·m)·(1 + m).
pub fn shift(rows: &mut [Row], magnitude: f64, columns: &Option<Vec<String>>, stats: &ColumnStats) {
    let snapshot = rows.to_vec();
    for (name, value) in rows.iter_mut().flatten() {
        if let (true, Some(x)) = (selected(columns, name), value.as_f64()) {
            let mean = stats_for(stats, &snapshot, name).map(|(m, _)| m).unwrap_or(x);
            *value = Json::from((x + mean * magnitude) * (1.0 + magnitude));
        }
    }
}

/// `outlier_injection`: a numeric cell becomes mean ± m·std.
pub fn outliers(
    rows: &mut [Row],
    rate: f64,
    magnitude: f64,
    columns: &Option<Vec<String>>,
    stats: &ColumnStats,
    rng: &mut Rng,
) {
    let snapshot = rows.to_vec();
    for (name, value) in rows.iter_mut().flatten() {
        if !selected(columns, name) || !value.is_number() || !rng.chance(rate) {
            continue;
        }
        if let Some((mean, std)) = stats_for(stats, &snapshot, name) {
            let sign = if rng.chance(0.5) { 1.0 } else { -1.0 };
            *value = Json::from(mean + sign * magnitude * std);
        }
    }
}

/// `duplicate_records`: records in a batch are duplicated (the copy follows the original).
pub fn duplicate(rows: &mut Vec<Row>, rate: f64, rng: &mut Rng) {
    let mut out = Vec::with_capacity(rows.len() * 2);
    for row in rows.drain(..) {
        let copy = rng.chance(rate).then(|| row.clone());
        out.push(row);
        out.extend(copy);
    }
    *rows = out;
}

/// One prediction: a score vector (class probabilities) or a single value.
#[derive(Debug, Clone, PartialEq)]
pub enum Prediction {
    Vector(Vec<f64>),
    Scalar(f64),
}

/// Where predictions sit in an answer, so they can be put back.
#[derive(Debug, Clone)]
enum Site {
    /// `predictions[i]` (or `predictions[i].probabilities` / `.scores`).
    V1 {
        field: Option<String>,
    },
    /// `outputs[o]`, rows of `width`.
    V2 {
        output: usize,
    },
    Records {
        pointer: String,
    },
}

/// The predictions of one answer.
#[derive(Debug, Clone)]
pub struct Predictions {
    site: Site,
    pub items: Vec<Prediction>,
}

fn prediction(value: &Json) -> Option<Prediction> {
    match value {
        Json::Number(n) => n.as_f64().map(Prediction::Scalar),
        Json::Array(items) => items.iter().map(Json::as_f64).collect::<Option<Vec<_>>>().map(Prediction::Vector),
        _ => None,
    }
}

fn to_json(p: &Prediction) -> Json {
    match p {
        Prediction::Scalar(x) => Json::from(*x),
        Prediction::Vector(v) => Json::Array(v.iter().map(|x| Json::from(*x)).collect()),
    }
}

impl Predictions {
    pub fn read(body: &Json, protocol: Protocol, pointer: Option<&str>) -> Option<Self> {
        let list = |items: &[Json]| -> Option<(Option<String>, Vec<Prediction>)> {
            let field = items
                .first()
                .and_then(Json::as_object)
                .and_then(|o| ["probabilities", "scores"].into_iter().find(|f| o.contains_key(*f)).map(str::to_owned));
            let items = items
                .iter()
                .map(|v| match &field {
                    Some(f) => v.get(f).and_then(prediction),
                    None => prediction(v),
                })
                .collect::<Option<Vec<_>>>()?;
            Some((field, items))
        };
        match protocol {
            Protocol::V1 => {
                let (field, items) = list(body.get("predictions")?.as_array()?)?;
                Some(Self { site: Site::V1 { field }, items })
            }
            Protocol::V2 => {
                let outputs = body.get("outputs")?.as_array()?;
                let output = outputs.iter().position(|o| {
                    o.get("data")
                        .and_then(Json::as_array)
                        .is_some_and(|d| d.iter().all(|v| v.is_number() || v.is_array()))
                })?;
                let o = &outputs[output];
                let shape: Vec<u64> = o.get("shape")?.as_array()?.iter().map(Json::as_u64).collect::<Option<_>>()?;
                let data: Vec<f64> =
                    flatten(o.get("data")?.as_array()?).iter().map(Json::as_f64).collect::<Option<_>>()?;
                let width = if shape.len() >= 2 { shape[1..].iter().product::<u64>() as usize } else { 1 };
                let items = if width > 1 {
                    data.chunks(width).map(|c| Prediction::Vector(c.to_vec())).collect()
                } else {
                    data.into_iter().map(Prediction::Scalar).collect()
                };
                Some(Self { site: Site::V2 { output }, items })
            }
            Protocol::Records => {
                let pointer = pointer?;
                let (_, items) = list(body.pointer(pointer)?.as_array()?)?;
                Some(Self { site: Site::Records { pointer: pointer.to_owned() }, items })
            }
        }
    }

    pub fn write(&self, body: &mut Json) {
        match &self.site {
            Site::V1 { field } => {
                let Some(slots) = body.get_mut("predictions").and_then(Json::as_array_mut) else { return };
                for (slot, p) in slots.iter_mut().zip(&self.items) {
                    match field {
                        Some(f) => slot[f.as_str()] = to_json(p),
                        None => *slot = to_json(p),
                    }
                }
            }
            Site::V2 { output } => {
                let data: Vec<Json> = self
                    .items
                    .iter()
                    .flat_map(|p| match p {
                        Prediction::Vector(v) => v.clone(),
                        Prediction::Scalar(x) => vec![*x],
                    })
                    .map(Json::from)
                    .collect();
                body["outputs"][*output]["data"] = Json::Array(data);
            }
            Site::Records { pointer } => {
                if let Some(slot) = body.pointer_mut(pointer) {
                    *slot = Json::Array(self.items.iter().map(to_json).collect());
                }
            }
        }
    }
}

fn normalise(v: &mut [f64]) {
    let sum: f64 = v.iter().map(|x| x.max(0.0)).sum();
    if sum > 0.0 {
        v.iter_mut().for_each(|x| *x = x.max(0.0) / sum);
    }
}

/// `model_drift`: predictions biased by `bias` toward the last class (vectors) or upward (values).
pub fn bias_predictions(items: &mut [Prediction], bias: f64) {
    for p in items {
        match p {
            Prediction::Vector(v) => {
                let last = v.len().saturating_sub(1);
                v.iter_mut().enumerate().for_each(|(i, x)| *x = (1.0 - bias) * *x + if i == last { bias } else { 0.0 });
            }
            Prediction::Scalar(x) => *x *= 1.0 + bias,
        }
    }
}

/// `prediction_corruption`: a share of predictions rewritten.
pub fn corrupt_predictions(items: &mut [Prediction], rate: f64, kind: super::faults::CorruptionKind, rng: &mut Rng) {
    use super::faults::CorruptionKind as K;
    for p in items {
        if !rng.chance(rate) {
            continue;
        }
        match (p, kind) {
            (Prediction::Vector(v), K::Random) => {
                v.iter_mut().for_each(|x| *x = rng.next_f64());
                normalise(v);
            }
            (Prediction::Vector(v), K::Bias) => {
                if let Some(last) = v.last_mut() {
                    *last *= 1.5;
                }
                normalise(v);
            }
            (Prediction::Vector(v), K::Flip) => {
                v.iter_mut().for_each(|x| *x = 1.0 - *x);
                normalise(v);
            }
            (Prediction::Scalar(x), K::Random) => *x *= rng.uniform(0.0, 2.0),
            (Prediction::Scalar(x), K::Bias) => *x *= 1.5,
            (Prediction::Scalar(x), K::Flip) => *x = 1.0 - *x,
        }
    }
}

/// `parameter_degradation`: scores shrink toward the prior (uniform over classes; the batch mean for values).
pub fn degrade_predictions(items: &mut [Prediction], factor: f64) {
    let scalars: Vec<f64> =
        items.iter().filter_map(|p| if let Prediction::Scalar(x) = p { Some(*x) } else { None }).collect();
    let prior = if scalars.is_empty() { 0.0 } else { scalars.iter().sum::<f64>() / scalars.len() as f64 };
    for p in items {
        match p {
            Prediction::Vector(v) => {
                let uniform = 1.0 / v.len().max(1) as f64;
                v.iter_mut().for_each(|x| *x = (1.0 - factor) * *x + factor * uniform);
            }
            Prediction::Scalar(x) => *x = (1.0 - factor) * *x + factor * prior,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn features() -> Vec<String> {
        ["a", "b", "site"].iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_shape_round_trips_unchanged() {
        let bodies = [
            (Protocol::V1, json!({"instances": [{"a": 1.0, "b": 2.0, "site": "x"}]})),
            (Protocol::V1, json!({"instances": [[1.0, 2.0, "x"], [3.0, 4.0, "y"]]})),
            (
                Protocol::V2,
                json!({"inputs": [{"name": "a", "datatype": "FP32", "shape": [2], "data": [1.0, 2.0]}, {"name": "site", "datatype": "BYTES", "shape": [2], "data": ["x", "y"]}]}),
            ),
            (
                Protocol::V2,
                json!({"inputs": [{"name": "x", "datatype": "FP64", "shape": [2, 2], "data": [1.0, 2.0, 3.0, 4.0]}]}),
            ),
        ];
        for (protocol, body) in bodies {
            let batch = Batch::read(&body, protocol, None, &features()).expect("readable");
            let mut out = body.clone();
            batch.write(&mut out);
            assert_eq!(out, body);
        }
        let records = json!({"meta": 1, "data": {"rows": [{"a": 1}]}});
        let batch = Batch::read(&records, Protocol::Records, Some("/data/rows"), &[]).expect("records");
        assert_eq!(batch.rows.len(), 1);
    }

    #[test]
    fn data_faults_change_what_they_say() {
        let body = json!({"instances": [[1.0, 10.0, "x"], [3.0, 30.0, "y"], [5.0, 50.0, "z"]]});
        let mut batch = Batch::read(&body, Protocol::V1, None, &features()).expect("readable");
        let stats = ColumnStats::from_rows(&batch.rows);
        assert_eq!(stats.get("a").map(|(m, _)| m), Some(3.0));
        let mut rng = Rng::new(1);
        blank(&mut batch.rows, 1.0, &Some(vec!["site".into()]), &mut rng);
        assert!(batch.rows.iter().all(|r| r[2].1.is_null() && r[0].1.is_number()));
        shift(&mut batch.rows, 0.5, &Some(vec!["a".into()]), &stats);
        assert_eq!(batch.rows[0][0].1, json!((1.0 + 3.0 * 0.5) * 1.5));
        duplicate(&mut batch.rows, 1.0, &mut rng);
        assert_eq!(batch.rows.len(), 6);
    }

    #[test]
    fn prediction_faults_move_scores() {
        let body = json!({"predictions": [[0.7, 0.2, 0.1]]});
        let mut p = Predictions::read(&body, Protocol::V1, None).expect("predictions");
        degrade_predictions(&mut p.items, 0.5);
        assert_eq!(p.items[0], Prediction::Vector(vec![0.35 + 0.5 / 3.0, 0.1 + 0.5 / 3.0, 0.05 + 0.5 / 3.0]));
        let mut flip = vec![Prediction::Vector(vec![0.9, 0.1])];
        corrupt_predictions(&mut flip, 1.0, super::super::faults::CorruptionKind::Flip, &mut Rng::new(3));
        match &flip[0] {
            Prediction::Vector(v) => assert!(v[1] > v[0]),
            other => panic!("unexpected {other:?}"),
        }
    }
}
