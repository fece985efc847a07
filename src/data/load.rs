//! Users' own images: [`load_data`] finds out what a folder holds and loads it as a training and a
//! test [`ImageSet`] with class names.
//!
//! # Detection
//! `path` must be a folder. It is checked for these layouts, in this order; the first that
//! matches is loaded (and its errors are reported, not hidden by a later guess):
//!
//! 1. **CIFAR-10** binary batches: `data_batch_1.bin` .. `data_batch_5.bin` (any of them present)
//!    and optionally `test_batch.bin`, in `path` or in `path/cifar-10-batches-bin`. Class names
//!    from `batches.meta.txt` when present. See [`cifar`](super::cifar).
//! 2. **CIFAR-100** binary: `train.bin` and optionally `test.bin`, in `path` or in
//!    `path/cifar-100-binary`; fine labels (100 classes), names from `fine_label_names.txt`.
//! 3. **NumPy** `.npy` (Keras' layout): `x_train.npy` + `y_train.npy`, optionally `x_test.npy` +
//!    `y_test.npy`; or `images.npy` + `labels.npy`. See [`npy`](super::npy).
//! 4. **IDX** under any names (MNIST, Fashion-MNIST, KMNIST, EMNIST): one file whose name
//!    contains `train` and `images`, one with `train` and `labels`, and optionally a pair with
//!    `t10k` or `test` instead of `train`; raw or `.gz`. See [`idx_folder`](super::idx_folder).
//! 5. **Image folder**: `path/train/<class>/` and `path/test/<class>/`, or `path/<class>/`, each
//!    class folder holding PNG, JPEG, BMP or GIF files. See [`folder`](super::folder).
//!
//! When nothing matches, the error lists every layout that was looked for.
//!
//! # Test set
//! When the data has no test set of its own, a seeded, stratified split
//! ([`stratified_split`](super::split::stratified_split)) holds out `test_fraction` of every class
//! (default 0.2, the share most Keras examples hold out) and `test_was_split` is set.

use super::mnist::ImageSet;
use super::split::{select, stratified_split_indices};
use super::{cifar, folder, idx_folder, npy};
use crate::error::{Error, Result};
use std::fmt;
use std::path::{Path, PathBuf};

/// How [`load_data`] reads a data set.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadOptions {
    /// Resize every image to `[height, width]` (image folders only; other formats have one size).
    pub resize: Option<[usize; 2]>,
    /// Skip unreadable image files (listed in [`LoadedData::skipped`]) instead of failing.
    pub skip_bad: bool,
    /// The share of each class held out as the test set when the data has none, in [0, 1).
    pub test_fraction: f64,
    /// Seed of that split.
    pub seed: u64,
}

/// The share of each class held out when a data set has no test set.
pub const DEFAULT_TEST_FRACTION: f64 = 0.2;

impl Default for LoadOptions {
    fn default() -> LoadOptions {
        LoadOptions { resize: None, skip_bad: false, test_fraction: DEFAULT_TEST_FRACTION, seed: 0 }
    }
}

/// The layout a data set was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataFormat {
    ImageFolder,
    Cifar10,
    Cifar100,
    Npy,
    Idx,
}

impl fmt::Display for DataFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DataFormat::ImageFolder => "image folder",
            DataFormat::Cifar10 => "CIFAR-10 binary",
            DataFormat::Cifar100 => "CIFAR-100 binary",
            DataFormat::Npy => "NumPy .npy",
            DataFormat::Idx => "IDX",
        })
    }
}

/// A loaded data set: both sets share channels, size and classes.
#[derive(Clone, Debug)]
pub struct LoadedData {
    pub train: ImageSet,
    pub test: ImageSet,
    /// One name per class, label `i` is `class_names[i]`.
    pub class_names: Vec<String>,
    pub format: DataFormat,
    /// Files skipped with [`LoadOptions::skip_bad`], and why.
    pub skipped: Vec<(PathBuf, String)>,
    /// True when the test set was split off the training data.
    pub test_was_split: bool,
    /// The file behind each image of `train` (`train_files[i]` is `train.image(i)`); empty for
    /// formats that are not image folders.
    pub train_files: Vec<ImageFile>,
    /// The file behind each image of `test`, as `train_files`.
    pub test_files: Vec<ImageFile>,
}

