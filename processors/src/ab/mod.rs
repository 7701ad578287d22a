//! A/B tests of resilience: which of two configurations of a pipeline holds up better under the same
//! fault. [`judge`] is the statistics, as pure functions; the coordinator that runs the samples through
//! the normal saga arrives beside it.

pub mod judge;
