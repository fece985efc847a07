//! The data health checks that need no training: class counts and imbalance, blank, constant or
//! saturated images, exact and near duplicates ([`duplicates`](super::duplicates)), and image
//! files whose size or colour differs from the rest. [`check_data`] runs them all.

use super::duplicates::{find_duplicates, DuplicateOptions, Duplicates};
use super::{ImageRef, Sources, Split};
use crate::data::{ImageFile, ImageSet, LoadedData};
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

/// A pixel differs from an image's background when one of its channels is more than this many
/// gray levels (of 255) away from that channel's most common value.
pub const BLANK_TOLERANCE: u8 = 8;
/// An image is nearly blank when fewer than this share of its pixels differ from its background
/// (a thin MNIST "1" has 5 to 10% of its pixels lit, so digits are far from it).
pub const BLANK_SHARE: f64 = 0.005;
/// An image is saturated when more than this share of one channel's pixels are at 255.
pub const SATURATED_SHARE: f64 = 0.5;

/// How many images each class has, and how uneven the training set is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassBalance {
    /// One name per class.
    pub names: Vec<String>,
    /// Training images per class.
    pub train: Vec<usize>,
    /// Test images per class.
    pub test: Vec<usize>,
    /// The largest training class over the smallest, or infinity when a class has no training
    /// image (written as `null` in JSON); 1 when there are no classes.
    pub imbalance: f64,
    /// The classes with no training image: a model can never predict them.
    pub empty_classes: Vec<usize>,
}

/// Counts the images of each class in both sets. Classes beyond `names` are named by number.
pub fn class_balance(train: &ImageSet, test: &ImageSet, names: &[String]) -> ClassBalance {
    let classes = train.classes.max(test.classes).max(names.len());
    let count = |set: &ImageSet| {
        let mut counts = vec![0usize; classes];
        for &label in &set.labels {
            // A label is below its set's `classes` (ImageSet checks), so below `classes` here.
            counts[label as usize] += 1;
        }
        counts
    };
    let (train_counts, test_counts) = (count(train), count(test));
    let names = (0..classes).map(|c| names.get(c).cloned().unwrap_or_else(|| c.to_string())).collect();
    let empty_classes: Vec<usize> = (0..classes).filter(|&c| train_counts[c] == 0).collect();
    let imbalance = if classes == 0 {
        1.0
    } else if !empty_classes.is_empty() {
        f64::INFINITY
    } else {
        let largest = train_counts.iter().copied().max().unwrap_or(1);
        let smallest = train_counts.iter().copied().min().unwrap_or(1).max(1);
        largest as f64 / smallest as f64
    };
    ClassBalance { names, train: train_counts, test: test_counts, imbalance, empty_classes }
}

/// Why an image carries (almost) no information; the strongest kind first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlatKind {
    /// Every pixel is the same.
    Constant,
    /// Fewer than [`BLANK_SHARE`] of the pixels (or a single pixel, in a small image) differ from
    /// the image's most common value by more than [`BLANK_TOLERANCE`].
    NearlyBlank,
    /// More than half the pixels of some channel are at 255: clipped highlights.
    Saturated,
}

/// An image flagged by [`flat_images`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FlatImage {
    pub image: ImageRef,
    pub kind: FlatKind,
    /// What was seen, in words: "3 of 784 pixels differ from the background 0 by more than 8".
    pub detail: String,
}

/// The constant, nearly blank and saturated images of `set`, each at most once under its strongest
/// kind, ordered by kind (constant first), then by index.
pub fn flat_images(set: &ImageSet, split: Split) -> Vec<FlatImage> {
    let mut flat: Vec<FlatImage> = (0..set.n)
        .filter_map(|index| {
            flatness(set.image(index), set.channels, set.height * set.width).map(|(kind, detail)| FlatImage {
                image: ImageRef { split, index },
                kind,
                detail,
            })
        })
        .collect();
    flat.sort_by_key(|f| (f.kind, f.image));
    flat
}

