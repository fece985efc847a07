//! IDX image sets under any file names: MNIST, Fashion-MNIST, KMNIST, EMNIST.
//!
//! In one folder (not its subfolders), the training images are the file whose lower-cased name
//! contains `train` and `images`, the labels the one with `train` and `labels`; the test set, when
//! there is one, the files with `t10k` or `test` in place of `train`. Each may be raw or `.gz`
//! (when both `x` and `x.gz` are there, the raw one is read). Two candidates for one role are an
//! error naming both (EMNIST's download holds every split in one folder: point at a folder with one).
//!
//! Classes = largest label + 1 over both sets, named "0", "1", ...: EMNIST's `letters` split
//! (labels 1..26) thus has 27 classes, class 0 unused. Images are kept as stored (EMNIST's are
//! transposed relative to MNIST's; a network learns them either way).

use super::load::{numbered_classes, RawData};
use super::mnist::ImageSet;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The files of an IDX data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    /// (images, labels) of the test set, when both are there.
    pub test: Option<(PathBuf, PathBuf)>,
}

/// The IDX files in `dir`, when it holds training images and labels under matching names.
pub fn find(dir: &Path) -> Result<Option<IdxFiles>> {
    let names = file_names(dir)?;
    let pick = |split: &[&str], kind: &str| -> Result<Option<PathBuf>> {
        let mut found: Vec<&String> = names
            .iter()
            .filter(|name| {
                let lower = name.to_lowercase();
                split.iter().any(|s| lower.contains(s)) && lower.contains(kind) && !lower.ends_with(".npy")
            })
            .collect();
        // `x` and `x.gz` are one file twice: keep the raw one.
        found.retain(|name| !(name.ends_with(".gz") && names.contains(&name[..name.len() - 3].to_string())));
        match found[..] {
            [] => Ok(None),
            [one] => Ok(Some(dir.join(one))),
            [a, b, ..] => Err(Error::format(
                dir,
                format!(
                    "{} files match *{}*{kind}* ({a}, {b}{}): keep one data set per folder",
                    found.len(),
                    split.join("*|*"),
                    if found.len() > 2 { ", ..." } else { "" }
                ),
            )),
        }
    };
    let (Some(train_images), Some(train_labels)) = (pick(&["train"], "images")?, pick(&["train"], "labels")?) else {
        return Ok(None);
    };
    let test = match (pick(&["t10k", "test"], "images")?, pick(&["t10k", "test"], "labels")?) {
        (Some(images), Some(labels)) => Some((images, labels)),
        (None, None) => None,
        (Some(only), None) | (None, Some(only)) => {
            return Err(Error::format(only, "test file found without its partner (images and labels come in pairs)"))
        }
    };
    Ok(Some(IdxFiles { train_images, train_labels, test }))
}

pub(crate) fn load(files: &IdxFiles) -> Result<RawData> {
    // Read with every label allowed, then fix the class count from the labels seen.
    let train = ImageSet::from_idx(&files.train_images, &files.train_labels, 256)?;
    let test = files.test.as_ref().map(|(images, labels)| ImageSet::from_idx(images, labels, 256)).transpose()?;
    if let (Some(test), Some((test_images, _))) = (&test, &files.test) {
        if test.image_shape() != train.image_shape() {
            return Err(Error::format(
                test_images,
                format!("images are {:?} (CxHxW) but {} holds {:?}", test.image_shape(), files.train_images.display(), train.image_shape()),
            ));
        }
    }
    let max_label = train.labels.iter().chain(test.iter().flat_map(|t| t.labels.iter())).copied().max().unwrap_or(0);
    let classes = max_label as usize + 1;
    let with_classes = |set: ImageSet| ImageSet { classes, ..set };
    Ok(RawData { train: with_classes(train), test: test.map(with_classes), class_names: numbered_classes(classes), skipped: vec![] })
}

/// Names of the visible files in `dir`, sorted.
fn file_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = vec![];
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && entry.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
