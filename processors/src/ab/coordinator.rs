//! The A/B coordinator: turns AbTestRequested into sample runs through the normal saga (a RunRequested per
//! sample, its run id derived from the test id and sample number), follows their results, and closes the
//! test with AbTestConcluded and the judge's report. State and offsets commit together, so a coordinator
//! killed mid-test resumes where it stood: a sample it started is not started again under another id
//! (the RunRequested it re-publishes from its outbox carries the same event id, which the orchestrator
//! drops), and none is lost.
//!
//! Keys in its state store:
//! - `test/{id}` → [`AbRun`] (JSON);
//! - `active/{id}` → nothing: the tests not concluded, scanned when a region frees up;
//! - `sample/{run_id}` → the test id, to find a sample's test from its results;
//! - `busy/{region}` → the sample run holding the region (never two samples at once on one region);
//! - `rejected/{id}` → the reason, so a replayed bad request is rejected once.

use std::collections::BTreeSet;

use chaoseater_schemas::bus::{ApplyError, Origin, Processor, Rejection, StateView};
use chaoseater_schemas::events::{AbTestRequested, AbortRequested, Event, RunCompleted, RunRejected, RunRequested};
use chaoseater_schemas::experiment::RunMode;
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use chaoseater_schemas::limits;
use chaoseater_schemas::topics::Topic;

use super::test::{AbRun, Step};

/// The coordinator processor.
#[derive(Debug, Default)]
pub struct AbCoordinator;

impl AbCoordinator {
    pub const NAME: &'static str = "ab";

    fn test_key(id: &RunId) -> Vec<u8> {
        format!("test/{id}").into_bytes()
    }

    fn load(state: &StateView<'_>, id: &RunId) -> Result<Option<AbRun>, ApplyError> {
        Ok(state.get_json(&Self::test_key(id))?)
    }

    fn save(state: &mut StateView<'_>, test: &AbRun) -> Result<(), ApplyError> {
        Ok(state.put_json(Self::test_key(test.id()), test)?)
    }

    /// The test a sample run belongs to.
    fn test_of(state: &StateView<'_>, run_id: &RunId) -> Result<Option<AbRun>, ApplyError> {
        match state.get(format!("sample/{run_id}").as_bytes())? {
            Some(id) => Self::load(state, &RunId::new(String::from_utf8_lossy(&id).into_owned())),
            None => Ok(None),
        }
    }

    fn busy(state: &StateView<'_>) -> Result<BTreeSet<RegionName>, ApplyError> {
        Ok(state
            .scan_prefix(b"busy/")?
            .into_iter()
            .map(|(key, _)| RegionName::new(String::from_utf8_lossy(&key[b"busy/".len()..]).into_owned()))
            .collect())
    }

    fn requested(
        &self,
        r: &AbTestRequested,
        state: &mut StateView<'_>,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        if Self::load(state, &r.run_id)?.is_some() || state.get(format!("rejected/{}", r.run_id).as_bytes())?.is_some()
        {
            return Ok(Vec::new());
        }
        // An id the platform refuses cannot name a RunRejected: that request goes to the DLQ instead.
        if let Err(e) = limits::check_id("run_id", r.run_id.as_str(), limits::MAX_ID_LEN) {
            return Err(Rejection(format!("invalid AbTestRequested: {e}")).into());
        }
        if let Err(e) = r.validate() {
            let reason = limits::truncate(&format!("invalid A/B test: {e}"), limits::MAX_REASON_LEN).into_owned();
            state.put(format!("rejected/{}", r.run_id).into_bytes(), reason.clone().into_bytes());
            tracing::warn!(test = %r.run_id, %reason, "A/B test rejected.");
            return Ok(vec![Event::RunRejected(RunRejected {
                event_id: RunRejected::id_for(&r.run_id),
                occurred_at: now,
                run_id: r.run_id.clone(),
                reason,
            })]);
        }
        let mut test = AbRun::new(r.clone());
        for slot in &test.slots {
            state.put(format!("sample/{}", slot.run_id).into_bytes(), r.run_id.as_str().as_bytes().to_vec());
        }
        state.put(format!("active/{}", r.run_id).into_bytes(), Vec::new());
        tracing::info!(
            test = %r.run_id,
            samples_per_variant = r.samples_per_variant,
            a = %r.variant_a.label,
            b = %r.variant_b.label,
            "A/B test started."
        );
        let out = Self::advance(&mut test, state, now)?;
        Self::save(state, &test)?;
        Ok(out)
    }

    /// Starts what the test can start now, or concludes it.
    fn advance(test: &mut AbRun, state: &mut StateView<'_>, now: TimestampMs) -> Result<Vec<Event>, ApplyError> {
        let mut busy = Self::busy(state)?;
        let mut out = Vec::new();
        for step in test.advance(&mut busy) {
            match step {
                Step::Start(index) => {
                    let run_id = test.slots[index].run_id.clone();
                    for region in test.regions_of(index) {
                        state.put(format!("busy/{region}").into_bytes(), run_id.as_str().as_bytes().to_vec());
                    }
                    out.push(Event::RunRequested(sample_request(test, index, now)));
                }
                Step::Conclude => {
                    state.remove(format!("active/{}", test.id()).into_bytes());
                    let concluded = test.conclusion(now);
                    tracing::info!(
                        test = %test.id(),
                        status = concluded.status.as_str(),
                        verdict = concluded.judgement.as_ref().map_or("-", |j| j.verdict.as_str()),
                        "A/B test concluded."
                    );
                    out.push(Event::AbTestConcluded(concluded));
                }
            }
        }
        Ok(out)
    }

