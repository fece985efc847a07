//! What micro-batching costs: the seed model (the Keras MNIST convnet) trained at its batch of 128
//! on this adapter as it is, and under binding limits lowered so that each batch goes in 2 and in 4
//! micro-batches (the convolutions' im2col chunks shrink with the limit too), in alternating rounds.
//!
//! ```text
//! cargo run --release --example micro_batch_cost -- 5
//! ```

use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::graph::{Graph, Model};
use netmorph::optim::sgd::Sgd;
use netmorph::train::{fit, micro_batch_size, FitConfig, Network};
use netmorph::{Device, Error, Result};
use std::time::Instant;

const BATCH: usize = 128;
const STEPS: usize = 10;

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let rounds: usize = match std::env::args().nth(1) {
        None => 5,
        Some(text) => {
            text.parse().ok().filter(|&r| r > 0).ok_or_else(|| Error::Invalid(format!("rounds `{text}`: a whole number of at least 1")))?
        }
    };
    let device = Device::new()?;
    let graph = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 3)?;
    let per_image = Model::new(&graph, &device)?.largest_tensor_bytes_per_image().expect("a graph model knows its activations");
    let set = Mnist::load(default_data_dir())?.train.take(BATCH * STEPS);
    let variants: Vec<(String, Device)> = [1usize, 2, 4]
        .iter()
        .map(|&parts| {
            let device = if parts == 1 { device.clone() } else { device.with_max_binding_bytes(per_image * (BATCH / parts) as u64) };
            (format!("{parts} micro-batch{}", if parts == 1 { "" } else { "es" }), device)
        })
        .collect();
    let mut seconds = vec![Vec::new(); variants.len()];
    for round in 0..=rounds {
        for (k, (_, device)) in variants.iter().enumerate() {
            let model = Model::new(&graph, device)?;
            let data = DeviceDataset::new(device, &set)?;
            let cfg = FitConfig { epochs: 1, batch_size: BATCH, seed: 7, verbose: false, ..FitConfig::default() };
            let start = Instant::now();
            fit(&model, &mut Sgd::new(0.01), &data, None, &cfg)?;
            device.sync()?;
            // Round 0 compiles the kernels.
            if round > 0 {
                seconds[k].push(start.elapsed().as_secs_f64() / STEPS as f64);
            }
        }
    }
    println!("Seed model, batch {BATCH}, {STEPS} SGD steps per round, {rounds} rounds, on {}", device.name());
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let base = median(&mut seconds[0].clone());
    for ((name, device), times) in variants.iter().zip(&mut seconds) {
        let micro = micro_batch_size(&Model::new(&graph, device)?, device, BATCH)?;
        let m = median(times);
        println!("{name:<18} (micro-batch {micro:>3}): {:.1} ms per step, {:.3}x", m * 1e3, m / base);
    }
    Ok(())
}
