//! `query`, `trends`, `compare`, `summary`, `export`, `sql` and `history prune|compact|generate`: the
//! Parquet history, read with DataFusion. Invalid questions and refused SQL exit with code 2.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chaoseater_processors::analytics::render::{self, Format};
use chaoseater_processors::analytics::{Analytics, AnalyticsError, Filters, Order, RecordBatch};
use chaoseater_processors::history::{HistoryDir, day, synthetic, tables};
use chaoseater_schemas::ids::TimestampMs;

use crate::cli::{CompareArgs, ExportArgs, FilterArgs, HistoryCommand, OutputArgs, QueryArgs, SqlArgs, TrendsArgs};
use crate::config::Config;
use crate::{EXIT_INVALID_INPUT, Exit};

fn invalid(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Exit(EXIT_INVALID_INPUT, message.into()))
}

/// Refusals, syntax errors and bad questions are the user's to fix (exit 2); the rest is ours.
pub(crate) fn answer_err(e: AnalyticsError) -> anyhow::Error {
    match e {
        AnalyticsError::Engine(message) => anyhow::anyhow!(message),
        other => invalid(other.to_string()),
    }
}

fn history_dir(flag: &Option<PathBuf>, config: &Config) -> PathBuf {
    flag.clone().unwrap_or_else(|| config.history_dir())
}

/// The history to read: it must exist (a mistyped `--state-dir` or `--history` says so, rather than
/// answering from an empty directory it created).
pub(crate) async fn open(flag: &Option<PathBuf>, config: &Config) -> Result<Analytics> {
    let dir = history_dir(flag, config);
    if !dir.is_dir() {
        return Err(invalid(format!(
            "no history at {}: run `chaoseater serve` or `chaoseater demo` first, or point --history (or --state-dir) at one",
            dir.display()
        )));
    }
    Analytics::open_with(&dir, config.sql.clone()).await.map_err(answer_err)
}

fn format(text: &str) -> Result<Format> {
    Format::parse(text).ok_or_else(|| invalid(format!("--format {text:?}: one of table, csv, json")))
}

fn print(batches: &[RecordBatch], output: &OutputArgs) -> Result<()> {
    let text = render::render(batches, format(&output.format)?)?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// `YYYY-MM-DD` as is; `Nd` as the day N days before today (UTC).
fn resolve_day(field: &str, text: &str) -> Result<String> {
    if let Some(n) = text.strip_suffix('d')
        && let Ok(n) = n.parse::<i64>()
    {
        return Ok(day(TimestampMs::now().0 - n * 86_400_000));
    }
    chaoseater_processors::analytics::check_day(field, text).map_err(answer_err)?;
    Ok(text.to_owned())
}

fn filters(args: &FilterArgs) -> Result<Filters> {
    let tags = args
        .tags
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| invalid(format!("--tag {t:?}: expected KEY=VALUE")))
        })
        .collect::<Result<Vec<_>>>()?;
    let order = Order::parse(&args.order)
        .ok_or_else(|| invalid(format!("--order {:?}: one of newest, oldest, lowest, highest", args.order)))?;
    Ok(Filters {
        name: args.name.clone(),
        layer: args.layer.clone(),
        fault_type: args.fault_type.clone(),
        status: args.status.clone(),
        region: args.region.clone(),
        min_score: args.min_score,
        max_score: args.max_score,
        score_version: args.score_version,
        tags,
        since: args.since.as_deref().map(|d| resolve_day("since", d)).transpose()?,
        until: args.until.as_deref().map(|d| resolve_day("until", d)).transpose()?,
        limit: args.limit,
        order,
    })
}

pub async fn query(args: QueryArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.output.history, config).await?;
    let batches = analytics.query(&filters(&args.filters)?).await.map_err(answer_err)?;
    print(&batches, &args.output)
}

pub async fn trends(args: TrendsArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.output.history, config).await?;
    let now = TimestampMs::now().0;
    let today = day(now);
    let (totals, daily) = analytics.trends(&args.name, args.days, now).await.map_err(answer_err)?;
    if format(&args.output.format)? == Format::Table {
        println!("{} over the {} days to {today}", args.name, args.days);
        print(&totals, &args.output)?;
        println!();
    } else {
        print(&totals, &args.output)?;
    }
    print(&daily, &args.output)
}

pub async fn compare(args: CompareArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.output.history, config).await?;
    let answer = match &args.rank {
        Some(metric) => analytics.rank(&args.run_ids, metric).await,
        None => analytics.compare(&args.run_ids).await,
    };
    print(&answer.map_err(answer_err)?, &args.output)
}

