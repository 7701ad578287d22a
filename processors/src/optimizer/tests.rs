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
    let analysis = analyze::analyze(
        &history_with_a_fall(8),
        &dataset::Window { since: Some("2024-10-01".into()), score_version: None },
    );
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
        let analysis = analyze::analyze(&samples, &dataset::Window::default());
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
    let analysis = analyze::analyze(&samples, &dataset::Window::default());
    let found = analysis.anomalies.iter().find(|a| a.run_id == run).expect("anomaly found");
    assert_eq!((found.region.as_str(), found.metric.as_str()), ("eu-west", "resilience_score"));
    assert!(found.worse && found.robust_z < -ANOMALY, "{found:?}");
}

const ANOMALY: f64 = analyze::ANOMALY_Z;

fn regions(names: &[&str]) -> Vec<plan::RegionLimits> {
    names.iter().map(|r| plan::RegionLimits { region: (*r).to_owned(), caps: plan::Caps::default() }).collect()
}

fn plan_request(budget: usize, regions: Vec<plan::RegionLimits>) -> plan::PlanRequest {
    plan::PlanRequest { budget, regions, fault_types: Vec::new(), target_score: 70.0, skip: Vec::new() }
}

#[test]
fn planning_learns_faster_than_random_choice() {
    use super::simulate::{Strategy, learning_curve};
    // Deterministic: the histories, the noise, the forests and the plan's candidates are all seeded.
    let (mut plan, mut random) = (0.0, 0.0);
    for seed in 1..=6 {
        plan += learning_curve(Strategy::Plan, 6, 6, seed).expect("plan").mae[1..].iter().sum::<f64>();
        random += learning_curve(Strategy::Random, 6, 6, seed).expect("random").mae[1..].iter().sum::<f64>();
    }
    assert!(plan < random, "area under the plan's learning curve {plan:.2}, random choice's {random:.2}");
}

#[test]
fn a_plan_stays_in_the_regions_given_within_the_catalogue_and_the_caps() {
    let model = train(&history(60, 1.0, 2_000.0, 3));
    let mut limits = regions(&["eu-west", "us-east", "mars"]);
    limits[0].caps.max_duration_s = Some(10.0);
    let plan = model.plan(&plan_request(8, limits)).expect("plan");
    assert_eq!(plan.proposals.len(), 8, "{:?}", plan.notes);
    assert!(plan.notes.iter().any(|n| n.starts_with("mars:")), "{:?}", plan.notes);
    let reasons: std::collections::BTreeSet<_> = plan.proposals.iter().map(|p| p.reason.as_str()).collect();
    assert_eq!(reasons.len(), 2, "both reasons take turns");
    let fault_types: std::collections::BTreeSet<_> =
        plan.proposals.iter().map(|p| p.point.fault_type.as_str()).collect();
    assert_eq!(fault_types.len(), 2, "the budget is shared among the fault types");
    let at = chaoseater_schemas::ids::TimestampMs(1_767_225_600_000);
    for p in &plan.proposals {
        assert!(["eu-west", "us-east"].contains(&p.point.region.as_str()));
        if p.point.region == "eu-west" {
            assert!(p.point.duration_s <= 10.0, "the agent's duration cap holds: {}", p.point.duration_s);
        }
        assert!(p.expected_gain >= 0.0 && p.prediction.lower <= p.prediction.upper);
        // The experiment passes the catalogue and the platform's limits, and approving it requests one run
        // in the proposal's region.
        let event = p.event(&plan.model_id, at, "cli").expect("event");
        let run = plan::approve(&event, "tester", at);
        chaoseater_schemas::limits::check_run_request(&run).expect("within the platform's limits");
        assert_eq!(run.regions, vec![event.region.clone()]);
        assert_eq!(run.run_id, plan::approve(&event, "someone else", at).run_id, "one run per proposal");
    }
    let ids: std::collections::BTreeSet<_> = plan.proposals.iter().map(|p| p.proposal_id.clone()).collect();
    assert_eq!(ids.len(), 8);
    // The same model plans the same proposals; ones to skip are not proposed again.
    let again = model.plan(&plan_request(8, regions(&["eu-west", "us-east"]))).expect("plan");
    assert_eq!(again.proposals[0].proposal_id, plan.proposals[0].proposal_id);
    let mut skipping = plan_request(8, regions(&["eu-west", "us-east"]));
    skipping.skip = ids.iter().cloned().collect();
    let fresh = model.plan(&skipping).expect("plan");
    assert!(fresh.proposals.iter().all(|p| !ids.contains(&p.proposal_id)));
}

