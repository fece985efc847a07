//! Training images a report flagged, to leave out of a new search: duplicates of test images (they
//! leak the test set into training) and label suspects above a confidence. The report's indices
//! hold only for the training set it was made from, so its fingerprint must match.

use super::fingerprint;
use crate::data::split::select;
use crate::data::ImageSet;
use crate::error::{Error, Result};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// What a report flagged in a training set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Flagged {
    /// Training images with a duplicate (exact or near) in the test set.
    pub leaks: BTreeSet<usize>,
    /// Training images whose label the report suspects with at least the asked confidence.
    pub suspects: BTreeSet<usize>,
}

impl Flagged {
    /// Every flagged index, in order.
    pub fn all(&self) -> BTreeSet<usize> {
        self.leaks.union(&self.suspects).copied().collect()
    }
}

fn field<'a>(value: &'a Value, path: &[&str], file: &Path) -> Result<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key)).ok_or_else(|| Error::format(file, format!("no {} in the report", path.join("."))))
}

fn index_of(image: &Value, file: &Path) -> Result<(String, usize)> {
    let split = image.get("split").and_then(Value::as_str).ok_or_else(|| Error::format(file, "an image without its split"))?;
    let index = image.get("index").and_then(Value::as_u64).ok_or_else(|| Error::format(file, "an image without its index"))?;
    Ok((split.to_string(), index as usize))
}

/// The training images that the report in `report_dir` (its `report.json`) flags: those with a
/// duplicate in the test set, and the label suspects whose suggested label has at least
/// `min_confidence`. An error when the report was made from another training set.
pub fn flagged_training_images(report_dir: &Path, train: &ImageSet, min_confidence: f64) -> Result<Flagged> {
    let file = report_dir.join("report.json");
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let report: Value = serde_json::from_str(&text).map_err(|e| Error::format(&file, format!("not JSON: {e}")))?;
    let stored = field(&report, &["data", "train_fingerprint"], &file)?.as_str().unwrap_or_default();
    if stored != fingerprint(train) {
        return Err(Error::Invalid(format!(
            "{} was made from another training set (its fingerprint differs): make the report again from this data, with the same \
             --train-limit, --resize and --downsample",
            file.display()
        )));
    }
    let mut flagged = Flagged::default();
    let pairs = field(&report, &["health", "duplicates", "pairs"], &file)?.as_array().cloned().unwrap_or_default();
    for pair in &pairs {
        let (a, b) = (index_of(field(pair, &["a"], &file)?, &file)?, index_of(field(pair, &["b"], &file)?, &file)?);
        for (this, other) in [(&a, &b), (&b, &a)] {
            if this.0 == "train" && other.0 == "test" {
                flagged.leaks.insert(this.1);
            }
        }
    }
    if let Some(suspects) = report.get("train_labels").and_then(|l| l.get("suspects")).and_then(Value::as_array) {
        for s in suspects {
            let confidence = s.get("confidence").and_then(Value::as_f64).unwrap_or(0.0);
            if confidence >= min_confidence {
                flagged.suspects.insert(index_of(field(s, &["image"], &file)?, &file)?.1);
            }
        }
    }
    if let Some(&bad) = flagged.all().iter().find(|&&i| i >= train.n) {
        return Err(Error::format(&file, format!("flags training image {bad}, but the set has {}", train.n)));
    }
    Ok(flagged)
}

/// `set` without the images at `excluded`.
pub fn without(set: &ImageSet, excluded: &BTreeSet<usize>) -> ImageSet {
    let kept: Vec<usize> = (0..set.n).filter(|i| !excluded.contains(i)).collect();
    select(set, &kept)
}
