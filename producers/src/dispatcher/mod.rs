//! The dispatcher: consumes RegionDispatched (and aborts), calls the region's agent, publishes RegionResult.
//! A dispatch is recorded in the dispatcher's store, with the offsets, before any call is made; the calls
//! run on worker tasks after the commit. A restarted dispatcher resumes the dispatches it recorded and has
//! not seen a result for: the agent's idempotency key (the dispatch id) makes the resumed call return the
//! same experiment, never a second run. The health monitor samples every region's agent on a schedule.
//!
//! Rollback steps (RollbackStepRequested) are recorded the same way and applied on the agent under their
//! step number (the agent applies a step number once); RollbackStepApplied follows, and when the step
//! asks for it, a health sample `check_after_ms` later (the check that gates the next step). For a
//! stepwise rollback the agent holds the fault when its time ends, and the dispatcher says so (FaultHeld).
//!
//! A region's agent token is sent only to that region's endpoint: the one pinned in the configuration
//! (`[dispatcher.endpoints]`), or else the one it was first registered with. A registration naming
//! another endpoint is dead-lettered, so no event can redirect a token.
//!
//! Keys in its state store:
//! - `region/{name}` → [`RegionEntry`] (JSON);
//! - `pinned/{name}` → the endpoint the region was first registered with (kept after RegionRemoved);
//! - `dispatch/{dispatch_id}` → the RegionDispatched (JSON) until its RegionResult is consumed;
//! - `step/{event_id}` → the RollbackStepRequested (JSON) until its RollbackStepApplied is consumed.

pub mod agent_client;
mod component;
pub mod health;
pub mod tokens;

pub use component::{DispatcherComponent, DispatcherConfig};

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use chaoseater_schemas::bus::{
    ApplyError, EventProducer, Origin, Processor, Rejection, StateStore, StateView, regions,
};
use chaoseater_schemas::events::{
    CircuitState, Event, FaultHeld, RegionDispatched, RollbackStepApplied, RollbackStepRequested,
};
use chaoseater_schemas::ids::{RegionName, RunId, TimestampMs};
use chaoseater_schemas::topics::Topic;
use tokio::sync::{mpsc, watch};

pub use tokens::AgentTokens;

use chaoseater_schemas::sync::lock;
use chaoseater_schemas::{Error, limits};

use chaoseater_net::http::HttpClient;

/// How long a dispatch waits for its region's registration before it fails.
pub const REGION_WAIT_MS: i64 = 5_000;

pub use chaoseater_schemas::bus::regions::RegionEntry;

/// Work for the worker pool, handed over after the commit that recorded it.
#[derive(Debug, Clone)]
pub enum Work {
    Run {
        dispatch: Box<RegionDispatched>,
        endpoint: String,
    },
    Abort {
        run_id: RunId,
    },
    /// Apply a rollback step on the region's agent.
    Step {
        step: Box<RollbackStepRequested>,
        region: RegionEntry,
    },
}

/// The dispatcher processor.
#[derive(Debug)]
pub struct Dispatcher {
    queued: Vec<Work>,
    work: mpsc::UnboundedSender<Work>,
    /// Endpoints the operator pinned in the configuration (`[dispatcher.endpoints]`), by region.
    endpoints: BTreeMap<String, String>,
}

/// Longest endpoint URL a registration may carry.
pub const MAX_ENDPOINT_LEN: usize = 2_048;

impl Dispatcher {
    pub const NAME: &'static str = "dispatcher";

    /// The processor and the receiving end of its work queue (for [`Workers::run`]).
    pub fn new() -> (Self, mpsc::UnboundedReceiver<Work>) {
        let (work, rx) = mpsc::unbounded_channel();
        (Self { queued: Vec::new(), work, endpoints: BTreeMap::new() }, rx)
    }