/// An image file as it was on disk, before `--resize` or gray-to-RGB replication made every
/// image one shape: the data health report names files whose size or colour differs from the rest.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ImageFile {
    pub path: PathBuf,
    pub width: usize,
    pub height: usize,
    /// As decoded: 1 gray, 2 gray + alpha, 3 RGB, 4 RGBA.
    pub channels: usize,
}

/// What a format's reader returns: the test set is `None` when the data has none.
pub(crate) struct RawData {
    pub train: ImageSet,
    pub test: Option<ImageSet>,
    pub class_names: Vec<String>,
    pub skipped: Vec<(PathBuf, String)>,
}

/// The files behind a format's images, index-aligned with [`RawData`]'s `train` and `test`
/// (both empty for formats that are not image folders).
#[derive(Default)]
pub(crate) struct RawFiles {
    pub train: Vec<ImageFile>,
    pub test: Vec<ImageFile>,
}

/// Detects the layout of the folder `path` (see the [module docs](self)) and loads it.
pub fn load_data(path: &Path, options: &LoadOptions) -> Result<LoadedData> {
    if !(0.0..1.0).contains(&options.test_fraction) {
        return Err(Error::Invalid(format!("test fraction {} must be in [0, 1)", options.test_fraction)));
    }
    if let Some([h, w]) = options.resize {
        if h == 0 || w == 0 {
            return Err(Error::Invalid(format!("resize to {h}x{w}: both sides must be positive")));
        }
    }
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_dir() {
        return Err(Error::format(path, "expected a folder holding a data set, found a file"));
    }
    let no_files = RawFiles::default;
    let (format, raw, files) = if let Some(dir) = cifar::find_cifar10(path) {
        (DataFormat::Cifar10, cifar::load_cifar10(&dir)?, no_files())
    } else if let Some(dir) = cifar::find_cifar100(path) {
        (DataFormat::Cifar100, cifar::load_cifar100(&dir)?, no_files())
    } else if let Some(files) = npy::find(path) {
        (DataFormat::Npy, npy::load(&files)?, no_files())
    } else if let Some(files) = idx_folder::find(path)? {
        (DataFormat::Idx, idx_folder::load(&files)?, no_files())
    } else if let Some(layout) = folder::find(path)? {
        let (raw, files) = folder::load(&layout, options, folder::default_threads())?;
        (DataFormat::ImageFolder, raw, files)
    } else {
        return Err(Error::format(path, not_found_message()));
    };
    finish(format, raw, files, options)
}

/// Splits off a test set when there is none, splitting the file list with the same indices.
pub(crate) fn finish(format: DataFormat, raw: RawData, files: RawFiles, options: &LoadOptions) -> Result<LoadedData> {
    let RawData { train, test, class_names, skipped } = raw;
    let (train, test, train_files, test_files, test_was_split) = match test {
        Some(test) => (train, test, files.train, files.test, false),
        None => {
            let (train_indices, test_indices) =
                stratified_split_indices(&train.labels, train.classes, options.test_fraction, options.seed)?;
            // Formats without files have none to split.
            let pick_files =
                |indices: &[usize]| -> Vec<ImageFile> { indices.iter().filter_map(|&i| files.train.get(i).cloned()).collect() };
            let (train_files, test_files) = (pick_files(&train_indices), pick_files(&test_indices));
            (select(&train, &train_indices), select(&train, &test_indices), train_files, test_files, true)
        }
    };
    Ok(LoadedData { train, test, class_names, format, skipped, test_was_split, train_files, test_files })
}

fn not_found_message() -> String {
    "no data set found; looked for:\n  \
     - CIFAR-10: data_batch_1.bin .. data_batch_5.bin [+ test_batch.bin] (here or in cifar-10-batches-bin/)\n  \
     - CIFAR-100: train.bin [+ test.bin] (here or in cifar-100-binary/)\n  \
     - NumPy: x_train.npy + y_train.npy [+ x_test.npy + y_test.npy], or images.npy + labels.npy\n  \
     - IDX: *train*images* + *train*labels* [+ *t10k*|*test* images + labels], raw or .gz\n  \
     - image folder: <class>/ subfolders (or train/<class>/ and test/<class>/) of PNG, JPEG, BMP or GIF files"
        .into()
}

/// Class names "0", "1", ..: for formats that carry no names.
pub(crate) fn numbered_classes(classes: usize) -> Vec<String> {
    (0..classes).map(|c| c.to_string()).collect()
}
