//! The rollback of one run in one region, as a pure state machine: a plan of cumulative percentages, each
//! step requested once, applied by the agent, and (except the last) checked against a health sample taken
//! `health_check_interval` after it was applied before the next is requested. Time comes in with the
//! inputs, so the machine is deterministic and replays to the same state.

use chaoseater_schemas::events::RollbackTrigger;
use chaoseater_schemas::experiment::{RollbackConfig, RollbackStrategy};
use serde::{Deserialize, Serialize};

/// Blue-green's names for the agent's upstreams: the primary (`upstream` in agent.toml, named `primary` by the agent) and the
/// alternate named `green` under `[alternates]`.
pub const BLUE: &str = "primary";
pub const GREEN: &str = "green";

/// One planned step: the share of traffic free of the fault after it, and for blue-green the upstream
/// traffic goes to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub percentage: f64,
    pub upstream: Option<String>,
}

/// The steps of `strategy`, cumulative, ending at 100%.
pub fn plan(strategy: RollbackStrategy, config: &RollbackConfig) -> Vec<Step> {
    let at = |percentage: f64| Step { percentage, upstream: None };
    match strategy {
        RollbackStrategy::Immediate | RollbackStrategy::CircuitBreaker => vec![at(100.0)],
        RollbackStrategy::Gradual => {
            let n = config.gradual_steps.max(1);
            // The last step is exactly 100, whatever the rounding of the others.
            (1..=n).map(|i| at(if i == n { 100.0 } else { 100.0 * f64::from(i) / f64::from(n) })).collect()
        }
        RollbackStrategy::Canary if config.canary_percentage > 0.0 && config.canary_percentage < 100.0 => {
            vec![at(config.canary_percentage), at(100.0)]
        }
        RollbackStrategy::Canary => vec![at(100.0)],
        // Switching to green ends the fault for all traffic; green's health check decides whether blue is
        // retired (completed) or the switch is reverted.
        RollbackStrategy::BlueGreen => vec![Step { percentage: 100.0, upstream: Some(GREEN.to_owned()) }],
    }
}

/// Where a rollback stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Stage {
    /// Step `index` (0-based) was requested; waiting for the agent to apply it.
    Requested {
        index: usize,
    },
    /// Step `index` was applied; waiting for a health sample taken at or after `check_at`.
    Checking {
        index: usize,
        check_at: i64,
    },
    /// A check after step `index` failed; `chaoseater rollback resume` continues.
    Paused {
        index: usize,
        reason: String,
    },
    /// Blue-green: green failed its check and the switch back to blue was requested.
    Reverting {
        reason: String,
    },
    Completed,
    Failed {
        reason: String,
    },
}

/// What the machine is told.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The agent applied step number `step` (from 1) at `at`.
    Applied { step: i32, at: i64 },
    /// A health sample of the region.
    Sample { at: i64, healthy: bool, error_rate: Option<f64>, detail: String },
    /// `chaoseater rollback resume`.
    Resume,
    /// An emergency (abort, circuit open, failure threshold): the rest at once.
    Escalate,
    /// The experiment ended at the agent: whatever is left of the fault is gone.
    FaultGone,
    /// Time passes (the processor's tick).
    Tick { now: i64 },
}

/// What the machine decides.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Ask the agent to apply step number `step` (from 1); check it `check_after_ms` after it is applied.
    Request {
        step: i32,
        percentage: f64,
        upstream: Option<String>,
        check_after_ms: Option<i64>,
    },
    Paused {
        step: i32,
        reason: String,
    },
    Completed {
        steps: i32,
        duration_ms: i64,
    },
    Failed {
        reason: String,
    },
}

/// The rollback of one run in one region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollback {
    pub strategy: RollbackStrategy,
    pub trigger: RollbackTrigger,
    pub plan: Vec<Step>,
    pub started_at: i64,
    pub deadline: i64,
    pub interval_ms: i64,
    pub failure_threshold: f64,
    pub auto_pause: bool,
    pub stage: Stage,
    /// Steps requested so far (the highest step number).
    pub requested: usize,
    /// The share of traffic free of the fault, as last applied.
    pub applied_percentage: f64,
}

impl Rollback {
    /// Starts a rollback at `now` and requests its first step. Emergencies (abort, circuit open, failure
    /// threshold) roll back everything at once, whatever the configured strategy.
    pub fn start(config: &RollbackConfig, trigger: RollbackTrigger, now: i64) -> (Self, Output) {
        let strategy = match trigger {
            RollbackTrigger::DurationEnded | RollbackTrigger::Manual => config.strategy,
            RollbackTrigger::Abort | RollbackTrigger::FailureThreshold | RollbackTrigger::CircuitOpen => {
                RollbackStrategy::Immediate
            }
        };
        let mut rollback = Self {
            strategy,
            trigger,
            plan: plan(strategy, config),
            started_at: now,
            deadline: now.saturating_add(config.timeout_seconds.max(1).saturating_mul(1000)),
            interval_ms: (config.health_check_interval_s * 1000.0).round().max(1.0) as i64,
            failure_threshold: config.failure_threshold,
            auto_pause: config.auto_pause_on_error,
            stage: Stage::Completed,
            requested: 0,
            applied_percentage: 0.0,
        };
        let first = rollback.request(0);
        (rollback, first)
    }