    /// Pins these regions' endpoints (region name → URL): a registration naming another endpoint for
    /// one of them is refused.
    pub fn with_endpoints(mut self, endpoints: BTreeMap<String, String>) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Whether a registration of `region` at `endpoint` may take effect: a well-formed name and URL,
    /// and the endpoint the operator pinned, or else the one the region was first registered with. A
    /// region's token is only ever sent to its endpoint, so an event alone must not move it.
    fn check_registration(&self, state: &StateView<'_>, region: &RegionName, endpoint: &str) -> Result<(), ApplyError> {
        let refuse = |m: String| -> Result<(), ApplyError> { Err(Rejection(m).into()) };
        if let Err(e) = limits::check_id("region", region.as_str(), limits::MAX_REGION_LEN) {
            return refuse(format!("invalid RegionRegistered: {e}"));
        }
        if endpoint.len() > MAX_ENDPOINT_LEN
            || !endpoint.starts_with("http://")
            || endpoint.parse::<hyper::Uri>().map_or(true, |u| u.host().is_none())
        {
            return refuse(format!(
                "invalid RegionRegistered: endpoint {} is not an http:// URL",
                limits::shown(endpoint)
            ));
        }
        if let Some(pinned) = self.endpoints.get(region.as_str()) {
            if pinned.trim_end_matches('/') != endpoint.trim_end_matches('/') {
                return refuse(format!(
                    "region {region} is pinned to {pinned} by [dispatcher.endpoints]; registration at {} refused",
                    limits::shown(endpoint)
                ));
            }
            return Ok(());
        }
        if let Some(first) = state.get(Self::pinned_key(region).as_slice())?
            && first != endpoint.as_bytes()
        {
            return refuse(format!(
                "region {region} was registered at {}; moving it to {} needs [dispatcher.endpoints] {region} = \"{}\" in the configuration",
                String::from_utf8_lossy(&first),
                limits::shown(endpoint),
                limits::truncate(endpoint, 256)
            ));
        }
        Ok(())
    }

    fn pinned_key(region: &RegionName) -> Vec<u8> {
        format!("pinned/{region}").into_bytes()
    }

    fn dispatch_key(id: &str) -> Vec<u8> {
        format!("dispatch/{id}").into_bytes()
    }

    fn step_key(id: &str) -> Vec<u8> {
        format!("step/{id}").into_bytes()
    }

    fn region_entry(state: &StateView<'_>, region: &RegionName) -> Result<Option<RegionEntry>, ApplyError> {
        Ok(regions::get(state, region)?)
    }

    fn held_key(id: &str) -> Vec<u8> {
        format!("held/{id}").into_bytes()
    }

    /// Whether `region`'s circuit (as CircuitStateChanged told) is open or half-open.
    fn circuit_blocks(state: &StateView<'_>, region: &RegionName) -> Result<bool, ApplyError> {
        let stored = state.get(format!("circuit/{region}").as_bytes())?;
        Ok(stored.is_some_and(|s| s.as_slice() != CircuitState::Closed.as_str().as_bytes()))
    }

    /// Dispatches held by an open circuit, with since when.
    fn held(state: &StateView<'_>) -> Result<Vec<(RegionDispatched, i64)>, ApplyError> {
        Self::pending_with(state, b"held/")
    }

    fn unrouted_key(id: &str) -> Vec<u8> {
        format!("unrouted/{id}").into_bytes()
    }

    /// Dispatches waiting for their region's registration, with since when.
    fn unrouted(state: &StateView<'_>) -> Result<Vec<(RegionDispatched, i64)>, ApplyError> {
        Self::pending_with(state, b"unrouted/")
    }

    /// Recorded dispatches marked under `prefix` (`prefix{id}` → since, big-endian ms).
    fn pending_with(state: &StateView<'_>, prefix: &[u8]) -> Result<Vec<(RegionDispatched, i64)>, ApplyError> {
        let mut out = Vec::new();
        for (key, since) in state.scan_prefix(prefix)? {
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let since = since.as_slice().try_into().map(i64::from_be_bytes).map_err(|_| Error::CorruptState {
                key: String::from_utf8_lossy(&key).into_owned(),
                reason: format!("{} bytes where a big-endian i64 belongs", since.len()),
            })?;
            if let Some(d) = state.get_json::<RegionDispatched>(&Self::dispatch_key(&id))? {
                out.push((d, since));
            }
        }
        Ok(out)
    }

    /// Registered regions, as committed.
    pub fn regions(store: &StateStore) -> chaoseater_schemas::Result<Vec<RegionEntry>> {
        regions::committed(store)
    }

    /// Dispatches recorded and not yet answered, with their region's endpoint, as committed (those still
    /// waiting for their region are left to `tick`).
    pub fn unfinished(store: &StateStore) -> chaoseater_schemas::Result<Vec<Work>> {
        let regions = Self::regions(store)?;
        let mut out = Vec::new();
        for (_, d) in store.scan_json::<RegionDispatched>(b"dispatch/")? {
            if let Some(region) = regions.iter().find(|r| r.name == d.region)
                && store.get(&Self::unrouted_key(d.dispatch_id.as_str()))?.is_none()
                && store.get(&Self::held_key(d.dispatch_id.as_str()))?.is_none()
            {
                out.push(Work::Run { endpoint: region.endpoint.clone(), dispatch: Box::new(d) });
            }
        }
        for (_, step) in store.scan_json::<RollbackStepRequested>(b"step/")? {
            if let Some(region) = regions.iter().find(|r| r.name == step.region) {
                out.push(Work::Step { step: Box::new(step), region: region.clone() });
            }
        }
        Ok(out)
    }
}

