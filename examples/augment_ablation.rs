//! Which augmentation helps on little data: one fixed model (the search's CNN generator, batch
//! norm momentum as the search sets it) trained from the same initial weights on the first
//! `--train-limit` MNIST training images, once per augmentation: none, shift, shift + rotation,
//! shift + scale, shift + elastic distortion, shift + cutout, all of them, and label smoothing
//! with the shift and with everything. Validation is a seeded
//! held-out part of the TRAINING images (the search's split); the test set is never read. Adam
//! with a cosine learning rate. Prints each configuration's best and last validation accuracy and
//! its training time.
//!
//! ```text
//! cargo run --release --example augment_ablation -- [--train-limit 2000] [--epochs 30] [--width 64]
//!     [--shift 2] [--rotate 10] [--scale 0.1] [--elastic 2] [--cutout 8] [--label-smoothing 0.1]
//!     [--only none,all]
//! ```

use clap::Parser;
use netmorph::cli::{parse_elastic, parse_label_smoothing, parse_positive, parse_positive_real, parse_rotation, parse_scale, DeviceArgs};
use netmorph::data::{default_data_dir, Augmentation, DeviceDataset, ImageSet, Mnist, RandomShift};
use netmorph::graph::{CnnConfig, Graph, Model, Op};
use netmorph::search::classifier::{shuffled_split, validation_size, OptimizerConfig};
use netmorph::train::{fit, FitConfig, LrSchedule};
use netmorph::{Error, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Train one fixed CNN on a little MNIST once per augmentation and compare validation accuracy")]
struct Args {
    /// Train (and validate) on the first N MNIST training images.
    #[arg(long, default_value_t = 2000, value_parser = parse_positive)]
    train_limit: usize,
    #[arg(long, default_value_t = 30, value_parser = parse_positive)]
    epochs: usize,
    #[arg(long, default_value_t = 128, value_parser = parse_positive)]
    batch_size: usize,
    /// Filters of each convolution of the search's CNN generator.
    #[arg(long, default_value_t = 64, value_parser = parse_positive)]
    width: usize,
    /// Adam's learning rate, down along a cosine to 2% over the epochs.
    #[arg(long, default_value_t = 1e-3, value_parser = parse_positive_real)]
    lr: f32,
    /// The shift (pixels) of every configuration but `none`.
    #[arg(long, default_value_t = 2)]
    shift: usize,
    #[arg(long = "rotate", value_name = "DEGREES", default_value_t = 10.0, value_parser = parse_rotation)]
    rotation_degrees: f32,
    #[arg(long, value_name = "FRACTION", default_value_t = 0.1, value_parser = parse_scale)]
    scale: f32,
    #[arg(long, value_name = "PIXELS", default_value_t = 2.0, value_parser = parse_elastic)]
    elastic: f32,
    #[arg(long, value_name = "PIXELS", default_value_t = 8)]
    cutout: usize,
    /// The label smoothing of the `smooth` and `all+smooth` configurations.
    #[arg(long, value_name = "EPS", default_value_t = 0.1, value_parser = parse_label_smoothing)]
    label_smoothing: f32,
    /// Run only these configurations (comma-separated: none, shift, rotate, scale, elastic, cutout,
    /// all, smooth, all+smooth).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Seeds the split, the weights (the same for every configuration), the order and the draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Also write a PNG grid of augmented training images here: a row per configuration, the same
    /// 12 images in each (drawn by the CPU reference of the kernel), to look at what each does.
    #[arg(long, value_name = "FILE.png")]
    samples: Option<PathBuf>,
    /// Where the MNIST files are; default: $NETMORPH_DATA_DIR or the repository's data/mnist.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    device: DeviceArgs,
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// One row of the table: the training batches' augmentation and the loss's label smoothing.
#[derive(Clone, Copy)]
struct Recipe {
    augmentation: Augmentation,
    label_smoothing: f32,
}

/// The configurations compared, by name.
fn configurations(args: &Args) -> Vec<(&'static str, Recipe)> {
    let shift = Augmentation { shift: RandomShift { max: args.shift }, ..Augmentation::NONE };
    let all =
        Augmentation { rotation_degrees: args.rotation_degrees, scale: args.scale, elastic: args.elastic, cutout: args.cutout, ..shift };
    let plain = |augmentation| Recipe { augmentation, label_smoothing: 0.0 };
    let smoothed = |augmentation| Recipe { augmentation, label_smoothing: args.label_smoothing };
    vec![
        ("none", plain(Augmentation::NONE)),
        ("shift", plain(shift)),
        ("rotate", plain(Augmentation { rotation_degrees: args.rotation_degrees, ..shift })),
        ("scale", plain(Augmentation { scale: args.scale, ..shift })),
        ("elastic", plain(Augmentation { elastic: args.elastic, ..shift })),
        ("cutout", plain(Augmentation { cutout: args.cutout, ..shift })),
        ("all", plain(all)),
        ("smooth", smoothed(shift)),
        ("all+smooth", smoothed(all)),
    ]
}

/// What a configuration's name stands for in the table.
fn describe(recipe: &Recipe) -> String {
    let a = &recipe.augmentation;
    let mut parts = Vec::new();
    if a.shift.max > 0 {
        parts.push(format!("shift {}", a.shift.max));
    }
    if a.rotation_degrees > 0.0 {
        parts.push(format!("rotate {}", a.rotation_degrees));
    }
    if a.scale > 0.0 {
        parts.push(format!("scale {}", a.scale));
    }
    if a.elastic > 0.0 {
        parts.push(format!("elastic {}", a.elastic));
    }
    if a.cutout > 0 {
        parts.push(format!("cutout {}", a.cutout));
    }
    if recipe.label_smoothing > 0.0 {
        parts.push(format!("label smoothing {}", recipe.label_smoothing));
    }
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(" + ")
    }
}

/// The search's CNN with its batch norms at the search's momentum (ClassifierConfig::bn_momentum).
fn model_graph(shape: &[usize], classes: usize, width: usize, seed: u64) -> Result<Graph> {
    let mut graph = Graph::cnn(shape, classes, &CnnConfig { width, ..CnnConfig::default() }, seed)?;
    let ids: Vec<_> = graph.layers().iter().map(|l| l.id).collect();
    for id in ids {
        if let Op::BatchNorm { momentum, .. } = &mut graph.layer_mut(id).op {
            *momentum = 0.9;
        }
    }
    Ok(graph)
}

fn run(args: Args) -> Result<()> {
    let all = configurations(&args);
    if let Some(unknown) = args.only.iter().find(|name| !all.iter().any(|(n, _)| n == name)) {
        let names: Vec<&str> = all.iter().map(|(n, _)| *n).collect();
        return Err(Error::Invalid(format!("--only: no configuration `{unknown}` (there are {})", names.join(", "))));
    }
    let chosen: Vec<_> = all.into_iter().filter(|(name, _)| args.only.is_empty() || args.only.iter().any(|o| o == name)).collect();
    let mnist = Mnist::load(args.data_dir.clone().unwrap_or_else(default_data_dir))?;
    let images = mnist.train.take(args.train_limit);
    if images.n < 2 {
        return Err(Error::Invalid(format!("--train-limit {}: at least two images are needed to hold some out", args.train_limit)));
    }
    let (train, val) = shuffled_split(&images, validation_size(images.n), args.seed)?;
    for (_, recipe) in &chosen {
        recipe.augmentation.check(train.height, train.width)?;
    }
    if let Some(path) = &args.samples {
        write_samples(path, &train, &chosen, args.seed)?;
        println!("Wrote the augmented samples to {}", path.display());
    }
    let device = args.device.open()?;
    let shape = train.image_shape();
    let graph = model_graph(&shape, train.classes, args.width, args.seed)?;
    println!(
        "augment_ablation on {}: the search's CNN (width {}, {} parameters), {} training and {} validation images (held out of MNIST's training set), {} epochs, Adam {} with a cosine schedule",
        device.name(),
        args.width,
        graph.param_counts()?.0,
        train.n,
        val.n,
        args.epochs,
        args.lr
    );
    let train_data = DeviceDataset::new(&device, &train)?;
    let val_data = DeviceDataset::new(&device, &val)?;
    let config = |epochs: usize, recipe: Recipe| FitConfig {
        epochs,
        batch_size: args.batch_size,
        seed: args.seed,
        verbose: false,
        lr_schedule: LrSchedule::Cosine { floor: 0.02 },
        augmentation: recipe.augmentation,
        label_smoothing: recipe.label_smoothing,
        ..FitConfig::default()
    };
    // One untimed epoch first: kernel choice (when on) and pipeline compilation would otherwise
    // be counted in the first configuration's time.
    let start = Instant::now();
    let warm_up = Model::new(&graph, &device)?;
    fit(&warm_up, OptimizerConfig::adam(args.lr).build().as_mut(), &train_data, Some(&val_data), &config(1, chosen[0].1))?;
    drop(warm_up);
    println!("  warm-up epoch (kernel choice, pipelines): {:.1}s", start.elapsed().as_secs_f64());
    let mut rows = Vec::new();
    for (name, recipe) in &chosen {
        let model = Model::new(&graph, &device)?;
        // The search's Adam.
        let mut optimizer = OptimizerConfig::adam(args.lr).build();
        let start = Instant::now();
        let history = fit(&model, optimizer.as_mut(), &train_data, Some(&val_data), &config(args.epochs, *recipe))?;
        let seconds = start.elapsed().as_secs_f64();
        let accuracies: Vec<f64> = history.epochs.iter().filter_map(|e| e.val_accuracy).collect();
        let best = accuracies.iter().copied().fold(f64::NAN, f64::max);
        let last = accuracies.last().copied().unwrap_or(f64::NAN);
        println!("  {name:<8} {:<40} best {best:.4}, last {last:.4}, {seconds:.1}s", describe(recipe));
        rows.push((name, describe(recipe), best, last, seconds));
        drop(model);
        device.trim_pool();
    }
    println!();
    println!("| configuration | recipe | best val accuracy | last val accuracy | seconds |");
    println!("|---|---|---|---|---|");
    for (name, what, best, last, seconds) in rows {
        println!("| {name} | {what} | {best:.4} | {last:.4} | {seconds:.1} |");
    }
    Ok(())
}

/// A grid of one-channel images, a row per configuration, each the same first `COLUMNS` training
/// images augmented as that configuration draws them.
fn write_samples(path: &std::path::Path, train: &ImageSet, chosen: &[(&str, Recipe)], seed: u64) -> Result<()> {
    const COLUMNS: usize = 12;
    let (h, w) = (train.height, train.width);
    if train.channels != 1 {
        return Err(Error::Invalid(format!("--samples draws one-channel images; these have {} channels", train.channels)));
    }
    let count = COLUMNS.min(train.n);
    let indices: Vec<u32> = (0..count as u32).collect();
    let mut grid = image::GrayImage::new((count * (w + 1)) as u32, (chosen.len() * (h + 1)) as u32);
    for (row, (_, recipe)) in chosen.iter().enumerate() {
        let pixels = train.gather_f32_augmented(&indices, &recipe.augmentation.draw(count, seed));
        for (i, value) in pixels.iter().enumerate() {
            let (image, y, x) = (i / (h * w), i / w % h, i % w);
            let grey = (value.clamp(0.0, 1.0) * 255.0).round() as u8;
            grid.put_pixel((image * (w + 1) + x) as u32, (row * (h + 1) + y) as u32, image::Luma([grey]));
        }
    }
    grid.save(path).map_err(|e| Error::Other(format!("{}: {e}", path.display())))
}
