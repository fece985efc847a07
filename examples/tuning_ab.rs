//! Kernel tuning, measured: the seed model's training step (the Keras MNIST convnet, batch 128,
//! Adadelta) and a 1024³ matmul on three devices of one adapter, timed in alternating rounds so
//! that a neighbour's load falls on all three alike:
//! - `previous`: the kernels of the rules with every buffer access bounds-checked (the commit
//!   before tuning, whose shaders kept their bounds checks on Vulkan too);
//! - `rules`: the rules, with this build's shader checks;
//! - `tuned`: kernels chosen by measurement (a fresh choice table, so the first run's tuning is
//!   timed and reported, and not counted in the rounds).
//!
//! ```text
//! cargo run --release --example tuning_ab -- [ROUNDS]
//! ```

use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::device::{DeviceOptions, KernelKnobs, KernelTuning, ShaderChecks};
use netmorph::graph::{Graph, Model};
use netmorph::ops::matmul::matmul;
use netmorph::optim::adadelta::Adadelta;
use netmorph::train::train_step;
use netmorph::{Device, Result, Tensor};
use std::time::Instant;

const BATCH: usize = 128;
const SIDE: usize = 1024;

struct Bench {
    name: &'static str,
    device: Device,
    model: Model,
    data: DeviceDataset,
    opt: Adadelta,
    correct: Tensor,
    a: Tensor,
    b: Tensor,
    steps: Vec<f64>,
    products: Vec<f64>,
}

impl Bench {
    fn new(name: &'static str, options: DeviceOptions, mnist: &Mnist) -> Result<Bench> {
        let device = Device::with_options(&options)?;
        let ones = vec![1.0f32 / SIDE as f32; SIDE * SIDE];
        Ok(Bench {
            name,
            model: Model::new(&Graph::keras_mnist_convnet(&[1, 28, 28], 10, 1)?, &device)?,
            data: DeviceDataset::new(&device, &mnist.train.take(BATCH))?,
            opt: Adadelta::default(),
            correct: Tensor::zeros(&device, &[1])?,
            a: Tensor::from_slice(&device, &ones, &[SIDE, SIDE])?,
            b: Tensor::from_slice(&device, &ones, &[SIDE, SIDE])?,
            device,
            steps: Vec::new(),
            products: Vec::new(),
        })
    }

    fn step(&mut self, seed: u64) -> Result<f64> {
        let idx: Vec<u32> = (0..BATCH as u32).collect();
        self.device.sync()?;
        let start = Instant::now();
        let (x, y) = self.data.batch(&idx)?;
        train_step(&self.model, &mut self.opt, x, y, seed, &self.correct)?;
        self.device.sync()?;
        Ok(start.elapsed().as_secs_f64())
    }

    fn product(&mut self) -> Result<f64> {
        self.device.sync()?;
        let start = Instant::now();
        matmul(&self.a, &self.b, false, false)?;
        self.device.sync()?;
        Ok(start.elapsed().as_secs_f64())
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() -> Result<()> {
    let rounds: usize = std::env::args().nth(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let mnist = Mnist::load(default_data_dir())?;
    let cache = std::env::temp_dir().join(format!("netmorph-tuning-ab-{}", std::process::id()));
    let base = DeviceOptions { knobs: KernelKnobs::from_env()?, ..DeviceOptions::default() };
    let tuned = KernelTuning::On { cap: KernelTuning::DEFAULT_CAP, cache: Some(cache.clone()) };
    let mut benches = vec![
        Bench::new("previous", DeviceOptions { shader_checks: Some(ShaderChecks::Bounds), ..base.clone() }, &mnist)?,
        Bench::new("rules", base.clone(), &mnist)?,
        Bench::new("tuned", DeviceOptions { kernel_tuning: tuned, ..base }, &mnist)?,
    ];
    println!("{} ({}), {rounds} rounds", benches[0].device.name(), benches[0].device.driver_info());
    // Warm-up: pipelines compiled, pools filled, and the tuned device's kernels chosen.
    for b in &mut benches {
        let start = Instant::now();
        b.step(0)?;
        b.product()?;
        let warm = start.elapsed();
        match b.device.tuning_summary() {
            Some(summary) => println!("{:>8}: first step and product {:.1} s; {summary}", b.name, warm.as_secs_f64()),
            None => println!("{:>8}: first step and product {:.1} s", b.name, warm.as_secs_f64()),
        }
    }
    for round in 0..rounds {
        for b in &mut benches {
            let step = b.step(1 + round as u64)?;
            b.steps.push(step);
            let product = b.product()?;
            b.products.push(product);
        }
    }
    let flops = 2.0 * (SIDE as f64).powi(3);
    let (step0, product0) = (median(&benches[0].steps), median(&benches[0].products));
    println!("\n{:>8} {:>12} {:>9} {:>14} {:>10} {:>9}", "", "step (ms)", "ratio", "1024³ (ms)", "GFLOP/s", "ratio");
    for b in &benches {
        let (s, p) = (median(&b.steps), median(&b.products));
        println!("{:>8} {:>12.1} {:>9.3} {:>14.1} {:>10.1} {:>9.3}", b.name, s * 1e3, s / step0, p * 1e3, flops / p / 1e9, p / product0);
    }
    println!("(medians of {rounds} alternating rounds; ratio: time against `previous`, below 1 is faster)");
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