impl Processor for Dispatcher {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn topics(&self) -> Vec<Topic> {
        vec![Topic::Regions, Topic::Dispatch, Topic::Commands, Topic::Results, Topic::Rollback]
    }

    fn applied_first(&self) -> Vec<Topic> {
        vec![Topic::Regions]
    }

    fn apply(&mut self, event: &Event, origin: &Origin, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        match event {
            Event::RegionRegistered(e) => {
                self.check_registration(state, &e.region, &e.endpoint)?;
                // Kept after a RegionRemoved: removing and registering again is a move too.
                state.put(Self::pinned_key(&e.region), e.endpoint.clone().into_bytes());
                regions::fold(state, event)?;
                for (dispatch, _) in Self::unrouted(state)? {
                    if dispatch.region == e.region {
                        state.remove(Self::unrouted_key(dispatch.dispatch_id.as_str()));
                        self.queued.push(Work::Run { dispatch: Box::new(dispatch), endpoint: e.endpoint.clone() });
                    }
                }
            }
            Event::RegionRemoved(_) => regions::fold(state, event)?,
            Event::RegionDispatched(d) => {
                let key = Self::dispatch_key(d.dispatch_id.as_str());
                if state.get(&key)?.is_some() || state.get(format!("answered/{}", d.dispatch_id).as_bytes())?.is_some()
                {
                    return Ok(Vec::new());
                }
                let endpoint = Self::region_entry(state, &d.region)?.map(|r| r.endpoint);
                state.put_json(key, d)?;
                if Self::circuit_blocks(state, &d.region)? {
                    // No new dispatches to a region whose circuit is not closed: held until it closes.
                    state.put(Self::held_key(d.dispatch_id.as_str()), origin.now.0.to_be_bytes().to_vec());
                    tracing::warn!(region = %d.region, dispatch = %d.dispatch_id, "Circuit not closed; dispatch held.");
                    return Ok(Vec::new());
                }
                match endpoint {
                    Some(endpoint) => self.queued.push(Work::Run { dispatch: Box::new(d.clone()), endpoint }),
                    // The registration may be a moment behind in this consumer: wait for it (see `tick`).
                    None => state.put(Self::unrouted_key(d.dispatch_id.as_str()), origin.now.0.to_be_bytes().to_vec()),
                }
            }
            Event::AbortRequested(a) => self.queued.push(Work::Abort { run_id: a.run_id.clone() }),
            Event::RollbackStepRequested(step) => {
                let key = Self::step_key(step.event_id.as_str());
                if state.get(&key)?.is_some() || state.get(format!("stepped/{}", step.event_id).as_bytes())?.is_some() {
                    return Ok(Vec::new());
                }
                match Self::region_entry(state, &step.region)? {
                    Some(region) => {
                        state.put_json(key, step)?;
                        self.queued.push(Work::Step { step: Box::new(step.clone()), region });
                    }
                    None => {
                        tracing::error!(region = %step.region, step = step.step, "Rollback step for an unknown region.")
                    }
                }
            }
            Event::RollbackStepApplied(a) => {
                let id = RollbackStepRequested::id_for(&a.run_id, &a.region, a.step);
                state.remove(Self::step_key(id.as_str()));
                state.put(format!("stepped/{id}").into_bytes(), Vec::new());
            }
            Event::CircuitStateChanged(c) => {
                // Open: the rollback processor rolls back the region's runs; here, new dispatches wait.
                state.put(format!("circuit/{}", c.region).into_bytes(), c.to_state.as_str().as_bytes().to_vec());
                match c.to_state {
                    CircuitState::Open => {}
                    CircuitState::Closed => {
                        let endpoint = Self::region_entry(state, &c.region)?.map(|r| r.endpoint);
                        for (dispatch, _) in Self::held(state)? {
                            if dispatch.region == c.region
                                && let Some(endpoint) = endpoint.clone()
                            {
                                state.remove(Self::held_key(dispatch.dispatch_id.as_str()));
                                self.queued.push(Work::Run { dispatch: Box::new(dispatch), endpoint });
                            }
                        }
                    }
                    CircuitState::HalfOpen => {}
                }
            }
            Event::RegionResult(r) => {
                // The answer to a dispatch is in the log: it no longer needs resuming.
                state.remove(Self::dispatch_key(r.dispatch_id.as_str()));
                state.put(format!("answered/{}", r.dispatch_id).into_bytes(), Vec::new());
            }
            _ => {}
        }
        Ok(Vec::new())
    }

