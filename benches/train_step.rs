//! Seconds per training step of the seed's Keras convnet at batch 128 (images per second as
//! criterion's element rate), then a per-kernel breakdown: the step's kernels timed one by one, to
//! compare the step time with the sum of its kernels' times (the overhead around the kernels).

use criterion::{criterion_group, Criterion, Throughput};
use netmorph::data::dataset::DeviceDataset;
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::graph::{Graph, Model};
use netmorph::optim::adadelta::Adadelta;
use netmorph::train::train_step;
use netmorph::{Device, Tensor};
use std::time::Instant;

const BATCH: usize = 128;

struct Setup {
    dev: Device,
    model: Model,
    data: DeviceDataset,
    opt: Adadelta,
}

fn setup() -> Setup {
    let dev = Device::shared().expect("adapter");
    let mnist = Mnist::load(default_data_dir()).expect("MNIST in data/mnist");
    let data = DeviceDataset::new(&dev, &mnist.train.take(BATCH)).unwrap();
    let model = Model::new(&Graph::keras_mnist_convnet(&[1, 28, 28], 10, 1).unwrap(), &dev).unwrap();
    Setup { dev, model, data, opt: Adadelta::default() }
}

fn step(s: &mut Setup, correct: &Tensor, i: u64) {
    let idx: Vec<u32> = (0..BATCH as u32).collect();
    let (x, y) = s.data.batch(&idx).unwrap();
    train_step(&s.model, &mut s.opt, x, y, i, correct).unwrap();
}

fn bench(c: &mut Criterion) {
    let mut s = setup();
    let correct = Tensor::zeros(&s.dev, &[1]).unwrap();
    let mut group = c.benchmark_group(format!("train_step/{}", s.dev.bench_id()));
    group.sample_size(10);
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut i = 0;
    group.bench_function("keras_mnist_convnet_b128", |b| {
        b.iter(|| {
            i += 1;
            step(&mut s, &correct, i);
            s.dev.sync().unwrap();
        })
    });
    group.finish();
}

/// Step time against the sum of the step's kernel times, each kernel run and timed alone.
fn breakdown() {
    let mut s = setup();
    let correct = Tensor::zeros(&s.dev, &[1]).unwrap();
    step(&mut s, &correct, 0); // warm the pipeline cache and the buffer pool
    s.dev.sync().unwrap();
    let reps = 3;
    let start = Instant::now();
    for i in 0..reps {
        step(&mut s, &correct, i);
        s.dev.sync().unwrap();
    }
    let step_secs = start.elapsed().as_secs_f64() / reps as f64;

    // What timing one dispatch alone costs beyond its kernel (submit and wait), to subtract.
    let tiny = Tensor::full(&s.dev, &[1, 1], 1.0).unwrap();
    s.dev.start_profile().unwrap();
    for _ in 0..50 {
        netmorph::ops::matmul::matmul(&tiny, &tiny, false, false).unwrap();
    }
    let per_call_overhead = s.dev.finish_profile().iter().map(|t| t.seconds).sum::<f64>() / 50.0;

    s.dev.start_profile().unwrap();
    step(&mut s, &correct, 99);
    let times = s.dev.finish_profile();
    let calls: u64 = times.iter().map(|t| t.calls).sum();
    let kernel_secs: f64 = times.iter().map(|t| t.seconds).sum();
    let kernel_net = kernel_secs - calls as f64 * per_call_overhead;
    println!("\nPer-kernel breakdown of one training step ({}, batch {BATCH}):", s.dev.name());
    println!("{:<28} {:>6} {:>10} {:>7}", "kernel", "calls", "ms", "share");
    for t in &times {
        println!("{:<28} {:>6} {:>10.2} {:>6.1}%", t.kernel, t.calls, t.seconds * 1e3, 100.0 * t.seconds / kernel_secs);
    }
    println!("step (recorded, one submit): {:.3} s; {:.0} images/s", step_secs, BATCH as f64 / step_secs);
    println!(
        "sum of kernels timed alone:  {:.3} s ({calls} dispatches, {:.1} us timing overhead each)",
        kernel_secs,
        per_call_overhead * 1e6
    );
    println!("  less that overhead:        {:.3} s", kernel_net);
    println!("step / kernel sum:           {:.2} (target <= 1.3)", step_secs / kernel_net.max(1e-9));
    println!("epoch of 469 steps:          {:.0} s (target <= 360 s)", step_secs * 469.0);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    breakdown();
}
