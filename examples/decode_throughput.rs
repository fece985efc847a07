//! Decode throughput of the image-folder loader: writes MNIST training images as a PNG class
//! folder, then times loading it on one thread and on every core.
//!
//! `cargo run --release --example decode_throughput [-- N]` (N images, default 10,000; the folder
//! is `$TMPDIR/netmorph-decode-N`, written once and reused).

use netmorph::data::folder::{default_threads, load_image_folder};
use netmorph::data::{default_data_dir, LoadOptions, Mnist};
use std::time::Instant;

fn main() -> netmorph::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(10_000, |a| a.parse().expect("N, a number of images"));
    let dir = std::env::temp_dir().join(format!("netmorph-decode-{n}"));
    if !dir.join("9").is_dir() {
        let set = Mnist::load(default_data_dir())?.train.take(n);
        eprintln!("writing {} PNGs to {}", set.n, dir.display());
        for i in 0..set.n {
            let class_dir = dir.join(set.labels[i].to_string());
            std::fs::create_dir_all(&class_dir).map_err(|e| netmorph::Error::io(&class_dir, e))?;
            let img = image::GrayImage::from_raw(set.width as u32, set.height as u32, set.image(i).to_vec()).expect("28x28 bytes");
            img.save(class_dir.join(format!("{i:05}.png"))).map_err(|e| netmorph::Error::Other(e.to_string()))?;
        }
    }
    let options = LoadOptions { test_fraction: 0.0, ..LoadOptions::default() };
    let cores = default_threads();
    let mut thread_counts = vec![1];
    if cores > 1 {
        thread_counts.push(cores);
    }
    for threads in thread_counts {
        // Best of three, after one warm-up load that brings the files into the page cache.
        load_image_folder(&dir, &options, threads)?;
        let mut best = f64::INFINITY;
        let mut loaded = 0;
        for _ in 0..3 {
            let start = Instant::now();
            loaded = load_image_folder(&dir, &options, threads)?.train.n;
            best = best.min(start.elapsed().as_secs_f64());
        }
        println!("{threads} thread(s): {loaded} images in {:.3} s, {:.0} images/s", best, loaded as f64 / best);
    }
    Ok(())
}
