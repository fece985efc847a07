//! What the `netmorph` command and the examples share: their options (`clap`), each checked with
//! an error that names the flag and the value, and the jobs they run. The binaries only parse and
//! call these; everything a flag does is a library call.

pub mod model;
pub mod report;
pub mod search;

use crate::data::{
    load_data, Augmentation, ImageSet, LoadOptions, LoadedData, RandomShift, DEFAULT_TEST_FRACTION, MAX_ROTATION_DEGREES, MAX_SCALE,
};
use crate::device::{Device, DeviceOptions, KernelTuning};
use crate::error::{Error, Result};
use crate::search::classifier::ClassifierConfig;
use crate::search::options::{AutoOr, OptimizerKind, ScheduleKind, TestTimeShifts};
use std::path::{Path, PathBuf};

/// The device a command opens.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct DeviceArgs {
    /// Kernel choice: `on` measures the kernels of each new problem class on this adapter (at most
    /// 30 s per run, kept for later runs in $NETMORPH_CACHE_DIR or ~/.cache/netmorph), `off` keeps
    /// the built-in rules (repeatable runs), or a cap in seconds. Default: NETMORPH_TUNING, else on.
    #[arg(long, value_parser = KernelTuning::parse)]
    pub kernel_tuning: Option<KernelTuning>,
}

impl DeviceArgs {
    /// The device, with the environment's options and these.
    pub fn open(&self) -> Result<Device> {
        let mut options = DeviceOptions::from_env()?;
        if let Some(tuning) = &self.kernel_tuning {
            options.kernel_tuning = tuning.clone();
        }
        Device::with_options(&options)
    }
}

/// Where a data set comes from, and what to do to it on the way in.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// The data: a folder with one subfolder of images per class (optionally inside `train/` and
    /// `test/`), CIFAR-10 or CIFAR-100 binary batches, IDX files (MNIST, Fashion-MNIST, KMNIST,
    /// EMNIST) or NumPy arrays (`x_train.npy`, `y_train.npy`, ...).
    pub data: PathBuf,
    /// Resize every image to HxW (such as 32x32); without it, images of mixed sizes are an error.
    #[arg(long, value_parser = parse_size)]
    pub resize: Option<[usize; 2]>,
    /// Skip images that cannot be read (they are counted) instead of stopping at the first.
    #[arg(long)]
    pub skip_bad: bool,
    /// The share of the images held out as a test set (stratified, seeded) when the data has none.
    #[arg(long, default_value_t = DEFAULT_TEST_FRACTION, value_parser = parse_fraction)]
    pub test_fraction: f64,
    /// Use only the first N training images.
    #[arg(long, value_parser = parse_positive)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long, value_parser = parse_positive)]
    pub test_limit: Option<usize>,
    /// Shrink the images by averaging FxF blocks (quick runs: 2 gives 14x14 MNIST).
    #[arg(long, default_value_t = 1, value_parser = parse_positive)]
    pub downsample: usize,
}

impl DataArgs {
    /// Loads the data (the test split seeded by `seed`), applies the limits and the downsampling,
    /// and says what it read.
    pub fn load(&self, seed: u64) -> Result<LoadedData> {
        let options = LoadOptions { resize: self.resize, skip_bad: self.skip_bad, test_fraction: self.test_fraction, seed };
        let start = std::time::Instant::now();
        let mut data = load_data(&self.data, &options)?;
        let seconds = start.elapsed().as_secs_f64();
        data.train = limit_and_shrink(&data.train, self.train_limit, self.downsample)?;
        data.test = limit_and_shrink(&data.test, self.test_limit, self.downsample)?;
        // The files stay index-aligned with the images the limits kept.
        data.train_files.truncate(data.train.n);
        data.test_files.truncate(data.test.n);
        let set = &data.train;
        println!(
            "Data: {} ({:?}, read in {seconds:.1}s): {} training and {} test images{} of {}x{}x{}, {} classes",
            self.data.display(),
            data.format,
            data.train.n,
            data.test.n,
            if data.test_was_split { format!(" (a {:.0}% stratified split)", self.test_fraction * 100.0) } else { String::new() },
            set.channels,
            set.height,
            set.width,
            set.classes
        );
        if !data.skipped.is_empty() {
            println!("Skipped {} unreadable files, such as {}: {}", data.skipped.len(), data.skipped[0].0.display(), data.skipped[0].1);
        }
        Ok(data)
    }
}

