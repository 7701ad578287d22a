//! The optimizer's training over 100,000 history rows: reading them through DataFusion (experiments,
//! parameters and tags), then training every model (a forest per fault type and a pooled one, each
//! 5-fold cross-validated by run, then refitted on all rows), and saving it.
//!
//! cargo bench --bench optimizer
//!
//! Target: within 30 s on this machine (2 cores). Printed beside the target as a ratio.

use std::time::Instant;

use chaoseater_processors::analytics::Analytics;
use chaoseater_processors::history::{HistoryDir, synthetic, tables};
use chaoseater_processors::optimizer::{self, ForestParams, Model, Target};

const ROWS: usize = 100_000;
const END_MS: i64 = 1_795_823_999_999; // 2026-11-27T23:59:59.999Z
const TARGET_S: f64 = 30.0;

/// Peak resident set (`VmHWM`), in MiB.
fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (dir, _) = HistoryDir::open(tmp.path()).expect("history");
    let results: Vec<_> = synthetic::results(ROWS, 30, 3, END_MS).collect();
    for (i, chunk) in results.chunks(25_000).enumerate() {
        let offset = (i * 25_000) as i64;
        dir.write_segment("bench.results", 0, offset, offset + chunk.len() as i64, tables::Rows::of_results(chunk))
            .expect("segment");
    }
    drop(results);
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let analytics = Analytics::open(tmp.path()).await.expect("analytics");
    let window = optimizer::dataset::Window::newest(&analytics, None).await.expect("window");
    let samples = optimizer::dataset::load(&analytics, &window).await.expect("load");
    let read_s = started.elapsed().as_secs_f64();
    let fit_started = Instant::now();
    let model = tokio::task::spawn_blocking(move || {
        Model::train(&samples, &[Target::ResilienceScore], None, &ForestParams::default(), &mut |_, _, _| {})
    })
    .await
    .expect("join")
    .expect("train");
    let fit_s = fit_started.elapsed().as_secs_f64();
    let path = model.save(tmp.path()).expect("save");
    let total_s = started.elapsed().as_secs_f64();
    let size_mb = std::fs::metadata(&path).map_or(f64::NAN, |m| m.len() as f64 / 1e6);
    println!("optimizer: train over {} history rows ({} runs), {} models", model.rows, model.runs, model.scopes.len());
    println!("  read (DataFusion)      {read_s:>7.2} s");
    println!("  train (CV + refit)     {fit_s:>7.2} s");
    println!("  total with save        {total_s:>7.2} s   target {TARGET_S} s   ratio {:.2}", total_s / TARGET_S);
    println!("  model file             {size_mb:>7.1} MB");
    println!("  peak RSS               {:>7.0} MiB", peak_rss_mib());
    for s in &model.scopes {
        println!(
            "  {:<20} rows {:>6}  MAE {:>6.2} (baseline {:>6.2})  R² {:>6.3} (baseline {:>6.3})  coverage {:.3}",
            s.scope.to_string(),
            s.cv.rows,
            s.cv.model_mae,
            s.cv.baseline_mae,
            s.cv.model_r2,
            s.cv.baseline_r2,
            s.cv.coverage
        );
    }
}
