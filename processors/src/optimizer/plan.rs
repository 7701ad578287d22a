//! Closing the loop: the next experiments, where the model is least sure or where the pipeline may be
//! weakest.
//!
//! - uncertain: the largest expected gain: the interval's width (the sub-forests' disagreement scales it,
//!   query by committee) times the distance to the nearest past run in the region, parameters scaled to
//!   their range. Only points inside the range seen compete: past it the forest extrapolates flat, every
//!   point looks new, and the search would chase a frontier that moves out with each round (measured: the
//!   plan bench lost to random choice that way).
//! - weak: the lowest lower bound among points fewer than [`FEW_NEAR`] past runs in the region are near,
//!   up to a quarter of the range past the harshest seen: how a campaign steps towards a breaking point.
//!
//! The budget is shared among the fault types in turn; within each, proposals alternate between the two
//! reasons, uncertainty first. Candidates are a Latin hypercube over the
//! fault's numeric parameters (the range seen widened as `suggest` does, clipped to the catalogue's bounds
//! and to each region's agent caps), in every region the caller allows (it leaves out regions whose circuit
//! is open). A proposal too close to one already chosen (same fault and region, every parameter within
//! [`SPREAD`] of its range) is passed over, so a budget spreads out instead of stacking on one point.

use std::collections::BTreeMap;

use chaoseater_schemas::events::{ExperimentProposed, ProposalReason, RunRequested};
use chaoseater_schemas::experiment::{ExperimentSpec, RollbackConfig, RunMode};
use chaoseater_schemas::faults;
use chaoseater_schemas::ids::{EventId, RegionName, TimestampMs};
use chaoseater_schemas::rng::Rng;

use super::query::{Axis, FEW_NEAR, Prediction, Question, given_params, number_text};
use super::{Model, OptimizerError, Point, Target, train};

/// Candidates per fault type and region.
pub const CANDIDATES: usize = 128;
/// Two proposals of one fault and region closer than this share of every parameter's range are one.
pub const SPREAD: f64 = 0.15;
/// Most proposals one plan makes.
pub const MAX_BUDGET: usize = 100;

/// An agent's hard limits, as its `/health` reports them; a proposal stays within them.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Caps {
    pub max_memory_mb: Option<f64>,
    pub max_disk_bytes: Option<f64>,
    pub max_cpu_percent: Option<f64>,
    pub max_duration_s: Option<f64>,
}

impl Caps {
    /// The cap on one parameter of a fault type, where the agent has one.
    pub fn limit(&self, fault_type: &str, param: &str) -> Option<f64> {
        match (fault_type, param) {
            ("memory_pressure", "memory_mb") => self.max_memory_mb,
            ("disk_full", "bytes") => self.max_disk_bytes,
            ("cpu_throttle", "throttle_percent") => self.max_cpu_percent,
            _ => None,
        }
    }
}

/// A region a plan may propose experiments in, with its agent's caps.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionLimits {
    pub region: String,
    pub caps: Caps,
}

/// What to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanRequest {
    /// How many experiments to propose (1 to [`MAX_BUDGET`]).
    pub budget: usize,
    /// Where experiments may run; regions the model has no history of are noted and passed over.
    pub regions: Vec<RegionLimits>,
    /// Only these fault types (empty: every one the model covers).
    pub fault_types: Vec<String>,
    /// The score a region should keep: a `weak` proposal says how far its lower bound falls below it.
    pub target_score: f64,
    /// Proposals already made and not to repeat (say, approved ones awaiting their run).
    pub skip: Vec<String>,
}

/// One proposed experiment.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Proposal {
    pub proposal_id: String,
    pub reason: ProposalReason,
    /// The interval's width (score points) times the distance to the nearest past run in the region
    /// (parameters scaled to their range: 1 is a whole range away).
    pub expected_gain: f64,
    pub explanation: String,
    /// Past runs of this fault type near the point in its region.
    pub near_runs: usize,
    pub prediction: Prediction,
    #[serde(skip)]
    pub point: Point,
}

/// What a plan found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub model_id: String,
    pub target_score: f64,
    pub candidates: usize,
    pub proposals: Vec<Proposal>,
    /// Regions and fault types passed over, and why.
    pub notes: Vec<String>,
}

/// A candidate: its place in the unit cube of its axes, its prediction, and the past runs near it in
/// its region.
struct Candidate {
    unit: Vec<f64>,
    prediction: Prediction,
    point: Point,
    near_here: usize,
    /// Distance to the nearest past run in the region, in the unit cube of the axes (Euclidean).
    distance: f64,
}

