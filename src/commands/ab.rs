//! `chaoseater ab`: A/B tests of resilience. `ab judge` judges two sets of samples given on the command
//! line with the judge every A/B test uses (`chaoseater_processors::ab::judge`).

use anyhow::{Result, bail};
use chaoseater_processors::ab::judge::{self, Direction, JudgeOptions, MetricJudgement, MetricSamples};

use crate::cli::{AbCommand, AbJudgeArgs};
use crate::{EXIT_INVALID_INPUT, Exit};

pub fn run(command: AbCommand) -> Result<()> {
    match command {
        AbCommand::Judge(args) => judge(args),
    }
}

fn judge(args: AbJudgeArgs) -> Result<()> {
    let refuse = |m: String| Exit(EXIT_INVALID_INPUT, m);
    let (a, b) = (values("--a", &args.a).map_err(refuse)?, values("--b", &args.b).map_err(refuse)?);
    if !matches!(args.format.as_str(), "text" | "json") {
        bail!(refuse(format!("--format {:?}: one of text, json", args.format)));
    }
    let direction = if args.lower_is_better { Direction::LowerIsBetter } else { Direction::HigherIsBetter };
    let options = JudgeOptions { confidence: args.confidence, tolerance: args.tolerance, ..JudgeOptions::default() };
    let samples = MetricSamples { metric: args.metric, direction, a, b };
    let judged = judge::judge_metric(&samples, &options).map_err(|e| refuse(e.to_string()))?;
    match args.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(&judged)?),
        _ => print_judgement(&judged),
    }
    Ok(())
}

/// Comma-separated numbers; the flag named in the error.
fn values(flag: &str, text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .enumerate()
        .map(|(i, v)| match v.parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(x),
            _ => Err(format!("{flag}: value {} ({v:?}) is not a finite number", i + 1)),
        })
        .collect()
}

fn print_judgement(m: &MetricJudgement) {
    let verdict = match m.label {
        judge::Label::Better => "B better",
        judge::Label::Worse => "B worse",
        judge::Label::NoDifference => "no difference",
    };
    println!("{}: {verdict} (n = {} / {}, {:.0}% confidence)", m.metric, m.n_a, m.n_b, m.confidence * 100.0);
    println!("  Mann-Whitney U of B against A  {:.1}   z {:.3}   p {:.4}", m.u, m.z, m.p_value);
    println!("  shift of B (Hodges-Lehmann)    {:.4}   interval [{:.4}, {:.4}]", m.hl_estimate, m.ci_low, m.ci_high);
    let ratio = m.mean_ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
    println!("  mean ratio B/A {ratio}   P(B > A) {:.3}", m.prob_superiority);
    if m.label == judge::Label::NoDifference {
        println!("  smallest shift these samples detect (80% power): {:.4}", m.mde);
    }
}
