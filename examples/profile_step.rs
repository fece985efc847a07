//! Times one training step (batch 128, Adam) of AutoKeras's CNN generator at a given width on
//! MNIST-sized input, then each of its kernels alone: where a search epoch's time goes.
//!
//! ```text
//! cargo run --release --example profile_step -- 32
//! ```

use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::graph::{CnnConfig, Graph, Model};
use netmorph::optim::adam::Adam;
use netmorph::train::train_step;
use netmorph::{Device, Result, Tensor};
use std::time::Instant;

fn main() -> Result<()> {
    let width: usize = std::env::args().nth(1).and_then(|w| w.parse().ok()).unwrap_or(32);
    let batch = 128;
    let dev = Device::new()?;
    let mnist = Mnist::load(default_data_dir())?;
    let data = DeviceDataset::new(&dev, &mnist.train.take(batch))?;
    let graph = Graph::cnn(&[1, 28, 28], 10, &CnnConfig { width, ..Default::default() }, 1)?;
    let model = Model::new(&graph, &dev)?;
    let mut opt = Adam::new(1e-3, 0.9, 0.999, 1e-7, 0.0);
    let correct = Tensor::zeros(&dev, &[1])?;
    let idx: Vec<u32> = (0..batch as u32).collect();
    let mut step = |i: u64| -> Result<()> {
        let (x, y) = data.batch(&idx)?;
        train_step(&model, &mut opt, x, y, i, &correct)?;
        Ok(())
    };
    step(0)?;
    dev.sync()?;
    let reps = 5;
    let start = Instant::now();
    for i in 0..reps {
        step(1 + i)?;
        dev.sync()?;
    }
    let step_secs = start.elapsed().as_secs_f64() / reps as f64;
    dev.start_profile()?;
    step(99)?;
    let times = dev.finish_profile();
    let total: f64 = times.iter().map(|t| t.seconds).sum();
    println!("CNN generator width {width}, batch {batch}, on {}", dev.name());
    println!("{:<28} {:>6} {:>10} {:>7}", "kernel", "calls", "ms", "share");
    for t in &times {
        println!("{:<28} {:>6} {:>10.2} {:>6.1}%", t.kernel, t.calls, t.seconds * 1e3, 100.0 * t.seconds / total);
    }
    println!(
        "step: {:.1} ms (kernels timed alone: {:.1} ms); epoch of 391 steps: {:.0} s",
        step_secs * 1e3,
        total * 1e3,
        step_secs * 391.0
    );
    Ok(())
}