impl Candidate {
    /// What a run here is expected to teach: the interval's width (how unsure the model is) times the
    /// distance to the nearest past run in the region (how little evidence is close), the way a Gaussian
    /// process's variance grows away from its data. Width alone stacks proposals where the data are
    /// noisiest; distance alone ignores what the model already knows.
    fn expected_gain(&self) -> f64 {
        (self.prediction.upper - self.prediction.lower) * self.distance
    }
}

impl Model {
    /// Proposes up to `request.budget` experiments (see the module's documentation).
    pub fn plan(&self, request: &PlanRequest) -> Result<Plan, OptimizerError> {
        if !(1..=MAX_BUDGET).contains(&request.budget) {
            return Err(OptimizerError::invalid(
                "--budget",
                format!("must be 1 to {MAX_BUDGET}, got {}", request.budget),
            ));
        }
        if !(0.0..=100.0).contains(&request.target_score) {
            return Err(OptimizerError::invalid(
                "--target-score",
                format!("must be within 0-100, got {}", request.target_score),
            ));
        }
        let mut notes = Vec::new();
        let fault_types = self.plannable_fault_types(&request.fault_types, &mut notes)?;
        let regions: Vec<&RegionLimits> = request
            .regions
            .iter()
            .filter(|r| {
                let known = self.regions.contains(&r.region);
                if !known {
                    notes.push(format!(
                        "{}: no results in the model's history; run any experiment there to start learning it",
                        r.region
                    ));
                }
                known
            })
            .collect();
        if regions.is_empty() {
            return Err(OptimizerError::TooLittle(format!(
                "no region to plan in: {}",
                if notes.is_empty() { "none is registered with a closed circuit".to_owned() } else { notes.join("; ") }
            )));
        }
        let mut candidates: Vec<Candidate> = Vec::new();
        for fault_type in &fault_types {
            candidates.extend(self.candidates(fault_type, &regions, &mut notes)?);
        }
        let count = candidates.len();
        let proposals = choose(candidates, request, &self.model_id);
        Ok(Plan {
            model_id: self.model_id.clone(),
            target_score: request.target_score,
            candidates: count,
            proposals,
            notes,
        })
    }

    /// The fault types asked (checked), or every one with enough history.
    fn plannable_fault_types(&self, asked: &[String], notes: &mut Vec<String>) -> Result<Vec<String>, OptimizerError> {
        let enough = |t: &str| self.rows_by_fault_type.get(t).copied().unwrap_or(0) >= train::MIN_ROWS;
        if asked.is_empty() {
            for (t, rows) in &self.rows_by_fault_type {
                if !enough(t) {
                    notes.push(format!("{t}: {rows} results, fewer than {} to learn from", train::MIN_ROWS));
                }
            }
            return Ok(self.rows_by_fault_type.keys().filter(|t| enough(t)).cloned().collect());
        }
        for t in asked {
            // point() names an unknown fault type or too little history with the right error.
            self.point(&Question { fault_type: t.clone(), ..Question::default() })?;
        }
        Ok(asked.to_vec())
    }

    /// A Latin hypercube over the fault's axes, the same design in every region (each clipped to its caps).
    fn candidates(
        &self,
        fault_type: &str,
        regions: &[&RegionLimits],
        notes: &mut Vec<String>,
    ) -> Result<Vec<Candidate>, OptimizerError> {
        let axes = self.axes(fault_type);
        let n = if axes.is_empty() { 1 } else { CANDIDATES };
        // Seeded by what the model learned from, so the same history plans the same candidates.
        let window = format!("{}:{}:{}", self.first_finished_ms, self.last_finished_ms, self.rows);
        let mut rng = Rng::new(seed(&[&window, fault_type]));
        let design = latin_hypercube(n, axes.len(), &mut rng);
        let base = self.point(&Question { fault_type: fault_type.to_owned(), ..Question::default() })?;
        let mut out = Vec::new();
        for region in regions {
            let capped: Vec<Axis> = axes
                .iter()
                .map(|a| {
                    let cap = region.caps.limit(fault_type, &a.name).unwrap_or(f64::INFINITY);
                    Axis { hi: a.hi.min(cap), ..a.clone() }
                })
                .collect();
            if let Some(a) = capped.iter().find(|a| a.hi < a.lo) {
                notes.push(format!(
                    "{fault_type} in {}: the agent's cap on {} ({}) is under the range searched",
                    region.region, a.name, a.hi
                ));
                continue;
            }
            let mut duration_s = base.duration_s;
            if let Some(cap) = region.caps.max_duration_s {
                duration_s = duration_s.min(cap);
            }
            let points: Vec<Point> = design
                .iter()
                .map(|unit| {
                    let mut p = Point { region: region.region.clone(), duration_s, ..base.clone() };
                    for (axis, share) in capped.iter().zip(unit) {
                        p.params.insert(axis.name.clone(), number_text(axis.at(*share)));
                    }
                    p
                })
                .collect();
            let predictions = self.predict_points(&points, Target::ResilienceScore)?;
            let support = self.support.get(fault_type).cloned().unwrap_or_default();
            let index = self.regions.binary_search(&region.region).ok().map(|i| i as u16);
            out.extend(design.iter().zip(points).zip(predictions).map(|((unit, point), prediction)| Candidate {
                unit: unit.clone(),
                near_here: support.near_runs_in(&support.values(&point.params), index),
                distance: nearest(&support, &capped, &support.values(&point.params), index),
                prediction,
                point,
            }));
        }
        Ok(out)
    }
}

