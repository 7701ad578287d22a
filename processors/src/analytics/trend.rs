//! Is a series rising or falling, and by how much per day: the Mann-Kendall test for a monotonic trend and
//! the Theil-Sen slope with Sen's confidence interval, as pure functions.
//!
//! Both are rank-based, so one outlying run neither makes nor hides a trend, and they need no assumption
//! about the scores' distribution. Mann-Kendall's S is the count of later-higher minus later-lower pairs;
//! its p-value is exact (the permutation distribution of S, from the Mahonian numbers) for up to
//! [`EXACT_MAX`] points without ties, and otherwise the normal approximation with the tie-corrected
//! variance and a continuity correction (as R's `Kendall::MannKendall` and pyMannKendall compute it).
//!
//! A slope per day is only reported when the points span at least [`MIN_SPAN_DAYS`]: runs minutes apart
//! say nothing about a daily rate (two demos in a row once gave 1,832 points a day).

use statrs::distribution::{ContinuousCDF, Normal};

/// The shortest span, in days, over which a slope per day is reported.
pub const MIN_SPAN_DAYS: f64 = 2.0;
/// The fewest points a trend is tested on.
pub const MIN_POINTS: usize = 8;
/// Up to this many points without ties the p-value is the exact permutation one.
pub const EXACT_MAX: usize = 40;
/// The most points tested: longer series are folded into this many time-ordered buckets (each its median
/// time and median value), so the pairwise work stays under about 4.5 million pairs.
pub const MAX_POINTS: usize = 3_000;

/// What the test says about a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Rising,
    Falling,
    /// Tested, and no significant monotonic trend.
    Flat,
    /// Too few points, or too short a span, to carry a trend.
    Insufficient,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Rising => "rising",
            Direction::Falling => "falling",
            Direction::Flat => "flat",
            Direction::Insufficient => "insufficient",
        }
    }
}

/// A series' trend.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Trend {
    /// Points tested (after folding a long series).
    pub n: usize,
    /// Days between the first and the last point.
    pub span_days: f64,
    /// Mann-Kendall's S.
    pub s: f64,
    /// Kendall's tau-b between time and value.
    pub tau: f64,
    /// Two-sided p-value of "no monotonic trend"; absent when not tested.
    pub p_value: Option<f64>,
    /// The Theil-Sen slope, per day; absent when the span is too short to carry one.
    pub slope_per_day: Option<f64>,
    /// Sen's interval for the slope at the confidence asked.
    pub slope_interval: Option<(f64, f64)>,
    pub direction: Direction,
    /// Why the direction is `insufficient`, in words.
    pub note: Option<String>,
}

/// The trend of `points` (time in days, value), significant at `alpha` (two-sided).
pub fn trend(points: &[(f64, f64)], alpha: f64) -> Trend {
    let mut points: Vec<(f64, f64)> = points.iter().copied().filter(|(t, v)| t.is_finite() && v.is_finite()).collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span_days = match (points.first(), points.last()) {
        (Some(first), Some(last)) => last.0 - first.0,
        _ => 0.0,
    };
    let points = fold(points, MAX_POINTS);
    let n = points.len();
    let insufficient = |note: String| Trend {
        n,
        span_days,
        s: 0.0,
        tau: 0.0,
        p_value: None,
        slope_per_day: None,
        slope_interval: None,
        direction: Direction::Insufficient,
        note: Some(note),
    };
    if n < MIN_POINTS {
        return insufficient(format!("{n} points; a trend needs at least {MIN_POINTS}"));
    }
    if span_days < MIN_SPAN_DAYS {
        return insufficient(format!(
            "the runs span {:.2} days; a slope per day needs at least {MIN_SPAN_DAYS}",
            span_days
        ));
    }
    let (s, tau, variance, ties) = kendall(&points);
    let p_value = if !ties && n <= EXACT_MAX { exact_p(n, s) } else { normal_p(s, variance) };
    let (slope, interval) = theil_sen(&points, variance, alpha);
    let direction = match p_value < alpha {
        true if slope < 0.0 || (slope == 0.0 && s < 0.0) => Direction::Falling,
        true => Direction::Rising,
        false => Direction::Flat,
    };
    Trend {
        n,
        span_days,
        s,
        tau,
        p_value: Some(p_value),
        slope_per_day: Some(slope),
        slope_interval: interval,
        direction,
        note: None,
    }
}

