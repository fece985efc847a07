//! What augmentation adds to a training step: a batch of MNIST-sized images gathered from the
//! device-resident set with no augmentation (the plain copy), with shifts only (copied pixels),
//! and with every augmentation on (rotation, scale and elastic distortion resample each pixel
//! bilinearly; cutout). The three alternate within each repetition, so that drift of the machine
//! touches them alike; each time covers the draw of the records on the host, their upload, the
//! kernel and a wait for the device.
//!
//! cargo run --release --example augment_cost -- [--repeats 300] [--batch-size 128]

use clap::Parser;
use netmorph::cli::parse_positive;
use netmorph::data::{Augmentation, BatchOrder, DeviceDataset, ImageSet, RandomShift};
use netmorph::{Device, Result};
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Time the batch gather with no augmentation, shifts only and every augmentation")]
struct Args {
    #[arg(long, default_value_t = 300, value_parser = parse_positive)]
    repeats: usize,
    #[arg(long, default_value_t = 128, value_parser = parse_positive)]
    batch_size: usize,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(args: Args) -> Result<()> {
    let dev = Device::shared()?;
    // MNIST-sized synthetic bytes: the figures do not depend on the pixel values.
    let n = 10_000;
    let images: Vec<u8> = (0..n * 784).map(|i| ((i * 2_654_435_761usize) >> 13) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    let set = ImageSet::new(images, labels, 1, 28, 28, 10)?;
    let data = DeviceDataset::new(&dev, &set)?;
    let order = BatchOrder::new(n, args.batch_size, 1)?.epoch(0);
    let shift = Augmentation { shift: RandomShift { max: 2 }, ..Augmentation::NONE };
    let all = Augmentation { rotation_degrees: 10.0, scale: 0.1, elastic: 2.0, cutout: 8, flip: true, ..shift };
    let modes = [("none", Augmentation::NONE), ("shift 2", shift), ("everything", all)];
    let mut times = vec![Vec::with_capacity(args.repeats); modes.len()];
    for repeat in 0..args.repeats + 10 {
        let indices = &order[repeat % order.len()];
        for (k, (_, augmentation)) in modes.iter().enumerate() {
            let start = Instant::now();
            let augments = if augmentation.is_none() { vec![] } else { augmentation.draw(indices.len(), repeat as u64) };
            let batch = data.batch_augmented(indices, &augments)?;
            dev.sync()?;
            drop(batch);
            // The first repetitions compile the pipeline and fill the pools.
            if repeat >= 10 {
                times[k].push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    println!("augment_cost on {}: batches of {} 28x28 images, {} repetitions, modes alternated", dev.name(), args.batch_size, args.repeats);
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    for ((name, _), ms) in modes.iter().zip(&medians) {
        println!("  {name:<10} median {ms:.3} ms per batch ({:.2}x no augmentation, {:.2}x shifts only)", ms / medians[0], ms / medians[1]);
    }
    Ok(())
}
