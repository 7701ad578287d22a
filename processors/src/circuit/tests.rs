use chaoseater_schemas::events::CircuitState;
use proptest::prelude::*;

use super::*;

fn config() -> CircuitConfig {
    CircuitConfig { failures_to_open: 3, error_rate_threshold: 0.5, window: 6, cooldown_s: 1.0, probes_to_close: 2 }
}

#[test]
fn opens_on_consecutive_failures_half_opens_after_cooldown_and_closes_on_probes() {
    let c = config();
    let mut circuit = Circuit::default();
    assert_eq!(circuit.sample(false, 0, &c), None);
    assert_eq!(circuit.sample(false, 10, &c), None);
    let open = circuit.sample(false, 20, &c).expect("opens");
    assert_eq!((open.from, open.to), (CircuitState::Closed, CircuitState::Open));
    assert_eq!(circuit.sample(true, 30, &c), None, "samples do not close an open circuit");
    assert_eq!(circuit.tick(500, &c), None, "still cooling down");
    let half = circuit.tick(1_020, &c).expect("half-open");
    assert_eq!(half.to, CircuitState::HalfOpen);
    assert_eq!(circuit.sample(true, 1_100, &c), None);
    assert_eq!(circuit.sample(true, 1_200, &c).map(|t| t.to), Some(CircuitState::Closed));
    // Error rate: alternating failures never make three in a row, but exceed half of the window.
    let mut circuit = Circuit::default();
    let mut opened = None;
    for (i, healthy) in [false, true, false, false, true, false, false].into_iter().enumerate() {
        if let Some(t) = circuit.sample(healthy, i as i64, &c) {
            opened = Some((i, t.reason));
            break;
        }
    }
    let (at, reason) = opened.expect("opened by the error rate");
    assert_eq!(at, 5);
    assert!(reason.contains("error rate"), "{reason}");
}

fn legal(from: CircuitState, to: CircuitState) -> bool {
    matches!(
        (from, to),
        (CircuitState::Closed, CircuitState::Open)
            | (CircuitState::Open, CircuitState::HalfOpen)
            | (CircuitState::HalfOpen, CircuitState::Closed)
            | (CircuitState::HalfOpen, CircuitState::Open)
    )
}

proptest! {
    /// Any sequence of samples and time passing: only legal transitions, each one changes the state it
    /// names, an open circuit half-opens only after its cool-down, and it opens only on failure evidence.
    #[test]
    fn any_sequence_leaves_a_legal_state(steps in proptest::collection::vec((any::<bool>(), any::<bool>(), 0i64..700), 0..200)) {
        let c = config();
        let mut circuit = Circuit::default();
        let mut now = 0i64;
        for (is_tick, healthy, advance) in steps {
            now += advance;
            let before = circuit.clone();
            let t = if is_tick { circuit.tick(now, &c) } else { circuit.sample(healthy, now, &c) };
            match t {
                Some(t) => {
                    prop_assert!(legal(t.from, t.to), "{:?} -> {:?}", t.from, t.to);
                    prop_assert_eq!(t.from, before.state);
                    prop_assert_eq!(t.to, circuit.state);
                    prop_assert_eq!(circuit.transitions, before.transitions + 1);
                    if t.to == CircuitState::HalfOpen {
                        prop_assert!(now - before.opened_at_ms >= c.cooldown_ms());
                    }
                    if t.to == CircuitState::Open {
                        prop_assert!(!is_tick && !healthy, "opened without a failed sample");
                    }
                }
                None => prop_assert_eq!(circuit.state, before.state),
            }
        }
    }
}

/// Corrupt state stops the processor (a fatal error); it is never read as a fresh breaker.
#[test]
fn a_corrupt_breaker_is_an_error_not_a_fresh_one() {
    use chaoseater_schemas::bus::ApplyError;
    use chaoseater_schemas::events::{Event, HealthStatus, RegionHealthSampled};
    use chaoseater_schemas::ids::TimestampMs;
    let mut rig = chaoseater_schemas::bus::testing::Rig::new(CircuitBreaker { config: config() });
    rig.store.put_state(b"circuit/eu-west", b"{not json").expect("write");
    let region = RegionName::new("eu-west");
    let sample = Event::RegionHealthSampled(RegionHealthSampled {
        event_id: RegionHealthSampled::id_for(&region, TimestampMs(1)),
        occurred_at: TimestampMs(1),
        region,
        status: HealthStatus::Failed,
        latency_ms: None,
        http_status: None,
        message: None,
        error_rate: None,
    });
    match rig.try_apply(sample) {
        Err(ApplyError::Fatal(e)) => assert!(e.to_string().contains("circuit/eu-west"), "{e}"),
        other => panic!("expected a fatal error, got {other:?}"),
    }
}
