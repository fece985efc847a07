//! The seed's Keras convnet on MNIST, layer for layer:
//! Conv2D(32, 3x3, relu) -> Conv2D(64, 3x3, relu) -> MaxPool 2x2 -> Dropout 0.25 -> Flatten ->
//! Dense 128 relu -> Dropout 0.5 -> Dense 10 softmax; categorical cross-entropy; Adadelta (1.0, 0.95,
//! 1e-7); batch 128; 12 epochs; evaluated on the 10,000 test images (Keras: 99.12%).
//!
//! cargo run --release --example mnist_baseline -- [--epochs 12] [--batch-size 128] [--train-limit N] [--seed 1] [--data-dir DIR]

use clap::Parser;
use netmorph::autograd::{Tape, Var};
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::ops::conv2d::{Conv2dConfig, Padding};
use netmorph::ops::pool::Pool2dConfig;
use netmorph::optim::adadelta::Adadelta;
use netmorph::train::{evaluate, fit, FitConfig, Network};
use netmorph::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
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
}

/// The seed's model, written as a Keras user would read it.
struct KerasConvnet {
    conv1: (Tensor, Tensor),
    conv2: (Tensor, Tensor),
    dense1: (Tensor, Tensor),
    dense2: (Tensor, Tensor),
}

/// Keras's default initialisation: Glorot uniform kernels, zero biases.
fn glorot(device: &Device, rng: &mut impl Rng, shape: &[usize], fan_in: usize, fan_out: usize) -> Result<(Tensor, Tensor)> {
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let w: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(-limit..limit)).collect();
    let bias_len = if shape.len() == 4 { shape[0] } else { shape[1] };
    Ok((Tensor::from_slice(device, &w, shape)?, Tensor::zeros(device, &[bias_len])?))
}

impl KerasConvnet {
    fn new(device: &Device, seed: u64) -> Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        Ok(KerasConvnet {
            conv1: glorot(device, &mut rng, &[32, 1, 3, 3], 9, 32 * 9)?,
            conv2: glorot(device, &mut rng, &[64, 32, 3, 3], 32 * 9, 64 * 9)?,
            dense1: glorot(device, &mut rng, &[9216, 128], 9216, 128)?,
            dense2: glorot(device, &mut rng, &[128, 10], 128, 10)?,
        })
    }
}

impl Network for KerasConvnet {
    fn forward(&self, tape: &Tape, x: &Var, training: bool, seed: u64) -> Result<Var> {
        let p = |t: &Tensor| tape.param(t);
        let conv = Conv2dConfig { stride: 1, padding: Padding::Valid };
        let x = tape.conv2d(x, &p(&self.conv1.0), Some(&p(&self.conv1.1)), conv)?;
        let x = tape.relu(&x)?;
        let x = tape.conv2d(&x, &p(&self.conv2.0), Some(&p(&self.conv2.1)), conv)?;
        let x = tape.relu(&x)?;
        let x = tape.max_pool2d(&x, Pool2dConfig { kernel: 2, stride: 2 })?;
        let x = tape.dropout(&x, 0.25, seed, training)?;
        let n = x.shape()[0];
        let x = tape.reshape(&x, &[n, 9216])?;
        let x = tape.dense(&x, &p(&self.dense1.0), Some(&p(&self.dense1.1)))?;
        let x = tape.relu(&x)?;
        let x = tape.dropout(&x, 0.5, seed.wrapping_add(1), training)?;
        tape.dense(&x, &p(&self.dense2.0), Some(&p(&self.dense2.1)))
    }

    fn parameters(&self) -> Vec<Tensor> {
        [&self.conv1, &self.conv2, &self.dense1, &self.dense2].iter().flat_map(|(w, b)| [w.clone(), b.clone()]).collect()
    }
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
    let model = KerasConvnet::new(&device, args.seed)?;
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
    Ok(())
}
