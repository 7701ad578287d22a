//! A/B tests of resilience: which of two configurations of a pipeline holds up better under a fault.
//!
//! - [`judge`]: the statistics, as pure functions (Mann-Whitney U, Hodges-Lehmann shift and interval,
//!   Kayenta's classification).
//! - [`test`]: one test's samples and where each stands, pure and advanced only by events.
//! - [`coordinator`]: the processor that runs the samples through the normal saga and concludes each
//!   test with AbTestConcluded.

pub mod coordinator;
pub mod judge;
pub mod test;

pub use coordinator::AbCoordinator;

#[cfg(test)]
mod tests;
