//! The optimizer on histories whose truth the test owns: score = f(parameters) + noise for a known f.

use std::collections::BTreeMap;

use super::query::{Question, Source};
use super::*;

use super::synthetic::{NOISE, REGIONS, truth};

/// `runs` labelled synthetic runs, days 20,000 on.
fn history(runs: usize, rate_max: f64, latency_max: f64, seed: u64) -> Vec<Sample> {
    synthetic::labelled(runs, rate_max, latency_max, 20_000.0, seed)
}

fn train(samples: &[Sample]) -> Model {
    Model::train(samples, &[Target::ResilienceScore], None, &ForestParams::default(), &mut |_, _, _| {}).expect("train")
}

fn question(fault_type: &str, params: &[(&str, &str)], region: Option<&str>) -> Question {
    Question {
        fault_type: fault_type.to_owned(),
        params: params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        region: region.map(str::to_owned),
        ..Question::default()
    }
}

#[test]
fn a_planted_effect_is_learnt_with_honest_intervals() {
    let model = train(&history(400, 0.8, 3_000.0, 1));
    for scope in model.scopes_of(Target::ResilienceScore) {
        let cv = &scope.cv;
        assert!(
            cv.model_r2 >= 0.8,
            "{}: cross-validated R² {} (baseline {})",
            scope.scope,
            cv.model_r2,
            cv.baseline_r2
        );
        assert!(cv.model_mae < cv.baseline_mae, "{}: {cv:?}", scope.scope);
        assert!(cv.coverage >= 0.85, "{}: measured coverage {}", scope.scope, cv.coverage);
    }
    // Fresh draws from the truth, never seen: at least 88% inside their 90% interval.
    let fresh = history(200, 0.8, 3_000.0, 99);
    let mut inside = 0;
    for s in &fresh {
        let params: Vec<(String, String)> = s.point.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let q = Question {
            fault_type: s.point.fault_type.clone(),
            params,
            region: Some(s.point.region.clone()),
            duration_s: Some(30.0),
            tags: s.point.tags.clone(),
            target: None,
        };
        let p = &model.predict(&q).expect("predict")[0];
        let y = s.target(Target::ResilienceScore).expect("score");
        inside += usize::from(p.lower <= y && y <= p.upper);
    }
    let share = inside as f64 / fresh.len() as f64;
    assert!(share >= 0.88, "{share} of fresh points inside their 90% interval");
}

#[test]
fn predictions_follow_the_truth_and_name_their_model() {
    let model = train(&history(300, 0.8, 3_000.0, 2));
    let mild =
        &model.predict(&question("data_corruption", &[("corruption_rate", "0.1")], Some("eu-west"))).expect("p")[0];
    let harsh =
        &model.predict(&question("data_corruption", &[("corruption_rate", "0.7")], Some("eu-west"))).expect("p")[0];
    assert!((mild.value - 87.0).abs() < 4.0, "{mild:?}");
    assert!((harsh.value - 39.0).abs() < 5.0, "{harsh:?}");
    assert!(harsh.lower < harsh.value && harsh.value < harsh.upper);
    assert!(matches!(mild.source, Source::Model(_)), "{:?}", mild.source);
    assert!(mild.near_runs >= FEW, "{}", mild.near_runs);
    // Outside what was seen: said so.
    let far = &model.predict(&question("network_latency", &[("latency_ms", "60000")], Some("us-east"))).expect("p")[0];
    assert!(far.warning.as_deref().is_some_and(|w| w.contains("latency_ms")), "{far:?}");
    // No region: one prediction per region seen; ap-south (validation) holds up better.
    let all = model.predict(&question("data_corruption", &[("corruption_rate", "0.6")], None)).expect("p");
    assert_eq!(all.len(), 3);
    let by: BTreeMap<&str, f64> = all.iter().map(|p| (p.region.as_str(), p.value)).collect();
    assert!(by["ap-south"] > by["eu-west"] + 10.0, "{by:?}");
}

const FEW: usize = query::FEW_NEAR;

