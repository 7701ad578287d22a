//! Where the pipeline is weak and getting weaker, what is unusual, and what to change: each finding with
//! its numbers and the SQL statement that reproduces them from the history.
//!
//! - **Weak points**: fault types, regions and layers whose scores are low (the two-sided Mann-Whitney U
//!   test of the group against every other row, Bonferroni-corrected over the groups of its dimension) or
//!   falling (Mann-Kendall with the Theil-Sen slope, see [`crate::analytics::trend`]; only a significant
//!   trend is called falling).
//! - **Anomalies**: robust z-scores, 0.6745·(x − median)/MAD, per fault type and region, |z| > 3.5
//!   (Iglewicz and Hoaglin's cut-off), naming the run, region and metric.
//! - **Recommendations** in the Python tool's three categories, only where the data call for one,
//!   prioritized by expected impact: the share of rows concerned × the gap in units of the metric's spread.

use std::collections::BTreeMap;

use statrs::stats_tests::Alternative;
use statrs::stats_tests::mannwhitneyu::{MannWhitneyUMethod, mannwhitneyu};

use super::dataset::{Sample, Window};
use super::{Target, train};
use crate::analytics::literal;
use crate::analytics::trend::{self, Direction, Trend};

/// Fewest scored rows a group needs to be judged.
pub const MIN_GROUP: usize = 8;
/// Significance of every test here.
pub const ALPHA: f64 = 0.05;
/// Robust z beyond which a value is an anomaly.
pub const ANOMALY_Z: f64 = 3.5;
/// A gap smaller than this many score points is not worth a recommendation.
pub const MIN_GAP_POINTS: f64 = 5.0;

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WeakPoint {
    /// `fault_type`, `region` or `layer`.
    pub dimension: String,
    pub group: String,
    pub rows: usize,
    pub mean_score: f64,
    pub median_score: f64,
    /// The median of every other row.
    pub others_median: f64,
    /// Mann-Whitney p-value against the others (before the correction), and whether it is low after it.
    pub p_value: f64,
    pub low: bool,
    pub trend: Trend,
    pub falling: bool,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Anomaly {
    pub run_id: String,
    pub region: String,
    pub fault_type: String,
    pub metric: String,
    pub value: f64,
    pub group_median: f64,
    pub robust_z: f64,
    /// Whether the value is worse than usual (lower score, or more of anything else).
    pub worse: bool,
    pub sql: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Architecture,
    Configuration,
    Monitoring,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Architecture => "architecture",
            Category::Configuration => "configuration",
            Category::Monitoring => "monitoring",
        }
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Recommendation {
    pub category: Category,
    pub title: String,
    /// The numbers behind it, in words.
    pub evidence: String,
    /// Share of rows concerned × gap in units of spread.
    pub impact: f64,
    pub sql: String,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Analysis {
    pub since: Option<String>,
    /// The score version of the rows analyzed (the newest in the span; older ones are left out).
    pub score_version: Option<i32>,
    pub rows: usize,
    pub scored_rows: usize,
    pub weak_points: Vec<WeakPoint>,
    /// Every group judged (weak or not), for the record.
    pub groups_judged: usize,
    pub anomalies: Vec<Anomaly>,
    pub recommendations: Vec<Recommendation>,
}

/// Analyzes `samples`, the history's rows in `window` (for the SQL statements that show the evidence).
pub fn analyze(samples: &[Sample], span: &Window) -> Analysis {
    let window = span.and();
    let scored: Vec<&Sample> = samples.iter().filter(|s| s.target(Target::ResilienceScore).is_some()).collect();
    let score = |s: &Sample| s.target(Target::ResilienceScore).unwrap_or(f64::NAN);
    let mut weak_points = Vec::new();
    let mut groups_judged = 0;
    for dimension in ["fault_type", "region", "layer"] {
        let key = |s: &Sample| -> String {
            match dimension {
                "fault_type" => s.point.fault_type.clone(),
                "region" => s.point.region.clone(),
                _ => s.point.layer.clone(),
            }
        };
        let mut groups: BTreeMap<String, Vec<&Sample>> = BTreeMap::new();
        for s in &scored {
            groups.entry(key(s)).or_default().push(s);
        }
        let judged: Vec<(&String, &Vec<&Sample>)> = groups.iter().filter(|(_, g)| g.len() >= MIN_GROUP).collect();
        let tests = judged.len().max(1) as f64;
        for (group, rows) in judged {
            groups_judged += 1;
            let values: Vec<f64> = rows.iter().map(|s| score(s)).collect();
            let others: Vec<f64> = scored.iter().filter(|s| &key(s) != group).map(|s| score(s)).collect();
            let (p_value, others_median) = if others.len() >= MIN_GROUP {
                let p = mannwhitneyu(
                    &values,
                    &others,
                    MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
                    Alternative::TwoSided,
                )
                .map_or(1.0, |(_, p)| p);
                (p, median(&others))
            } else {
                (1.0, f64::NAN)
            };
            let median_score = median(&values);
            let low = p_value < ALPHA / tests && median_score < others_median;
            let trend = trend::trend(&rows.iter().map(|s| (s.finished_day, score(s))).collect::<Vec<_>>(), ALPHA);
            let falling = trend.direction == Direction::Falling;
            if low || falling {
                weak_points.push(WeakPoint {
                    dimension: dimension.to_owned(),
                    group: group.clone(),
                    rows: rows.len(),
                    mean_score: mean(&values),
                    median_score,
                    others_median,
                    p_value,
                    low,
                    trend,
                    falling,
                    sql: format!(
                        "SELECT {dimension}, count(*) AS rows, round(avg(resilience_score), 2) AS mean_score, \
                         median(resilience_score) AS median_score FROM experiments \
                         WHERE resilience_score IS NOT NULL{window} GROUP BY {dimension} ORDER BY mean_score"
                    ),
                });
            }
        }
    }
    weak_points.sort_by(|a, b| b.falling.cmp(&a.falling).then(a.mean_score.total_cmp(&b.mean_score)));
    let anomalies = anomalies(samples, &window);
    let recommendations = recommendations(samples, &weak_points, &anomalies, &window);
    Analysis {
        since: span.since.clone(),
        score_version: span.score_version,
        rows: samples.len(),
        scored_rows: scored.len(),
        weak_points,
        groups_judged,
        anomalies,
        recommendations,
    }
}

fn anomalies(samples: &[Sample], window: &str) -> Vec<Anomaly> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Sample>> = BTreeMap::new();
    for s in samples {
        groups.entry((s.point.fault_type.as_str(), s.point.region.as_str())).or_default().push(s);
    }
    let mut found = Vec::new();
    for ((fault_type, region), rows) in groups {
        for target in Target::ALL {
            let values: Vec<(&Sample, f64)> = rows.iter().filter_map(|s| Some((*s, s.target(target)?))).collect();
            if values.len() < MIN_GROUP {
                continue;
            }
            let xs: Vec<f64> = values.iter().map(|(_, v)| *v).collect();
            let med = median(&xs);
            let mad = median(&xs.iter().map(|x| (x - med).abs()).collect::<Vec<_>>());
            if mad == 0.0 {
                continue; // more than half the values equal: no spread to measure against
            }
            for (s, x) in values {
                let z = 0.6745 * (x - med) / mad;
                if z.abs() > ANOMALY_Z {
                    found.push(Anomaly {
                        run_id: s.run_id.clone(),
                        region: region.to_owned(),
                        fault_type: fault_type.to_owned(),
                        metric: target.column().to_owned(),
                        value: x,
                        group_median: med,
                        robust_z: z,
                        worse: if target.higher_is_better() { z < 0.0 } else { z > 0.0 },
                        sql: format!(
                            "SELECT run_id, region, {0} FROM experiments WHERE fault_type = {1} AND region = {2} \
                             AND {0} IS NOT NULL{window} ORDER BY {0}",
                            target.column(),
                            literal(fault_type),
                            literal(region)
                        ),
                    });
                }
            }
        }
    }
    found.sort_by(|a, b| b.worse.cmp(&a.worse).then(b.robust_z.abs().total_cmp(&a.robust_z.abs())));
    found
}

fn recommendations(samples: &[Sample], weak: &[WeakPoint], anomalies: &[Anomaly], window: &str) -> Vec<Recommendation> {
    let mut out = Vec::new();
    let total = samples.len().max(1) as f64;
    let spread = |target: Target| -> f64 {
        let xs: Vec<f64> = samples.iter().filter_map(|s| s.target(target)).collect();
        let med = median(&xs);
        (1.4826 * median(&xs.iter().map(|x| (x - med).abs()).collect::<Vec<_>>())).max(1e-9)
    };
    let score_spread = spread(Target::ResilienceScore);
    // Architecture: a fault type one region answers markedly better than another.
    let mut by_type: BTreeMap<&str, BTreeMap<&str, Vec<f64>>> = BTreeMap::new();
    for s in samples {
        if let Some(v) = s.target(Target::ResilienceScore) {
            by_type.entry(&s.point.fault_type).or_default().entry(&s.point.region).or_default().push(v);
        }
    }
    for (fault_type, regions) in &by_type {
        let judged: Vec<(&&str, &Vec<f64>)> = regions.iter().filter(|(_, v)| v.len() >= MIN_GROUP).collect();
        if judged.len() < 2 {
            continue;
        }
        let best = judged.iter().max_by(|a, b| mean(a.1).total_cmp(&mean(b.1))).expect("two or more");
        let worst = judged.iter().min_by(|a, b| mean(a.1).total_cmp(&mean(b.1))).expect("two or more");
        let gap = mean(best.1) - mean(worst.1);
        let p = mannwhitneyu(
            worst.1,
            best.1,
            MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
            Alternative::TwoSided,
        )
        .map_or(1.0, |(_, p)| p);
        if gap >= MIN_GAP_POINTS && p < ALPHA {
            out.push(Recommendation {
                category: Category::Architecture,
                title: format!("Bring {}'s defences against {fault_type} up to {}'s", worst.0, best.0),
                evidence: format!(
                    "{fault_type}: {} scores {:.1} on average over {} results, {} scores {:.1} over {} \
                     (Mann-Whitney p = {p:.2e}); the same fault, so the difference is in the pipelines",
                    worst.0,
                    mean(worst.1),
                    worst.1.len(),
                    best.0,
                    mean(best.1),
                    best.1.len()
                ),
                impact: worst.1.len() as f64 / total * gap / score_spread,
                sql: format!(
                    "SELECT region, count(*) AS rows, round(avg(resilience_score), 2) AS mean_score FROM experiments \
                     WHERE fault_type = {} AND resilience_score IS NOT NULL{window} GROUP BY region ORDER BY mean_score",
                    literal(fault_type)
                ),
            });
        }
    }
    // Configuration: recovery markedly slower for a fault type in a region than everywhere else.
    let recovery_spread = spread(Target::RecoveryTimeS);
    let mut groups: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    for s in samples {
        if let Some(v) = s.target(Target::RecoveryTimeS) {
            groups.entry((&s.point.fault_type, &s.point.region)).or_default().push(v);
        }
    }
    let all_recovery: Vec<f64> = groups.values().flatten().copied().collect();
    for ((fault_type, region), values) in &groups {
        if values.len() < MIN_GROUP {
            continue;
        }
        let others: Vec<f64> =
            groups.iter().filter(|(k, _)| k != &&(*fault_type, *region)).flat_map(|(_, v)| v.iter().copied()).collect();
        if others.len() < MIN_GROUP {
            continue;
        }
        let (here, there) = (median(values), median(&others));
        let p = mannwhitneyu(
            values,
            &others,
            MannWhitneyUMethod::AsymptoticInclContinuityCorrection,
            Alternative::TwoSided,
        )
        .map_or(1.0, |(_, p)| p);
        if here >= 2.0 * there && here - there >= 1.0 && p < ALPHA / groups.len() as f64 {
            out.push(Recommendation {
                category: Category::Configuration,
                title: format!(
                    "Shorten recovery from {fault_type} in {region}: review its rollback strategy and timeouts"
                ),
                evidence: format!(
                    "median recovery {here:.1} s over {} results against {there:.1} s for every other fault and region \
                     ({} results; Mann-Whitney p = {p:.2e})",
                    values.len(),
                    all_recovery.len() - values.len()
                ),
                impact: values.len() as f64 / total * (here - there) / recovery_spread,
                sql: format!(
                    "SELECT fault_type, region, count(*) AS rows, median(recovery_time_s) AS median_recovery_s \
                     FROM experiments WHERE recovery_time_s IS NOT NULL{window} GROUP BY fault_type, region \
                     ORDER BY median_recovery_s DESC"
                ),
            });
        }
    }
    // Monitoring: a significant fall deserves an alert before it becomes an outage.
    for w in weak.iter().filter(|w| w.falling) {
        let slope = w.trend.slope_per_day.unwrap_or(0.0);
        out.push(Recommendation {
            category: Category::Monitoring,
            title: format!("Alert on the score of {} {}: it is falling", w.dimension.replace('_', " "), w.group),
            evidence: format!(
                "Theil-Sen slope {slope:.2} points a day over {:.1} days and {} results (Mann-Kendall p = {:.2e}); \
                 at this rate it loses {:.1} points in 30 days",
                w.trend.span_days,
                w.rows,
                w.trend.p_value.unwrap_or(1.0),
                -30.0 * slope
            ),
            impact: w.rows as f64 / total * (30.0 * slope.abs()) / score_spread,
            sql: format!(
                "SELECT date, count(*) AS rows, round(avg(resilience_score), 2) AS mean_score FROM experiments \
                 WHERE {} = {} AND resilience_score IS NOT NULL{window} GROUP BY date ORDER BY date",
                w.dimension,
                literal(&w.group)
            ),
        });
    }
    // Monitoring: repeated anomalies of one metric in one place.
    let mut repeated: BTreeMap<(&str, &str, &str), Vec<&Anomaly>> = BTreeMap::new();
    for a in anomalies.iter().filter(|a| a.worse) {
        repeated.entry((&a.fault_type, &a.region, &a.metric)).or_default().push(a);
    }
    for ((fault_type, region, metric), found) in repeated.into_iter().filter(|(_, f)| f.len() >= 2) {
        let rows = samples.iter().filter(|s| s.point.fault_type == fault_type && s.point.region == region).count();
        out.push(Recommendation {
            category: Category::Monitoring,
            title: format!("Watch {metric} of {fault_type} in {region}: it breaks out repeatedly"),
            evidence: format!(
                "{} of {rows} results beyond {ANOMALY_Z} robust standard deviations of the group's median {:.2} \
                 (worst z = {:.1}, run {})",
                found.len(),
                found[0].group_median,
                found[0].robust_z,
                found[0].run_id
            ),
            impact: found.len() as f64 / total * found[0].robust_z.abs(),
            sql: found[0].sql.clone(),
        });
    }
    out.sort_by(|a, b| b.impact.total_cmp(&a.impact));
    out
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

// `train` is where the minimum rows for a model are; the analysis judges smaller groups.
const _: () = assert!(MIN_GROUP <= train::MIN_ROWS);
