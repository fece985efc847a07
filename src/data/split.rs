//! A seeded, stratified train/test split for data sets that come without a test set.
//!
//! Each class keeps its share: of a class's `k` images, `round(k * test_fraction)` go to the test
//! set, chosen by a seeded shuffle of that class alone. Both halves keep the images in their
//! original order. The shuffle is SplitMix64 + Fisher-Yates written out here, so that the same
//! seed gives the same split whatever the version of `rand`.

use super::mnist::ImageSet;
use crate::error::{Error, Result};

/// Splits `set` into (train, test), stratified by label. `test_fraction` must lie in [0, 1).
pub fn stratified_split(set: &ImageSet, test_fraction: f64, seed: u64) -> Result<(ImageSet, ImageSet)> {
    let (train, test) = stratified_split_indices(&set.labels, set.classes, test_fraction, seed)?;
    Ok((select(set, &train), select(set, &test)))
}

/// The indices of [`stratified_split`]: (train, test), each in increasing order. Whatever else is
/// index-aligned with the images (the files they came from) is split by applying the same indices.
pub fn stratified_split_indices(labels: &[u8], classes: usize, test_fraction: f64, seed: u64) -> Result<(Vec<usize>, Vec<usize>)> {
    if !(0.0..1.0).contains(&test_fraction) {
        return Err(Error::Invalid(format!("test fraction {test_fraction} must be in [0, 1)")));
    }
    // A label at or above `classes` (not possible in an ImageSet) counts as its own class, not a panic.
    let classes = classes.max(labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0));
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
    for (i, &label) in labels.iter().enumerate() {
        by_class[label as usize].push(i);
    }
    let mut is_test = vec![false; labels.len()];
    for (class, indices) in by_class.iter_mut().enumerate() {
        // Each class gets its own stream, so adding images of one class moves no other class.
        let mut rng = SplitMix64(seed ^ (class as u64).wrapping_mul(0xA24B_AED4_963E_E407));
        shuffle(indices, &mut rng);
        let n_test = (indices.len() as f64 * test_fraction).round() as usize;
        for &i in &indices[..n_test.min(indices.len())] {
            is_test[i] = true;
        }
    }
    let pick = |want_test: bool| (0..labels.len()).filter(|&i| is_test[i] == want_test).collect();
    Ok((pick(false), pick(true)))
}

/// The images at `indices`, in that order.
pub fn select(set: &ImageSet, indices: &[usize]) -> ImageSet {
    let len = set.image_len();
    let mut images = Vec::with_capacity(indices.len() * len);
    for &i in indices {
        images.extend_from_slice(set.image(i));
    }
    let labels = indices.iter().map(|&i| set.labels[i]).collect();
    ImageSet { images, labels, n: indices.len(), ..*set }
}

/// SplitMix64 (Steele, Lea and Flood): a tiny generator whose output is fixed by its definition.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0), by Lemire's multiply-shift; the tiny bias is irrelevant here.
    fn below(&mut self, bound: usize) -> usize {
        ((self.next() as u128 * bound as u128) >> 64) as usize
    }
}

fn shuffle(items: &mut [usize], rng: &mut SplitMix64) {
    for i in (1..items.len()).rev() {
        items.swap(i, rng.below(i + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(labels: Vec<u8>, classes: usize) -> ImageSet {
        let images = (0..labels.len()).map(|i| i as u8).collect();
        ImageSet::new(images, labels, 1, 1, 1, classes).unwrap()
    }

    #[test]
    fn each_class_keeps_its_share_and_the_seed_fixes_the_split() {
        // 50 of class 0, 30 of class 1, 20 of class 2, interleaved.
        let labels: Vec<u8> = (0..100)
            .map(|i| {
                if i % 2 == 0 {
                    0
                } else if i % 5 == 1 || i % 5 == 3 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let counts = |s: &ImageSet| (0..3).map(|c| s.labels.iter().filter(|&&l| l == c).count()).collect::<Vec<_>>();
        let all = set(labels, 3);
        let want = counts(&all);
        let (train, test) = stratified_split(&all, 0.2, 7).unwrap();
        assert_eq!(counts(&test), want.iter().map(|&k| (k as f64 * 0.2).round() as usize).collect::<Vec<_>>());
        assert_eq!(train.n + test.n, 100);
        // Every image lands in exactly one half (images hold their index), each half in order.
        let mut seen: Vec<u8> = train.images.iter().chain(&test.images).copied().collect();
        assert!(train.images.windows(2).all(|w| w[0] < w[1]) && test.images.windows(2).all(|w| w[0] < w[1]));
        seen.sort();
        assert_eq!(seen, (0..100).collect::<Vec<u8>>());
        assert_eq!(stratified_split(&all, 0.2, 7).unwrap(), (train.clone(), test.clone()));
        assert_ne!(stratified_split(&all, 0.2, 8).unwrap().1, test);
    }

    #[test]
    fn a_fraction_outside_zero_to_one_is_an_error() {
        let s = set(vec![0, 1], 2);
        for bad in [-0.1, 1.0, f64::NAN] {
            let e = stratified_split(&s, bad, 0).unwrap_err().to_string();
            assert!(e.contains("test fraction"), "{e}");
        }
        assert_eq!(stratified_split(&s, 0.0, 0).unwrap().1.n, 0);
    }
}
