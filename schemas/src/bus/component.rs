//! The shape every long-running part takes, so that `serve` and `demo` start them all the same way and a
//! new one arrives as a folder plus one entry in its role crate's list.
//!
//! A [`Component`] has a name and the topics it reads. [`Component::prepare`] makes what must outlive a
//! restart (its state store, a listening socket, credentials) once; [`Prepared::start`] starts one try of
//! it and returns a [`Handle`] that owns every task the try spawned (the runner and its workers, senders,
//! monitors, servers). One [`Shutdown`] type reaches all of them: when it fires, or when any of them
//! fails, the handle stops the rest and joins them.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::processor::{DEFAULT_DEDUPE_WINDOW, Processor, ProcessorRunner, RunnerOptions};
use super::{BusContext, StateStore};
use crate::topics::Topic;

/// How long the other tasks of a try get to stop after one of them failed.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Any error a component's task ends with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a component could not start, or why it stopped.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct ComponentError {
    context: String,
    #[source]
    source: BoxError,
}

impl ComponentError {
    pub fn new(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self { context: context.into(), source: source.into() }
    }
}

/// A configuration section that does not hold together (checked when the configuration loads).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The stop signal. Clones share it; [`Shutdown::child`] makes one that also stops on its own.
#[derive(Debug, Clone, Default)]
pub struct Shutdown(CancellationToken);

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks everything holding this signal (and its children) to stop.
    pub fn trigger(&self) {
        self.0.cancel();
    }

    pub fn is_triggered(&self) -> bool {
        self.0.is_cancelled()
    }

    /// Resolves once the signal fires.
    pub async fn wait(&self) {
        self.0.cancelled().await;
    }

    /// A signal that fires with this one, or alone when triggered itself.
    pub fn child(&self) -> Self {
        Self(self.0.child_token())
    }
}

/// What a component is given to prepare itself, besides its own configuration (which it holds).
#[derive(Debug, Clone)]
pub struct Env {
    pub bus: BusContext,
    /// The component's own directory for state.
    pub state_dir: PathBuf,
    /// The broker is the embedded one: a new, empty log each session, so stored offsets from an earlier
    /// session mean nothing.
    pub embedded: bool,
    /// The runner's options, with this component's share of the DLQ duty.
    pub runner: RunnerOptions,
}

impl Env {
    /// The component's state store in [`Env::state_dir`], emptied first on the embedded broker.
    pub fn open_store(&self) -> Result<StateStore, ComponentError> {
        if self.embedded {
            let _ = std::fs::remove_dir_all(&self.state_dir);
        }
        StateStore::open(&self.state_dir)
            .map_err(|e| ComponentError::new(format!("opening the state store in {}", self.state_dir.display()), e))
    }
}

/// A long-running part of the service: a processor with what runs beside it, or a sink.
pub trait Component: Send + Sync {
    /// Its name: what `serve --processors` takes, its state directory, its client id.
    fn name(&self) -> &'static str;

    /// The topics it reads (the first component reading a topic copies its bad messages to the DLQ).
    fn topics(&self) -> Vec<Topic>;

    /// Whether `serve` runs it when not told which to run. Defaults to yes.
    fn enabled_by_default(&self) -> bool {
        true
    }

    /// Makes what lasts across restarts (store, socket, credentials) and returns how to start a try.
    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError>;
}

type Starter = Box<dyn FnMut(Shutdown) -> Result<Handle, ComponentError> + Send>;

/// A prepared component: start it as often as its supervisor needs.
pub struct Prepared {
    start: Starter,
    listening: Option<std::net::SocketAddr>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("listening", &self.listening).finish_non_exhaustive()
    }
}

impl Prepared {
    pub fn new(start: impl FnMut(Shutdown) -> Result<Handle, ComponentError> + Send + 'static) -> Self {
        Self { start: Box::new(start), listening: None }
    }

    /// Notes the address it serves on.
    pub fn listening_on(mut self, addr: std::net::SocketAddr) -> Self {
        self.listening = Some(addr);
        self
    }

