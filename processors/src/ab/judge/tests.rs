use chaoseater_schemas::rng::Rng;
use proptest::prelude::*;

use super::*;

fn samples(a: &[f64], b: &[f64]) -> MetricSamples {
    MetricSamples {
        metric: "resilience_score".into(),
        direction: Direction::HigherIsBetter,
        a: a.to_vec(),
        b: b.to_vec(),
    }
}

/// Standard normal samples from the one seedable generator.
struct Gauss(Rng);

impl Gauss {
    fn new(seed: u64) -> Self {
        Self(Rng::new(seed))
    }

    fn sample(&mut self, n: usize, mean: f64) -> Vec<f64> {
        (0..n).map(|_| mean + self.0.normal()).collect()
    }
}

/// The interval as the set of shifts the test does not reject, found by trying every gap between the
/// pairwise differences with statrs's own p-value of the shifted samples (not the judge's statistic).
fn interval_by_brute_force(x: &[f64], y: &[f64], alpha: f64) -> (f64, f64) {
    let mut diffs = pairwise_differences(x, y);
    diffs.dedup();
    let m = diffs.len();
    let accepted = |shift: f64| {
        let shifted: Vec<f64> = x.iter().map(|v| v - shift).collect();
        let (_, p) =
            mannwhitneyu(&shifted, y, MannWhitneyUMethod::AsymptoticInclContinuityCorrection, Alternative::TwoSided)
                .expect("comparable");
        p >= alpha
    };
    let gaps: Vec<(f64, f64, f64)> = (0..=m)
        .map(|k| match k {
            0 => (f64::NEG_INFINITY, diffs[0], diffs[0] - 1.0 - diffs[0].abs()),
            k if k == m => (diffs[m - 1], f64::INFINITY, diffs[m - 1] + 1.0 + diffs[m - 1].abs()),
            k => (diffs[k - 1], diffs[k], (diffs[k - 1] + diffs[k]) / 2.0),
        })
        .collect();
    let inside: Vec<&(f64, f64, f64)> = gaps.iter().filter(|(_, _, mid)| accepted(*mid)).collect();
    let low = inside.first().map_or(f64::NAN, |g| if g.0.is_finite() { g.0 } else { g.1 });
    let high = inside.last().map_or(f64::NAN, |g| if g.1.is_finite() { g.1 } else { g.0 });
    (low, high)
}

#[test]
fn the_interval_inverts_the_test_and_holds_the_estimate() {
    let mut gauss = Gauss::new(7);
    for round in 0..40 {
        let (n_a, n_b) = (3 + round % 9, 4 + round % 7);
        let a = gauss.sample(n_a, 0.0);
        let b = gauss.sample(n_b, (round % 5) as f64 * 0.6);
        // The same values rounded to integers: ties within and across the samples.
        let (ta, tb): (Vec<f64>, Vec<f64>) =
            (a.iter().map(|v| v.round()).collect(), b.iter().map(|v| v.round()).collect());
        for (a, b) in [(&a, &b), (&ta, &tb)] {
            for alpha in [0.02, 0.05, 0.2] {
                let ours = shift_interval(b, a, alpha);
                let brute = interval_by_brute_force(b, a, alpha);
                if brute.0.is_nan() {
                    // No shift is accepted: the statistic jumps across the band at one difference.
                    assert_eq!(ours.0, ours.1, "round {round}, alpha {alpha}: a={a:?} b={b:?}");
                } else {
                    assert_eq!(ours, brute, "round {round}, alpha {alpha}: a={a:?} b={b:?}");
                }
            }
        }
        let judged = judge_metric(&samples(&a, &b), &JudgeOptions::default()).expect("judged");
        assert!(judged.ci_low <= judged.hl_estimate && judged.hl_estimate <= judged.ci_high, "{judged:?}");
    }
}

#[test]
fn a_real_shift_is_better_with_a_small_p_and_the_same_samples_are_no_different() {
    let mut gauss = Gauss::new(11);
    let a = gauss.sample(8, 50.0);
    let b: Vec<f64> = gauss.sample(8, 50.0).iter().map(|v| v + 6.0).collect();
    let judged = judge_metric(&samples(&a, &b), &JudgeOptions::default()).expect("judged");
    assert_eq!(judged.label, Label::Better, "{judged:?}");
    assert!(judged.p_value < 0.01 && judged.z > 0.0 && judged.prob_superiority > 0.9, "{judged:?}");
    let lower = MetricSamples { direction: Direction::LowerIsBetter, ..samples(&a, &b) };
    assert_eq!(judge_metric(&lower, &JudgeOptions::default()).expect("judged").label, Label::Worse);

    let same = judge(&[samples(&a, &a)], &JudgeOptions::default()).expect("judged");
    assert_eq!(
        (same.verdict, same.metrics[0].label, same.score),
        (Verdict::NoSignificantDifference, Label::NoDifference, 100.0)
    );
    assert_eq!(same.metrics[0].p_value, 1.0);
}

