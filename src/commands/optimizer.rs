//! `chaoseater optimizer train|predict|suggest`: the resilience optimizer over the Parquet history.
//! Questions the history cannot answer (unknown fault type or parameter, out of bounds, too little
//! data) exit with code 2, naming the field.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Result;
use chaoseater_processors::analytics::render::number;
use chaoseater_processors::history::day;
use chaoseater_processors::optimizer::analyze::Analysis;
use chaoseater_processors::optimizer::query::{Prediction, Question, Source, Suggestion};
use chaoseater_processors::optimizer::{self, ForestParams, Model, OptimizerError, Target};
use chaoseater_schemas::bus::EventProducer;
use chaoseater_schemas::events::Event;
use chaoseater_schemas::ids::TimestampMs;

use crate::cli::{
    OptimizerAnalyzeArgs, OptimizerCommand, OptimizerPointArgs, OptimizerPredictArgs, OptimizerSuggestArgs,
    OptimizerTrainArgs,
};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit};

fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit(EXIT_INVALID_INPUT, message.into()))
}

/// The user's to fix (exit 2), or ours.
pub(crate) fn optimizer_err(e: OptimizerError) -> anyhow::Error {
    if e.is_user_error() { invalid(e.to_string()) } else { anyhow::anyhow!(e.to_string()) }
}

pub async fn run(command: OptimizerCommand, config: &Config) -> Result<()> {
    match command {
        OptimizerCommand::Train(args) => train(args, config).await,
        OptimizerCommand::Predict(args) => predict(args, config),
        OptimizerCommand::Suggest(args) => suggest(args, config),
        OptimizerCommand::Analyze(args) => analyze(args, config).await,
    }
}

fn json_format(text: &str) -> Result<bool> {
    match text {
        "text" => Ok(false),
        "json" => Ok(true),
        other => Err(invalid(format!("--format {other:?}: one of text, json"))),
    }
}

/// Trains on the history's window and saves the model; prints its figures.
pub async fn train(args: OptimizerTrainArgs, config: &Config) -> Result<()> {
    let json = json_format(&args.format)?;
    let targets = Target::with_score(&args.metrics).map_err(|e| invalid(format!("--metric {e}")))?;
    if args.days == Some(0) {
        return Err(invalid("--days: at least 1"));
    }
    let model = train_model(&args.history, config, args.days, &targets, !json).await?;
    let path = model.save(&config.state_dir).map_err(optimizer_err)?;
    {
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&summary_json(&model, &path))?)?;
        } else {
            write!(out, "{}", summary_text(&model, &path))?;
        }
    }
    // Other systems follow model quality on the results topic; without a broker the model still serves.
    match crate::broker::client_context(config) {
        Ok(ctx) => {
            super::ensure_topics(&ctx, config.brokers.is_none()).await?;
            let event = Event::ModelTrained(model.event("cli"));
            EventProducer::new(&ctx)?.publish(&event).await.map_err(|e| {
                anyhow::anyhow!("the model is saved ({}), but ModelTrained was not published: {e}", path.display())
            })?;
            eprintln!("published ModelTrained {}", model.model_id);
        }
        Err(_) => eprintln!("ModelTrained not published: no broker configured or running (the model is saved)"),
    }
    Ok(())
}

/// Loads the window's rows and trains (on a blocking thread: a forest is CPU work), with progress on
/// stderr when `progress`.
pub(crate) async fn train_model(
    history: &Option<std::path::PathBuf>,
    config: &Config,
    days: Option<u32>,
    targets: &[Target],
    progress: bool,
) -> Result<Model> {
    let analytics = super::history::open(history, config).await?;
    let since = days.map(|d| day(TimestampMs::now().0 - i64::from(d.max(1) - 1) * 86_400_000));
    let window = optimizer::dataset::Window::newest(&analytics, since.as_deref()).await.map_err(optimizer_err)?;
    let samples = optimizer::dataset::load(&analytics, &window).await.map_err(optimizer_err)?;
    let targets = targets.to_vec();
    let model = tokio::task::spawn_blocking(move || {
        let mut report = |what: &str, done: usize, of: usize| {
            if progress && done < of {
                eprintln!("training {}/{of}: {what}", done + 1);
            }
        };
        Model::train(&samples, &targets, days, &ForestParams::default(), &mut report)
    })
    .await?
    .map_err(optimizer_err)?;
    Ok(model)
}