    /// The address it serves on, if it listens.
    pub fn listening(&self) -> Option<std::net::SocketAddr> {
        self.listening
    }

    /// Starts one try, stopping when `shutdown` fires.
    pub fn start(&mut self, shutdown: Shutdown) -> Result<Handle, ComponentError> {
        (self.start)(shutdown)
    }
}

/// The tasks of one try of a component. Dropping it aborts them; [`Handle::join`] waits for them.
#[derive(Debug)]
pub struct Handle {
    name: &'static str,
    shutdown: Shutdown,
    tasks: JoinSet<(&'static str, Result<(), BoxError>)>,
    /// How long the others get to stop after a failure.
    grace: Duration,
}

impl Handle {
    /// An empty handle whose tasks stop when `shutdown` fires.
    pub fn new(name: &'static str, shutdown: &Shutdown) -> Self {
        Self { name, shutdown: shutdown.child(), tasks: JoinSet::new(), grace: STOP_GRACE }
    }

    /// Gives the other tasks `grace` (instead of [`STOP_GRACE`]) to stop after one failed.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The signal its tasks wait on: the caller's, or this handle's own when one of them failed.
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Adds a task, named in errors. It must end when [`Handle::shutdown`] fires.
    pub fn spawn<F, E>(&mut self, what: &'static str, task: F)
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError>,
    {
        self.tasks.spawn(async move { (what, task.await.map_err(Into::into)) });
    }

    /// Adds `processor` under a [`ProcessorRunner`] on `store`, as the handle's main task.
    pub fn spawn_runner<P: Processor + Sync + 'static>(
        &mut self,
        bus: &BusContext,
        processor: P,
        store: StateStore,
        options: RunnerOptions,
    ) -> Result<(), ComponentError> {
        let runner = ProcessorRunner::new(bus.clone(), processor, store, options)
            .map_err(|e| ComponentError::new("starting the processor runner", e))?;
        let shutdown = self.shutdown();
        self.spawn("runner", async move { runner.run(shutdown.wait()).await.map(drop) });
        Ok(())
    }

    /// Waits until the shutdown fires and every task has ended, or until one task fails or ends on its
    /// own: then the others are stopped and joined (those still running after [`STOP_GRACE`] are
    /// aborted), and that is the error.
    pub async fn join(mut self) -> Result<(), ComponentError> {
        let mut failure = None;
        let mut grace_ends = None;
        loop {
            let joined = match grace_ends {
                None => self.tasks.join_next().await,
                Some(deadline) => match tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        tracing::warn!(
                            component = self.name,
                            left = self.tasks.len(),
                            "Tasks did not stop in time; aborting them."
                        );
                        self.tasks.abort_all();
                        while self.tasks.join_next().await.is_some() {}
                        break;
                    }
                },
            };
            let Some(joined) = joined else { break };
            let error = match joined {
                Ok((_, Ok(()))) if self.shutdown.is_triggered() => continue,
                Ok((what, Ok(()))) => ComponentError::new(what, "it stopped on its own"),
                Ok((what, Err(e))) => ComponentError::new(what, e),
                Err(e) => ComponentError::new("a task", format!("it panicked: {e}")),
            };
            if failure.is_none() {
                // The first failure is the component's; the others stopping after it are consequences.
                tracing::debug!(component = self.name, error = %error, "A task ended; stopping the others.");
                self.shutdown.trigger();
                grace_ends = Some(tokio::time::Instant::now() + self.grace);
                failure = Some(error);
            } else {
                tracing::warn!(component = self.name, error = %error, "Another task failed while stopping.");
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// A component that is one processor under the runner, made anew for each try.
pub struct ProcessorComponent<P> {
    name: &'static str,
    topics: Vec<Topic>,
    make: std::sync::Arc<dyn Fn() -> P + Send + Sync>,
}

impl<P> std::fmt::Debug for ProcessorComponent<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessorComponent").field("name", &self.name).field("topics", &self.topics).finish()
    }
}

impl<P: Processor + Sync + 'static> ProcessorComponent<P> {
    pub fn new(make: impl Fn() -> P + Send + Sync + 'static) -> Self {
        let sample = make();
        Self { name: sample.name(), topics: sample.topics(), make: std::sync::Arc::new(make) }
    }
}