    fn tick_interval(&self) -> Option<std::time::Duration> {
        Some(std::time::Duration::from_millis(500))
    }

    /// Dispatches to a region still unknown after [`REGION_WAIT_MS`] fail with the reason, and so do
    /// dispatches held by an open circuit past their timeout.
    fn tick(&mut self, now: TimestampMs, state: &mut StateView<'_>) -> Result<Vec<Event>, ApplyError> {
        let mut out = Vec::new();
        for (dispatch, since) in Self::held(state)? {
            if now.0 - since >= dispatch.timeout_ms {
                state.remove(Self::held_key(dispatch.dispatch_id.as_str()));
                let message = format!(
                    "not dispatched: the circuit of region {} stayed open for {:.0} s",
                    dispatch.region,
                    (now.0 - since) as f64 / 1000.0
                );
                out.push(Event::RegionResult(agent_client::failed(&dispatch, now, message)));
            }
        }
        for (dispatch, since) in Self::unrouted(state)? {
            if now.0 - since >= REGION_WAIT_MS {
                state.remove(Self::unrouted_key(dispatch.dispatch_id.as_str()));
                let message = format!("region {} is not registered with the dispatcher", dispatch.region);
                out.push(Event::RegionResult(agent_client::failed(&dispatch, now, message)));
            }
        }
        Ok(out)
    }

    fn on_discard(&mut self) {
        // The batch is applied again: the work it queued is queued again then.
        self.queued.clear();
    }

    fn on_commit(&mut self, _store: &StateStore) {
        for work in self.queued.drain(..) {
            // The receiver lives as long as the service; if it is gone we are shutting down, and the
            // recorded dispatch is resumed on the next start.
            let _ = self.work.send(work);
        }
    }
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Abort switches of dispatches in flight, by run, with their region.
type InFlight = HashMap<RunId, Vec<(RegionName, watch::Sender<bool>)>>;

/// Dispatches waiting for their region, by region, in arrival order.
#[derive(Default)]
struct RegionQueues {
    busy: std::collections::HashSet<RegionName>,
    waiting: HashMap<RegionName, std::collections::VecDeque<Task>>,
}

impl RegionQueues {
    /// `task` back to run now, if `region` has nothing in flight; otherwise queued.
    fn start_or_queue(&mut self, region: &RegionName, task: Task) -> Option<Task> {
        if self.busy.insert(region.clone()) {
            return Some(task);
        }
        let queue = self.waiting.entry(region.clone()).or_default();
        queue.push_back(task);
        tracing::info!(%region, queued = queue.len(), "Region busy with another dispatch; queued.");
        None
    }

    /// `region`'s dispatch ended: its next one, to run now.
    fn finished(&mut self, region: &RegionName) -> Option<Task> {
        let next = self.waiting.get_mut(region).and_then(std::collections::VecDeque::pop_front);
        if next.is_none() {
            self.busy.remove(region);
            self.waiting.remove(region);
        }
        next
    }
}

/// The pool that calls agents.
#[derive(Debug, Clone)]
pub struct Workers {
    producer: EventProducer,
    tokens: Arc<AgentTokens>,
    client: HttpClient,
    running: Arc<Mutex<InFlight>>,
}

impl Workers {
    pub fn new(producer: EventProducer, tokens: AgentTokens) -> Self {
        Self { producer, tokens: Arc::new(tokens), client: HttpClient::new(), running: Default::default() }
    }

    /// Resumes `unfinished` dispatches, then serves the queue until it closes. Dispatches to one region
    /// run one at a time, in arrival order (an agent runs one experiment at a time: concurrent ones
    /// would poll it busy and time out); rollback steps and aborts act at once.
    pub async fn run(self, unfinished: Vec<Work>, mut queue: mpsc::UnboundedReceiver<Work>) {
        if !unfinished.is_empty() {
            tracing::info!(count = unfinished.len(), "Resuming dispatches recorded before a restart.");
        }
        let mut tasks: tokio::task::JoinSet<Option<RegionName>> = tokio::task::JoinSet::new();
        let mut regions = RegionQueues::default();
        for work in unfinished {
            self.take(work, &mut tasks, &mut regions);
        }
        loop {
            tokio::select! {
                work = queue.recv() => match work {
                    Some(work) => self.take(work, &mut tasks, &mut regions),
                    None => break,
                },
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(Some(region)) = done
                        && let Some(next) = regions.finished(&region)
                    {
                        tasks.spawn(async move {
                            next.await;
                            Some(region)
                        });
                    }
                }
            }
        }
        tasks.abort_all();
    }

