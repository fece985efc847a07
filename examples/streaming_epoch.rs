//! What streaming a data set costs: the same MNIST training set resident on the device and
//! streamed in small chunks (as a set larger than the device would be), epochs of each mode
//! alternated in one run (the host is noisy), and the streamed/resident ratio of their medians.
//! Two measures: a data-only epoch (every batch gathered and augmented, nothing trained: the worst
//! case, where the chunks' host gathers and uploads are all there is besides the gathers), and a
//! training epoch of a small convnet (or `--model linear`).
//!
//! cargo run --release --example streaming_epoch -- [--chunk-mib 8] [--repeats 3] [--train-limit N]

use clap::Parser;
use netmorph::autograd::{Tape, Var};
use netmorph::data::{default_data_dir, Augmentation, BatchOrder, DeviceDataset, Mnist, Residency};
use netmorph::ops::conv2d::{Conv2dConfig, Padding};
use netmorph::ops::pool::Pool2dConfig;
use netmorph::optim::sgd::Sgd;
use netmorph::train::{fit, FitConfig, Network};
use netmorph::{Device, Result, Tensor};
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Epoch time of a streamed data set against the same set resident")]
struct Args {
    /// Size of a streamed chunk, in MiB (MNIST's 60,000 images are 45 MiB).
    #[arg(long, default_value_t = 8)]
    chunk_mib: u64,
    /// Epochs of each mode, alternated.
    #[arg(long, default_value_t = 3)]
    repeats: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    train_limit: Option<usize>,
    /// The trained network: `cnn` (conv 16, pool, conv 32, pool, dense) or `linear`.
    #[arg(long, default_value = "cnn")]
    model: String,
    /// Skip the training epochs (data only).
    #[arg(long)]
    data_only: bool,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

struct Net {
    params: Vec<Tensor>,
    cnn: bool,
}

impl Net {
    fn new(dev: &Device, cnn: bool) -> Result<Net> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut glorot = |shape: &[usize], fan_in: usize, fan_out: usize| {
            let limit = (6.0 / (fan_in + fan_out) as f32).sqrt();
            let v: Vec<f32> = (0..shape.iter().product::<usize>()).map(|_| rng.random_range(-limit..limit)).collect();
            Tensor::from_slice(dev, &v, shape)
        };
        let params = if cnn {
            vec![
                glorot(&[16, 1, 3, 3], 9, 144)?,
                Tensor::zeros(dev, &[16])?,
                glorot(&[32, 16, 3, 3], 144, 288)?,
                Tensor::zeros(dev, &[32])?,
                glorot(&[800, 10], 800, 10)?,
                Tensor::zeros(dev, &[10])?,
            ]
        } else {
            vec![glorot(&[784, 10], 784, 10)?, Tensor::zeros(dev, &[10])?]
        };
        Ok(Net { params, cnn })
    }
}

impl Network for Net {
    fn forward(&self, tape: &Tape, x: &Var, _training: bool, _seed: u64) -> Result<Var> {
        let p: Vec<Var> = self.params.iter().map(|t| tape.param(t)).collect();
        let n = x.shape()[0];
        if !self.cnn {
            return tape.dense(&tape.reshape(x, &[n, 784])?, &p[0], Some(&p[1]));
        }
        let conv = Conv2dConfig { stride: 1, padding: Padding::Valid };
        let pool = Pool2dConfig { kernel: 2, stride: 2 };
        let x = tape.max_pool2d(&tape.relu(&tape.conv2d(x, &p[0], Some(&p[1]), conv)?)?, pool)?; // 13x13
        let x = tape.max_pool2d(&tape.relu(&tape.conv2d(&x, &p[2], Some(&p[3]), conv)?)?, pool)?; // 5x5
        tape.dense(&tape.reshape(&x, &[n, 800])?, &p[4], Some(&p[5]))
    }
    fn parameters(&self) -> Vec<Tensor> {
        self.params.clone()
    }
}

