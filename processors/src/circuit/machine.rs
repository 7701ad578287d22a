//! The circuit breaker of one region, as pure logic: closed → open after N consecutive failed health
//! samples or an error rate above the threshold over the last samples → half-open after a cool-down →
//! closed after enough healthy probes (a failure while half-open opens it again).

use std::collections::VecDeque;

use chaoseater_schemas::bus::ConfigError;
use chaoseater_schemas::events::CircuitState;
use serde::{Deserialize, Serialize};

/// When a circuit opens and closes (`[circuit]` in `chaoseater.toml`); what is absent keeps its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitConfig {
    /// Consecutive failed (or degraded) health samples that open the circuit.
    pub failures_to_open: u32,
    /// Share of non-healthy samples, over the last `window` samples, above which it opens.
    pub error_rate_threshold: f64,
    /// Samples the error rate is taken over.
    pub window: usize,
    /// Seconds it stays open before letting probes through (half-open).
    pub cooldown_s: f64,
    /// Consecutive healthy samples in half-open that close it.
    pub probes_to_close: u32,
}

impl Default for CircuitConfig {
    fn default() -> Self {
        Self { failures_to_open: 3, error_rate_threshold: 0.5, window: 10, cooldown_s: 30.0, probes_to_close: 2 }
    }
}

impl CircuitConfig {
    /// The cool-down in milliseconds, as event times are.
    pub fn cooldown_ms(&self) -> i64 {
        (self.cooldown_s * 1000.0) as i64
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.failures_to_open == 0 || self.window == 0 || self.probes_to_close == 0 {
            return Err(ConfigError("circuit.failures_to_open, window and probes_to_close must be at least 1".into()));
        }
        if !(self.error_rate_threshold > 0.0 && self.error_rate_threshold <= 1.0) {
            return Err(ConfigError("circuit.error_rate_threshold must be in (0, 1]".into()));
        }
        if !(self.cooldown_s.is_finite() && self.cooldown_s >= 0.0) {
            return Err(ConfigError("circuit.cooldown_s must be a number of seconds, 0 or more".into()));
        }
        Ok(())
    }
}

/// One region's breaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Circuit {
    pub state: CircuitState,
    pub consecutive_failures: u32,
    /// The last `window` samples, true for healthy.
    pub recent: VecDeque<bool>,
    pub opened_at_ms: i64,
    pub half_open_successes: u32,
    /// Transitions so far: part of each CircuitStateChanged's id.
    pub transitions: u64,
}

impl Default for Circuit {
    fn default() -> Self {
        Self {
            state: CircuitState::Closed,
            consecutive_failures: 0,
            recent: VecDeque::new(),
            opened_at_ms: 0,
            half_open_successes: 0,
            transitions: 0,
        }
    }
}

/// A change of state and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub from: CircuitState,
    pub to: CircuitState,
    pub reason: String,
}

impl Circuit {
    fn go(&mut self, to: CircuitState, reason: String, now_ms: i64) -> Transition {
        let from = self.state;
        self.state = to;
        self.transitions += 1;
        match to {
            CircuitState::Open => {
                self.opened_at_ms = now_ms;
                self.half_open_successes = 0;
            }
            CircuitState::HalfOpen => self.half_open_successes = 0,
            CircuitState::Closed => {
                self.consecutive_failures = 0;
                self.recent.clear();
                self.half_open_successes = 0;
            }
        }
        Transition { from, to, reason }
    }

    /// A health sample (`healthy` false for degraded or failed).
    pub fn sample(&mut self, healthy: bool, now_ms: i64, config: &CircuitConfig) -> Option<Transition> {
        match self.state {
            CircuitState::Closed => {
                self.consecutive_failures = if healthy { 0 } else { self.consecutive_failures + 1 };
                self.recent.push_back(healthy);
                while self.recent.len() > config.window.max(1) {
                    self.recent.pop_front();
                }
                let failed = self.recent.iter().filter(|h| !**h).count();
                let rate = failed as f64 / self.recent.len().max(1) as f64;
                if self.consecutive_failures >= config.failures_to_open.max(1) {
                    let reason = format!("{} consecutive failed health samples", self.consecutive_failures);
                    return Some(self.go(CircuitState::Open, reason, now_ms));
                }
                // Judged on failures only: a healthy sample never makes matters worse.
                if !healthy && self.recent.len() >= config.window.max(1) && rate > config.error_rate_threshold {
                    let reason = format!("error rate {rate:.2} over the last {} samples", self.recent.len());
                    return Some(self.go(CircuitState::Open, reason, now_ms));
                }
                None
            }
            // Open: samples change nothing until the cool-down ends (see `tick`).
            CircuitState::Open => None,
            CircuitState::HalfOpen if healthy => {
                self.half_open_successes += 1;
                (self.half_open_successes >= config.probes_to_close.max(1)).then(|| {
                    let reason = format!("{} healthy probes while half-open", self.half_open_successes);
                    self.go(CircuitState::Closed, reason, now_ms)
                })
            }
            CircuitState::HalfOpen => {
                Some(self.go(CircuitState::Open, "a probe failed while half-open".to_owned(), now_ms))
            }
        }
    }

    /// Time passing: an open circuit whose cool-down ended lets probes through.
    pub fn tick(&mut self, now_ms: i64, config: &CircuitConfig) -> Option<Transition> {
        (self.state == CircuitState::Open && now_ms - self.opened_at_ms >= config.cooldown_ms())
            .then(|| self.go(CircuitState::HalfOpen, format!("cool-down of {} ms ended", config.cooldown_ms()), now_ms))
    }
}