    /// Starts `work` now, or queues it behind its region's dispatch in flight.
    fn take(&self, work: Work, tasks: &mut tokio::task::JoinSet<Option<RegionName>>, regions: &mut RegionQueues) {
        let region = match &work {
            Work::Run { dispatch, .. } => Some(dispatch.region.clone()),
            Work::Abort { .. } | Work::Step { .. } => None,
        };
        let Some(task) = self.handle(work) else { return };
        match region {
            Some(region) => {
                if let Some(task) = regions.start_or_queue(&region, task) {
                    tasks.spawn(async move {
                        task.await;
                        Some(region)
                    });
                }
            }
            None => {
                tasks.spawn(async move {
                    task.await;
                    None
                });
            }
        }
    }

    fn handle(&self, work: Work) -> Option<Task> {
        match work {
            Work::Abort { run_id } => {
                if let Some(switches) = lock(&self.running).get(&run_id) {
                    tracing::info!(run = %run_id, regions = switches.len(), "Aborting regions in flight.");
                    switches.iter().for_each(|(_, s)| {
                        s.send_replace(true);
                    });
                }
                None
            }
            Work::Step { step, region } => {
                let this = self.clone();
                Some(Box::pin(async move { this.apply_step(*step, region).await }) as Task)
            }
            Work::Run { dispatch, endpoint } => {
                let (abort_tx, abort_rx) = watch::channel(false);
                lock(&self.running)
                    .entry(dispatch.run_id.clone())
                    .or_default()
                    .push((dispatch.region.clone(), abort_tx));
                let this = self.clone();
                let task = async move {
                    let token = this.tokens.for_region(&dispatch.region);
                    tracing::info!(run = %dispatch.run_id, region = %dispatch.region, %endpoint, "Dispatching.");
                    let on_held = |held: FaultHeld| {
                        tracing::info!(run = %held.run_id, region = %held.region, "Fault held for its rollback.");
                        let this = this.clone();
                        tokio::spawn(async move { this.publish(Event::FaultHeld(held)).await });
                    };
                    let result =
                        agent_client::run(&this.client, &endpoint, token.as_deref(), &dispatch, abort_rx, on_held)
                            .await;
                    tracing::info!(run = %dispatch.run_id, region = %dispatch.region, status = ?result.status, score = ?result.resilience_score, "Region finished.");
                    this.publish(Event::RegionResult(result)).await;
                    let mut running = lock(&this.running);
                    if let Some(switches) = running.get_mut(&dispatch.run_id) {
                        switches.retain(|(_, s)| !s.is_closed());
                        if switches.is_empty() {
                            running.remove(&dispatch.run_id);
                        }
                    }
                };
                Some(Box::pin(task) as Task)
            }
        }
    }

    /// Applies a rollback step, says so, and samples the region's health when the step asks for a check.
    async fn apply_step(&self, step: RollbackStepRequested, region: RegionEntry) {
        let token = self.tokens.for_region(&step.region);
        let outcome = agent_client::apply_step(&self.client, &region.endpoint, token.as_deref(), &step).await;
        match outcome {
            Ok(agent_client::StepOutcome::Applied) => {
                tracing::info!(run = %step.run_id, region = %step.region, step = step.step, percentage = step.percentage, "Rollback step applied.");
            }
            Ok(agent_client::StepOutcome::AlreadyReverted(detail)) => {
                tracing::info!(run = %step.run_id, region = %step.region, step = step.step, %detail, "The fault had already ended.");
            }
            Err(message) => {
                // Left recorded: the rollback processor's timeout fails the rollback with its reason.
                tracing::error!(run = %step.run_id, region = %step.region, step = step.step, %message, "Rollback step failed.");
                return;
            }
        }
        let applied = RollbackStepApplied {
            event_id: RollbackStepApplied::id_for(&step.run_id, &step.region, step.step),
            occurred_at: TimestampMs::now(),
            run_id: step.run_id.clone(),
            region: step.region.clone(),
            step: step.step,
            percentage: step.percentage,
        };
        self.publish(Event::RollbackStepApplied(applied)).await;
        if let Some(after) = step.check_after_ms {
            tokio::time::sleep(std::time::Duration::from_millis(after.max(0) as u64)).await;
            let sample = health::sample(&self.client, &region).await;
            self.publish(Event::RegionHealthSampled(sample)).await;
        }
    }

    /// Publishes with retries: a result must not be lost to a broker hiccup.
    async fn publish(&self, event: Event) {
        let mut backoff = std::time::Duration::from_millis(200);
        loop {
            match self.producer.publish(&event).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::error!(error = %e, event_id = %event.event_id(), "Publishing a result failed; retrying.");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
