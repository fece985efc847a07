//! Does test-time augmentation pay? Scores saved models on the search's validation split (the
//! held-out training images a search with this seed validates on; the test set is not read) with
//! their class probabilities averaged over shifted copies of each image, against the plain
//! images, and prints a table.
//!
//! ```text
//! cargo run --release --example tta_ablation -- runs/curve/new-15m/models/model_2 runs/curve/new-15m/models/model_0 --seed 1
//! ```
//!
//! A model trained on the whole training set (a search's `final`) has seen these images: score
//! searched models only.

use clap::Parser;
use netmorph::cli::{limit_and_shrink, parse_positive};
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::{default_data_dir, ImageSet, Mnist};
use netmorph::graph::{Graph, Model};
use netmorph::search::classifier::{shuffled_split, validation_size};
use netmorph::train::Network;
use netmorph::{autograd::Tape, Device, Result};
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
    let cross = vec![[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]];
    let square: Vec<[i32; 2]> = (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| [dx, dy])).collect();
    let diagonal = vec![[0, 0], [1, 1], [-1, -1], [1, -1], [-1, 1]];
    vec![("none", vec![[0, 0]]), ("cross of 1 px (5 copies)", cross), ("diagonals of 1 px (5)", diagonal), ("3x3 of 1 px (9)", square)]
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
    let data = DeviceDataset::new(&device, &val)?;
    println!("Validation split: {} of the first {} training images (seed {})", val.n, train.n, args.seed);
    println!("| model | test-time augmentation | validation loss | validation accuracy | errors |");
    println!("|---|---|---|---|---|");
    for path in &args.models {
        let graph = Graph::load(&path.with_extension("json"), &path.with_extension("safetensors"))?;
        let model = Model::new(&graph, &device)?;
        for (name, shifts) in configurations() {
            let probabilities = averaged_probabilities(&model, &data, &val, &shifts)?;
            let (loss, correct) = score(&probabilities, &val);
            println!("| {} | {name} | {loss:.4} | {:.4} | {} |", path.display(), correct as f64 / val.n as f64, val.n - correct);
        }
    }
    Ok(())
}

/// Each image's class probabilities, averaged over its copies shifted by `shifts`.
fn averaged_probabilities(model: &Model, data: &DeviceDataset, set: &ImageSet, shifts: &[[i32; 2]]) -> Result<Vec<f64>> {
    const BATCH: usize = 250;
    let mut sum = vec![0.0f64; set.n * set.classes];
    for &shift in shifts {
        for start in (0..set.n).step_by(BATCH) {
            let indices: Vec<u32> = (start as u32..(start + BATCH).min(set.n) as u32).collect();
            let (x, _) = data.batch_shifted(&indices, &vec![shift; indices.len()])?;
            let tape = Tape::no_grad();
            let logits = model.forward(&tape, &tape.constant(x), false, 0)?.value().to_vec()?;
            for (row, image) in logits.chunks(set.classes).zip(start..) {
                let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) as f64;
                let exp: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
                let total: f64 = exp.iter().sum();
                for (class, e) in exp.iter().enumerate() {
                    sum[image * set.classes + class] += e / total / shifts.len() as f64;
                }
            }
        }
    }
    Ok(sum)
}

/// Cross-entropy of the averaged probabilities and the count of correct argmaxes.
fn score(probabilities: &[f64], set: &ImageSet) -> (f64, usize) {
    let mut loss = 0.0;
    let mut correct = 0;
    for (row, &label) in probabilities.chunks(set.classes).zip(&set.labels) {
        loss -= row[label as usize].max(1e-12).ln();
        let predicted = row.iter().enumerate().fold(0, |b, (i, &p)| if p > row[b] { i } else { b });
        correct += usize::from(predicted == label as usize);
    }
    (loss / set.n as f64, correct)
}
