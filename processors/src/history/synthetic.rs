//! A synthetic history: deterministic RegionResults spread over days, for trying queries
//! (`chaoseater history generate`), the golden tests and the benchmark. Same seed, same rows.

use std::collections::BTreeMap;

use chaoseater_schemas::events::{RegionMetrics, RegionResult, RegionStatus};
use chaoseater_schemas::experiment::{Layer, ParamValue};
use chaoseater_schemas::ids::{DispatchId, EventId, RegionName, RunId, TimestampMs};
use chaoseater_schemas::rng::Rng;

const EXPERIMENTS: [(&str, Layer, &str, &str, f64, f64); 4] = [
    ("latency-eu", Layer::Infrastructure, "network_latency", "latency_ms", 85.0, 0.4),
    ("model-outage", Layer::Model, "model_unavailable", "failure_rate", 62.0, -0.3),
    ("corrupted-features", Layer::Data, "data_corruption", "corruption_rate", 74.0, 0.0),
    ("slow-disk", Layer::Infrastructure, "storage_bottleneck", "io_delay_ms", 90.0, 0.1),
];
const REGIONS: [&str; 3] = ["eu-west", "us-east", "ap-south"];

/// `count` results over the `days` days ending at `end_ms`, three regions per run.
pub fn results(count: usize, days: u32, seed: u64, end_ms: i64) -> impl Iterator<Item = RegionResult> {
    let span = i64::from(days.max(1)) * 86_400_000;
    let step = (span / count.max(1) as i64).max(1);
    let start = end_ms - span + 1;
    (0..count).map(move |i| {
        let mut mix = Rng::new(seed ^ (i as u64).wrapping_mul(0x2545_F491_4F6C_DD1D));
        let run = i / REGIONS.len();
        let (name, layer, fault, param, mean, trend) = EXPERIMENTS[run % EXPERIMENTS.len()];
        let finished = start + i as i64 * step;
        let day_index = (finished - start) as f64 / 86_400_000.0;
        let roll = mix.next_f64();
        let status = if roll < 0.85 {
            RegionStatus::Completed
        } else if roll < 0.95 {
            RegionStatus::Failed
        } else {
            RegionStatus::Aborted
        };
        let score = (mean + trend * day_index + (mix.next_f64() - 0.5) * 30.0).clamp(0.0, 100.0);
        let downtime = (mix.next_f64() * 12.0 * (100.0 - score) / 50.0).max(0.0);
        let metrics = RegionMetrics {
            pipeline_downtime_s: (downtime * 1000.0).round() / 1000.0,
            recovery_time_s: (mix.next_f64() < 0.9).then(|| (mix.next_f64() * 20.0 * 1000.0).round() / 1000.0),
            accuracy_degradation: ((100.0 - score) * 0.2 * mix.next_f64() * 100.0).round() / 100.0,
            error_count: (mix.next_f64() * 40.0) as i64,
            requests_total: 400 + (mix.next_f64() * 200.0) as i64,
            latency_p50_ms: 5.0 + mix.next_f64() * 20.0,
            latency_p95_ms: 20.0 + mix.next_f64() * 80.0,
            latency_p99_ms: 50.0 + mix.next_f64() * 150.0,
            baseline_accuracy: 0.9 + mix.next_f64() * 0.05,
            baseline_latency_p50_ms: 4.0 + mix.next_f64() * 4.0,
            baseline_availability: 1.0,
            // Synthetic history is version 1's figures (score_version below).
            ..RegionMetrics::default()
        };
        let run_id = RunId::new(EventId::derive("synthetic-run", &[&seed.to_string(), &run.to_string()]).as_str());
        let region = RegionName::new(REGIONS[i % REGIONS.len()]);
        let completed = status == RegionStatus::Completed;
        let parameters = BTreeMap::from([(param.to_owned(), ParamValue::Int(10 + (run % 10) as i64 * 10))]);
        let tags = BTreeMap::from([
            ("campaign".to_owned(), format!("c{}", run % 5)),
            ("team".to_owned(), if run.is_multiple_of(2) { "ml-platform" } else { "search" }.to_owned()),
        ]);
        let dispatch_id = DispatchId::for_region(&run_id, &region);
        RegionResult {
            event_id: RegionResult::id_for(&dispatch_id),
            occurred_at: TimestampMs(finished),
            dispatch_id,
            run_id,
            region,
            experiment_name: name.to_owned(),
            layer,
            fault_type: fault.to_owned(),
            parameters,
            tags,
            status,
            resilience_score: completed.then_some((score * 100.0).round() / 100.0),
            score_version: 1,
            metrics: completed.then_some(metrics),
            message: (!completed).then(|| "agent answered HTTP 500".to_owned()),
            started_at: TimestampMs(finished - 2_500 - (mix.next_f64() * 5_000.0) as i64),
            finished_at: TimestampMs(finished),
        }
    })
}