#[test]
fn a_plan_keeps_within_an_agents_cap() {
    // cpu_throttle scored 95 - 0.5 x percent: the harshest settings are the weakest.
    let mut rng = chaoseater_schemas::rng::Rng::new(9);
    let mut samples = Vec::new();
    for run in 0..40 {
        let percent = rng.uniform(0.0, 90.0).round();
        for region in REGIONS {
            let mut targets = [None; Target::ALL.len()];
            targets[Target::ResilienceScore as usize] = Some(95.0 - 0.5 * percent + NOISE * rng.normal());
            samples.push(Sample {
                run_id: format!("cpu-{run}"),
                point: Point {
                    fault_type: "cpu_throttle".into(),
                    layer: "infrastructure".into(),
                    region: region.into(),
                    params: BTreeMap::from([("throttle_percent".to_owned(), percent.to_string())]),
                    tags: BTreeMap::new(),
                    duration_s: 30.0,
                },
                finished_day: 20_000.0 + run as f64 / 96.0,
                targets,
            });
        }
    }
    let model = train(&samples);
    let mut limits = regions(&REGIONS);
    limits[0].caps.max_cpu_percent = Some(40.0);
    let plan = model.plan(&plan_request(12, limits)).expect("plan");
    let in_capped: Vec<f64> = plan
        .proposals
        .iter()
        .filter(|p| p.point.region == REGIONS[0])
        .map(|p| p.point.params["throttle_percent"].parse().unwrap())
        .collect();
    assert!(!in_capped.is_empty());
    assert!(in_capped.iter().all(|&v| v <= 40.0), "{in_capped:?}");
    let elsewhere = plan.proposals.iter().filter(|p| p.point.region != REGIONS[0]);
    assert!(elsewhere.map(|p| p.point.params["throttle_percent"].parse::<f64>().unwrap()).any(|v| v > 40.0));
    // A cap under the whole range searched leaves the region out, and says so.
    let mut limits = regions(&REGIONS);
    limits[1].caps.max_cpu_percent = Some(-1.0);
    let plan = model.plan(&plan_request(4, limits)).expect("plan");
    assert!(plan.proposals.iter().all(|p| p.point.region != REGIONS[1]));
    assert!(plan.notes.iter().any(|n| n.contains("cap on throttle_percent")), "{:?}", plan.notes);
}

#[test]
fn a_bad_plan_request_names_its_field() {
    let model = train(&history(60, 1.0, 2_000.0, 4));
    let field = |request: plan::PlanRequest| match model.plan(&request) {
        Err(OptimizerError::Invalid { field, .. }) => field,
        other => panic!("expected an invalid field, got {other:?}"),
    };
    assert_eq!(field(plan_request(0, regions(&REGIONS))), "--budget");
    assert_eq!(
        field(plan::PlanRequest { target_score: 150.0, ..plan_request(3, regions(&REGIONS)) }),
        "--target-score"
    );
    let unknown = plan::PlanRequest { fault_types: vec!["nope".into()], ..plan_request(3, regions(&REGIONS)) };
    assert_eq!(field(unknown), "fault_type");
    assert!(matches!(model.plan(&plan_request(3, regions(&["mars"]))), Err(OptimizerError::TooLittle(_))));
}

#[test]
fn auto_approve_keeps_within_its_daily_budget_and_never_approves_twice() {
    use chaoseater_schemas::events::Event;
    use chaoseater_schemas::ids::TimestampMs;
    let model = train(&history(60, 1.0, 2_000.0, 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = OptimizerConfig { auto_approve_per_day: 3, plan_budget: 5, ..OptimizerConfig::default() };
    let t0 = TimestampMs(1_767_225_600_000);
    let first = auto::approve_round(&model, &config, regions(&REGIONS), dir.path(), t0).expect("round");
    assert_eq!(first.len(), 6, "3 proposals, each with its run");
    for pair in first.chunks(2) {
        let (Event::ExperimentProposed(p), Event::RunRequested(r)) = (&pair[0], &pair[1]) else {
            panic!("a proposal, then its run: {pair:?}")
        };
        assert_eq!(r.run_id, chaoseater_schemas::events::ExperimentProposed::run_id_for(&p.proposal_id));
        assert_eq!(
            chaoseater_schemas::events::ExperimentProposed::proposal_of(&r.run_id),
            Some(p.proposal_id.as_str())
        );
        assert_eq!(p.proposed_by, "auto");
    }
    assert!(dir.path().join(auto::LEDGER_FILE).is_file(), "recorded before publishing");
    // The day's budget is spent; a day later there is a new one, and nothing is approved twice.
    let later = TimestampMs(t0.0 + 3_600_000);
    assert!(auto::approve_round(&model, &config, regions(&REGIONS), dir.path(), later).expect("round").is_empty());
    let next_day = TimestampMs(t0.0 + 86_400_000);
    let second = auto::approve_round(&model, &config, regions(&REGIONS), dir.path(), next_day).expect("round");
    assert_eq!(second.len(), 6);
    let ids = |events: &[Event]| -> Vec<String> {
        events
            .iter()
            .filter_map(|e| match e {
                Event::ExperimentProposed(p) => Some(p.proposal_id.clone()),
                _ => None,
            })
            .collect()
    };
    let before = ids(&first);
    assert!(ids(&second).iter().all(|id| !before.contains(id)), "{before:?} / {:?}", ids(&second));
    // Off by default: a human approves.
    assert!(
        auto::approve_round(&model, &OptimizerConfig::default(), regions(&REGIONS), dir.path(), next_day)
            .expect("round")
            .is_empty()
    );
}