/// Shares the budget among the fault types in turn (a fault type whose scores barely vary in the range seen
/// still gets its share: its model knows least about what lies past that range), and within each alternates
/// between the widest interval and the lowest lower bound, skipping candidates too close to one chosen or
/// in `request.skip`.
fn choose(candidates: Vec<Candidate>, request: &PlanRequest, model_id: &str) -> Vec<Proposal> {
    let mut by_type: BTreeMap<&str, [Vec<usize>; 2]> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate() {
        let queues = by_type.entry(c.point.fault_type.as_str()).or_default();
        if c.prediction.outside.is_empty() {
            queues[0].push(i);
        }
        // A weak point many past runs already measured teaches nothing new: it stays out.
        if c.near_here < FEW_NEAR {
            queues[1].push(i);
        }
    }
    for [uncertain, weak] in by_type.values_mut() {
        uncertain.sort_by(|&a, &b| candidates[b].expected_gain().total_cmp(&candidates[a].expected_gain()));
        weak.sort_by(|&a, &b| candidates[a].prediction.lower.total_cmp(&candidates[b].prediction.lower));
    }
    let mut cursors: Vec<([std::vec::IntoIter<usize>; 2], usize)> =
        by_type.into_values().map(|[u, w]| ([u.into_iter(), w.into_iter()], 0)).collect();
    let mut chosen: Vec<usize> = Vec::new();
    let mut proposals = Vec::new();
    let mut idle = 0;
    let mut turn = 0;
    while proposals.len() < request.budget && idle < cursors.len() * 2 && !cursors.is_empty() {
        let slot = turn % cursors.len();
        turn += 1;
        let (queues, next_reason) = &mut cursors[slot];
        let mut picked = None;
        for attempt in 0..2 {
            let which = (*next_reason + attempt) % 2;
            let found = queues[which].find(|&i| {
                let c = &candidates[i];
                !request.skip.contains(&proposal_id(model_id, &c.point))
                    && !chosen.iter().any(|&j| close(c, &candidates[j]))
            });
            if let Some(i) = found {
                picked = Some((i, which));
                break;
            }
        }
        let Some((i, which)) = picked else {
            idle += 1;
            continue;
        };
        idle = 0;
        *next_reason = (which + 1) % 2;
        chosen.push(i);
        let c = &candidates[i];
        let reason = if which == 0 { ProposalReason::Uncertain } else { ProposalReason::Weak };
        proposals.push(Proposal {
            proposal_id: proposal_id(model_id, &c.point),
            reason,
            expected_gain: c.expected_gain(),
            explanation: explain(reason, c, request.target_score),
            near_runs: c.near_here,
            prediction: c.prediction.clone(),
            point: c.point.clone(),
        });
    }
    proposals
}

/// The distance from `values` to the nearest past run in `region`, each parameter scaled by its axis.
fn nearest(support: &super::Support, axes: &[Axis], values: &[f64], region: Option<u16>) -> f64 {
    let scale: Vec<(usize, f64)> = axes
        .iter()
        .filter_map(|a| {
            let i = support.params.iter().position(|n| *n == a.name)?;
            Some((i, (a.hi - a.lo).max(1e-9)))
        })
        .collect();
    let mut best = f64::INFINITY;
    for (row, point) in support.points.iter().enumerate() {
        if region.is_some() && support.region.get(row).copied() != region && !support.region.is_empty() {
            continue;
        }
        let d2: f64 = scale
            .iter()
            .map(|&(i, range)| {
                let d = (f64::from(point[i]) - values[i]) / range;
                if d.is_nan() { 0.0 } else { d * d }
            })
            .sum();
        best = best.min(d2);
    }
    if best.is_finite() { best.sqrt() } else { 1.0 }
}

fn close(a: &Candidate, b: &Candidate) -> bool {
    a.point.fault_type == b.point.fault_type
        && a.point.region == b.point.region
        && a.unit.iter().zip(&b.unit).all(|(x, y)| (x - y).abs() < SPREAD)
}