/// The strongest flat kind of one image (`channels` planes of `pixels` bytes), with its detail.
fn flatness(image: &[u8], channels: usize, pixels: usize) -> Option<(FlatKind, String)> {
    if pixels == 0 || channels == 0 {
        return None;
    }
    let planes: Vec<&[u8]> = image.chunks_exact(pixels).collect();
    if planes.iter().all(|plane| plane.iter().all(|&b| b == plane[0])) {
        let value = planes.iter().map(|p| p[0].to_string()).collect::<Vec<_>>().join(", ");
        return Some((FlatKind::Constant, format!("every pixel is {value}")));
    }

    // The background: each channel's most common value.
    let mut histograms = vec![[0usize; 256]; channels];
    for (histogram, plane) in histograms.iter_mut().zip(&planes) {
        for &b in *plane {
            histogram[b as usize] += 1;
        }
    }
    let background: Vec<u8> =
        histograms.iter().map(|h| (0..256).max_by_key(|&v| (h[v], std::cmp::Reverse(v))).unwrap_or(0) as u8).collect();
    let differing =
        (0..pixels).filter(|&p| planes.iter().zip(&background).any(|(plane, &bg)| plane[p].abs_diff(bg) > BLANK_TOLERANCE)).count();
    if differing <= 1 || (differing as f64) < BLANK_SHARE * pixels as f64 {
        let value = background.iter().map(|b| b.to_string()).collect::<Vec<_>>().join(", ");
        return Some((
            FlatKind::NearlyBlank,
            format!("{differing} of {pixels} pixels differ from the background {value} by more than {BLANK_TOLERANCE}"),
        ));
    }

    let (channel, at_max) = histograms.iter().map(|h| h[255]).enumerate().max_by_key(|&(c, n)| (n, std::cmp::Reverse(c)))?;
    if at_max as f64 > SATURATED_SHARE * pixels as f64 {
        let which = if channels == 1 { String::new() } else { format!("channel {channel}: ") };
        let percent = 100.0 * at_max as f64 / pixels as f64;
        return Some((FlatKind::Saturated, format!("{which}{at_max} of {pixels} pixels ({percent:.0}%) at 255")));
    }
    None
}

/// An image file whose size or channel count differs from the most common one.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OddShape {
    pub image: ImageRef,
    pub path: PathBuf,
    /// [height, width] of the file.
    pub size: [usize; 2],
    pub channels: usize,
    /// The most common shape, e.g. "28x28, 1 channel" (height x width).
    pub usual: String,
}

/// The files (index-aligned with the training and test images, see
/// [`LoadedData::train_files`]) whose size or channel count differs from the most common size or
/// channel count of all of them: they were resized or recoloured to load, and may be out of place.
pub fn odd_shapes(train_files: &[ImageFile], test_files: &[ImageFile]) -> Vec<OddShape> {
    let all = || {
        let train = train_files.iter().enumerate().map(|(index, f)| (ImageRef { split: Split::Train, index }, f));
        train.chain(test_files.iter().enumerate().map(|(index, f)| (ImageRef { split: Split::Test, index }, f)))
    };
    let Some(usual_size) = most_common(all().map(|(_, f)| [f.height, f.width])) else {
        return vec![];
    };
    let usual_channels = most_common(all().map(|(_, f)| f.channels)).unwrap_or(0);
    let plural = if usual_channels == 1 { "" } else { "s" };
    let usual = format!("{}x{}, {usual_channels} channel{plural}", usual_size[0], usual_size[1]);
    all()
        .filter(|(_, f)| [f.height, f.width] != usual_size || f.channels != usual_channels)
        .map(|(image, f)| OddShape { image, path: f.path.clone(), size: [f.height, f.width], channels: f.channels, usual: usual.clone() })
        .collect()
}

/// The most frequent value; on a tie, the smallest.
fn most_common<T: Ord + Copy + std::hash::Hash>(values: impl Iterator<Item = T>) -> Option<T> {
    let mut counts: HashMap<T, usize> = HashMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    counts.into_iter().max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0))).map(|(v, _)| v)
}

/// Everything the data health report knows before any training.
#[derive(Clone, Debug, Serialize)]
pub struct DataHealth {
    pub classes: ClassBalance,
    /// Flat images of both sets, by kind, then training images before test images.
    pub flat: Vec<FlatImage>,
    pub duplicates: Duplicates,
    /// Files of another size or colour (image folders only).
    pub odd_shapes: Vec<OddShape>,
    /// How long the checks took.
    pub seconds: f64,
}

/// Runs every check on a loaded data set, the odd shapes from its file list.
pub fn check_data(data: &LoadedData, options: &DuplicateOptions) -> DataHealth {
    check_sources(&Sources::of(data), options)
}

/// Runs every check on the sets of `sources`, the odd shapes from their files (if any).
pub fn check_sources(sources: &Sources, options: &DuplicateOptions) -> DataHealth {
    let start = Instant::now();
    let mut health = check_sets(sources.train, sources.test, sources.class_names, options);
    health.odd_shapes = odd_shapes(sources.train_files, sources.test_files);
    health.seconds = start.elapsed().as_secs_f64();
    health
}

