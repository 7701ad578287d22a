//! Schedules: experiments that run on a cron expression.
//!
//! - [`cron`]: a schedule's timing, a 5-field cron expression in an IANA time zone (the croner crate,
//!   chrono-tz), refused with a message naming what is wrong.
//! - [`plan`]: what time passing does to a schedule, as a pure function of its rules, where it left off
//!   (the cursor), the time and its runs in flight: each tick fires once, with a run id derived from
//!   the schedule and the tick; the concurrency policy skips, allows or replaces; ticks later than the
//!   starting deadline are skipped and reported.
//! - [`runs`]: a schedule's runs as the results topic tells them (in flight, the last finished), and
//!   the starting deadline's parser.
//!
//! The scheduler processor (schedules as events on a compacted topic, the cursor in its state store
//! beside its offsets, RunRequested per fired tick) is built on these and is not wired in yet.

pub mod cron;
pub mod plan;
pub mod runs;

#[cfg(test)]
mod tests;