/// Folds a time-ordered series longer than `max` into `max` buckets of (nearly) equal counts, each its
/// median time and median value.
fn fold(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    if points.len() <= max {
        return points;
    }
    let n = points.len();
    (0..max)
        .map(|b| {
            let bucket = &points[b * n / max..(b + 1) * n / max];
            let mut times: Vec<f64> = bucket.iter().map(|p| p.0).collect();
            let mut values: Vec<f64> = bucket.iter().map(|p| p.1).collect();
            (median(&mut times), median(&mut values))
        })
        .collect()
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}

/// Mann-Kendall's S, Kendall's tau-b, Var(S) corrected for ties in the values (and in the times), and
/// whether there were ties. Pairs at the same time count as neither order.
fn kendall(points: &[(f64, f64)]) -> (f64, f64, f64, bool) {
    let n = points.len();
    let mut s = 0i64;
    for i in 0..n {
        for j in i + 1..n {
            if points[j].0 == points[i].0 {
                continue;
            }
            s += match points[j].1.partial_cmp(&points[i].1) {
                Some(std::cmp::Ordering::Greater) => 1,
                Some(std::cmp::Ordering::Less) => -1,
                _ => 0,
            };
        }
    }
    let value_ties = tie_groups(points.iter().map(|p| p.1));
    let time_ties = tie_groups(points.iter().map(|p| p.0));
    let nf = n as f64;
    let tie_term = |groups: &[usize]| groups.iter().map(|&t| (t * (t - 1) * (2 * t + 5)) as f64).sum::<f64>();
    let variance = (nf * (nf - 1.0) * (2.0 * nf + 5.0) - tie_term(&value_ties) - tie_term(&time_ties)) / 18.0;
    let pairs = |groups: &[usize]| groups.iter().map(|&t| (t * (t - 1) / 2) as f64).sum::<f64>();
    let n0 = nf * (nf - 1.0) / 2.0;
    let denominator = ((n0 - pairs(&value_ties)) * (n0 - pairs(&time_ties))).sqrt();
    let tau = if denominator > 0.0 { s as f64 / denominator } else { 0.0 };
    (s as f64, tau, variance, !value_ties.is_empty() || !time_ties.is_empty())
}

/// Sizes of the groups of equal values (only groups of two or more).
fn tie_groups(values: impl Iterator<Item = f64>) -> Vec<usize> {
    let mut sorted: Vec<f64> = values.collect();
    sorted.sort_by(f64::total_cmp);
    let mut groups = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i + 1;
        while j < sorted.len() && sorted[j] == sorted[i] {
            j += 1;
        }
        if j - i > 1 {
            groups.push(j - i);
        }
        i = j;
    }
    groups
}

/// Two-sided p-value of S in the normal approximation with a continuity correction.
fn normal_p(s: f64, variance: f64) -> f64 {
    if variance <= 0.0 {
        return 1.0;
    }
    let z = (s.abs() - 1.0).max(0.0) / variance.sqrt();
    let normal = Normal::standard();
    (2.0 * (1.0 - normal.cdf(z))).min(1.0)
}

/// Exact two-sided p-value of S for `n` points without ties: S = n(n−1)/2 − 2·inversions, and the count of
/// permutations of n with k inversions is the Mahonian number T(n, k).
fn exact_p(n: usize, s: f64) -> f64 {
    let max_inv = n * (n - 1) / 2;
    // counts[k]: permutations with k inversions, as f64 (n ≤ 40: the counts are far below f64's range and
    // the p-value needs their ratios only).
    let mut counts = vec![0f64; max_inv + 1];
    counts[0] = 1.0;
    for m in 2..=n {
        let mut next = vec![0f64; max_inv + 1];
        let reach = m * (m - 1) / 2;
        // T(m, k) = sum_{j=0}^{min(k, m-1)} T(m-1, k-j), as a sliding window.
        let mut window = 0.0;
        for k in 0..=reach {
            window += counts[k];
            if k >= m {
                window -= counts[k - m];
            }
            next[k] = window;
        }
        counts = next;
    }
    let total: f64 = counts.iter().sum();
    let observed = s.abs();
    let tail: f64 = counts
        .iter()
        .enumerate()
        .filter(|(k, _)| (max_inv as f64 - 2.0 * *k as f64).abs() >= observed - 1e-9)
        .map(|(_, c)| c)
        .sum();
    (tail / total).min(1.0)
}