/// How each model trains: what `netmorph search` and `netmorph train` share.
#[derive(clap::Args, Debug, Clone)]
pub struct TrainingArgs {
    /// Images per training step, or `auto`: 128, less on small data sets so that an epoch holds at
    /// least 50 steps (32 for 2,000 images, 16 at the least).
    #[arg(long, default_value_t = AutoOr::Auto)]
    pub batch_size: AutoOr,
    #[arg(long, value_enum, default_value_t = OptimizerKind::Adam)]
    pub optimizer: OptimizerKind,
    /// Learning rate (default: 1e-3 for adam, 1.0 for adadelta, 0.01 for sgd).
    #[arg(long, value_parser = parse_positive_real)]
    pub lr: Option<f32>,
    /// Each model's learning rate: down along a cosine to 2% over the epochs it has (a searched
    /// model: those its time share holds), or constant.
    #[arg(long, value_enum, default_value_t = ScheduleKind::Cosine)]
    pub lr_schedule: ScheduleKind,
    /// Random-shift augmentation of the training images, at most this many pixels along each axis
    /// (0: none), or `auto`: 2 for images of 16 pixels or more a side.
    #[arg(long, default_value_t = AutoOr::Auto)]
    pub shift: AutoOr,
    /// Random horizontal flips of the training images (default: on for colour images, off for
    /// one channel, where a mirror changes digits and letters).
    #[arg(long, value_name = "BOOL")]
    pub flip: Option<bool>,
    /// Random rotations of the training images about their centre, up to this many degrees
    /// either way (0: none; at most 45).
    #[arg(long = "rotate", value_name = "DEGREES", default_value_t = 0.0, value_parser = parse_rotation)]
    pub rotation_degrees: f32,
    /// Random scaling of the training images about their centre, by a factor between 1 - FRACTION
    /// and 1 + FRACTION (0: none; below 0.5).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0, value_parser = parse_scale)]
    pub scale: f32,
    /// Elastic distortion of the training images: a smooth random field (4x4 control points,
    /// interpolated) moves each pixel by up to about this many pixels (0: none).
    #[arg(long, value_name = "PIXELS", default_value_t = 0.0, value_parser = parse_elastic)]
    pub elastic: f32,
    /// Cutout: a square of this side, at a random place in each training image, set to zero (0:
    /// none; at most the images' shorter side).
    #[arg(long, value_name = "PIXELS", default_value_t = 0)]
    pub cutout: usize,
    /// Per-channel normalisation of the input, kept inside the model (default: on for colour
    /// images, off for one channel).
    #[arg(long, value_name = "BOOL")]
    pub normalize: Option<bool>,
    /// Label smoothing of the training loss, at least 0 and below 1: the target is (1 - EPS) on
    /// the label plus EPS spread over all classes. Models are still compared on the plain
    /// validation loss.
    #[arg(long, value_name = "EPS", default_value_t = 0.0, value_parser = parse_label_smoothing)]
    pub label_smoothing: f32,
    /// Weight decay: adam's decoupled (AdamW: each step shrinks the weights by lr * W), sgd's L2
    /// term; adadelta takes none.
    #[arg(long, value_name = "W", default_value_t = 0.0, value_parser = parse_non_negative_real)]
    pub weight_decay: f32,
    /// Test-time augmentation of the final model: in evaluation, prediction and the exported ONNX
    /// it averages its outputs over shifted copies of each image (default: cross, for images of
    /// 2 pixels or more a side).
    #[arg(long, value_enum, value_name = "COPIES")]
    pub test_time_shifts: Option<TestTimeShifts>,
}

impl TrainingArgs {
    /// The classifier's configuration with these choices (the schedule for searched models and
    /// the final fit alike), otherwise the library's defaults; an error naming the option when an
    /// augmentation does not suit `train`'s images.
    pub fn classifier_config(&self, seed: u64, class_names: Vec<String>, train: &ImageSet) -> Result<ClassifierConfig> {
        let schedule = self.lr_schedule.schedule();
        if self.batch_size == AutoOr::Value(0) {
            return Err(Error::Invalid("--batch-size 0: a batch needs at least one image".into()));
        }
        let config = ClassifierConfig {
            seed,
            batch_size: self.batch_size.value(),
            optimizer: self.optimizer.config(self.lr, self.weight_decay)?,
            label_smoothing: self.label_smoothing,
            lr_schedule: schedule,
            final_lr_schedule: schedule,
            shift: self.shift.value().map(|max| RandomShift { max }),
            flip: self.flip,
            rotation_degrees: self.rotation_degrees,
            scale: self.scale,
            elastic: self.elastic,
            cutout: self.cutout,
            normalize: self.normalize,
            class_names,
            test_time_shifts: self.test_time_shifts.map(TestTimeShifts::shifts),
            ..Default::default()
        };
        self.check_augmentation(&config.augmentation_for(train.channels, train.height, train.width), train)?;
        if let Some(kind) = self.test_time_shifts {
            config.checked_test_time_shifts(train).map_err(|e| Error::Invalid(format!("--test-time-shifts {kind}: {e}")))?;
        }
        Ok(config)
    }

