//! An A/B test's report (the AbTestConcluded the coordinator published) as text, JSON or Markdown.
//! The JSON keeps the report's field names, which other tools read: per metric `samples_a`,
//! `samples_b`, `n_a`, `n_b`, `u`, `z`, `p_value`, `hl_estimate`, `ci_low`, `ci_high`, `confidence`,
//! `mean_ratio`, `prob_superiority`, `label`; overall `verdict`, `score`, `mde`.

use std::io::Write;

use chaoseater_schemas::events::{AbDirection, AbLabel, AbSide, AbTestConcluded, AbVerdict, RunStatus};
use serde_json::json;

/// How a report is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
    Markdown,
}

impl Format {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            "markdown" | "md" => Some(Format::Markdown),
            _ => None,
        }
    }
}

pub fn label_text(label: AbLabel) -> &'static str {
    match label {
        AbLabel::Better => "B better",
        AbLabel::Worse => "B worse",
        AbLabel::NoDifference => "no difference",
    }
}

fn verdict_text(verdict: AbVerdict) -> &'static str {
    match verdict {
        AbVerdict::BBetter => "B holds up BETTER than A",
        AbVerdict::BWorse => "B holds up WORSE than A",
        AbVerdict::Mixed => "MIXED: B is better on some metrics and worse on others",
        AbVerdict::NoSignificantDifference => "NO SIGNIFICANT DIFFERENCE between A and B",
    }
}

fn direction_text(direction: AbDirection) -> &'static str {
    match direction {
        AbDirection::HigherIsBetter => "higher",
        AbDirection::LowerIsBetter => "lower",
    }
}

/// The report as the JSON other tools read.
pub fn json(report: &AbTestConcluded) -> serde_json::Value {
    let judgement = report.judgement.as_ref();
    json!({
        "test_id": report.run_id,
        "status": report.status.as_str(),
        "reason": report.reason,
        "label_a": report.label_a,
        "label_b": report.label_b,
        "samples_per_variant": report.samples_per_variant,
        "confidence": report.confidence,
        "tolerance": report.tolerance,
        "samples": report.samples,
        "metrics": judgement.map(|j| j.metrics.clone()).unwrap_or_default(),
        "verdict": judgement.map(|j| j.verdict.as_str()),
        "score": judgement.map(|j| j.score),
        "mde": judgement.map(|j| j.mde),
    })
}

/// Samples that ran per variant, and how many of them failed.
fn counts(report: &AbTestConcluded, side: AbSide) -> (usize, usize) {
    let of_side = report.samples.iter().filter(|s| s.variant == side);
    let failed = of_side.clone().filter(|s| s.status != RunStatus::Completed).count();
    (of_side.count(), failed)
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn print(report: &AbTestConcluded, format: Format, out: &mut impl Write) -> std::io::Result<()> {
    match format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&json(report)).unwrap_or_default()),
        Format::Text => text(report, out),
        Format::Markdown => markdown(report, out),
    }
}

fn headline(report: &AbTestConcluded) -> String {
    match &report.judgement {
        Some(j) => {
            format!("{} (score {:.0}, {:.0}% confidence)", verdict_text(j.verdict), j.score, report.confidence * 100.0)
        }
        None => format!("{}: not judged", report.status.as_str()),
    }
}

fn text(report: &AbTestConcluded, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "A/B test {}: A = {}, B = {}", report.run_id, report.label_a, report.label_b)?;
    writeln!(out, "  verdict  {}", headline(report))?;
    for side in [AbSide::A, AbSide::B] {
        let (ran, failed) = counts(report, side);
        writeln!(out, "  samples  {} {ran} of {} ({failed} failed)", side.as_str(), report.samples_per_variant)?;
    }
    if let Some(reason) = &report.reason {
        writeln!(out, "  note     {reason}")?;
    }
    let Some(judgement) = &report.judgement else { return Ok(()) };
    writeln!(
        out,
        "  {:<21} {:<7} {:>9} {:>9} {:>10} {:>23} {:>8}  label",
        "metric", "better", "median A", "median B", "shift B-A", "interval", "p"
    )?;
    for m in &judgement.metrics {
        writeln!(
            out,
            "  {:<21} {:<7} {:>9.3} {:>9.3} {:>10.3} {:>23} {:>8.4}  {}",
            m.metric,
            direction_text(m.direction),
            median(&m.samples_a),
            median(&m.samples_b),
            m.hl_estimate,
            format!("[{:.3}, {:.3}]", m.ci_low, m.ci_high),
            m.p_value,
            label_text(m.label)
        )?;
    }
    let undetected: Vec<String> = judgement
        .metrics
        .iter()
        .filter(|m| m.label == AbLabel::NoDifference)
        .map(|m| format!("{} {:.3}", m.metric, m.mde))
        .collect();
    if !undetected.is_empty() {
        writeln!(out, "  smallest shifts these samples detect (80% power): {}", undetected.join(", "))?;
    }
    Ok(())
}

fn markdown(report: &AbTestConcluded, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "### A/B test `{}`: A = {}, B = {}\n", report.run_id, report.label_a, report.label_b)?;
    writeln!(out, "**{}**\n", headline(report))?;
    for side in [AbSide::A, AbSide::B] {
        let (ran, failed) = counts(report, side);
        writeln!(out, "- samples {}: {ran} of {} ({failed} failed)", side.as_str(), report.samples_per_variant)?;
    }
    if let Some(reason) = &report.reason {
        writeln!(out, "- note: {reason}")?;
    }
    let Some(judgement) = &report.judgement else { return Ok(()) };
    writeln!(out, "\n| metric | better | median A | median B | shift B−A | interval | p | label | MDE |")?;
    writeln!(out, "|---|---|---:|---:|---:|---|---:|---|---:|")?;
    for m in &judgement.metrics {
        writeln!(
            out,
            "| {} | {} | {:.3} | {:.3} | {:.3} | [{:.3}, {:.3}] | {:.4} | {} | {:.3} |",
            m.metric,
            direction_text(m.direction),
            median(&m.samples_a),
            median(&m.samples_b),
            m.hl_estimate,
            m.ci_low,
            m.ci_high,
            m.p_value,
            label_text(m.label),
            m.mde
        )?;
    }
    Ok(())
}