    /// A sample's run ended (or was refused): free its regions, then let this test and every other
    /// waiting for a region move on.
    fn sample_ended(
        test: &mut AbRun,
        index: usize,
        state: &mut StateView<'_>,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        let run_id = test.slots[index].run_id.clone();
        for region in test.regions_of(index).to_vec() {
            let key = format!("busy/{region}").into_bytes();
            if state.get(&key)?.is_some_and(|holder| holder == run_id.as_str().as_bytes()) {
                state.remove(key);
            }
        }
        let mut out = Self::advance(test, state, now)?;
        Self::save(state, test)?;
        for (key, _) in state.scan_prefix(b"active/")? {
            let id = RunId::new(String::from_utf8_lossy(&key[b"active/".len()..]).into_owned());
            if &id == test.id() {
                continue;
            }
            if let Some(mut other) = Self::load(state, &id)? {
                let started = Self::advance(&mut other, state, now)?;
                if !started.is_empty() {
                    out.extend(started);
                    Self::save(state, &other)?;
                }
            }
        }
        Ok(out)
    }

    fn completed(
        &self,
        c: &RunCompleted,
        state: &mut StateView<'_>,
        now: TimestampMs,
    ) -> Result<Vec<Event>, ApplyError> {
        let Some(mut test) = Self::test_of(state, &c.run_id)? else { return Ok(Vec::new()) };
        let Some(index) = test.complete(&c.run_id, c.status, &c.report) else { return Ok(Vec::new()) };
        let slot = &test.slots[index];
        tracing::info!(test = %test.id(), variant = slot.side.as_str(), sample = slot.number, status = c.status.as_str(), "A/B sample done.");
        Self::sample_ended(&mut test, index, state, now)
    }

    fn rejected(&self, r: &RunRejected, state: &mut StateView<'_>, now: TimestampMs) -> Result<Vec<Event>, ApplyError> {
        let Some(mut test) = Self::test_of(state, &r.run_id)? else { return Ok(Vec::new()) };
        let Some(index) = test.refuse(&r.run_id, &r.reason) else { return Ok(Vec::new()) };
        tracing::warn!(test = %test.id(), sample = %r.run_id, reason = %r.reason, "A/B sample refused: the test fails.");
        Self::sample_ended(&mut test, index, state, now)
    }

    fn abort(&self, a: &AbortRequested, state: &mut StateView<'_>, now: TimestampMs) -> Result<Vec<Event>, ApplyError> {
        let Some(mut test) = Self::load(state, &a.run_id)? else { return Ok(Vec::new()) };
        let running = test.abort(&a.reason);
        if test.stop.is_none() {
            return Ok(Vec::new());
        }
        tracing::info!(test = %a.run_id, running = running.len(), reason = %a.reason, "A/B test aborting.");
        let mut out: Vec<Event> = running
            .into_iter()
            .map(|run_id| {
                Event::AbortRequested(AbortRequested {
                    event_id: AbortRequested::id_for(&run_id, a.occurred_at),
                    occurred_at: now,
                    run_id,
                    reason: format!("A/B test {} aborted: {}", a.run_id, a.reason),
                    requested_by: a.requested_by.clone(),
                })
            })
            .collect();
        out.extend(Self::advance(&mut test, state, now)?);
        Self::save(state, &test)?;
        Ok(out)
    }
}

/// The run of one sample: the variant's experiment in every region of the variant at once, tagged with
/// the test, variant and sample so that the history can group them.
fn sample_request(test: &AbRun, index: usize, now: TimestampMs) -> RunRequested {
    let slot = &test.slots[index];
    let request = &test.request;
    let variant = request.variant(slot.side);
    let mut experiment = request.experiment_of(slot.side).clone();
    experiment.tags.insert("ab_test".into(), request.run_id.to_string());
    experiment.tags.insert("ab_variant".into(), slot.side.as_str().into());
    experiment.tags.insert("ab_label".into(), variant.label.clone());
    experiment.tags.insert("ab_sample".into(), slot.number.to_string());
    RunRequested {
        event_id: RunRequested::id_for(&slot.run_id),
        occurred_at: now,
        run_id: slot.run_id.clone(),
        experiment,
        regions: variant.regions.clone(),
        mode: RunMode::Parallel,
        max_concurrent: i32::try_from(variant.regions.len()).unwrap_or(limits::MAX_CONCURRENT).max(1),
        fail_fast: false,
        blast_radius_percent: 100.0,
        min_score: None,
        requested_by: limits::truncate(
            &format!("ab:{} ({})", request.run_id, request.requested_by),
            limits::MAX_TEXT_LEN,
        )
        .into_owned(),
    }
}

impl Processor for AbCoordinator {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Commands, Topic::Results]
    }

    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let now = origin.now;
        match event {
            Event::AbTestRequested(r) => self.requested(r, state, now),
            Event::RegionResult(r) => {
                if let Some(mut test) = Self::test_of(state, &r.run_id)?
                    && test.record(r)
                {
                    Self::save(state, &test)?;
                }
                Ok(Vec::new())
            }
            Event::RunCompleted(c) => self.completed(c, state, now),
            Event::RunRejected(r) => self.rejected(r, state, now),
            Event::AbortRequested(a) => self.abort(a, state, now),
            _ => Ok(Vec::new()),
        }
    }
}
