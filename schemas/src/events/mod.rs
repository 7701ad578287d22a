//! Typed events, one struct per `.avsc` file, and the [`Event`] enum that carries any of them.
//!
//! Each struct maps 1:1 to its schema: field names and order match, Avro enums are Rust enums with the
//! same symbols, unions with null are `Option`. The round-trip and golden tests in `codec` hold the two
//! together.

pub mod ab;
mod commands;
mod dispatch;
mod health;
mod optimizer;
mod regions;
mod results;
mod rollback;
mod schedules;

use apache_avro::types::Value;
use serde::{Deserialize, Serialize};

pub use ab::{
    AbDirection, AbJudgement, AbLabel, AbMetric, AbMetricJudgement, AbMetricSpec, AbSample, AbSide, AbTestConcluded,
    AbTestRequested, AbTestStatus, AbVariant, AbVerdict,
};
pub use commands::{AbortRequested, RollbackAction, RollbackRequested, RunRequested};
pub use dispatch::{RegionDispatched, RollbackStepRequested};
pub use health::{HealthStatus, RegionHealthSampled};
pub use optimizer::{ExperimentProposed, ModelQuality, ModelTrained, ProposalReason};
pub use regions::{RegionRegistered, RegionRemoved};
pub use results::{
    AggregateReport, RegionMetrics, RegionResult, RegionStatus, RegionSummary, RunCompleted, RunRejected, RunStarted,
    RunStatus, SCORE_VERSION,
};
pub use rollback::{
    CircuitState, CircuitStateChanged, FaultHeld, RollbackCompleted, RollbackFailed, RollbackPaused, RollbackStarted,
    RollbackStepApplied, RollbackTrigger,
};
pub use schedules::{
    ConcurrencyPolicy, ScheduleCreated, ScheduleRemoved, ScheduleSpec, ScheduleTicksSkipped, ScheduleUpdated,
    ScheduledExperiment, SkipReason,
};

use crate::ids::{EventId, RunId, TimestampMs};
use crate::topics::Topic;

/// Declares the catalogue once: variant, schema file, topic. Everything that must list every event
/// (kind names, schema texts, topic routing, Avro conversion) is generated from this one list, so adding an
/// event cannot miss a place.
macro_rules! catalogue {
    ($( $variant:ident => $file:literal, $topic:ident; )*) => {
        /// The type of an event, without its data.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum EventKind { $( $variant, )* }

        impl EventKind {
            /// Every event type in the catalogue.
            pub const ALL: &'static [EventKind] = &[ $( EventKind::$variant, )* ];

            /// The record name, e.g. `RunRequested`.
            pub fn name(self) -> &'static str {
                match self { $( EventKind::$variant => stringify!($variant), )* }
            }

            /// The `.avsc` file name under `schemas/avro/`.
            pub fn file_name(self) -> &'static str {
                match self { $( EventKind::$variant => $file, )* }
            }

            /// The schema text, as shipped in `schemas/avro/`.
            pub fn schema_text(self) -> &'static str {
                match self { $( EventKind::$variant => include_str!(concat!("../../avro/", $file)), )* }
            }

            /// The topic this event type is published to.
            pub fn topic(self) -> Topic {
                match self { $( EventKind::$variant => Topic::$topic, )* }
            }

            /// Looks a kind up by record name.
            pub fn from_name(name: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|kind| kind.name() == name)
            }
        }

        /// Any ChaosEater event.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "type")]
        pub enum Event { $( $variant($variant), )* }

        impl Event {
            /// The event's type.
            pub fn kind(&self) -> EventKind {
                match self { $( Event::$variant(_) => EventKind::$variant, )* }
            }

            /// The event's deterministic id.
            pub fn event_id(&self) -> &EventId {
                match self { $( Event::$variant(e) => &e.event_id, )* }
            }

            /// When the recorded fact happened.
            pub fn occurred_at(&self) -> TimestampMs {
                match self { $( Event::$variant(e) => e.occurred_at, )* }
            }

            /// Serializes the payload into an Avro value (not yet resolved against the schema).
            pub(crate) fn to_avro_value(&self) -> Result<Value, apache_avro::Error> {
                match self { $( Event::$variant(e) => apache_avro::to_value(e), )* }
            }

            /// Builds an event of `kind` from a decoded, resolved Avro value.
            pub(crate) fn from_avro_value(kind: EventKind, value: &Value) -> Result<Self, apache_avro::Error> {
                match kind { $( EventKind::$variant => apache_avro::from_value(value).map(Event::$variant), )* }
            }

            /// The event's fields without the `type` tag: what its Avro record holds (the codec's
            /// direct writer serializes this).
            pub(crate) fn body(&self) -> EventBody<'_> {
                EventBody(self)
            }

            /// Builds an event of `kind` straight from a deserializer (the codec's direct reader).
            pub(crate) fn deserialize_kind<'de, D: serde::Deserializer<'de>>(kind: EventKind, d: D) -> Result<Self, D::Error> {
                match kind { $( EventKind::$variant => $variant::deserialize(d).map(Event::$variant), )* }
            }
        }

        /// An event serialized as its record alone (see [`Event::body`]).
        #[derive(Debug)]
        pub(crate) struct EventBody<'a>(&'a Event);

        impl Serialize for EventBody<'_> {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                match self.0 { $( Event::$variant(e) => e.serialize(s), )* }
            }
        }

        $(
            impl From<$variant> for Event {
                fn from(event: $variant) -> Self { Event::$variant(event) }
            }
        )*
    };
}

