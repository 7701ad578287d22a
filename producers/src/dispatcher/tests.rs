//! The dispatcher's processor on the test rig: what it hands the workers, and when.

use chaoseater_schemas::bus::testing::Rig;
use chaoseater_schemas::events::{CircuitState, CircuitStateChanged, Event, EventKind, RegionRegistered, RegionStatus};
use chaoseater_schemas::ids::TimestampMs;
use chaoseater_schemas::samples::sample;
use tokio::sync::mpsc::UnboundedReceiver;

use super::*;

fn rig() -> (Rig<Dispatcher>, UnboundedReceiver<Work>) {
    let (dispatcher, queue) = Dispatcher::new();
    (Rig::new(dispatcher), queue)
}

/// eu-west registered at `endpoint`.
fn registered(endpoint: &str) -> Event {
    let mut event = sample(EventKind::RegionRegistered);
    if let Event::RegionRegistered(r) = &mut event {
        r.endpoint = endpoint.to_owned();
        r.event_id = RegionRegistered::id_for(&r.region, TimestampMs(endpoint.len() as i64));
    }
    event
}

fn circuit(to: CircuitState) -> Event {
    let mut event = sample(EventKind::CircuitStateChanged);
    if let Event::CircuitStateChanged(c) = &mut event {
        c.to_state = to;
        c.event_id = CircuitStateChanged::id_for(&c.region, to as u64);
    }
    event
}

/// The dispatch ids of the work handed over so far.
fn handed(queue: &mut UnboundedReceiver<Work>) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(work) = queue.try_recv() {
        match work {
            Work::Run { dispatch, endpoint } => out.push(format!("{} @ {endpoint}", dispatch.dispatch_id)),
            Work::Abort { run_id } => out.push(format!("abort {run_id}")),
            Work::Step { step, .. } => out.push(format!("step {}", step.step)),
        }
    }
    out
}

#[test]
fn a_dispatch_is_handed_over_once_and_resumed_until_its_result_is_in_the_log() {
    let (mut rig, mut queue) = rig();
    rig.apply(registered("http://127.0.0.2:8080"));
    rig.apply(sample(EventKind::RegionDispatched));
    assert_eq!(handed(&mut queue), ["dispatch-eu-west-1 @ http://127.0.0.2:8080"]);
    let resumed = Dispatcher::unfinished(&rig.store).expect("unfinished");
    assert!(matches!(&resumed[..], [Work::Run { .. }]), "a restart resumes it: {resumed:?}");

    rig.apply(sample(EventKind::RegionDispatched));
    assert!(handed(&mut queue).is_empty(), "a re-read dispatch is not run twice");
    rig.apply(sample(EventKind::RegionResult));
    assert!(Dispatcher::unfinished(&rig.store).expect("unfinished").is_empty(), "answered: nothing to resume");
    rig.apply(sample(EventKind::RegionDispatched));
    assert!(handed(&mut queue).is_empty(), "nor after its answer");
}

#[test]
fn a_refused_event_hands_over_nothing_and_a_moved_endpoint_is_refused_unless_pinned() {
    let (mut rig, mut queue) = rig();
    rig.apply(registered("http://127.0.0.2:8080"));
    let moved = rig.try_apply(registered("http://elsewhere:8080")).expect_err("refused");
    let ApplyError::Rejected(reason) = moved else { panic!("a rejection, not {moved:?}") };
    assert!(reason.0.contains("[dispatcher.endpoints] eu-west = \"http://elsewhere:8080\""), "{}", reason.0);
    rig.apply(sample(EventKind::RegionDispatched));
    assert_eq!(handed(&mut queue), ["dispatch-eu-west-1 @ http://127.0.0.2:8080"], "the token stays home");

    let (dispatcher, mut queue) = Dispatcher::new();
    let pinned = BTreeMap::from([("eu-west".to_owned(), "http://elsewhere:8080".to_owned())]);
    let mut rig = Rig::new(dispatcher.with_endpoints(pinned));
    assert!(rig.try_apply(registered("http://127.0.0.2:8080")).is_err(), "not where the operator pinned it");
    rig.apply(registered("http://elsewhere:8080"));
    rig.apply(sample(EventKind::RegionDispatched));
    assert_eq!(handed(&mut queue), ["dispatch-eu-west-1 @ http://elsewhere:8080"]);
}

#[test]
fn a_dispatch_waits_for_its_region_and_fails_when_it_never_comes() {
    let (mut rig, mut queue) = rig();
    rig.apply(sample(EventKind::RegionDispatched));
    assert!(handed(&mut queue).is_empty(), "no endpoint yet");
    assert!(rig.tick(TimestampMs(rig.now.0 + REGION_WAIT_MS - 1)).is_empty(), "still within the wait");
    rig.apply(registered("http://127.0.0.2:8080"));
    assert_eq!(handed(&mut queue), ["dispatch-eu-west-1 @ http://127.0.0.2:8080"], "handed over on registration");

    let (mut rig, _queue) = self::rig();
    rig.apply(sample(EventKind::RegionDispatched));
    let failed = rig.tick(TimestampMs(rig.now.0 + REGION_WAIT_MS));
    let [Event::RegionResult(result)] = &failed[..] else { panic!("one result, not {failed:?}") };
    assert_eq!(result.status, RegionStatus::Failed);
    assert!(result.message.as_deref().is_some_and(|m| m.contains("not registered")), "{result:?}");
}

#[test]
fn an_open_circuit_holds_new_dispatches_until_it_closes_or_they_time_out() {
    let (mut rig, mut queue) = rig();
    rig.apply(registered("http://127.0.0.2:8080"));
    rig.apply(circuit(CircuitState::Open));
    rig.apply(sample(EventKind::RegionDispatched));
    assert!(handed(&mut queue).is_empty(), "held while open");
    rig.apply(circuit(CircuitState::HalfOpen));
    assert!(handed(&mut queue).is_empty(), "and while half-open");
    rig.apply(circuit(CircuitState::Closed));
    assert_eq!(handed(&mut queue), ["dispatch-eu-west-1 @ http://127.0.0.2:8080"]);

    let (mut rig, mut queue) = self::rig();
    rig.apply(registered("http://127.0.0.2:8080"));
    rig.apply(circuit(CircuitState::Open));
    rig.apply(sample(EventKind::RegionDispatched));
    let Event::RegionDispatched(d) = sample(EventKind::RegionDispatched) else { unreachable!() };
    let failed = rig.tick(TimestampMs(rig.now.0 + d.timeout_ms));
    assert!(matches!(&failed[..], [Event::RegionResult(r)] if r.status == RegionStatus::Failed), "{failed:?}");
    rig.apply(circuit(CircuitState::Closed));
    assert!(handed(&mut queue).is_empty(), "a timed-out dispatch is not run later");
}