#[test]
fn bad_questions_name_the_field() {
    let model = train(&history(100, 0.8, 3_000.0, 3));
    let err = |q: Question| model.predict(&q).expect_err("refused").to_string();
    assert!(err(question("data_corruptionx", &[], None)).starts_with("fault_type:"));
    assert!(err(question("data_corruption", &[("rate", "0.1")], None)).contains("rate"));
    let out_of_bounds = err(question("data_corruption", &[("corruption_rate", "1.5")], None));
    assert!(out_of_bounds.starts_with("--param corruption_rate:"), "{out_of_bounds}");
    assert!(err(question("data_corruption", &[], Some("mars"))).starts_with("--region:"));
    // A catalogue fault the history holds too little of.
    let e = model.predict(&question("packet_loss", &[], None)).expect_err("too little");
    assert!(matches!(e, OptimizerError::TooLittle(_)) && e.is_user_error(), "{e}");
    let e = model.suggest(&question("data_corruption", &[], None), 120.0).expect_err("target");
    assert!(e.to_string().starts_with("--target-score:"), "{e}");
}

#[test]
fn the_suggestion_meets_the_target_under_the_truth_and_goes_past_the_history() {
    // The history only tried mild corruption (up to 15%): everything scored well above 70.
    let model = train(&history(300, 0.15, 3_000.0, 4));
    let s = model.suggest(&question("data_corruption", &[], None), 70.0).expect("suggest");
    assert!(s.meets_target, "{s:?}");
    let rate: f64 = s.params["corruption_rate"].parse().expect("number");
    for region in REGIONS {
        let true_score = truth("data_corruption", region, &BTreeMap::from([("corruption_rate".to_owned(), rate)]));
        assert!(true_score >= 70.0 - NOISE, "{region}: {true_score} at {rate}");
    }
    let past = s.harshest_past.as_ref().expect("past runs met the target")["corruption_rate"];
    assert!(rate > past, "suggested {rate}, harshest past {past}");
    assert_eq!(s.harsher_than_past, Some(true));
    // With history reaching past the target, the suggestion stops short of where f falls below it.
    let model = train(&history(400, 0.8, 3_000.0, 5));
    let s = model.suggest(&question("data_corruption", &[], Some("eu-west")), 70.0).expect("suggest");
    let rate: f64 = s.params["corruption_rate"].parse().expect("number");
    let true_score = truth("data_corruption", "eu-west", &BTreeMap::from([("corruption_rate".to_owned(), rate)]));
    assert!(true_score >= 70.0 - NOISE, "{true_score} at {rate}");
    assert!(rate > 0.15, "{rate}: too timid for a target f allows up to 0.31");
}

#[test]
fn the_model_survives_a_save_and_a_load() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut samples = history(100, 0.8, 3_000.0, 6);
    // A parameter no row has (its range is unknown, NaN): still saved and read back.
    for s in &mut samples {
        s.point.params.remove("jitter_ms");
    }
    let model = train(&samples);
    let path = model.save(tmp.path()).expect("save");
    let size = std::fs::metadata(&path).expect("file").len();
    let loaded = Model::load(tmp.path()).expect("load");
    let q = question("network_latency", &[("latency_ms", "1500")], Some("eu-west"));
    assert_eq!(model.predict(&q).expect("p"), loaded.predict(&q).expect("p"));
    assert!(size < 20_000_000, "{size} bytes");
    std::fs::write(&path, "{}").expect("clobber");
    assert!(matches!(Model::load(tmp.path()), Err(OptimizerError::NoModel(_))));
}

#[test]
fn too_little_history_trains_nothing() {
    let e = Model::train(
        &history(4, 0.8, 3_000.0, 7),
        &[Target::ResilienceScore],
        None,
        &ForestParams::default(),
        &mut |_, _, _| {},
    )
    .expect_err("too little");
    assert!(matches!(e, OptimizerError::TooLittle(_)), "{e}");
}