#[test]
fn constant_samples_and_few_samples_are_judged_without_dividing_by_zero() {
    let constant = judge_metric(&samples(&[3.0; 5], &[3.0; 5]), &JudgeOptions::default()).expect("judged");
    assert_eq!((constant.p_value, constant.z, constant.label, constant.mde), (1.0, 0.0, Label::NoDifference, 0.0));
    let apart = judge_metric(&samples(&[1.0; 4], &[2.0; 4]), &JudgeOptions::default()).expect("judged");
    assert_eq!((apart.hl_estimate, apart.ci_low, apart.ci_high), (1.0, 1.0, 1.0));
    let err = judge_metric(&samples(&[], &[1.0]), &JudgeOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("at least one sample"), "{err}");
    let many = vec![1.0; MAX_SAMPLES + 1];
    let err = judge_metric(&samples(&many, &[1.0]), &JudgeOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("at most 2000 samples"), "{err}");
    let err = judge_metric(&samples(&[1.0, f64::NAN], &[1.0]), &JudgeOptions::default()).expect_err("refused");
    assert!(err.to_string().contains("sample 1 of variant A"), "{err}");
}

#[test]
fn a_a_tests_reject_at_the_nominal_rate() {
    // 2,000 pairs of samples from one distribution: the share with p < 0.05 is 5% within binomial noise
    // (three standard deviations: ±1.46 points), and Kayenta's rule never labels more of them.
    let mut gauss = Gauss::new(2026);
    let (pairs, alpha) = (2_000, 0.05);
    let options = JudgeOptions { confidence: 1.0 - alpha, ..JudgeOptions::default() };
    let (mut rejected, mut labelled) = (0, 0);
    for _ in 0..pairs {
        let (a, b) = (gauss.sample(15, 0.0), gauss.sample(15, 0.0));
        let judged = judge_metric(&samples(&a, &b), &options).expect("judged");
        rejected += usize::from(judged.p_value < alpha);
        labelled += usize::from(judged.label != Label::NoDifference);
    }
    let rate = rejected as f64 / pairs as f64;
    let noise = 3.0 * (alpha * (1.0 - alpha) / pairs as f64).sqrt();
    assert!((rate - alpha).abs() <= noise, "false-positive rate {rate} outside {alpha} ± {noise}");
    assert!(labelled <= rejected, "{labelled} labelled, {rejected} rejected");
}

#[test]
fn the_minimum_detectable_effect_shrinks_with_more_samples() {
    let options = JudgeOptions::default();
    let (few, many) = (standardized_mde(4, 4, &options), standardized_mde(40, 40, &options));
    assert!(few > 2.0 && many < 0.8 && (few / many - 10f64.sqrt()).abs() < 1e-9, "{few} {many}");
}

/// Integer-valued samples (ties on purpose), 3 to 12 per variant.
fn variant() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec((-20i32..20).prop_map(f64::from), 3..12)
}

proptest! {
    #[test]
    fn swapping_the_variants_flips_the_verdict_and_negates_the_shift(a in variant(), b in variant()) {
        let options = JudgeOptions::default();
        let ab = judge(&[samples(&a, &b)], &options).expect("judged");
        let ba = judge(&[samples(&b, &a)], &options).expect("judged");
        prop_assert_eq!(ba.verdict, ab.verdict.swapped());
        let (x, y) = (&ab.metrics[0], &ba.metrics[0]);
        prop_assert_eq!(y.hl_estimate, -x.hl_estimate);
        prop_assert_eq!((y.ci_low, y.ci_high), (-x.ci_high, -x.ci_low));
        prop_assert_eq!(y.p_value, x.p_value);
        prop_assert_eq!(y.z, -x.z);
    }

    #[test]
    fn adding_a_constant_to_both_samples_changes_no_label(a in variant(), b in variant(), c in -10_000i32..10_000) {
        let options = JudgeOptions::default();
        let shifted = |v: &[f64]| v.iter().map(|x| x + f64::from(c)).collect::<Vec<f64>>();
        let before = judge_metric(&samples(&a, &b), &options).expect("judged");
        let after = judge_metric(&samples(&shifted(&a), &shifted(&b)), &options).expect("judged");
        prop_assert_eq!(after.label, before.label);
        prop_assert_eq!((after.p_value, after.hl_estimate, after.ci_low, after.ci_high),
            (before.p_value, before.hl_estimate, before.ci_low, before.ci_high));
    }

    #[test]
    fn identical_samples_give_no_difference(a in variant(), seed in 0u64..1_000) {
        let mut shuffled = a.clone();
        let n = shuffled.len();
        shuffled.rotate_left((seed as usize) % n);
        let judged = judge(&[samples(&a, &shuffled)], &JudgeOptions::default()).expect("judged");
        prop_assert_eq!(judged.verdict, Verdict::NoSignificantDifference);
        prop_assert_eq!(judged.metrics[0].label, Label::NoDifference);
    }
}