fn summary_json(model: &Model, path: &std::path::Path) -> serde_json::Value {
    serde_json::json!({
        "model_id": model.model_id,
        "path": path.display().to_string(),
        "rows": model.rows,
        "runs": model.runs,
        "window_days": model.window_days,
        "first_finished": day(model.first_finished_ms),
        "last_finished": day(model.last_finished_ms),
        "seconds": model.seconds,
        "models": model.scopes.iter().map(|s| serde_json::json!({
            "metric": s.target,
            "scope": s.scope.to_string(),
            "cv": s.cv,
            "beats_baseline": s.cv.beats_baseline(),
            "top_features": s.importances.iter().take(5).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

fn summary_text(model: &Model, path: &std::path::Path) -> String {
    let mut text = format!(
        "Trained on {} results ({} runs) finished {} to {} in {:.1} s. Saved: {}\n\
         Cross-validated (5 folds by run): the model against the baseline (the mean of the last 50 of the \
         fault type); a model answers only where it beats the baseline.\n\n",
        model.rows,
        model.runs,
        day(model.first_finished_ms),
        day(model.last_finished_ms),
        model.seconds,
        path.display()
    );
    let header =
        ["metric", "model", "rows", "runs", "MAE", "R²", "baseline MAE", "baseline R²", "90% coverage", "used"];
    let rows: Vec<Vec<String>> = model
        .scopes
        .iter()
        .map(|s| {
            vec![
                s.target.to_string(),
                s.scope.to_string(),
                s.cv.rows.to_string(),
                s.cv.runs.to_string(),
                number(s.cv.model_mae),
                number(s.cv.model_r2),
                number(s.cv.baseline_mae),
                number(s.cv.baseline_r2),
                format!("{:.1}%", 100.0 * s.cv.coverage),
                if s.cv.beats_baseline() { "yes" } else { "no: baseline" }.to_owned(),
            ]
        })
        .collect();
    text.push_str(&aligned(&header, &rows));
    text
}

/// Columns padded to their widest cell.
fn aligned(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ").trim_end().to_owned()
            + "\n"
    };
    let mut text = line(header.to_vec());
    for row in rows {
        text.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    text
}

fn pairs(flag: &str, items: &[String]) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .filter(|(k, _)| !k.is_empty())
                .ok_or_else(|| invalid(format!("{flag} {item:?}: expected NAME=VALUE")))
        })
        .collect()
}

fn question(args: &OptimizerPointArgs, target: Target) -> Result<Question> {
    Ok(Question {
        fault_type: args.fault_type.clone(),
        params: pairs("--param", &args.params)?,
        region: args.region.clone(),
        duration_s: args.duration,
        tags: pairs("--tag", &args.tags)?.into_iter().collect::<BTreeMap<_, _>>(),
        target: Some(target),
    })
}

fn predict(args: OptimizerPredictArgs, config: &Config) -> Result<()> {
    let json = json_format(&args.point.format)?;
    let target = Target::parse(&args.metric).ok_or_else(|| {
        let known: Vec<&str> = Target::ALL.iter().map(|t| t.column()).collect();
        invalid(format!("--metric {:?}: one of {}", args.metric, known.join(", ")))
    })?;
    let question = question(&args.point, target)?;
    let model = Model::load(&config.state_dir).map_err(optimizer_err)?;
    let predictions = model.predict(&question).map_err(optimizer_err)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&predictions)?)?;
    } else {
        write!(out, "{}", predictions_text(&predictions))?;
    }
    Ok(())
}

fn source_text(source: &Source) -> String {
    match source {
        Source::Model(scope) => format!("the {scope} model"),
        Source::Baseline => "the baseline (mean of the last 50): no model beats it for this fault type".to_owned(),
    }
}

