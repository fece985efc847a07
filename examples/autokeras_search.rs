//! AutoKeras 0.3's image classifier on MNIST: search architectures by network morphism within a
//! time limit, choose on the validation set which searched models to average with the best, train
//! a fresh copy of the best on the whole training set as one more member, and report the
//! ensemble's test accuracy.
//!
//! ```text
//! cargo run --release --example autokeras_search -- --time-limit 2h
//! cargo run --release --example autokeras_search -- --time-limit 2h --resume      # after a crash
//! ```
//!
//! The search directory keeps every model and the history; `--resume` continues it without
//! training any finished model again. The test set is only used for the final report.

use clap::Parser;
use netmorph::data::{default_data_dir, ImageSet, Mnist, RandomShift};
use netmorph::graph::{CnnConfig, ResNetConfig};
use netmorph::search::classifier::{ClassifierConfig, FinalFit, Generator, ImageClassifier, OptimizerConfig};
use netmorph::search::parse_duration;
use netmorph::search::store::{write_atomic, SearchStore};
use netmorph::train::LrSchedule;
use netmorph::{Device, Result};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "Architecture search by network morphism on MNIST (AutoKeras 0.3's ImageClassifier)")]
struct Args {
    /// The time for everything, search and final fit, such as 30m or 2h.
    #[arg(long, default_value = "2h")]
    time_limit: String,
    /// The share of --time-limit kept for the ensemble selection and the final fit (the search gets
    /// the rest). Without a final fit (--final-epochs 0), 2% for the selection alone.
    #[arg(long, default_value_t = 0.25)]
    final_share: f64,
    /// Where the history, every model and the best are kept.
    #[arg(long, default_value = "autokeras-search")]
    search_dir: PathBuf,
    /// Continue the search in --search-dir.
    #[arg(long)]
    resume: bool,
    /// Use only the first N training images.
    #[arg(long)]
    train_limit: Option<usize>,
    /// Evaluate on only the first N test images.
    #[arg(long)]
    test_limit: Option<usize>,
    /// Seeds the search: the same seed gives the same sequence of architectures on the same adapter.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Folder holding the MNIST files.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Shrink the images by averaging FxF blocks (quick runs: 2 gives 14x14 MNIST).
    #[arg(long, default_value_t = 1)]
    downsample: usize,
    /// Width (filters) of the generator's convolutions, or `auto`: the widest of 64 (AutoKeras's), 48,
    /// 32, 24 and 16 whose first model can train 10 epochs within its share of the search time,
    /// judged by timing a few training steps on this adapter.
    #[arg(long, default_value = "auto")]
    width: String,
    /// Number of the generator's conv blocks.
    #[arg(long, default_value_t = 3)]
    blocks: usize,
    /// Also start from a small ResNet.
    #[arg(long)]
    resnet: bool,
    /// Epoch cap of the generators' models.
    #[arg(long, default_value_t = 40)]
    max_epochs: usize,
    /// Epoch cap of children (they start from their father's trained weights).
    #[arg(long, default_value_t = 15)]
    child_epochs: usize,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Optimizer: adam, adadelta or sgd.
    #[arg(long, default_value = "adam")]
    optimizer: String,
    /// Learning rate (default: 1e-3 for adam, 1.0 for adadelta, 0.01 for sgd).
    #[arg(long)]
    lr: Option<f32>,
    /// Each searched model's learning rate: `cosine` (down to 2% over the epochs its time share
    /// holds) or `constant`.
    #[arg(long, default_value = "cosine")]
    lr_schedule: String,
    /// The most of the search time left that one model may train for (1: no cap, as AutoKeras).
    #[arg(long, default_value_t = 0.4)]
    model_share: f64,
    /// Random-shift augmentation of the training images, at most this many pixels along each axis
    /// (0: none), or `auto`: 2 for images of 16 pixels or more a side.
    #[arg(long, default_value = "auto")]
    shift: String,
    /// Stop the search after this many models in the search directory.
    #[arg(long)]
    max_models: Option<usize>,
    /// The most searched models averaged into the final model, chosen on the validation set by
    /// greedy selection (1: the best alone, as AutoKeras).
    #[arg(long, default_value_t = 4)]
    ensemble: usize,
    /// Most epochs of the final fit on the whole training set (0: none); fewer when the time
    /// limit would not hold them. Its learning rate falls along a cosine over the epochs it gets.
    #[arg(long, default_value_t = 30)]
    final_epochs: usize,
    /// With --final-fit continue, the final fit trains at the learning rate times this
    /// (default: the library's `ClassifierConfig::final_lr_scale`).
    #[arg(long)]
    final_lr_scale: Option<f32>,
    /// What the final fit trains: `member` (a fresh copy of the best architecture that joins the
    /// ensemble; README.md gives the runs), `continue` (the best, from its searched weights) or
    /// `retrain` (a fresh copy, in the best's place).
    #[arg(long, default_value = "member")]
    final_fit: String,
    /// Write the final model here (<path>.json and <path>.safetensors); default: <search-dir>/final.
    #[arg(long)]
    export: Option<PathBuf>,
}