/// The Theil-Sen slope (the median of the pairwise slopes) and Sen's interval at 1 − alpha, from the ranks
/// of the sorted slopes around the median (z·√Var(S) wide).
fn theil_sen(points: &[(f64, f64)], variance: f64, alpha: f64) -> (f64, Option<(f64, f64)>) {
    let mut slopes = Vec::with_capacity(points.len() * (points.len() - 1) / 2);
    for i in 0..points.len() {
        for j in i + 1..points.len() {
            let dt = points[j].0 - points[i].0;
            if dt > 0.0 {
                slopes.push((points[j].1 - points[i].1) / dt);
            }
        }
    }
    if slopes.is_empty() {
        return (0.0, None);
    }
    slopes.sort_by(f64::total_cmp);
    let m = slopes.len();
    let slope = if m % 2 == 1 { slopes[m / 2] } else { (slopes[m / 2 - 1] + slopes[m / 2]) / 2.0 };
    let z = Normal::standard().inverse_cdf(1.0 - alpha / 2.0);
    let c = z * variance.max(0.0).sqrt();
    let lower = ((m as f64 - c) / 2.0).floor();
    let upper = ((m as f64 + c) / 2.0).ceil();
    let interval =
        (lower >= 1.0 && upper <= m as f64).then(|| (slopes[lower as usize - 1], slopes[upper as usize - 1]));
    (slope, interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chaoseater_schemas::rng::Rng;

    fn series(n: usize, days: f64, slope: f64, noise: f64, seed: u64) -> Vec<(f64, f64)> {
        let mut rng = Rng::new(seed);
        (0..n)
            .map(|i| {
                let t = days * i as f64 / (n - 1) as f64;
                (t, 70.0 + slope * t + noise * (rng.next_f64() - 0.5) * 2.0)
            })
            .collect()
    }

    #[test]
    fn a_planted_fall_is_found_with_its_slope() {
        let trend = trend(&series(60, 30.0, -0.8, 5.0, 7), 0.05);
        assert_eq!(trend.direction, Direction::Falling, "{trend:?}");
        assert!(trend.p_value.expect("tested") < 0.001);
        let slope = trend.slope_per_day.expect("slope");
        assert!((slope + 0.8).abs() < 0.2, "{slope}");
        let (lo, hi) = trend.slope_interval.expect("interval");
        assert!(lo <= slope && slope <= hi && hi < 0.0, "{lo} {slope} {hi}");
    }

    #[test]
    fn flat_noise_is_called_falling_about_alpha_over_two_of_the_time() {
        let mut falling = 0;
        let mut rejected = 0;
        for seed in 0..1_000 {
            let t = trend(&series(30, 20.0, 0.0, 10.0, seed), 0.05);
            falling += usize::from(t.direction == Direction::Falling);
            rejected += usize::from(t.direction != Direction::Flat);
        }
        // Two-sided at 5%: about 2.5% falling and 5% either way; the binomial's 99.9% bound over 1,000
        // groups is about 2 points above.
        assert!(falling <= 45, "{falling} of 1000 flat groups called falling");
        assert!((20..=75).contains(&rejected), "{rejected} of 1000 flat groups called a trend");
    }

    #[test]
    fn the_exact_distribution_matches_known_values() {
        // n = 4: S takes 6, 4, 2, 0, ... with counts 1, 3, 5, 6, 5, 3, 1 of 24.
        assert!((exact_p(4, 6.0) - 2.0 / 24.0).abs() < 1e-12);
        assert!((exact_p(4, 4.0) - 8.0 / 24.0).abs() < 1e-12);
        assert!((exact_p(4, 0.0) - 1.0).abs() < 1e-12);
        // Near the normal approximation for n = 30.
        let (n, s) = (30usize, 120.0);
        let variance = (n * (n - 1) * (2 * n + 5)) as f64 / 18.0;
        assert!((exact_p(n, s) - normal_p(s, variance)).abs() < 0.005);
    }

    #[test]
    fn runs_minutes_apart_carry_no_daily_slope() {
        let points = series(40, 0.01, -100.0, 1.0, 3);
        let t = trend(&points, 0.05);
        assert_eq!(t.direction, Direction::Insufficient);
        assert_eq!(t.slope_per_day, None);
        assert!(t.note.expect("note").contains("span"));
        let few = trend(&series(5, 10.0, -1.0, 0.1, 3), 0.05);
        assert_eq!(few.direction, Direction::Insufficient);
    }

    #[test]
    fn long_series_are_folded_and_still_tested() {
        let t = trend(&series(20_000, 60.0, 0.3, 8.0, 11), 0.05);
        assert_eq!(t.n, MAX_POINTS);
        assert_eq!(t.direction, Direction::Rising);
        assert!((t.slope_per_day.expect("slope") - 0.3).abs() < 0.05);
    }
}
