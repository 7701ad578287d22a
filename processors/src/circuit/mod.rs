//! The circuit breaker processor: one breaker per region, fed by health samples, kept in sled with the
//! offsets; CircuitStateChanged on every transition. Open means the dispatcher aborts the region's runs
//! in flight (their faults revert at once) and holds new dispatches there until the circuit closes.
//!
//! Keys in its state store: `circuit/{region}` → [`Circuit`] (JSON).

mod machine;

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, StateStore, StateView};
use chaoseater_schemas::events::{CircuitStateChanged, Event, HealthStatus};
use chaoseater_schemas::ids::{RegionName, TimestampMs};
use chaoseater_schemas::topics::Topic;
pub use machine::{Circuit, CircuitConfig, Transition};

/// The circuit breaker processor.
#[derive(Debug, Default)]
pub struct CircuitBreaker {
    pub config: CircuitConfig,
}

impl CircuitBreaker {
    pub const NAME: &'static str = "circuit";

    fn key(region: &RegionName) -> Vec<u8> {
        format!("circuit/{region}").into_bytes()
    }

    fn load(state: &StateView<'_>, region: &RegionName) -> Result<Circuit, ApplyError> {
        Ok(state.get_json(&Self::key(region))?.unwrap_or_default())
    }

    fn save(state: &mut StateView<'_>, region: &RegionName, circuit: &Circuit) -> Result<(), ApplyError> {
        Ok(state.put_json(Self::key(region), circuit)?)
    }

    /// Every region's breaker, as committed (for `status` and tests).
    pub fn circuits(store: &StateStore) -> chaoseater_schemas::Result<Vec<(String, Circuit)>> {
        Ok(store
            .scan_json(b"circuit/")?
            .into_iter()
            .map(|(k, c)| (String::from_utf8_lossy(&k[b"circuit/".len()..]).into_owned(), c))
            .collect())
    }

    fn event(region: &RegionName, circuit: &Circuit, t: Transition, at: TimestampMs) -> Event {
        tracing::warn!(%region, from = ?t.from, to = ?t.to, reason = %t.reason, "Circuit state changed.");
        Event::CircuitStateChanged(CircuitStateChanged {
            event_id: CircuitStateChanged::id_for(region, circuit.transitions),
            occurred_at: at,
            region: region.clone(),
            from_state: t.from,
            to_state: t.to,
            reason: t.reason,
        })
    }
}

impl Processor for CircuitBreaker {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Health]
    }

    fn apply(&mut self, event: &Event, _origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let Event::RegionHealthSampled(s) = event else { return Ok(Vec::new()) };
        let mut circuit = Self::load(state, &s.region)?;
        let transition = circuit.sample(s.status == HealthStatus::Healthy, s.occurred_at.0, &self.config);
        Self::save(state, &s.region, &circuit)?;
        Ok(transition.map(|t| Self::event(&s.region, &circuit, t, s.occurred_at)).into_iter().collect())
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(500))
    }

    fn tick(&mut self, now: TimestampMs, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let mut out = Vec::new();
        for (key, mut circuit) in state.scan_json::<Circuit>(b"circuit/")? {
            if let Some(t) = circuit.tick(now.0, &self.config) {
                let region = RegionName::new(String::from_utf8_lossy(&key[b"circuit/".len()..]).as_ref());
                Self::save(state, &region, &circuit)?;
                out.push(Self::event(&region, &circuit, t, now));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