pub async fn summary(args: OutputArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.history, config).await?;
    let mut sections = analytics.summary().await.map_err(answer_err)?;
    // The scores above are over every version of the formula; this section says which they mix.
    let versions = analytics.score_versions().await.map_err(answer_err)?;
    sections.push(("by score version".to_owned(), versions));
    let format = format(&args.format)?;
    if format == Format::Json {
        // One object: section → rows.
        let mut parts = Vec::new();
        for (title, batches) in &sections {
            parts.push(format!("{}:{}", serde_json::to_string(title)?, render::json(batches)?));
        }
        println!("{{{}}}", parts.join(","));
        return Ok(());
    }
    for (title, batches) in &sections {
        println!("{title}");
        print(batches, &args)?;
        println!();
    }
    Ok(())
}

pub async fn export(args: ExportArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.history, config).await?;
    let batches = match &args.sql {
        Some(sql) => analytics.sql(sql).await,
        None => analytics.query(&filters(&args.filters)?).await,
    }
    .map_err(answer_err)?;
    let csv = render::csv(&batches)?;
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    match &args.out {
        Some(path) => {
            std::fs::write(path, csv).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("{rows} rows written to {}", path.display());
        }
        None => std::io::stdout().lock().write_all(csv.as_bytes())?,
    }
    Ok(())
}

pub async fn sql(args: SqlArgs, config: &Config) -> Result<()> {
    let analytics = open(&args.output.history, config).await?;
    let batches = analytics.sql(&args.query).await.map_err(answer_err)?;
    print(&batches, &args.output)
}

/// `90d` → 90.
fn days(text: &str) -> Result<i64> {
    text.strip_suffix('d')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n >= 0)
        .ok_or_else(|| invalid(format!("--older-than {text:?}: expected days, e.g. 90d")))
}

pub async fn maintain(command: HistoryCommand, config: &Config) -> Result<()> {
    match command {
        HistoryCommand::Prune { older_than, history } => {
            let cutoff = day(TimestampMs::now().0 - days(&older_than)? * 86_400_000);
            let dir = open_dir(&history_dir(&history, config))?;
            let pruned = tokio::task::spawn_blocking(move || dir.prune(&cutoff).map(|p| (p, cutoff))).await??;
            let (p, cutoff) = pruned;
            println!(
                "pruned the days before {cutoff}: {} partitions ({} runs), {} files rewritten",
                p.partitions, p.runs, p.rewritten_files
            );
        }
        HistoryCommand::Compact { rows, history } => {
            let dir = open_dir(&history_dir(&history, config))?;
            let merged = tokio::task::spawn_blocking(move || dir.compact(rows)).await??;
            println!("merged {merged} segments");
        }
        HistoryCommand::Generate { rows, days, seed, history } => {
            let root = history_dir(&history, config);
            let dir = open_dir(&root)?;
            let started = std::time::Instant::now();
            let end = TimestampMs::now().0;
            let written = tokio::task::spawn_blocking(move || generate(&dir, rows, days, seed, end)).await??;
            println!(
                "wrote {written} synthetic results over {days} days to {} in {:.1} s",
                root.display(),
                started.elapsed().as_secs_f64()
            );
        }
    }
    Ok(())
}

fn open_dir(root: &Path) -> Result<HistoryDir> {
    Ok(HistoryDir::open(root)?.0)
}

/// Writes `rows` synthetic results as segments of 100,000 on a topic of their own (`synthetic`), so they
/// never mix with a materializer's offsets. Returns how many were written.
pub fn generate(dir: &HistoryDir, rows: usize, days: u32, seed: u64, end_ms: i64) -> Result<usize> {
    let start = dir.positions()?.get(&("synthetic".to_owned(), seed as i32)).copied().unwrap_or(0);
    let mut results = synthetic::results(rows, days, seed, end_ms).peekable();
    let mut offset = start;
    let mut eprint_at = std::time::Instant::now();
    while results.peek().is_some() {
        let chunk: Vec<_> = results.by_ref().take(100_000).collect();
        let next = offset + chunk.len() as i64;
        dir.write_segment("synthetic", seed as i32, offset, next, tables::Rows::of_results(&chunk))?;
        offset = next;
        if eprint_at.elapsed().as_secs() >= 2 {
            eprintln!("  {} of {rows} written", offset - start);
            eprint_at = std::time::Instant::now();
        }
    }
    Ok((offset - start) as usize)
}
