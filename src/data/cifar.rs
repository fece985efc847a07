//! CIFAR-10 and CIFAR-100 in their binary form.
//!
//! CIFAR-10: `data_batch_1.bin` .. `data_batch_5.bin` (training; the ones present are read in
//! order) and `test_batch.bin`, each a run of 3,073-byte records: a label byte (0..9), then a 32x32
//! image as 1,024 red, 1,024 green and 1,024 blue bytes (already channel-major, as `ImageSet`
//! stores them). Class names come from `batches.meta.txt` (one per line) when present.
//!
//! CIFAR-100: `train.bin` and `test.bin`, 3,074-byte records: a coarse label (0..19), a fine label
//! (0..99), then the image. The fine labels are used; names from `fine_label_names.txt`.

use super::load::{numbered_classes, RawData};
use super::mnist::ImageSet;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

const SIDE: usize = 32;
const IMAGE_BYTES: usize = 3 * SIDE * SIDE;
pub const CIFAR10_TRAIN: [&str; 5] = ["data_batch_1.bin", "data_batch_2.bin", "data_batch_3.bin", "data_batch_4.bin", "data_batch_5.bin"];
pub const CIFAR10_TEST: &str = "test_batch.bin";
pub const CIFAR10_NAMES: &str = "batches.meta.txt";
pub const CIFAR100_TRAIN: &str = "train.bin";
pub const CIFAR100_TEST: &str = "test.bin";
pub const CIFAR100_NAMES: &str = "fine_label_names.txt";

/// `path` or `path/cifar-10-batches-bin`, whichever holds a CIFAR-10 training batch.
pub fn find_cifar10(path: &Path) -> Option<PathBuf> {
    [path.to_path_buf(), path.join("cifar-10-batches-bin")]
        .into_iter()
        .find(|dir| CIFAR10_TRAIN.iter().any(|name| dir.join(name).is_file()))
}

/// `path` or `path/cifar-100-binary`, whichever holds `train.bin`.
pub fn find_cifar100(path: &Path) -> Option<PathBuf> {
    [path.to_path_buf(), path.join("cifar-100-binary")].into_iter().find(|dir| dir.join(CIFAR100_TRAIN).is_file())
}

/// Reads the CIFAR-10 batches in `dir`.
pub(crate) fn load_cifar10(dir: &Path) -> Result<RawData> {
    let layout = Layout { label_bytes: 1, classes: 10, coarse_classes: None };
    let mut train: Option<ImageSet> = None;
    for name in CIFAR10_TRAIN {
        let path = dir.join(name);
        if !path.is_file() {
            continue;
        }
        let batch = read_batch(&path, &layout)?;
        train = Some(match train {
            None => batch,
            Some(mut all) => {
                all.images.extend_from_slice(&batch.images);
                all.labels.extend_from_slice(&batch.labels);
                all.n += batch.n;
                all
            }
        });
    }
    let train = train.ok_or_else(|| Error::format(dir, "no CIFAR-10 training batch (data_batch_1.bin .. data_batch_5.bin)"))?;
    let test = optional_batch(&dir.join(CIFAR10_TEST), &layout)?;
    let class_names = read_names(&dir.join(CIFAR10_NAMES), 10)?;
    Ok(RawData { train, test, class_names, skipped: vec![] })
}

/// Reads CIFAR-100's `train.bin` (and `test.bin`) in `dir`, with the fine labels.
pub(crate) fn load_cifar100(dir: &Path) -> Result<RawData> {
    let layout = Layout { label_bytes: 2, classes: 100, coarse_classes: Some(20) };
    let train = read_batch(&dir.join(CIFAR100_TRAIN), &layout)?;
    let test = optional_batch(&dir.join(CIFAR100_TEST), &layout)?;
    let class_names = read_names(&dir.join(CIFAR100_NAMES), 100)?;
    Ok(RawData { train, test, class_names, skipped: vec![] })
}

/// Record layout: the label bytes before each image; the last one is the label used.
struct Layout {
    label_bytes: usize,
    classes: usize,
    /// CIFAR-100's coarse label (checked, not kept).
    coarse_classes: Option<usize>,
}

fn optional_batch(path: &Path, layout: &Layout) -> Result<Option<ImageSet>> {
    if path.is_file() {
        read_batch(path, layout).map(Some)
    } else {
        Ok(None)
    }
}

/// Reads one batch file of records, checking its length and every label.
pub fn read_batch_file(path: &Path, cifar100: bool) -> Result<ImageSet> {
    let layout = if cifar100 {
        Layout { label_bytes: 2, classes: 100, coarse_classes: Some(20) }
    } else {
        Layout { label_bytes: 1, classes: 10, coarse_classes: None }
    };
    read_batch(path, &layout)
}

fn read_batch(path: &Path, layout: &Layout) -> Result<ImageSet> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let record = layout.label_bytes + IMAGE_BYTES;
    if bytes.is_empty() {
        return Err(Error::format(path, format!("empty file, expected {record}-byte CIFAR records")));
    }
    if bytes.len() % record != 0 {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes is not a whole number of {record}-byte CIFAR records ({} records and {} bytes over)",
                bytes.len(),
                bytes.len() / record,
                bytes.len() % record
            ),
        ));
    }
    let n = bytes.len() / record;
    let mut images = Vec::with_capacity(n * IMAGE_BYTES);
    let mut labels = Vec::with_capacity(n);
    for (i, rec) in bytes.chunks_exact(record).enumerate() {
        if let Some(coarse_classes) = layout.coarse_classes {
            if rec[0] as usize >= coarse_classes {
                return Err(Error::format(
                    path,
                    format!("record {i}: coarse label {} is out of range (CIFAR-100 has {coarse_classes} coarse classes)", rec[0]),
                ));
            }
        }
        let label = rec[layout.label_bytes - 1];
        if label as usize >= layout.classes {
            return Err(Error::format(path, format!("record {i}: label {label} is out of range (expected 0..{})", layout.classes - 1)));
        }
        labels.push(label);
        images.extend_from_slice(&rec[layout.label_bytes..]);
    }
    ImageSet::new(images, labels, 3, SIDE, SIDE, layout.classes)
}

/// Class names, one a line (blank lines ignored), when `path` exists; else "0", "1", ...
fn read_names(path: &Path, classes: usize) -> Result<Vec<String>> {
    if !path.is_file() {
        return Ok(numbered_classes(classes));
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8_lossy(&bytes);
    let names: Vec<String> = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect();
    if names.len() != classes {
        return Err(Error::format(path, format!("holds {} class names, expected {classes} (one a line)", names.len())));
    }
    Ok(names)
}