fn predictions_text(predictions: &[Prediction]) -> String {
    let Some(first) = predictions.first() else { return String::new() };
    let params: Vec<String> = first.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut text = format!(
        "{} with {} over {} s, predicted {} by {}\n",
        first.fault_type,
        if params.is_empty() { "no parameters".to_owned() } else { params.join(", ") },
        number(first.duration_s),
        first.target,
        source_text(&first.source),
    );
    text.push_str(&format!(
        "cross-validated MAE {} (baseline {}), R² {}; the {:.0}% intervals held {:.1}% of held-out results\n\n",
        number(first.cv_mae),
        number(first.baseline_mae),
        number(first.cv_r2),
        100.0 * first.level,
        100.0 * first.measured_coverage
    ));
    let header = ["region", "predicted", "90% interval", "past runs near", "note"];
    let rows: Vec<Vec<String>> = predictions
        .iter()
        .map(|p| {
            vec![
                p.region.clone(),
                number(p.value),
                format!("[{}, {}]", number(p.lower), number(p.upper)),
                p.near_runs.to_string(),
                p.warning.clone().unwrap_or_default(),
            ]
        })
        .collect();
    text.push_str(&aligned(&header, &rows));
    text
}

fn suggest(args: OptimizerSuggestArgs, config: &Config) -> Result<()> {
    let json = json_format(&args.point.format)?;
    if !(0.0..=100.0).contains(&args.target_score) {
        return Err(invalid(format!("--target-score: must be within 0-100, got {}", args.target_score)));
    }
    let question = question(&args.point, Target::ResilienceScore)?;
    let model = Model::load(&config.state_dir).map_err(optimizer_err)?;
    let suggestion = model.suggest(&question, args.target_score).map_err(optimizer_err)?;
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&suggestion)?)?;
    } else {
        write!(out, "{}", suggestion_text(&suggestion))?;
    }
    if !suggestion.meets_target {
        return Err(anyhow::Error::new(Exit(
            1,
            format!("no parameters of {} meet the target {}", suggestion.fault_type, args.target_score),
        )));
    }
    Ok(())
}

fn suggestion_text(s: &Suggestion) -> String {
    let params: Vec<String> = s.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let searched: Vec<String> =
        s.searched.iter().map(|(k, (lo, hi))| format!("{k} in [{}, {}]", number(*lo), number(*hi))).collect();
    let mut text = if s.meets_target {
        format!(
            "Harshest {} whose predicted lower bound still meets {}: {}\n",
            s.fault_type,
            number(s.target_score),
            params.join(", ")
        )
    } else {
        format!(
            "No {} within the searched space keeps the lower bound at {} in every region; the mildest searched: {}\n",
            s.fault_type,
            number(s.target_score),
            params.join(", ")
        )
    };
    text.push_str(&format!(
        "searched {} points of the model: {}\n",
        s.points_searched,
        if searched.is_empty() { "no free numeric parameter".to_owned() } else { searched.join(", ") }
    ));
    if let Some(past) = &s.harshest_past {
        let past: Vec<String> = past.iter().map(|(k, v)| format!("{k}={}", number(*v))).collect();
        text.push_str(&format!(
            "harshest past run that scored at least {}: {}{}\n",
            number(s.target_score),
            past.join(", "),
            match s.harsher_than_past {
                Some(true) => " (the suggestion goes further)",
                Some(false) => " (the model does not back going further)",
                None => "",
            }
        ));
    }
    text.push('\n');
    text.push_str(&predictions_text(&s.predictions));
    text
}

async fn analyze(args: OptimizerAnalyzeArgs, config: &Config) -> Result<()> {
    let format = super::ab_report::Format::parse(&args.format)
        .ok_or_else(|| invalid(format!("--format {:?}: one of text, json, markdown", args.format)))?;
    if args.days == 0 {
        return Err(invalid("--days: at least 1"));
    }
    let analytics = super::history::open(&args.history, config).await?;
    let since = day(TimestampMs::now().0 - i64::from(args.days - 1) * 86_400_000);
    let window = optimizer::dataset::Window::newest(&analytics, Some(&since)).await.map_err(optimizer_err)?;
    let samples = optimizer::dataset::load(&analytics, &window).await.map_err(optimizer_err)?;
    let analysis = tokio::task::spawn_blocking(move || optimizer::analyze::analyze(&samples, &window)).await?;
    let mut out = std::io::stdout().lock();
    match format {
        super::ab_report::Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&analysis)?)?,
        super::ab_report::Format::Text => {
            write!(out, "{}", analysis_text(&analysis, args.days, args.anomalies, false))?
        }
        super::ab_report::Format::Markdown => {
            write!(out, "{}", analysis_text(&analysis, args.days, args.anomalies, true))?
        }
    }
    Ok(())
}

