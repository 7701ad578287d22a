//! What the platform accepts, in one place: every user-supplied string has a maximum length (ids and
//! names a safe alphabet too), every number a range, every float is finite.
//!
//! The gateway checks a command with [`check_run_request`] before it publishes anything; the orchestrator
//! checks it again, since other systems publish commands too. Events built from checked input therefore
//! fit the broker's message limit by construction, and no id can carry a path separator or a newline
//! into an agent's files. Text that is not checked (a reason from an agent, a decode error) is cut to a
//! bound with [`truncate`] before it goes into an event, and user text in a message goes through
//! [`shown`], never `{:?}` (whose escapes can multiply a string's length by six).

use std::borrow::Cow;
use std::fmt;

use crate::events::RunRequested;
use crate::experiment::{ExperimentSpec, ParamValue, RollbackConfig, RunMode};

/// Longest run id, dispatch id or experiment id on an agent.
pub const MAX_ID_LEN: usize = 128;
/// Longest region name.
pub const MAX_REGION_LEN: usize = 64;
/// Longest experiment name.
pub const MAX_NAME_LEN: usize = 256;
/// Longest fault type (the catalogue's longest is 23 characters).
pub const MAX_FAULT_TYPE_LEN: usize = 64;
/// Longest free text: `requested_by`, a text parameter, a tag value, an abort reason.
pub const MAX_TEXT_LEN: usize = 1024;
/// Most tags on an experiment, and the longest tag key.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG_KEY_LEN: usize = 64;
/// Most items in a list parameter (column names, hosts).
pub const MAX_LIST_ITEMS: usize = 256;
/// Most regions a run names.
pub const MAX_REGIONS: usize = 1_000;
/// A reason carried in an event (RunRejected, RegionResult's message) is cut to this many bytes.
pub const MAX_REASON_LEN: usize = 2_048;
/// Longest fault the platform runs: a day. An agent refuses longer ones on principle.
pub const MAX_DURATION_MS: i64 = 86_400_000;
/// Longest rollback timeout, in seconds.
pub const MAX_ROLLBACK_TIMEOUT_S: i64 = 86_400;
/// Longest interval between rollback health checks, in seconds.
pub const MAX_HEALTH_CHECK_INTERVAL_S: f64 = 3_600.0;
/// Most steps of a gradual rollback.
pub const MAX_GRADUAL_STEPS: i32 = 100;
/// Most regions in flight at once in parallel mode.
pub const MAX_CONCURRENT: i32 = 10_000;

/// A value outside what the platform accepts: the field (as an experiment file names it) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub field: String,
    pub message: String,
}

impl fmt::Display for LimitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for LimitError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> LimitError {
    LimitError { field: field.into(), message: message.into() }
}

/// Whether `c` may appear in an id: letters, digits and `. _ : -` (no separator, space or control).
fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')
}

/// Checks an id (run, dispatch or experiment id): 1 to `max` characters of `[A-Za-z0-9._:-]`, not
/// starting with a dot (so it is never `.` or `..` as a file name).
pub fn check_id(field: &str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.is_empty() || value.len() > max {
        return Err(err(field, format!("must be 1 to {max} characters, got {}", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| !id_char(*c)) {
        return Err(err(field, format!("may hold only letters, digits and . _ : - (found {})", shown_char(bad))));
    }
    if value.starts_with('.') {
        return Err(err(field, "must not start with a dot"));
    }
    Ok(())
}

/// Checks free text: at most `max` bytes, no control characters other than tab.
pub fn check_text(field: &str, value: &str, max: usize) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(err(field, format!("must be at most {max} bytes, got {}", value.len())));
    }
    if let Some(bad) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(err(field, format!("must not hold control characters (found {})", shown_char(bad))));
    }
    Ok(())
}

/// Checks that a float is finite and within `[min, max]` (both ends included unless `open_min`).
fn check_float(field: &str, value: f64, min: f64, max: f64, open_min: bool) -> Result<(), LimitError> {
    let low_ok = if open_min { value > min } else { value >= min };
    if !value.is_finite() || !low_ok || value > max {
        let open = if open_min { '(' } else { '[' };
        return Err(err(field, format!("must be a finite number in {open}{min}, {max}], got {value}")));
    }
    Ok(())
}

fn check_int(field: &str, value: i64, min: i64, max: i64) -> Result<(), LimitError> {
    if !(min..=max).contains(&value) {
        return Err(err(field, format!("must be in [{min}, {max}], got {value}")));
    }
    Ok(())
}