/// Gathers every batch of an epoch, augmented as a training epoch would be; seconds.
fn data_epoch(data: &DeviceDataset, batch_size: usize, epoch: u64) -> Result<f64> {
    let start = Instant::now();
    let augmentation = Augmentation::for_image(data.channels, data.height, data.width);
    let mut batches = data.batches(BatchOrder::new(data.len(), batch_size, 1)?.epoch(epoch))?;
    for step in 0..batches.len() {
        let augments = augmentation.draw(batches.indices(step).len(), step as u64);
        batches.gather(step, &augments)?;
        data.device().flush()?;
    }
    data.device().sync()?;
    Ok(start.elapsed().as_secs_f64())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn report(what: &str, resident: Vec<f64>, streamed: Vec<f64>) {
    let fmt = |v: &[f64]| v.iter().map(|s| format!("{s:.2}")).collect::<Vec<_>>().join(" ");
    let (r, s) = (median(resident.clone()), median(streamed.clone()));
    println!(
        "{what}: resident {r:.2} s (epochs: {}), streamed {s:.2} s (epochs: {}); streamed/resident {:.3}",
        fmt(&resident),
        fmt(&streamed),
        s / r
    );
}

fn run(args: Args) -> Result<()> {
    let dev = Device::shared()?;
    let mut set = Mnist::load(default_data_dir())?.train;
    if let Some(n) = args.train_limit {
        set = set.take(n);
    }
    let set = Arc::new(set);
    let resident = DeviceDataset::from_shared(&dev, set.clone(), Residency::Resident)?;
    let streamed = DeviceDataset::from_shared(&dev, set.clone(), Residency::Streamed { chunk_bytes: args.chunk_mib << 20 })?;
    let chunks = streamed.batches(BatchOrder::new(set.n, args.batch_size, 1)?.epoch(0))?.chunks();
    println!(
        "streaming_epoch on {}: {} images ({:.1} MiB), batches of {}, streamed in {chunks} chunks of at most {} images ({} MiB)",
        dev.name(),
        set.n,
        set.images.len() as f64 / (1 << 20) as f64,
        args.batch_size,
        streamed.images_per_chunk().unwrap_or(0),
        args.chunk_mib
    );
    // Warm-up: pipelines compiled, pools filled, for both modes.
    data_epoch(&resident, args.batch_size, 0)?;
    data_epoch(&streamed, args.batch_size, 0)?;
    let (mut r, mut s) = (Vec::new(), Vec::new());
    for epoch in 1..=args.repeats as u64 {
        r.push(data_epoch(&resident, args.batch_size, epoch)?);
        s.push(data_epoch(&streamed, args.batch_size, epoch)?);
    }
    report("data-only epoch (gather + shift augmentation)", r, s);
    if args.data_only {
        return Ok(());
    }
    let cnn = args.model == "cnn";
    let (net_r, net_s) = (Net::new(&dev, cnn)?, Net::new(&dev, cnn)?);
    let (mut opt_r, mut opt_s) = (Sgd::new(0.05).with_momentum(0.9, false), Sgd::new(0.05).with_momentum(0.9, false));
    let (mut r, mut s) = (Vec::new(), Vec::new());
    for repeat in 0..args.repeats {
        let cfg = FitConfig {
            batch_size: args.batch_size,
            seed: repeat as u64,
            verbose: false,
            augmentation: Augmentation { shift: netmorph::data::RandomShift { max: 2 }, ..Augmentation::NONE },
            ..FitConfig::default()
        };
        let hr = fit(&net_r, &mut opt_r, &resident, None, &cfg)?;
        let hs = fit(&net_s, &mut opt_s, &streamed, None, &cfg)?;
        println!(
            "  training epoch {}: resident {:.2} s (loss {:.4}), streamed {:.2} s (loss {:.4})",
            repeat + 1,
            hr.epochs[0].seconds,
            hr.epochs[0].loss,
            hs.epochs[0].seconds,
            hs.epochs[0].loss
        );
        r.push(hr.epochs[0].seconds);
        s.push(hs.epochs[0].seconds);
    }
    report(&format!("training epoch ({})", args.model), r, s);
    let same = net_r.params.iter().zip(&net_s.params).map(|(a, b)| Ok(a.to_vec()? == b.to_vec()?)).collect::<Result<Vec<bool>>>()?;
    println!("streamed and resident training end with identical weights: {}", same.iter().all(|&b| b));
    Ok(())
}