    pub fn is_final(&self) -> bool {
        matches!(self.stage, Stage::Completed | Stage::Failed { .. })
    }

    /// The planned cumulative percentages.
    pub fn percentages(&self) -> Vec<f64> {
        self.plan.iter().map(|s| s.percentage).collect()
    }

    fn needs_check(&self, index: usize) -> bool {
        index + 1 < self.plan.len() || self.strategy == RollbackStrategy::BlueGreen
    }

    fn request(&mut self, index: usize) -> Output {
        let step = &self.plan[index];
        self.stage = Stage::Requested { index };
        self.requested = index + 1;
        Output::Request {
            step: (index + 1) as i32,
            percentage: step.percentage,
            upstream: step.upstream.clone(),
            check_after_ms: self.needs_check(index).then_some(self.interval_ms),
        }
    }

    fn complete(&mut self, now: i64) -> Vec<Output> {
        self.stage = Stage::Completed;
        vec![Output::Completed { steps: self.requested as i32, duration_ms: (now - self.started_at).max(0) }]
    }

    fn fail(&mut self, reason: String) -> Vec<Output> {
        self.stage = Stage::Failed { reason: reason.clone() };
        vec![Output::Failed { reason }]
    }

    /// The highest percentage requested so far.
    pub fn requested_percentage(&self) -> f64 {
        self.requested.checked_sub(1).map_or(0.0, |i| self.plan[i].percentage)
    }

    /// Applies `input` at `now`; a final rollback ignores everything.
    pub fn on(&mut self, input: Input, now: i64) -> Vec<Output> {
        if self.is_final() {
            return Vec::new();
        }
        match (self.stage.clone(), input) {
            (_, Input::Tick { now }) if now >= self.deadline => {
                let reason = format!(
                    "timed out after {} s at step {} of {} ({}% rolled back); the agent reverts the fault at its hold limit",
                    (self.deadline - self.started_at) / 1000,
                    self.requested,
                    self.plan.len(),
                    self.applied_percentage
                );
                self.fail(reason)
            }
            (_, Input::Tick { .. }) => Vec::new(),
            (stage, Input::FaultGone) => {
                if let Stage::Reverting { reason } = stage {
                    return self.fail(format!("{reason}; the experiment ended while switching back to blue"));
                }
                if self.requested_percentage() >= 100.0 {
                    self.applied_percentage = 100.0;
                    self.complete(now)
                } else {
                    self.fail(format!(
                        "the experiment ended at the agent at {}% rolled back (its hold limit or an abort)",
                        self.applied_percentage
                    ))
                }
            }
            (Stage::Requested { index }, Input::Applied { step, at }) if step == (index + 1) as i32 => {
                self.applied_percentage = self.plan[index].percentage;
                if self.needs_check(index) {
                    self.stage = Stage::Checking { index, check_at: at + self.interval_ms };
                    Vec::new()
                } else {
                    self.complete(now)
                }
            }
            (Stage::Reverting { reason }, Input::Applied { step, .. }) if step == self.requested as i32 => {
                self.fail(format!("{reason}; traffic switched back to blue"))
            }
            (Stage::Checking { index, check_at }, Input::Sample { at, healthy, error_rate, detail })
                if at >= check_at =>
            {
                let over = error_rate.filter(|rate| *rate > self.failure_threshold);
                let problem = match (over, healthy) {
                    (Some(rate), _) => {
                        Some(format!("error rate {rate:.3} above the failure threshold {}", self.failure_threshold))
                    }
                    (None, false) => Some(format!("health check failed: {detail}")),
                    (None, true) => None,
                };
                if self.strategy == RollbackStrategy::BlueGreen {
                    return match problem {
                        None => self.complete(now),
                        Some(problem) => {
                            let reason = format!("green is unhealthy ({problem})");
                            self.stage = Stage::Reverting { reason };
                            self.requested += 1;
                            vec![Output::Request {
                                step: self.requested as i32,
                                percentage: 100.0,
                                upstream: Some(BLUE.to_owned()),
                                check_after_ms: None,
                            }]
                        }
                    };
                }
                // An error rate above the threshold always halts; an unhealthy sample halts only with
                // auto_pause_on_error.
                match problem {
                    Some(reason) if over.is_some() || self.auto_pause => {
                        self.stage = Stage::Paused { index, reason: reason.clone() };
                        vec![Output::Paused { step: (index + 1) as i32, reason }]
                    }
                    _ => vec![self.request(index + 1)],
                }
            }
            (Stage::Paused { index, .. }, Input::Resume) => vec![self.request(index + 1)],
            (Stage::Requested { .. } | Stage::Checking { .. } | Stage::Paused { .. }, Input::Escalate)
                if self.requested_percentage() < 100.0 =>
            {
                // The rest at once: one more step, to 100%, in place of what was left of the plan.
                self.plan.truncate(self.requested);
                self.plan.push(Step { percentage: 100.0, upstream: None });
                vec![self.request(self.requested)]
            }
            _ => Vec::new(),
        }
    }
}