    /// The run-time limits of the augmentation options, which depend on the images' size.
    fn check_augmentation(&self, augmentation: &Augmentation, train: &ImageSet) -> Result<()> {
        let (h, w) = (train.height, train.width);
        let side = h.min(w);
        let refuse = |option: &str, value: String, why: String| {
            Err(Error::Invalid(format!("{option} {value}: {why} of the {h}x{w} training images ({side} pixels)")))
        };
        if augmentation.shift.max > 0 && augmentation.shift.max >= side {
            return refuse(
                "--shift",
                augmentation.shift.max.to_string(),
                "moves the images out of their frame: it must be below the shorter side".into(),
            );
        }
        if self.cutout > side {
            return refuse("--cutout", self.cutout.to_string(), "a square larger than the shorter side".into());
        }
        if self.elastic >= side as f32 {
            return refuse("--elastic", self.elastic.to_string(), "a displacement that must be below the shorter side".into());
        }
        // What the options cannot break, the library still checks.
        augmentation.check(h, w)
    }
}

/// Degrees of rotation: at least 0 and at most [`MAX_ROTATION_DEGREES`].
pub fn parse_rotation(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(d) if (0.0..=MAX_ROTATION_DEGREES).contains(&d) => Ok(d),
        _ => Err(format!("`{text}` is not a number of degrees between 0 and {MAX_ROTATION_DEGREES}")),
    }
}

/// A scale range's half-width: at least 0 and below [`MAX_SCALE`].
pub fn parse_scale(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(s) if (0.0..MAX_SCALE).contains(&s) => Ok(s),
        _ => Err(format!("`{text}` is not a fraction of at least 0 and below {MAX_SCALE}")),
    }
}

/// An elastic displacement in pixels: finite and at least 0.
pub fn parse_elastic(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(a) if a >= 0.0 && a.is_finite() => Ok(a),
        _ => Err(format!("`{text}` is not a number of pixels of at least 0")),
    }
}

/// The first `limit` images, shrunk by `factor`.
pub fn limit_and_shrink(set: &ImageSet, limit: Option<usize>, factor: usize) -> Result<ImageSet> {
    let set = match limit {
        Some(n) => set.take(n),
        None => set.clone(),
    };
    set.downsample(factor)
}

/// A saved model's two files from what a user may name: `m.json`, `m.safetensors`, `m` (the
/// stem), or a folder holding `model.json` (as `mnist_baseline --save` writes) or `final.json`
/// (a search directory).
pub fn model_files(path: &Path) -> Result<(PathBuf, PathBuf)> {
    let stem = if path.is_dir() {
        ["model", "final"]
            .iter()
            .map(|name| path.join(name))
            .find(|stem| stem.with_extension("json").is_file())
            .ok_or_else(|| Error::format(path, "the folder holds neither model.json nor final.json"))?
    } else {
        match path.extension().and_then(|e| e.to_str()) {
            Some("json" | "safetensors") => path.with_extension(""),
            _ => path.to_path_buf(),
        }
    };
    let (json, weights) = (stem.with_extension("json"), stem.with_extension("safetensors"));
    for file in [&json, &weights] {
        if !file.is_file() {
            return Err(Error::format(file, "not found: a model is a .json architecture with its .safetensors weights beside it"));
        }
    }
    Ok((json, weights))
}

/// `HxW`, both positive, such as `32x32`.
pub fn parse_size(text: &str) -> std::result::Result<[usize; 2], String> {
    let bad = || format!("`{text}` is not a size: write HEIGHTxWIDTH, such as 32x32");
    let (h, w) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let (h, w): (usize, usize) = (h.trim().parse().map_err(|_| bad())?, w.trim().parse().map_err(|_| bad())?);
    if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
        return Err(format!("{h}x{w}: each side must be between 1 and {MAX_SIDE} pixels"));
    }
    Ok([h, w])
}