/// Runs the checks that need only the images: no files, so no odd shapes.
pub fn check_sets(train: &ImageSet, test: &ImageSet, names: &[String], options: &DuplicateOptions) -> DataHealth {
    let start = Instant::now();
    let classes = class_balance(train, test, names);
    let mut flat = flat_images(train, Split::Train);
    flat.extend(flat_images(test, Split::Test));
    flat.sort_by_key(|f| (f.kind, f.image));
    let duplicates = find_duplicates(train, test, options);
    DataHealth { classes, flat, duplicates, odd_shapes: vec![], seconds: start.elapsed().as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(images: &[Vec<u8>], labels: Vec<u8>, side: usize, classes: usize) -> ImageSet {
        ImageSet::new(images.concat(), labels, 1, side, side, classes).unwrap()
    }

    #[test]
    fn balance_counts_classes_and_an_empty_class_is_infinitely_imbalanced() {
        let train = gray(&vec![vec![0; 4]; 6], vec![0, 0, 0, 0, 1, 1], 2, 3);
        let test = gray(&vec![vec![0; 4]; 2], vec![2, 2], 2, 3);
        let names: Vec<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
        let balance = class_balance(&train, &test, &names);
        assert_eq!(balance.names, ["a", "b", "2"]);
        assert_eq!((balance.train, balance.test), (vec![4, 2, 0], vec![0, 0, 2]));
        assert_eq!(balance.empty_classes, [2]);
        assert!(balance.imbalance.is_infinite());
        let train = gray(&vec![vec![0; 4]; 6], vec![0, 0, 0, 0, 1, 1], 2, 2);
        assert_eq!(class_balance(&train, &train, &[]).imbalance, 2.0);
    }

    #[test]
    fn flatness_takes_the_strongest_kind() {
        let pixels = 28 * 28;
        assert_eq!(flatness(&vec![7; pixels], 1, pixels).map(|f| f.0), Some(FlatKind::Constant));
        // Three bright pixels on black: under 0.5% of 784. Noise within 8 levels does not count.
        let mut dots = vec![0u8; pixels];
        dots[10] = 255;
        dots[20] = 200;
        dots[30] = 100;
        dots[40] = 8;
        assert_eq!(flatness(&dots, 1, pixels).map(|f| f.0), Some(FlatKind::NearlyBlank));
        dots[50] = 9;
        assert_eq!(flatness(&dots, 1, pixels), None, "four differing pixels are 0.51%");
        // A white image with a stroke is saturated, and a constant white one is constant.
        let mut white = vec![255u8; pixels];
        white[..pixels / 3].fill(0);
        let (kind, detail) = flatness(&white, 1, pixels).unwrap();
        assert_eq!(kind, FlatKind::Saturated, "{detail}");
        assert!(detail.contains("at 255"), "{detail}");
        // A tiny image: one differing pixel is still nearly blank, two are not.
        assert_eq!(flatness(&[0, 0, 0, 90], 1, 4).map(|f| f.0), Some(FlatKind::NearlyBlank));
        assert_eq!(flatness(&[0, 0, 90, 90], 1, 4), None);
        // Colour: one saturated channel is enough; equal planes of different values are constant.
        let rgb = [vec![255u8; pixels], (0..pixels).map(|p| (p % 200) as u8).collect(), vec![0; pixels]].concat();
        assert_eq!(flatness(&rgb, 3, pixels).map(|f| f.0), Some(FlatKind::Saturated));
        let red = [vec![255u8; pixels], vec![0; pixels], vec![0; pixels]].concat();
        assert_eq!(flatness(&red, 3, pixels).map(|f| f.0), Some(FlatKind::Constant));
    }

    #[test]
    fn flat_images_are_listed_by_kind_then_index() {
        let pixels = 16;
        let mut stroke = vec![0u8; pixels];
        stroke[..6].fill(120);
        let mut saturated = vec![255u8; pixels];
        saturated[..5].fill(3);
        let set = gray(&[saturated, vec![3; pixels], stroke, vec![9; pixels]], vec![0; 4], 4, 1);
        let flat = flat_images(&set, Split::Test);
        let listed: Vec<(usize, FlatKind)> = flat.iter().map(|f| (f.image.index, f.kind)).collect();
        assert_eq!(listed, [(1, FlatKind::Constant), (3, FlatKind::Constant), (0, FlatKind::Saturated)]);
        assert!(flat.iter().all(|f| f.image.split == Split::Test));
    }

    #[test]
    fn odd_shapes_differ_from_the_most_common_size_or_channels() {
        let file = |name: &str, height, width, channels| ImageFile { path: PathBuf::from(name), width, height, channels };
        let train = vec![file("a", 28, 28, 1), file("b", 28, 28, 1), file("c", 32, 28, 1), file("d", 28, 28, 3)];
        let test = vec![file("e", 28, 28, 1), file("f", 28, 28, 4)];
        let odd = odd_shapes(&train, &test);
        let named: Vec<(&str, Split, usize)> = odd.iter().map(|o| (o.path.to_str().unwrap(), o.image.split, o.image.index)).collect();
        assert_eq!(named, [("c", Split::Train, 2), ("d", Split::Train, 3), ("f", Split::Test, 1)]);
        assert_eq!(odd[0].size, [32, 28]);
        assert_eq!(odd[0].usual, "28x28, 1 channel");
        assert!(odd_shapes(&[], &[]).is_empty());
    }
}
