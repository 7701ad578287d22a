//! `chaoseater ab`: A/B tests of resilience. `ab FILE` submits the test in a file's `ab:` section,
//! follows its samples and prints the coordinator's report (a CI gate with `--expect`); `ab judge`
//! judges two sets of samples given on the command line with the judge every A/B test uses
//! (`chaoseater_processors::ab::judge`).

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use chaoseater_processors::ab::judge::{self, Direction, JudgeOptions, MetricJudgement, MetricSamples};
use chaoseater_producers::gateway::{AbOverrides, parse_ab_test};
use chaoseater_schemas::bus::{BusContext, EventConsumer, EventProducer, StartFrom};
use chaoseater_schemas::events::{AbLabel, AbSide, AbTestConcluded, AbTestRequested, AbTestStatus, AbVerdict, Event};
use chaoseater_schemas::ids::{RunId, TimestampMs};
use chaoseater_schemas::topics::Topic;

use super::ab_report;
use crate::cli::{AbArgs, AbCommand, AbJudgeArgs, AbReportArgs, AbTestArgs};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit, broker};

pub async fn run(args: AbArgs, config: &Config) -> Result<()> {
    match args.command {
        Some(AbCommand::Judge(args)) => judge(args),
        Some(AbCommand::Report(args)) => report(args, config).await,
        None => test(args.test, config).await,
    }
}

/// `ab report ID`: the report as the coordinator concluded it, from the history.
async fn report(args: AbReportArgs, config: &Config) -> Result<()> {
    let refuse = |m: String| Exit(EXIT_INVALID_INPUT, m);
    let format = ab_report::Format::parse(&args.format)
        .ok_or_else(|| refuse(format!("--format {:?}: one of text, json, markdown", args.format)))?;
    let analytics = super::history::open(&args.history, config).await?;
    let Some(report) = analytics.ab_report(&args.test_id).await.map_err(super::history::answer_err)? else {
        bail!(refuse(format!(
            "no A/B test {} in the history at {} (a test reaches it once it concluded)",
            chaoseater_schemas::limits::shown(&args.test_id),
            analytics.dir().display()
        )));
    };
    ab_report::print(&report, format, &mut std::io::stdout().lock())?;
    Ok(())
}

/// What `--expect` asks of the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// B judged better (some metric better, none worse).
    BBetter,
    /// No metric of B judged worse (a test that concluded).
    NotWorse,
}

impl Expect {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "b-better" => Some(Expect::BBetter),
            "not-worse" => Some(Expect::NotWorse),
            _ => None,
        }
    }

    /// Whether the report meets the expectation.
    pub fn met_by(self, report: &AbTestConcluded) -> bool {
        let Some(judgement) = report.judgement.as_ref().filter(|_| report.status == AbTestStatus::Concluded) else {
            return false;
        };
        match self {
            Expect::BBetter => judgement.verdict == AbVerdict::BBetter,
            Expect::NotWorse => judgement.metrics.iter().all(|m| m.label != AbLabel::Worse),
        }
    }
}

async fn test(args: AbTestArgs, config: &Config) -> Result<()> {
    let refuse = |m: String| Exit(EXIT_INVALID_INPUT, m);
    let Some(path) = args.file else { bail!(refuse("give an A/B test file (chaoseater ab FILE)".into())) };
    let expect = match args.expect.as_deref() {
        None => None,
        Some(text) => {
            Some(Expect::parse(text).ok_or_else(|| refuse(format!("--expect {text:?}: one of b-better, not-worse")))?)
        }
    };
    let format = ab_report::Format::parse(&args.format)
        .ok_or_else(|| refuse(format!("--format {:?}: one of text, json, markdown", args.format)))?;
    let file = path.display().to_string();
    let text = std::fs::read_to_string(&path).map_err(|e| refuse(format!("{file}: cannot read: {e}")))?;
    let overrides = AbOverrides { samples: args.samples };
    let request = parse_ab_test(&file, &text, &overrides, &super::submit::requester(), TimestampMs::now())
        .map_err(|e| refuse(e.to_string()))?;
    if args.dry_run {
        println!("{}", serde_json::to_string(&Event::AbTestRequested(request))?);
        return Ok(());
    }
    let ctx = broker::client_context(config)?;
    super::ensure_topics(&ctx, config.brokers.is_none()).await?;
    EventProducer::new(&ctx)?.publish(&Event::AbTestRequested(request.clone())).await?;
    // Progress on stderr, the report alone on stdout (`--format json` pipes into other tools).
    eprintln!("{}", describe(&request));
    let report = follow(&ctx, &request, Duration::from_secs_f64(args.timeout.max(1.0))).await?;
    ab_report::print(&report, format, &mut std::io::stdout().lock())?;
    let passed = match expect {
        Some(expect) => expect.met_by(&report),
        None => report.status == AbTestStatus::Concluded,
    };
    if !passed {
        let why = match (expect, report.status) {
            (_, AbTestStatus::Aborted | AbTestStatus::Failed) => format!("the test {}", report.status.as_str()),
            (Some(Expect::BBetter), _) => "--expect b-better: B was not judged better".to_owned(),
            (Some(Expect::NotWorse), _) => "--expect not-worse: B was judged worse on a metric".to_owned(),
            (None, _) => "the test did not conclude".to_owned(),
        };
        bail!(Exit(1, why));
    }
    Ok(())
}

