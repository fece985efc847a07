//! How the Bayesian optimiser should treat the architectures that other workers are training
//! when it proposes the next: not at all (only excluded), as the worst result so far (constant
//! liar), or as its own mean prediction (kriging believer). Simulated on the test grid, whose
//! accuracy peaks at (6, 6), with workers whose trials take 1 to 1.5 time units: the optimiser is
//! the real one; only training is simulated.
//!
//! ```text
//! cargo run --release --example parallel_proposals
//! ```

use netmorph::search::{BayesianConfig, BayesianOptimizer, Fantasy};
use netmorph::testing::search::{score, Grid};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TRIALS: usize = 24;
const SEEDS: u64 = 20;

/// One simulated search: the best score after each finished trial, and the time the last took.
fn simulate(fantasy: Fantasy, workers: usize, seed: u64) -> (Vec<f64>, f64) {
    let config = BayesianConfig { fantasy, ..BayesianConfig::default() };
    let mut bo = BayesianOptimizer::new(Grid { max: 12 }, config);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut durations = StdRng::seed_from_u64(seed ^ 0xD0);
    // The generator's model, trained first.
    bo.add_result(0, (1, 1), score((1, 1)));
    let (mut now, mut best, mut curve) = (1.0, score((1, 1)), vec![score((1, 1))]);
    let mut in_flight: Vec<(f64, usize, (i64, i64))> = Vec::new();
    let mut next_id = 1;
    let mut idle = workers;
    while curve.len() < TRIALS {
        while idle > 0 && next_id < TRIALS {
            bo.set_in_flight(in_flight.iter().map(|t| t.2).collect());
            let Some(p) = bo.propose(&mut rng) else { break };
            in_flight.push((now + durations.random_range(1.0..1.5), next_id, p.arch));
            next_id += 1;
            idle -= 1;
        }
        let Some(first) = in_flight.iter().enumerate().min_by(|a, b| a.1 .0.total_cmp(&b.1 .0)).map(|(i, _)| i) else { break };
        let (end, id, arch) = in_flight.remove(first);
        now = end;
        bo.add_result(id, arch, score(arch));
        best = f64::max(best, score(arch));
        curve.push(best);
        idle += 1;
    }
    (curve, now)
}

fn main() {
    println!("Best accuracy (mean of {SEEDS} seeds) after n finished trials; the optimum is 1.0");
    println!("{:<14} {:>7} {:>8} {:>8} {:>8} {:>10}", "fantasy", "workers", "n=8", "n=16", "n=24", "time");
    for workers in [1, 4] {
        for fantasy in [Fantasy::Exclude, Fantasy::ConstantLiar, Fantasy::Mean] {
            if workers == 1 && fantasy != Fantasy::Exclude {
                continue; // one worker has nothing in flight when it asks
            }
            let runs: Vec<(Vec<f64>, f64)> = (0..SEEDS).map(|seed| simulate(fantasy, workers, seed)).collect();
            let at = |n: usize| runs.iter().map(|(c, _)| c[(n - 1).min(c.len() - 1)]).sum::<f64>() / SEEDS as f64;
            let time = runs.iter().map(|r| r.1).sum::<f64>() / SEEDS as f64;
            println!("{:<14} {workers:>7} {:>8.4} {:>8.4} {:>8.4} {time:>10.1}", format!("{fantasy:?}"), at(8), at(16), at(24));
        }
    }
}