catalogue! {
    RunRequested => "run_requested.avsc", Commands;
    AbortRequested => "abort_requested.avsc", Commands;
    AbTestRequested => "ab_test_requested.avsc", Commands;
    RollbackRequested => "rollback_requested.avsc", Commands;
    RegionRegistered => "region_registered.avsc", Regions;
    RegionRemoved => "region_removed.avsc", Regions;
    RegionDispatched => "region_dispatched.avsc", Dispatch;
    RollbackStepRequested => "rollback_step_requested.avsc", Dispatch;
    RunStarted => "run_started.avsc", Results;
    RegionResult => "region_result.avsc", Results;
    RunCompleted => "run_completed.avsc", Results;
    RunRejected => "run_rejected.avsc", Results;
    AbTestConcluded => "ab_test_concluded.avsc", Results;
    ModelTrained => "model_trained.avsc", Results;
    ExperimentProposed => "experiment_proposed.avsc", Results;
    RegionHealthSampled => "region_health_sampled.avsc", Health;
    FaultHeld => "fault_held.avsc", Rollback;
    RollbackStarted => "rollback_started.avsc", Rollback;
    RollbackStepApplied => "rollback_step_applied.avsc", Rollback;
    RollbackPaused => "rollback_paused.avsc", Rollback;
    RollbackCompleted => "rollback_completed.avsc", Rollback;
    RollbackFailed => "rollback_failed.avsc", Rollback;
    CircuitStateChanged => "circuit_state_changed.avsc", Rollback;
    ScheduleCreated => "schedule_created.avsc", Schedules;
    ScheduleUpdated => "schedule_updated.avsc", Schedules;
    ScheduleRemoved => "schedule_removed.avsc", Schedules;
    ScheduleTicksSkipped => "schedule_ticks_skipped.avsc", Results;
}

impl Event {
    /// The run this event belongs to, where one applies (registry, health, circuit and schedule events
    /// have none).
    pub fn run_id(&self) -> Option<&RunId> {
        match self {
            Event::RunRequested(e) => Some(&e.run_id),
            Event::AbortRequested(e) => Some(&e.run_id),
            Event::AbTestRequested(e) => Some(&e.run_id),
            Event::RollbackRequested(e) => Some(&e.run_id),
            Event::FaultHeld(e) => Some(&e.run_id),
            Event::RegionDispatched(e) => Some(&e.run_id),
            Event::RollbackStepRequested(e) => Some(&e.run_id),
            Event::RunStarted(e) => Some(&e.run_id),
            Event::RegionResult(e) => Some(&e.run_id),
            Event::RunCompleted(e) => Some(&e.run_id),
            Event::RunRejected(e) => Some(&e.run_id),
            Event::AbTestConcluded(e) => Some(&e.run_id),
            Event::RollbackStarted(e) => Some(&e.run_id),
            Event::RollbackStepApplied(e) => Some(&e.run_id),
            Event::RollbackPaused(e) => Some(&e.run_id),
            Event::RollbackCompleted(e) => Some(&e.run_id),
            Event::RollbackFailed(e) => Some(&e.run_id),
            Event::RegionRegistered(_)
            | Event::ModelTrained(_)
            | Event::ExperimentProposed(_)
            | Event::RegionRemoved(_)
            | Event::RegionHealthSampled(_)
            | Event::CircuitStateChanged(_)
            | Event::ScheduleCreated(_)
            | Event::ScheduleUpdated(_)
            | Event::ScheduleRemoved(_)
            | Event::ScheduleTicksSkipped(_) => None,
        }
    }

    /// The Kafka message key: the run id, the region for registry, health and circuit events, the
    /// schedule for schedule events, so that everything about one run (or one region, or one schedule)
    /// stays in order on one partition, and compaction keeps a schedule's latest definition.
    pub fn key(&self) -> &str {
        if let Some(run_id) = self.run_id() {
            return run_id.as_str();
        }
        match self {
            Event::RegionRegistered(e) => e.region.as_str(),
            Event::RegionRemoved(e) => e.region.as_str(),
            Event::RegionHealthSampled(e) => e.region.as_str(),
            Event::CircuitStateChanged(e) => e.region.as_str(),
            Event::ModelTrained(e) => e.model_id.as_str(),
            Event::ExperimentProposed(e) => e.proposal_id.as_str(),
            Event::ScheduleCreated(e) => e.schedule_id.as_str(),
            Event::ScheduleUpdated(e) => e.schedule_id.as_str(),
            Event::ScheduleRemoved(e) => e.schedule_id.as_str(),
            Event::ScheduleTicksSkipped(e) => e.schedule_id.as_str(),
            _ => self.event_id().as_str(),
        }
    }

    /// The topic the event is published to.
    pub fn topic(&self) -> Topic {
        self.kind().topic()
    }
}