/// Checks a rollback configuration: every number finite and in range.
pub fn check_rollback(r: &RollbackConfig) -> Result<(), LimitError> {
    check_int("rollback.timeout_seconds", r.timeout_seconds, 1, MAX_ROLLBACK_TIMEOUT_S)?;
    check_float("rollback.health_check_interval", r.health_check_interval_s, 0.0, MAX_HEALTH_CHECK_INTERVAL_S, true)?;
    check_float("rollback.failure_threshold", r.failure_threshold, 0.0, 1.0, false)?;
    check_float("rollback.canary_percentage", r.canary_percentage, 0.0, 100.0, true)?;
    check_int("rollback.gradual_steps", i64::from(r.gradual_steps), 1, i64::from(MAX_GRADUAL_STEPS))?;
    Ok(())
}

/// Checks an experiment's own bounds (the fault catalogue checks its parameters' meaning).
pub fn check_experiment(e: &ExperimentSpec) -> Result<(), LimitError> {
    check_text("name", &e.name, MAX_NAME_LEN)?;
    if e.name.trim().is_empty() {
        return Err(err("name", "must not be empty"));
    }
    check_id("fault_type", &e.fault_type, MAX_FAULT_TYPE_LEN)?;
    check_int("duration", e.duration_ms, 1, MAX_DURATION_MS).map_err(|_| {
        err("duration", format!("must be between 1 ms and {} s, got {} ms", MAX_DURATION_MS / 1000, e.duration_ms))
    })?;
    for (name, value) in &e.parameters {
        let field = format!("parameters.{}", shown(name));
        check_text(&field, name, MAX_TAG_KEY_LEN)?;
        match value {
            ParamValue::Float(v) if !v.is_finite() => {
                return Err(err(field, format!("must be a finite number, got {v}")));
            }
            ParamValue::Text(v) => check_text(&field, v, MAX_TEXT_LEN)?,
            ParamValue::List(items) => {
                if items.len() > MAX_LIST_ITEMS {
                    return Err(err(field, format!("must have at most {MAX_LIST_ITEMS} items, got {}", items.len())));
                }
                for item in items {
                    check_text(&field, item, MAX_TEXT_LEN)?;
                }
            }
            _ => {}
        }
    }
    if e.tags.len() > MAX_TAGS {
        return Err(err("tags", format!("must have at most {MAX_TAGS} entries, got {}", e.tags.len())));
    }
    for (key, value) in &e.tags {
        check_text("tags", key, MAX_TAG_KEY_LEN)?;
        check_text(&format!("tags.{}", shown(key)), value, MAX_TEXT_LEN)?;
    }
    check_rollback(&e.rollback)
}

/// Checks a whole RunRequested: ids, names, the experiment, the mode's numbers.
pub fn check_run_request(r: &RunRequested) -> Result<(), LimitError> {
    check_id("run_id", r.run_id.as_str(), MAX_ID_LEN)?;
    check_experiment(&r.experiment)?;
    if r.regions.len() > MAX_REGIONS {
        return Err(err("regions", format!("must name at most {MAX_REGIONS} regions, got {}", r.regions.len())));
    }
    for region in &r.regions {
        check_id("regions", region.as_str(), MAX_REGION_LEN)?;
    }
    if r.mode == RunMode::Parallel {
        check_int("max_concurrent", i64::from(r.max_concurrent), 1, i64::from(MAX_CONCURRENT))?;
    }
    if r.mode == RunMode::BlastRadius {
        check_float("blast_radius_percent", r.blast_radius_percent, 0.0, 100.0, true)?;
    } else if !r.blast_radius_percent.is_finite() {
        return Err(err("blast_radius_percent", format!("must be a finite number, got {}", r.blast_radius_percent)));
    }
    if let Some(min) = r.min_score {
        check_float("min_score", min, 0.0, 100.0, false)?;
    }
    check_text("requested_by", &r.requested_by, MAX_TEXT_LEN)
}

/// `text` cut to at most `max` bytes on a character boundary, saying how long it was when cut.
pub fn truncate(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub(32);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}… ({} bytes)", &text[..end], text.len()))
}

/// User text for a message: quoted, at most 64 characters, control characters as `\u{..}`. Bounded
/// whatever the input, unlike `{:?}`.
pub fn shown(text: &str) -> String {
    const MAX_CHARS: usize = 64;
    let mut out = String::with_capacity(text.len().min(MAX_CHARS * 2) + 2);
    out.push('"');
    for (i, c) in text.chars().enumerate() {
        if i == MAX_CHARS {
            out.push_str(&format!("…\" ({} bytes)", text.len()));
            return out;
        }
        if c.is_control() {
            out.push_str(&shown_char(c));
        } else {
            out.push(c);
        }
    }
    out.push('"');
    out
}