/// One line naming the test and its variants.
pub fn describe(request: &AbTestRequested) -> String {
    let side = |side: AbSide| {
        let v = request.variant(side);
        let regions: Vec<&str> = v.regions.iter().map(|r| r.as_str()).collect();
        let e = request.experiment_of(side);
        format!(
            "{} = {} in {} ({} {:.1} s)",
            side.as_str(),
            v.label,
            regions.join(","),
            e.fault_type,
            e.duration_ms as f64 / 1000.0
        )
    };
    format!(
        "A/B test {}: {}; {}; {} samples each, interleaved",
        request.run_id,
        side(AbSide::A),
        side(AbSide::B),
        request.samples_per_variant
    )
}

/// Follows a test on the results topic until its report (or `timeout`), printing each sample as it ends
/// with the samples done per variant.
pub async fn follow(ctx: &BusContext, request: &AbTestRequested, timeout: Duration) -> Result<AbTestConcluded> {
    let topic = ctx.topics.name(Topic::Results);
    let consumer = EventConsumer::assign(
        ctx,
        "chaoseater-ab-follow",
        &[topic.as_str()],
        &Default::default(),
        StartFrom::Beginning,
    )
    .await?;
    let started = Instant::now();
    let id = &request.run_id;
    let prefix = format!("{id}.");
    let n = request.samples_per_variant;
    let (mut done_a, mut done_b) = (std::collections::BTreeSet::new(), std::collections::BTreeSet::new());
    let mut shutdown = std::pin::pin!(super::shutdown_signal());
    loop {
        if started.elapsed() > timeout {
            bail!("gave up following after {timeout:?}; the test goes on (chaoseater abort {id} stops it)");
        }
        let batch = tokio::select! {
            () = &mut shutdown => bail!("interrupted; the test goes on (chaoseater abort {id} stops it)"),
            batch = consumer.next_batch(500, Duration::from_millis(200)) => batch?,
        };
        for message in batch {
            let Some(Ok(event)) = message.payload.as_deref().map(|p| ctx.codec.decode(p)) else { continue };
            match event {
                Event::AbTestConcluded(c) if &c.run_id == id => return Ok(c),
                Event::RunRejected(r) if &r.run_id == id => {
                    bail!(Exit(EXIT_INVALID_INPUT, format!("the coordinator refused the test: {}", r.reason)))
                }
                Event::RunCompleted(c) if c.run_id.as_str().starts_with(&prefix) => {
                    let Some((side, number)) = sample_of(id, &c.run_id) else { continue };
                    let fresh = match side {
                        AbSide::A => done_a.insert(number),
                        AbSide::B => done_b.insert(number),
                    };
                    if fresh {
                        let mut err = std::io::stderr().lock();
                        writeln!(
                            err,
                            "[{:>6.1}s] sample {}{number:<3} {:<9} score {:>5.1}   done: A {}/{n}, B {}/{n}",
                            started.elapsed().as_secs_f64(),
                            side.as_str(),
                            c.status.as_str(),
                            c.report.mean_score,
                            done_a.len(),
                            done_b.len()
                        )?;
                    }
                }
                _ => {}
            }
        }
    }
}

/// The variant and number of a sample run of test `id`.
fn sample_of(id: &RunId, run_id: &RunId) -> Option<(AbSide, i32)> {
    let rest = run_id.as_str().strip_prefix(id.as_str())?.strip_prefix('.')?;
    let side = match rest.chars().next()? {
        'a' => AbSide::A,
        'b' => AbSide::B,
        _ => return None,
    };
    Some((side, rest[1..].parse().ok()?))
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
    println!(
        "{}: {} (n = {} / {}, {:.0}% confidence)",
        m.metric,
        ab_report::label_text(m.label),
        m.n_a,
        m.n_b,
        m.confidence * 100.0
    );
    println!("  Mann-Whitney U of B against A  {:.1}   z {:.3}   p {:.4}", m.u, m.z, m.p_value);
    println!("  shift of B (Hodges-Lehmann)    {:.4}   interval [{:.4}, {:.4}]", m.hl_estimate, m.ci_low, m.ci_high);
    let ratio = m.mean_ratio.map_or("-".to_owned(), |r| format!("{r:.3}"));
    println!("  mean ratio B/A {ratio}   P(B > A) {:.3}", m.prob_superiority);
    if m.label == judge::Label::NoDifference {
        println!("  smallest shift these samples detect (80% power): {:.4}", m.mde);
    }
}
