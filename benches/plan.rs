//! Closed-loop planning against random choice on a simulated pipeline whose truth the bench owns
//! (`optimizer::synthetic::truth`, measured with noise of sd 3): each round runs `BUDGET` experiments
//! chosen by `chaoseater plan`'s planner, or uniformly at random from the same space, then retrains. The
//! model's error is its mean absolute error against the truth over the whole space (corruption rates 0-1,
//! latencies 0-2,000 ms, every region), while the starting history holds mild faults only.
//!
//! cargo bench --bench plan
//!
//! Prints both learning curves (the mean over `SEEDS` starting histories, each strategy on the same ones)
//! and their ratio; the claim is that planning reaches a given error in fewer experiments.

use std::time::Instant;

use chaoseater_processors::optimizer::simulate::{self, Strategy};

const ROUNDS: usize = 12;
const BUDGET: usize = 6;
const SEEDS: u64 = 20;

fn main() {
    let started = Instant::now();
    let mut plan = vec![0.0; ROUNDS + 1];
    let mut random = vec![0.0; ROUNDS + 1];
    let mut rows = Vec::new();
    let mut wins = 0;
    for seed in 1..=SEEDS {
        let p = simulate::learning_curve(Strategy::Plan, ROUNDS, BUDGET, seed).expect("plan curve");
        let r = simulate::learning_curve(Strategy::Random, ROUNDS, BUDGET, seed).expect("random curve");
        for i in 0..=ROUNDS {
            plan[i] += p.mae[i] / SEEDS as f64;
            random[i] += r.mae[i] / SEEDS as f64;
        }
        if p.mae[1..].iter().sum::<f64>() < r.mae[1..].iter().sum::<f64>() {
            wins += 1;
        }
        rows = p.rows;
    }
    println!(
        "plan vs random: {ROUNDS} rounds of {BUDGET} experiments, mean over {SEEDS} starting histories \
         (MAE against the truth, score points)"
    );
    println!("  round  experiments  rows   plan MAE  random MAE  plan/random");
    for i in 0..=ROUNDS {
        println!(
            "  {i:>5}  {:>11}  {:>4}   {:>8.2}  {:>10.2}  {:>11.2}",
            i * BUDGET,
            rows[i],
            plan[i],
            random[i],
            plan[i] / random[i]
        );
    }
    let area = |c: &[f64]| c[1..].iter().sum::<f64>();
    println!(
        "  area under the curve (rounds 1-{ROUNDS}): plan {:.1}, random {:.1}, ratio {:.2}",
        area(&plan),
        area(&random),
        area(&plan) / area(&random)
    );
    println!("  the plan's area is lower on {wins} of {SEEDS} starting histories");
    // Experiments random choice needs to reach the plan's final error (None: not within the rounds run).
    let reached = random.iter().position(|&m| m <= plan[ROUNDS]).map(|i| i * BUDGET);
    match reached {
        Some(n) => println!(
            "  random reaches the plan's final MAE {:.2} after {n} experiments (plan: {})",
            plan[ROUNDS],
            ROUNDS * BUDGET
        ),
        None => println!(
            "  random does not reach the plan's final MAE {:.2} within {} experiments",
            plan[ROUNDS],
            ROUNDS * BUDGET
        ),
    }
    println!("  {:.1} s", started.elapsed().as_secs_f64());
}