/// Epochs the first model should have time for when `--width auto` picks the generator's width.
const AUTO_WIDTH_EPOCHS: usize = 10;

/// The share of the time limit kept for the ensemble selection when there is no final fit: one
/// pass over the validation set per candidate (8 at most), each about a sixteenth of an epoch.
const SELECTION_SHARE: f64 = 0.02;

/// Averages `f`x`f` blocks (the image's edge rows and columns that do not fill a block are dropped).
fn downsample(set: &ImageSet, f: usize) -> ImageSet {
    if f <= 1 {
        return set.clone();
    }
    let (h, w) = (set.height / f, set.width / f);
    let mut images = Vec::with_capacity(set.n * set.channels * h * w);
    for i in 0..set.n {
        let img = set.image(i);
        for c in 0..set.channels {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = 0u32;
                    for dy in 0..f {
                        for dx in 0..f {
                            sum += img[(c * set.height + y * f + dy) * set.width + x * f + dx] as u32;
                        }
                    }
                    images.push((sum / (f * f) as u32) as u8);
                }
            }
        }
    }
    ImageSet { images, height: h, width: w, ..set.clone() }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let time_limit = parse_duration(&args.time_limit)?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mnist = Mnist::load(&data_dir)?;
    let mut train = mnist.train;
    let mut test = mnist.test;
    if let Some(n) = args.train_limit {
        train = train.take(n);
    }
    if let Some(n) = args.test_limit {
        test = test.take(n);
    }
    let train = downsample(&train, args.downsample);
    let test = downsample(&test, args.downsample);

    let optimizer = match args.optimizer.as_str() {
        "adam" => OptimizerConfig::Adam { lr: args.lr.unwrap_or(1e-3) },
        "adadelta" => OptimizerConfig::Adadelta { lr: args.lr.unwrap_or(1.0), rho: 0.95, eps: 1e-7 },
        "sgd" => OptimizerConfig::Sgd { lr: args.lr.unwrap_or(0.01) },
        other => return Err(netmorph::Error::Invalid(format!("unknown optimizer `{other}`: use adam, adadelta or sgd"))),
    };
    let shift = match args.shift.as_str() {
        "auto" => None,
        n => Some(RandomShift {
            max: n.parse().map_err(|_| netmorph::Error::Invalid(format!("--shift {n}: expected a number of pixels or `auto`")))?,
        }),
    };
    let final_fit = match args.final_fit.as_str() {
        "continue" => FinalFit::Continue,
        "retrain" => FinalFit::Retrain,
        "member" => FinalFit::NewMember,
        other => return Err(netmorph::Error::Invalid(format!("--final-fit {other}: use continue, retrain or member"))),
    };
    let lr_schedule = match args.lr_schedule.as_str() {
        "cosine" => LrSchedule::Cosine { floor: 0.02 },
        "constant" => LrSchedule::Constant,
        other => return Err(netmorph::Error::Invalid(format!("--lr-schedule {other}: use cosine or constant"))),
    };
    let mut config = ClassifierConfig {
        search_dir: args.search_dir.clone(),
        resume: args.resume,
        seed: args.seed,
        batch_size: args.batch_size,
        max_epochs: args.max_epochs,
        child_epochs: args.child_epochs,
        optimizer,
        lr_schedule,
        max_models: args.max_models,
        ensemble_size: args.ensemble.max(1),
        model_share: args.model_share,
        shift,
        ..Default::default()
    };
    if let Some(scale) = args.final_lr_scale {
        if !(scale > 0.0 && scale.is_finite()) {
            return Err(netmorph::Error::Invalid(format!("--final-lr-scale {scale} must be a positive number")));
        }
        config.final_lr_scale = scale;
    }

    if !(0.0..1.0).contains(&args.final_share) {
        return Err(netmorph::Error::Invalid(format!("--final-share {} must be in [0, 1)", args.final_share)));
    }
    let final_share = match (args.final_epochs, args.ensemble) {
        (0, 0 | 1) => 0.0,
        (0, _) => SELECTION_SHARE,
        _ => args.final_share,
    };
    let search_limit = time_limit.mul_f64(1.0 - final_share);

    let device = Device::new()?;
    println!("Device: {}", device.name());
    let start = Instant::now();
    let deadline = start + time_limit;
    println!(
        "Time limit {:.0}s: {:.0}s for the search, the rest for the ensemble selection and the final fit",
        time_limit.as_secs_f64(),
        search_limit.as_secs_f64()
    );
    let cnn = CnnConfig { blocks: args.blocks, ..Default::default() };
    // Refuses an existing search without --resume before anything is written there.
    SearchStore::open(&args.search_dir, args.resume)?;
    // A resumed search keeps the width it started with, whatever a new probe would say.
    let width_file = args.search_dir.join("generator_width");
    let stored_width = if args.resume { std::fs::read_to_string(&width_file).ok() } else { None };
    let width = match stored_width.as_deref().map(str::trim).unwrap_or(args.width.as_str()) {
        "auto" => {
            let probe = ImageClassifier::new(&device, config.clone());
            let budget = search_limit.mul_f64(args.model_share.clamp(0.0, 1.0));
            probe.affordable_cnn_width(&train, &cnn, &[64, 48, 32, 24, 16], AUTO_WIDTH_EPOCHS, budget)?
        }
        w => w.parse().map_err(|_| netmorph::Error::Invalid(format!("--width {w}: expected a number or `auto`")))?,
    };
    write_atomic(&width_file, width.to_string().as_bytes())?;
    config.generators = vec![Generator::Cnn(CnnConfig { width, ..cnn })];
    if args.resnet {
        config.generators.push(Generator::ResNet(ResNetConfig { width: (width / 4).max(4), ..Default::default() }));
    }
    let mut classifier = ImageClassifier::new(&device, config);
    classifier.fit(&train, search_limit)?;
    println!("Search and ensemble selection took {:.1}s", start.elapsed().as_secs_f64());
    if let Some(graph) = classifier.best_graph() {
        println!("{}", graph.summary()?);
    }
    if let Some(chosen) = classifier.ensemble().last() {
        println!("Ensemble: models {:?} (val loss {:.4}, val accuracy {:.4})", chosen.members, chosen.val_loss, chosen.val_accuracy);
    }

    if args.final_epochs > 0 {
        println!("Final fit ({}) on all {} training images (at most {} epochs)", args.final_fit, train.n, args.final_epochs);
        classifier.final_fit(&train, args.final_epochs, final_fit, Some(deadline))?;
        println!("Search and final fit took {:.1}s (limit {:.0}s)", start.elapsed().as_secs_f64(), time_limit.as_secs_f64());
    }
    let export = args.export.clone().unwrap_or_else(|| args.search_dir.join("final"));
    let (json, weights) = (export.with_extension("json"), export.with_extension("safetensors"));
    classifier.export(&json, &weights)?;
    println!("Exported the model to {} and {}", json.display(), weights.display());
    let eval = classifier.evaluate(&test)?;
    println!("Test loss: {:.4}", eval.loss);
    println!("Test accuracy: {:.4}", eval.accuracy);
    Ok(())
}
