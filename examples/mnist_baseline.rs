//! The seed's Keras convnet on MNIST, layer for layer:
//! Conv2D(32, 3x3, relu) -> Conv2D(64, 3x3, relu) -> MaxPool 2x2 -> Dropout 0.25 -> Flatten ->
//! Dense 128 relu -> Dropout 0.5 -> Dense 10 softmax; categorical cross-entropy; Adadelta (1.0, 0.95,
//! 1e-7); batch 128; 12 epochs; evaluated on the 10,000 test images (Keras: 99.12%).
//!
//! cargo run --release --example mnist_baseline -- [--epochs 12] [--batch-size 128] [--train-limit N] [--seed 1] [--data-dir DIR]

use clap::Parser;
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::graph::{Graph, Model};
use netmorph::optim::adadelta::Adadelta;
use netmorph::train::{evaluate, fit, FitConfig};
use netmorph::{Device, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Train the seed's Keras MNIST convnet with netmorph")]
struct Args {
    #[arg(long, default_value_t = 12)]
    epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Train on the first N training images only (a quick run).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on the first N test images only.
    #[arg(long)]
    test_limit: Option<usize>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the MNIST files are (raw or .gz); default: $NETMORPH_DATA_DIR or the repository's data/mnist.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Fetch MNIST from a public mirror into the data directory when files are missing.
    #[arg(long)]
    download: bool,
    /// Save the trained model as DIR/model.json (architecture) and DIR/model.safetensors (weights).
    #[arg(long)]
    save: Option<PathBuf>,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    if args.download {
        netmorph::data::download::download_mnist(netmorph::data::download::DEFAULT_MIRROR, &dir)?;
    }
    let mut mnist = Mnist::load(&dir)?;
    if let Some(n) = args.train_limit {
        mnist.train = mnist.train.take(n);
    }
    if let Some(n) = args.test_limit {
        mnist.test = mnist.test.take(n);
    }
    let device = Device::new()?;
    println!("Adapter: {}", device.name());
    let t = &mnist.train;
    println!("x_train shape: ({}, {}, {}, {})", t.n, t.height, t.width, t.channels);
    println!("{} train samples", mnist.train.n);
    println!("{} test samples", mnist.test.n);

    let train = DeviceDataset::new(&device, &mnist.train)?;
    let test = DeviceDataset::new(&device, &mnist.test)?;
    let shape = [t.channels, t.height, t.width];
    let graph = Graph::keras_mnist_convnet(&shape, mnist.train.classes, args.seed)?;
    print!("{}", graph.summary()?);
    let model = Model::new(&graph, &device)?;
    let mut opt = Adadelta::default();
    println!("Train on {} samples, validate on {} samples", train.len(), test.len());
    let start = Instant::now();
    let cfg = FitConfig { epochs: args.epochs, batch_size: args.batch_size, seed: args.seed, ..FitConfig::default() };
    let history = fit(&model, &mut opt, &train, Some(&test), &cfg)?;
    let secs = start.elapsed().as_secs_f64();
    let score = evaluate(&model, &test, args.batch_size)?;
    println!("Test loss: {:.4}", score.loss);
    println!("Test accuracy: {:.4}", score.accuracy);
    println!(
        "Trained {} epochs in {:.0}s ({:.1}s per epoch) on {}",
        history.epochs.len(),
        secs,
        secs / history.epochs.len().max(1) as f64,
        device.name()
    );
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir).map_err(|e| netmorph::Error::io(dir, e))?;
        let (json, weights) = (dir.join("model.json"), dir.join("model.safetensors"));
        model.to_graph()?.save(&json, &weights)?;
        println!("Saved the model to {} and {}", json.display(), weights.display());
    }
    Ok(())
}
