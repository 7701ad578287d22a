//! A schedule's timing: a 5-field cron expression read in an IANA time zone.

use std::str::FromStr;

use chaoseater_schemas::ids::TimestampMs;
use chrono::{TimeZone, Utc};
use chrono_tz::Tz;

/// Why a schedule's timing was refused. Each names what it refused, for the CLI's exit-2 message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimingError {
    #[error("cron expression {expr:?}: {reason} (expected 5 fields: minute hour day-of-month month day-of-week)")]
    Cron { expr: String, reason: String },
    #[error("time zone {tz:?} is not an IANA time zone name (for example UTC, Europe/Paris, America/New_York)")]
    TimeZone { tz: String },
}

/// When a schedule fires: its cron expression in its time zone.
#[derive(Debug, Clone)]
pub struct Timing {
    expr: String,
    tz: Tz,
    cron: croner::Cron,
}

impl Timing {
    /// Parses `expr` (exactly five fields; seconds and `@daily`-style macros are refused, so the
    /// expression means the same here as in crontab, Kubernetes and Chaos Mesh) in the zone `tz`.
    pub fn parse(expr: &str, tz: &str) -> Result<Self, TimingError> {
        let fields = expr.split_whitespace().count();
        if fields != 5 {
            return Err(TimingError::Cron { expr: expr.to_owned(), reason: format!("{fields} fields") });
        }
        let cron = croner::Cron::from_str(expr)
            .map_err(|e| TimingError::Cron { expr: expr.to_owned(), reason: e.to_string() })?;
        let tz = Tz::from_str(tz).map_err(|_| TimingError::TimeZone { tz: tz.to_owned() })?;
        Ok(Self { expr: expr.to_owned(), tz, cron })
    }

    pub fn expr(&self) -> &str {
        &self.expr
    }

    pub fn time_zone(&self) -> &str {
        self.tz.name()
    }

    /// The first tick strictly after `after`, or None when the expression never matches again (a
    /// 30th of February) or the time is out of chrono's range.
    pub fn next_after(&self, after: TimestampMs) -> Option<TimestampMs> {
        // croner keeps the sub-second part of the time it starts from: start from the whole second
        // (still strictly before any tick after `after`), and a tick is on its whole second.
        let whole = after.0.div_euclid(1000);
        let local = Utc.timestamp_opt(whole, 0).single()?.with_timezone(&self.tz);
        let next = self.cron.find_next_occurrence(&local, false).ok()?;
        Some(TimestampMs(next.timestamp().saturating_mul(1000)))
    }

    /// `at` as a wall-clock time in the schedule's zone and in UTC, e.g.
    /// `2026-12-08 03:00 CET (2026-12-08T02:00:00Z)`.
    pub fn show(&self, at: TimestampMs) -> String {
        show_in(&self.tz, at)
    }
}

/// `at` in `tz`, and in UTC when the zone is not UTC.
fn show_in(tz: &Tz, at: TimestampMs) -> String {
    let Some(utc) = Utc.timestamp_millis_opt(at.0).single() else { return format!("{} ms", at.0) };
    let iso = utc.format("%Y-%m-%dT%H:%M:%SZ");
    if *tz == Tz::UTC {
        return iso.to_string();
    }
    format!("{} ({iso})", utc.with_timezone(tz).format("%Y-%m-%d %H:%M %Z"))
}

/// `at` in UTC, e.g. `2026-12-08T02:00:00Z`.
pub fn show_utc(at: TimestampMs) -> String {
    show_in(&Tz::UTC, at)
}