/// Flat noisy scores for every fault and region over 30 days, but us-east falling 0.8 a day.
fn history_with_a_fall(seed: u64) -> Vec<Sample> {
    let mut samples = history(300, 0.3, 500.0, seed);
    let n = samples.len() as f64;
    for (i, s) in samples.iter_mut().enumerate() {
        s.finished_day = 20_000.0 + 30.0 * i as f64 / n;
        if s.point.region == "us-east" {
            let score = s.targets[Target::ResilienceScore as usize].expect("score");
            s.targets[Target::ResilienceScore as usize] = Some((score - 0.8 * (s.finished_day - 20_000.0)).max(0.0));
        }
    }
    samples
}

#[test]
fn analyze_finds_the_planted_fall_and_recommends_from_evidence() {
    let analysis = analyze::analyze(&history_with_a_fall(8), Some("2024-10-01"));
    let falling: Vec<_> = analysis.weak_points.iter().filter(|w| w.falling).collect();
    assert!(falling.iter().any(|w| w.dimension == "region" && w.group == "us-east"), "{:?}", analysis.weak_points);
    assert!(!falling.iter().any(|w| w.dimension == "region" && w.group != "us-east"), "{falling:?}");
    let fall = falling.iter().find(|w| w.group == "us-east").expect("us-east");
    assert!(fall.trend.p_value.expect("p") < 0.001);
    assert!((fall.trend.slope_per_day.expect("slope") + 0.8).abs() < 0.25, "{:?}", fall.trend);
    // ap-south's validation halves the damage of corruption: an architecture recommendation says so.
    let monitoring = analysis.recommendations.iter().find(|r| r.category == analyze::Category::Monitoring);
    assert!(
        monitoring.is_some_and(|r| r.title.contains("us-east") && r.sql.contains("'us-east'")),
        "{:?}",
        analysis.recommendations
    );
    for r in &analysis.recommendations {
        assert!(r.impact > 0.0 && r.sql.starts_with("SELECT"), "{r:?}");
    }
    let impacts: Vec<f64> = analysis.recommendations.iter().map(|r| r.impact).collect();
    assert!(impacts.windows(2).all(|w| w[0] >= w[1]), "by impact: {impacts:?}");
}

#[test]
fn flat_histories_are_rarely_called_falling() {
    // 100 flat histories, three regions each: about 2.5% of the 300 region groups called falling by
    // chance (two-sided 5%), never the 5% the issue allows plus the binomial's wide margin.
    let mut falling = 0;
    for seed in 0..100 {
        let mut samples = history(40, 0.3, 500.0, 1_000 + seed);
        let n = samples.len() as f64;
        for (i, s) in samples.iter_mut().enumerate() {
            s.finished_day = 20_000.0 + 30.0 * i as f64 / n;
        }
        let analysis = analyze::analyze(&samples, None);
        falling += analysis.weak_points.iter().filter(|w| w.falling && w.dimension == "region").count();
        assert!(
            analysis
                .recommendations
                .iter()
                .all(|r| !r.title.contains("falling") || analysis.weak_points.iter().any(|w| w.falling)),
            "a falling recommendation needs a falling weak point"
        );
    }
    assert!(falling <= 20, "{falling} of 300 flat region groups called falling");
}

#[test]
fn a_planted_outlier_is_named_with_its_run_region_and_metric() {
    let mut samples = history(200, 0.3, 500.0, 10);
    let victim = samples
        .iter_mut()
        .find(|s| s.point.fault_type == "data_corruption" && s.point.region == "eu-west")
        .expect("row");
    victim.targets[Target::ResilienceScore as usize] = Some(2.0);
    let run = victim.run_id.clone();
    let analysis = analyze::analyze(&samples, None);
    let found = analysis.anomalies.iter().find(|a| a.run_id == run).expect("anomaly found");
    assert_eq!((found.region.as_str(), found.metric.as_str()), ("eu-west", "resilience_score"));
    assert!(found.worse && found.robust_z < -ANOMALY, "{found:?}");
}

const ANOMALY: f64 = analyze::ANOMALY_Z;