/// The analysis as text, or as Markdown (headings, tables, SQL in code spans).
fn analysis_text(a: &Analysis, days: u32, max_anomalies: usize, markdown: bool) -> String {
    let heading = |t: &str| if markdown { format!("\n## {t}\n\n") } else { format!("\n{t}\n") };
    let sql = |s: &str| if markdown { format!("`{s}`") } else { s.to_owned() };
    let mut text = if markdown { "# Resilience analysis\n\n".to_owned() } else { String::new() };
    text.push_str(&format!(
        "{} results over the last {days} days ({} scored, score_version {}), {} groups judged.\n",
        a.rows,
        a.scored_rows,
        a.score_version.map_or("-".to_owned(), |v| v.to_string()),
        a.groups_judged
    ));
    text.push_str(&heading("Weak points"));
    if a.weak_points.is_empty() {
        text.push_str("None: no fault type, region or layer scores significantly low or falls significantly.\n");
    }
    for w in &a.weak_points {
        let trend = match (w.falling, w.trend.slope_per_day) {
            (true, Some(slope)) => format!(
                "falling {slope:.2} points a day (Mann-Kendall p = {:.2e}, over {:.1} days)",
                w.trend.p_value.unwrap_or(1.0),
                w.trend.span_days
            ),
            _ => format!("trend {}", w.trend.direction.as_str()),
        };
        let low = if w.low {
            format!(
                "low: median {:.1} against {:.1} elsewhere (Mann-Whitney p = {:.2e})",
                w.median_score, w.others_median, w.p_value
            )
        } else {
            format!("median {:.1}", w.median_score)
        };
        let bullet = if markdown { "- " } else { "  " };
        text.push_str(&format!(
            "{bullet}{} {}: {} results, mean {:.1}; {low}; {trend}\n{bullet}  SQL: {}\n",
            w.dimension.replace('_', " "),
            w.group,
            w.rows,
            w.mean_score,
            sql(&w.sql)
        ));
    }
    text.push_str(&heading("Anomalies"));
    if a.anomalies.is_empty() {
        text.push_str("None beyond 3.5 robust standard deviations of their fault type and region.\n");
    } else {
        let header = ["run", "region", "fault type", "metric", "value", "group median", "robust z"];
        let rows: Vec<Vec<String>> = a
            .anomalies
            .iter()
            .take(max_anomalies)
            .map(|x| {
                vec![
                    x.run_id.clone(),
                    x.region.clone(),
                    x.fault_type.clone(),
                    x.metric.clone(),
                    number(x.value),
                    number(x.group_median),
                    format!("{:.1}", x.robust_z),
                ]
            })
            .collect();
        text.push_str(&if markdown { markdown_table(&header, &rows) } else { aligned(&header, &rows) });
        if a.anomalies.len() > max_anomalies {
            text.push_str(&format!("({} more; --format json lists them all)\n", a.anomalies.len() - max_anomalies));
        }
    }
    text.push_str(&heading("Recommendations"));
    if a.recommendations.is_empty() {
        text.push_str("None: nothing in the data calls for a change.\n");
    }
    for (i, r) in a.recommendations.iter().enumerate() {
        text.push_str(&format!(
            "{}. [{}] {} (impact {:.2})\n   {}\n   SQL: {}\n",
            i + 1,
            r.category.as_str(),
            r.title,
            r.impact,
            r.evidence,
            sql(&r.sql)
        ));
    }
    text
}

fn markdown_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut text = format!("| {} |\n|{}|\n", header.join(" | "), vec!["---"; header.len()].join("|"));
    for row in rows {
        text.push_str(&format!("| {} |\n", row.join(" | ")));
    }
    text
}
