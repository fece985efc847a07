//! Does test-time augmentation pay? Scores saved models on the search's validation split (the
//! held-out training images a search with this seed validates on; the test set is not read) with
//! their logits averaged over shifted copies of each image, as a graph's test-time shifts do
//! (`Graph::set_test_time_shifts`, what `--test-time-shifts` ships), against the plain images,
//! and prints a table.
//!
//! ```text
//! cargo run --release --example tta_ablation -- runs/curve/new-15m/models/model_2 runs/curve/new-15m/models/model_0 --seed 1
//! ```
//!
//! A model trained on the whole training set (a search's `final`) has seen these images: score
//! searched models only.

use clap::Parser;
use netmorph::cli::{limit_and_shrink, parse_positive};
use netmorph::data::{default_data_dir, Mnist};
use netmorph::graph::Graph;
use netmorph::search::classifier::{shuffled_split, validation_size, ImageClassifier};
use netmorph::search::options::TestTimeShifts;
use netmorph::{Device, Result};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(about = "Test-time augmentation (averaged shifted copies) against plain images, on the search's validation split")]
struct Args {
    /// Saved models (<path>.json and <path>.safetensors), as the search writes them.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// The search's seed, which chose its validation split.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The search's --train-limit, if it had one.
    #[arg(long, value_parser = parse_positive)]
    train_limit: Option<usize>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The shifted copies each configuration averages, as `[dx, dy]`.
fn configurations() -> Vec<(&'static str, Vec<[i32; 2]>)> {
    let diagonal = vec![[0, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]];
    vec![
        ("none", vec![]),
        ("cross of 1 px (5 copies)", TestTimeShifts::Cross.shifts()),
        ("diagonals of 1 px (5)", diagonal),
        ("3x3 of 1 px (9)", TestTimeShifts::Square.shifts()),
    ]
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let device = Device::new()?;
    let mnist = Mnist::load(args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let train = limit_and_shrink(&mnist.train, args.train_limit, 1)?;
    let (_, val) = shuffled_split(&train, validation_size(train.n), args.seed)?;
    println!("Validation split: {} of the first {} training images (seed {})", val.n, train.n, args.seed);
    println!("| model | test-time augmentation | validation loss | validation accuracy | errors |");
    println!("|---|---|---|---|---|");
    for path in &args.models {
        let mut graph = Graph::load(&path.with_extension("json"), &path.with_extension("safetensors"))?;
        for (name, shifts) in configurations() {
            graph.set_test_time_shifts(shifts)?;
            let eval = ImageClassifier::from_graph(&device, graph.clone())?.evaluate(&val)?;
            let errors = val.n - (eval.accuracy * val.n as f64).round() as usize;
            println!("| {} | {name} | {:.4} | {:.4} | {errors} |", path.display(), eval.loss, eval.accuracy);
        }
    }
    Ok(())
}
