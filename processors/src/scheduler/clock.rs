//! Where schedules take the time from: the system clock, or for tests a file that holds it.
//!
//! A scheduler's tests are about minutes, days and downtimes; on the wall clock each tick of a
//! `* * * * *` schedule costs a minute of waiting, and a frozen process clock (libfaketime) makes
//! librdkafka's timed waits spin. The file clock freezes only the schedules' time: the scheduler's
//! decisions and the `schedule` commands' stamps read it, while the bus, the dedupe window and the
//! runner keep the system clock. A test writes a time, and the scheduler decides the ticks up to it at
//! its next tick (once a second).

use std::path::{Path, PathBuf};

use chaoseater_schemas::Error;
use chaoseater_schemas::ids::TimestampMs;

/// Where schedules take the time from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ScheduleClock {
    /// The system clock.
    #[default]
    System,
    /// A file holding milliseconds since the Unix epoch, as decimal digits; read at each use, so a
    /// test moves the time by replacing the file (write, then rename, so a reader never sees half).
    File(PathBuf),
}

impl ScheduleClock {
    /// The environment variable that names a clock file (for tests; unset, the system clock).
    pub const ENV: &'static str = "CHAOSEATER_SCHEDULE_CLOCK";

    /// The clock `value` (the variable's value, if set) names.
    pub fn from_var(value: Option<std::ffi::OsString>) -> Self {
        match value {
            Some(path) if !path.is_empty() => Self::File(PathBuf::from(path)),
            _ => Self::System,
        }
    }

    /// The time now. A clock file that cannot be read or does not hold a time is an error naming it
    /// (retried by the scheduler's runner), never a silent fall back to the system clock.
    pub fn now(&self) -> Result<TimestampMs, Error> {
        match self {
            Self::System => Ok(TimestampMs::now()),
            Self::File(path) => read(path),
        }
    }
}

fn read(path: &Path) -> Result<TimestampMs, Error> {
    // A few bytes from a local file: no runtime's worth of blocking.
    let text =
        std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
    text.trim().parse::<i64>().map(TimestampMs).map_err(|e| Error::Io {
        path: path.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not milliseconds since the epoch: {e}")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_clock_reads_what_was_written_and_names_a_bad_file() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("clock");
        let clock = ScheduleClock::from_var(Some(path.clone().into_os_string()));
        assert_eq!(clock, ScheduleClock::File(path.clone()));
        let missing = clock.now().expect_err("no file yet").to_string();
        assert!(missing.contains("clock"), "{missing}");
        std::fs::write(&path, "1764979200000\n").expect("write");
        assert_eq!(clock.now().expect("a time"), TimestampMs(1_764_979_200_000));
        std::fs::write(&path, "soon").expect("write");
        let bad = clock.now().expect_err("not a time").to_string();
        assert!(bad.contains("not milliseconds"), "{bad}");
        assert_eq!(ScheduleClock::from_var(None), ScheduleClock::System);
        assert_eq!(ScheduleClock::from_var(Some("".into())), ScheduleClock::System);
        let before = TimestampMs::now();
        assert!(ScheduleClock::System.now().expect("system") >= before);
    }
}