fn shown_char(c: char) -> String {
    if c.is_control() || c.is_whitespace() { format!("\\u{{{:x}}}", c as u32) } else { format!("{c:?}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiment::Layer;
    use crate::ids::{EventId, RegionName, RunId, TimestampMs};

    fn request() -> RunRequested {
        RunRequested {
            event_id: EventId::new("e"),
            occurred_at: TimestampMs(0),
            run_id: RunId::new("run-1"),
            experiment: ExperimentSpec {
                name: "slow".into(),
                layer: Layer::Infrastructure,
                fault_type: "network_latency".into(),
                parameters: Default::default(),
                duration_ms: 1_000,
                rollback: RollbackConfig::default(),
                tags: Default::default(),
            },
            regions: vec![RegionName::new("eu-west")],
            mode: RunMode::Parallel,
            max_concurrent: 2,
            fail_fast: false,
            blast_radius_percent: 100.0,
            min_score: None,
            requested_by: "test".into(),
        }
    }

    fn field_of(r: &RunRequested) -> Option<String> {
        check_run_request(r).err().map(|e| e.field)
    }

    #[test]
    fn a_valid_request_passes() {
        assert_eq!(check_run_request(&request()), Ok(()));
    }

    #[test]
    fn non_finite_floats_are_refused_by_name() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut r = request();
            r.experiment.rollback.health_check_interval_s = bad;
            assert_eq!(field_of(&r).as_deref(), Some("rollback.health_check_interval"));
            let mut r = request();
            r.experiment.rollback.canary_percentage = bad;
            assert_eq!(field_of(&r).as_deref(), Some("rollback.canary_percentage"));
            let mut r = request();
            r.experiment.rollback.failure_threshold = bad;
            assert_eq!(field_of(&r).as_deref(), Some("rollback.failure_threshold"));
            let mut r = request();
            r.min_score = Some(bad);
            assert_eq!(field_of(&r).as_deref(), Some("min_score"));
            let mut r = request();
            r.blast_radius_percent = bad;
            assert_eq!(field_of(&r).as_deref(), Some("blast_radius_percent"));
            let mut r = request();
            r.experiment.parameters.insert("latency_ms".into(), ParamValue::Float(bad));
            assert_eq!(field_of(&r).as_deref(), Some("parameters.\"latency_ms\""));
        }
    }

    #[test]
    fn what_every_agent_refuses_is_refused_here() {
        let mut r = request();
        r.experiment.duration_ms = 1_000_000_000;
        assert_eq!(field_of(&r).as_deref(), Some("duration"));
        let mut r = request();
        r.experiment.rollback.timeout_seconds = -1;
        assert_eq!(field_of(&r).as_deref(), Some("rollback.timeout_seconds"));
        for steps in [0, -3] {
            let mut r = request();
            r.experiment.rollback.gradual_steps = steps;
            assert_eq!(field_of(&r).as_deref(), Some("rollback.gradual_steps"));
        }
    }

    #[test]
    fn ids_keep_to_a_safe_alphabet_and_length() {
        for bad in ["../etc", "a/b", "line\nbreak", "", ".hidden", "sp ace"] {
            let mut r = request();
            r.run_id = RunId::new(bad);
            assert_eq!(field_of(&r).as_deref(), Some("run_id"), "{bad:?}");
        }
        let mut r = request();
        r.run_id = RunId::new("x".repeat(MAX_ID_LEN + 1));
        assert_eq!(field_of(&r).as_deref(), Some("run_id"));
        let mut r = request();
        r.regions = vec![RegionName::new("eu/west")];
        assert_eq!(field_of(&r).as_deref(), Some("regions"));
    }

    #[test]
    fn a_huge_control_character_fault_type_gives_a_short_message() {
        let mut r = request();
        r.experiment.fault_type = "\u{1}".repeat(250_000);
        let e = check_run_request(&r).expect_err("refused");
        assert_eq!(e.field, "fault_type");
        assert!(e.to_string().len() < 200, "{}", e.to_string().len());
    }

    #[test]
    fn truncate_and_shown_are_bounded() {
        assert_eq!(truncate("short", 10), "short");
        let long = "é".repeat(10_000);
        let cut = truncate(&long, 100);
        assert!(cut.len() <= 100 + 16, "{}", cut.len());
        assert!(cut.ends_with("(20000 bytes)"));
        let s = shown(&"\u{7}".repeat(1_000_000));
        assert!(s.len() < 600, "{}", s.len());
        assert_eq!(shown("ok"), "\"ok\"");
    }
}