impl<P: Processor + Sync + 'static> Component for ProcessorComponent<P> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn topics(&self) -> Vec<Topic> {
        self.topics.clone()
    }

    fn prepare(&self, env: Env) -> Result<Prepared, ComponentError> {
        let store = env.open_store()?;
        let (name, make) = (self.name, self.make.clone());
        Ok(Prepared::new(move |shutdown| {
            let mut handle = Handle::new(name, &shutdown);
            handle.spawn_runner(&env.bus, make(), store.clone(), env.runner.clone())?;
            Ok(handle)
        }))
    }
}

/// How the processors consume (`[processors]` in `chaoseater.toml`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerConfig {
    /// Hours an applied event's id is remembered to drop a duplicate of it, in event time behind the
    /// newest event applied.
    #[serde(default = "default_dedupe_window_h")]
    pub dedupe_window_h: f64,
}

fn default_dedupe_window_h() -> f64 {
    DEFAULT_DEDUPE_WINDOW.as_secs_f64() / 3600.0
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self { dedupe_window_h: default_dedupe_window_h() }
    }
}

impl RunnerConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Above ten years: a window that long is "remember every id", and seconds beyond that overflow.
        if !(self.dedupe_window_h.is_finite() && self.dedupe_window_h > 0.0 && self.dedupe_window_h <= 87_600.0) {
            return Err(ConfigError(
                "processors.dedupe_window_h must be a positive number of hours (at most 87600)".into(),
            ));
        }
        Ok(())
    }

    /// The runner's options with these settings, the rest at their defaults.
    pub fn options(&self) -> RunnerOptions {
        RunnerOptions { dedupe_window: Duration::from_secs_f64(self.dedupe_window_h * 3600.0), ..Default::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn waits(shutdown: Shutdown) -> Result<(), BoxError> {
        shutdown.wait().await;
        Ok(())
    }

    #[tokio::test]
    async fn a_shutdown_stops_and_joins_every_task() {
        let shutdown = Shutdown::new();
        let mut handle = Handle::new("test", &shutdown);
        handle.spawn("one", waits(handle.shutdown()));
        handle.spawn("two", waits(handle.shutdown()));
        shutdown.trigger();
        handle.join().await.expect("a clean stop");
    }

    #[tokio::test]
    async fn one_failing_task_stops_the_others_and_is_the_error() {
        let shutdown = Shutdown::new();
        let mut handle = Handle::new("test", &shutdown);
        let side = handle.shutdown();
        handle.spawn("worker", waits(handle.shutdown()));
        handle.spawn("runner", async { Err::<(), _>("store unavailable") });
        let error = handle.join().await.expect_err("fails").to_string();
        assert_eq!(error, "runner: store unavailable");
        assert!(side.is_triggered(), "the worker was told to stop");
        assert!(!shutdown.is_triggered(), "the caller's signal is its own");
    }

    #[tokio::test]
    async fn a_task_ignoring_the_signal_is_aborted_after_the_grace() {
        let mut handle = Handle::new("test", &Shutdown::new()).with_grace(Duration::from_millis(50));
        handle.spawn("deaf", async {
            std::future::pending::<()>().await;
            Ok::<(), BoxError>(())
        });
        handle.spawn("runner", async { Err::<(), _>("broker gone") });
        let error = handle.join().await.expect_err("fails").to_string();
        assert_eq!(error, "runner: broker gone");
    }

    #[tokio::test]
    async fn a_task_ending_on_its_own_is_a_failure() {
        let shutdown = Shutdown::new();
        let mut handle = Handle::new("test", &shutdown);
        handle.spawn("sender", async { Ok::<(), BoxError>(()) });
        let error = handle.join().await.expect_err("fails").to_string();
        assert_eq!(error, "sender: it stopped on its own");
    }
}