/// The largest image side `--resize` takes.
pub const MAX_SIDE: usize = 4096;

/// A whole number of at least 1.
pub fn parse_positive(text: &str) -> std::result::Result<usize, String> {
    match text.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{text}` is not a whole number of at least 1")),
    }
}

/// A number of at least 0 and below 1.
pub fn parse_fraction(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{text}` is not a fraction of at least 0 and below 1")),
    }
}

/// A label smoothing: a number of at least 0 and below 1.
pub fn parse_label_smoothing(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(f) if (0.0..1.0).contains(&f) => Ok(f),
        _ => Err(format!("`{text}` is not a label smoothing: it must be at least 0 and below 1")),
    }
}

/// A finite number of at least 0.
pub fn parse_non_negative_real(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(f) if f >= 0.0 && f.is_finite() => Ok(f),
        _ => Err(format!("`{text}` is not a number of at least 0")),
    }
}

/// A number above 0 and below 1 (a quantile).
pub fn parse_quantile(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(q) if q > 0.0 && q < 1.0 => Ok(q),
        _ => Err(format!("`{text}` is not a quantile above 0 and below 1")),
    }
}

/// A number in (0, 1].
pub fn parse_share(text: &str) -> std::result::Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("`{text}` is not a share above 0 and at most 1")),
    }
}

/// A positive, finite number.
pub fn parse_positive_real(text: &str) -> std::result::Result<f32, String> {
    match text.trim().parse::<f32>() {
        Ok(f) if f > 0.0 && f.is_finite() => Ok(f),
        _ => Err(format!("`{text}` is not a positive number")),
    }
}

/// A duration of at most a year, such as 90s, 30m, 2h or 1h30m.
pub fn parse_time_limit(text: &str) -> std::result::Result<std::time::Duration, String> {
    match crate::search::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("a duration must be above zero".into()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_checked() {
        assert_eq!(parse_size("32x24").unwrap(), [32, 24]);
        for bad in ["32", "0x4", "4x", "ax3", "5000x5000", "-1x3"] {
            assert!(parse_size(bad).is_err(), "`{bad}` accepted");
        }
        assert!(parse_positive("0").is_err() && parse_positive("-2").is_err() && parse_positive("1").is_ok());
        for bad in ["NaN", "1", "-0.1", "inf"] {
            assert!(parse_fraction(bad).is_err(), "`{bad}` accepted");
        }
        for bad in ["NaN", "0", "1.5", "inf"] {
            assert!(parse_share(bad).is_err(), "`{bad}` accepted");
        }
        for bad in ["NaN", "0", "1", "1.5", "-0.5", "inf"] {
            assert!(parse_quantile(bad).is_err(), "`{bad}` accepted");
        }
        assert_eq!(parse_quantile("0.25"), Ok(0.25));
        assert!(parse_positive_real("NaN").is_err() && parse_positive_real("0").is_err() && parse_positive_real("1e-3").is_ok());
        for bad in ["NaN", "1", "1.5", "-0.1", "inf", "x"] {
            assert!(parse_label_smoothing(bad).is_err(), "label smoothing `{bad}` accepted");
        }
        assert_eq!(parse_label_smoothing("0.1"), Ok(0.1));
        for bad in ["NaN", "-1e-4", "inf", "x"] {
            assert!(parse_non_negative_real(bad).is_err(), "weight decay `{bad}` accepted");
        }
        assert_eq!(parse_non_negative_real("0"), Ok(0.0));
        assert!(parse_time_limit("1e30").unwrap_err().contains("at most a year"));
        assert!(parse_time_limit("0").is_err() && parse_time_limit("2h").is_ok());
        for bad in ["NaN", "-1", "45.5", "inf", "ten"] {
            assert!(parse_rotation(bad).is_err(), "`{bad}` accepted");
        }
        assert!(parse_rotation("0").is_ok() && parse_rotation("45").is_ok());
        for bad in ["NaN", "-0.1", "0.5", "inf"] {
            assert!(parse_scale(bad).is_err(), "`{bad}` accepted");
        }
        assert!(parse_scale("0").is_ok() && parse_scale("0.49").is_ok());
        for bad in ["NaN", "-1", "inf"] {
            assert!(parse_elastic(bad).is_err(), "`{bad}` accepted");
        }
        assert!(parse_elastic("0").is_ok() && parse_elastic("2.5").is_ok());
    }
}
