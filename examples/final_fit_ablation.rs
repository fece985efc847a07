//! Which final fit pays for a given number of epochs? Replays the end of a finished MNIST search
//! (its search directory) with the final fit trained on the search's own training split instead of
//! every training image, so that the search's validation split (held-out training images; the test
//! set is not read) can judge it:
//!
//! - `searched`: the searched ensemble as the selection chose it;
//! - `member`: a fresh copy of the best architecture trained `--epochs` epochs, added to it;
//! - `continue`: the best trained on from its searched weights for `--epochs` epochs at a tenth of
//!   the rate, in the best's place.
//!
//! ```text
//! cargo run --release --example final_fit_ablation -- runs/curve/new-15m --epochs 3
//! ```

use clap::Parser;
use netmorph::cli::parse_positive;
use netmorph::data::{default_data_dir, DeviceDataset, Mnist};
use netmorph::graph::ensemble::average_logits;
use netmorph::graph::{Graph, Model};
use netmorph::search::classifier::{shuffled_split, validation_size, ClassifierConfig, FinalFit, ImageClassifier};
use netmorph::train::evaluate;
use netmorph::{Device, Error, Result};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Compare the final fits (a new member, continuing the best) on a finished search's validation split")]
struct Args {
    /// The finished search's directory (settings.json, ensemble.json, models/).
    search_dir: PathBuf,
    /// Epochs of each final fit (what the search's final fit had time for).
    #[arg(long, value_parser = parse_positive)]
    epochs: usize,
    /// Run only these (comma-separated: searched, member, continue).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))
}

fn run(args: Args) -> Result<()> {
    let dir = &args.search_dir;
    let settings = read_json(&dir.join("settings.json"))?;
    let field =
        |name: &str| settings[name].as_u64().ok_or_else(|| Error::Invalid(format!("{}: no `{name}` in settings.json", dir.display())));
    let (seed, images) = (field("seed")?, field("train_images")? as usize);
    let steps = read_json(&dir.join("ensemble.json"))?;
    let members: Vec<usize> = steps
        .as_array()
        .and_then(|s| s.last())
        .and_then(|s| s["members"].as_array())
        .map(|m| m.iter().filter_map(|id| id.as_u64().map(|id| id as usize)).collect())
        .filter(|m: &Vec<usize>| !m.is_empty())
        .ok_or_else(|| Error::Invalid(format!("{}: no members in ensemble.json", dir.display())))?;
    let load = |id: usize| {
        let base = dir.join("models").join(format!("model_{id}"));
        Graph::load(&base.with_extension("json"), &base.with_extension("safetensors"))
    };
    let searched: Vec<Graph> = members.iter().map(|&id| load(id)).collect::<Result<_>>()?;

    let device = Device::new()?;
    let mnist = Mnist::load(args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let train = mnist.train.take(images);
    let (fit_set, val) = shuffled_split(&train, validation_size(train.n), seed)?;
    let val_data = DeviceDataset::new(&device, &val)?;
    let score = |members: &[Graph]| -> Result<(f64, f64)> {
        let e = evaluate(&Model::new(&average_logits(members)?, &device)?, &val_data, 128)?;
        Ok((e.loss, e.accuracy))
    };
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    println!(
        "Search {} (seed {seed}): ensemble of models {members:?}; final fits of {} epochs on {} images",
        dir.display(),
        args.epochs,
        fit_set.n
    );
    println!("Validation: {} held-out training images", val.n);
    let mut rows = Vec::new();
    if wanted("searched") {
        rows.push(("searched ensemble".to_string(), score(&searched)?, 0.0));
    }
    let config = ClassifierConfig { seed, ..ClassifierConfig::default() };
    if wanted("member") {
        let start = Instant::now();
        let mut fresh = ImageClassifier::from_architecture(&device, config.clone(), &searched[0], &fit_set)?;
        fresh.final_fit(&fit_set, args.epochs, FinalFit::Retrain, None)?;
        let mut ensemble = searched.clone();
        ensemble.push(fresh.best_graph().expect("trained above").clone());
        rows.push((format!("+ a new member of {} epochs", args.epochs), score(&ensemble)?, start.elapsed().as_secs_f64()));
    }
    if wanted("continue") {
        let start = Instant::now();
        let mut best = ImageClassifier::from_graph(&device, searched[0].clone())?;
        best.final_fit(&fit_set, args.epochs, FinalFit::Continue, None)?;
        let mut ensemble = searched.clone();
        ensemble[0] = best.best_graph().expect("trained above").clone();
        rows.push((format!("the best continued {} epochs", args.epochs), score(&ensemble)?, start.elapsed().as_secs_f64()));
    }
    println!("| final fit | validation loss | validation accuracy | seconds |");
    println!("|---|---|---|---|");
    for (name, (loss, accuracy), seconds) in rows {
        println!("| {name} | {loss:.4} | {accuracy:.4} | {seconds:.0} |");
    }
    Ok(())
}