fn explain(reason: ProposalReason, c: &Candidate, target: f64) -> String {
    let p = &c.prediction;
    let level = (p.level * 100.0).round();
    let near = match c.near_here {
        0 => "no past run near it in this region".to_owned(),
        1 => "1 past run near it in this region".to_owned(),
        n => format!("{n} past runs near it in this region"),
    };
    match reason {
        ProposalReason::Uncertain => format!(
            "the model is least sure here: {level}% interval {:.1}-{:.1} ({:.1} points wide), {near}; \
             nearest past run {:.2} of the range away",
            p.lower,
            p.upper,
            p.upper - p.lower,
            c.distance
        ),
        ProposalReason::Weak => {
            let against = if p.lower < target {
                format!("{:.1} points under the target {target}", target - p.lower)
            } else {
                format!("still {:.1} points over the target {target}: the harshest untried setting", p.lower - target)
            };
            format!(
                "the pipeline may be weakest here: {level}% interval {:.1}-{:.1}, lower bound {against}, {near}",
                p.lower, p.upper
            )
        }
    }
}

/// `n` points in `[0, 1)^dims`, one per stratum of every axis.
fn latin_hypercube(n: usize, dims: usize, rng: &mut Rng) -> Vec<Vec<f64>> {
    let mut points = vec![Vec::with_capacity(dims); n];
    for _ in 0..dims {
        let mut strata: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            strata.swap(i, rng.index(i + 1));
        }
        for (point, stratum) in points.iter_mut().zip(strata) {
            point.push((stratum as f64 + rng.next_f64()) / n as f64);
        }
    }
    points
}

/// A seed from text (FNV-1a).
fn seed(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain([0]) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// A proposal's id, from the model and the experiment: planning again on the same model proposes the same
/// ids, so a replayed proposal or approval is the same event.
pub fn proposal_id(model_id: &str, point: &Point) -> String {
    let params: Vec<String> = point.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let duration = format!("{}", point.duration_s);
    let mut parts = vec![model_id, point.fault_type.as_str(), point.region.as_str(), duration.as_str()];
    parts.extend(params.iter().map(String::as_str));
    let id = EventId::derive("proposal", &parts);
    format!("prop-{}", &id.as_str().replace('-', "")[..12])
}

impl Proposal {
    /// The experiment, validated against the catalogue (defaults filled in).
    pub fn experiment(&self) -> Result<ExperimentSpec, OptimizerError> {
        let spec = faults::spec(&self.point.fault_type)
            .ok_or_else(|| OptimizerError::invalid("fault_type", format!("unknown {}", self.point.fault_type)))?;
        let given = given_params(self.point.params.iter());
        let parameters = faults::validate(spec.layer, spec.fault_type, &given)
            .map_err(|e| OptimizerError::invalid(&e.field, e.message))?;
        Ok(ExperimentSpec {
            name: format!("plan-{}-{}", self.point.fault_type, self.point.region),
            layer: spec.layer,
            fault_type: spec.fault_type.to_owned(),
            parameters,
            duration_ms: (self.point.duration_s * 1_000.0).round().max(1.0) as i64,
            rollback: RollbackConfig::default(),
            tags: BTreeMap::from([("proposal".to_owned(), self.proposal_id.clone())]),
        })
    }

    /// The proposal as an event.
    pub fn event(
        &self,
        model_id: &str,
        at: TimestampMs,
        proposed_by: &str,
    ) -> Result<ExperimentProposed, OptimizerError> {
        Ok(ExperimentProposed {
            event_id: ExperimentProposed::id_for(&self.proposal_id),
            occurred_at: at,
            proposal_id: self.proposal_id.clone(),
            model_id: model_id.to_owned(),
            region: RegionName::new(self.point.region.as_str()),
            experiment: self.experiment()?,
            reason: self.reason,
            predicted_score: self.prediction.value,
            lower: self.prediction.lower,
            upper: self.prediction.upper,
            level: self.prediction.level,
            expected_gain: self.expected_gain,
            near_runs: i32::try_from(self.near_runs).unwrap_or(i32::MAX),
            explanation: self.explanation.clone(),
            proposed_by: proposed_by.to_owned(),
        })
    }
}

/// The run approving `proposal` requests: its experiment in its one region, under a run id derived from the
/// proposal (approving twice requests the same run, which the orchestrator runs once).
pub fn approve(proposal: &ExperimentProposed, requested_by: &str, at: TimestampMs) -> RunRequested {
    let run_id = ExperimentProposed::run_id_for(&proposal.proposal_id);
    RunRequested {
        event_id: RunRequested::id_for(&run_id),
        occurred_at: at,
        run_id,
        experiment: proposal.experiment.clone(),
        regions: vec![proposal.region.clone()],
        mode: RunMode::Sequential,
        max_concurrent: 1,
        fail_fast: false,
        blast_radius_percent: 100.0,
        min_score: None,
        requested_by: requested_by.to_owned(),
    }
}
