//! Exact and near duplicates, within the training set, within the test set and between the two:
//! a test image that is a copy of a training image inflates the test accuracy, and copies within
//! the training set weigh some images more than the rest.
//!
//! # Method
//! - **Exact**: identical bytes (and shape). The images are hashed, and images with the same hash
//!   compared byte for byte, so a hash collision never makes a false pair.
//! - **Near**: each image is turned gray (the mean of its channels) and area-averaged to a
//!   16x16 thumbnail with values in [0, 1] (a side under 16 pixels is kept as it is), whose
//!   contrast is then normalised: its mean is subtracted and it is divided by its standard
//!   deviation (or by [`MIN_CONTRAST`] when that is lower, so the noise of a flat image is not
//!   blown up). The distance of two images is the RMS difference of their normalised thumbnails,
//!   `sqrt(2 (1 - r))` for a correlation `r` of the thumbnails. A pair is near when that distance
//!   is at most [`DuplicateOptions::threshold`] and their mean brightness (thumbnail means, in
//!   [0, 1]) differs by at most [`MAX_BRIGHTNESS_SHIFT`], so that a black and a white image are
//!   not copies of each other.
//!
//! Why normalise: on MNIST, copies with their brightness scaled by 0.9 to 1.1 are as far from
//! their originals in raw thumbnails (RMS 0.035 at the 99th percentile) as 5% of the digits are
//! from their nearest *different* digit; normalised, brightness, JPEG and noise copies all stay
//! within 0.046, while no two different digits of the 70,000 are within 0.075
//! (`examples/duplicate_threshold.rs`).
//!
//! All near pairs are found, none missed: the thumbnails are projected on a few unit directions
//! (the top principal directions of a sample), sorted by the first projection, and each image is
//! compared only with the images whose first projection lies within `threshold * sqrt(dims)`
//! of its own; the other projections prune further, since `|p·a - p·b| <= ||a - b||` for a unit
//! `p`, and only the survivors get the full distance. Identical images are searched once, as one
//! representative. On MNIST (70,000 images) it takes about a second on 2 cores. Many images that
//! are near but not byte-identical copies of each other make it quadratic in their number: it
//! still counts every pair, keeping the closest [`MAX_PAIRS`].
//!
//! The default threshold was chosen by measurement on MNIST (`examples/duplicate_threshold.rs`):
//! see [`DEFAULT_THRESHOLD`].

use super::{ImageRef, Split};
use crate::data::ImageSet;
use serde::Serialize;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The side of the thumbnails compared for near duplicates.
pub const THUMBNAIL_SIDE: usize = 16;

/// The near-duplicate threshold used by default: RMS difference of normalised thumbnails (a
/// correlation of at least 0.998).
///
/// Measured on MNIST (`cargo run --release --example duplicate_threshold`, 2,000 sampled images):
/// their copies re-encoded as JPEG (quality 75 to 95), with ±2 gray levels of noise or with the
/// brightness scaled by 0.9 to 1.1 all lie within 0.046 (99.9% within 0.040), while no image of
/// the 70,000 has a different image within 0.075 (the first, 0.006% of them, at 0.08): 0.06 is
/// the middle of that gap. Copies resized down (to 14 to 26 pixels) and up again are not caught
/// (median 0.19): on MNIST's thin strokes such a resize moves a digit as far as a tenth of the
/// digits are from their nearest distinct one, and a threshold catching even 10% of those copies
/// (0.12) flags 0.8% of MNIST's images.
pub const DEFAULT_THRESHOLD: f64 = 0.06;

/// The lowest standard deviation a thumbnail is divided by (values in [0, 1]).
pub const MIN_CONTRAST: f32 = 0.05;

/// The most the mean brightness of two near duplicates may differ (thumbnail means, in [0, 1]).
pub const MAX_BRIGHTNESS_SHIFT: f32 = 0.1;

/// At most this many pairs are kept (the closest); the counts go on beyond it, so that a data set
/// of identical images cannot exhaust the memory.
pub const MAX_PAIRS: usize = 100_000;

/// Directions projected on to prune the search.
const PROJECTIONS: usize = 8;
/// Images sampled to find the principal directions.
const PCA_SAMPLE: usize = 4096;

/// How [`find_duplicates`] decides that two images are near duplicates.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DuplicateOptions {
    /// The largest RMS difference of two normalised thumbnails that makes a near pair, in
    /// [0, 2]: 0 only identical ones (up to brightness and contrast), 2 every pair (of similar
    /// brightness). Negative or NaN counts as 0.
    pub threshold: f64,
}

impl Default for DuplicateOptions {
    fn default() -> DuplicateOptions {
        DuplicateOptions { threshold: DEFAULT_THRESHOLD }
    }
}

/// Two images that are copies of each other, `a < b` (training images before test images).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DuplicatePair {
    pub a: ImageRef,
    pub b: ImageRef,
    /// RMS difference of the normalised thumbnails, in [0, 2]; 0 for exact pairs.
    pub distance: f64,
    /// Identical bytes.
    pub exact: bool,
}

/// The duplicates of a training and a test set.
#[derive(Clone, Debug, Serialize)]
pub struct Duplicates {
    /// The pairs, exact ones first, then by distance; at most [`MAX_PAIRS`] (the closest), while
    /// the counts below count every pair.
    pub pairs: Vec<DuplicatePair>,
    /// Pairs of two training images.
    pub within_train: usize,
    /// Pairs of two test images.
    pub within_test: usize,
    /// Pairs of a training and a test image.
    pub across: usize,
    /// How many of all those pairs are exact (identical bytes).
    pub exact: usize,
    /// The groups of images linked by the pairs (connected components, so a chain of near copies
    /// is one group), each sorted, the largest first: what a user would keep one of.
    pub groups: Vec<Vec<ImageRef>>,
    /// The method and threshold in one sentence, for the report.
    pub method: String,
}

impl Duplicates {
    /// Every pair, also those beyond [`MAX_PAIRS`].
    pub fn total(&self) -> usize {
        self.within_train + self.within_test + self.across
    }
}

/// Finds the exact and near duplicates within `train`, within `test` and between the two (see the
/// [module docs](self) for the method). The sets may differ in shape: the thumbnails then have the
/// smaller one's size, and no image of one shape is an exact copy of one of another.
pub fn find_duplicates(train: &ImageSet, test: &ImageSet, options: &DuplicateOptions) -> Duplicates {
    find_duplicates_capped(train, test, options, MAX_PAIRS)
}

/// [`find_duplicates`] keeping at most `max_pairs` pairs.
fn find_duplicates_capped(train: &ImageSet, test: &ImageSet, options: &DuplicateOptions, max_pairs: usize) -> Duplicates {
    let threshold = if options.threshold.is_nan() { 0.0 } else { options.threshold.clamp(0.0, 2.0) };
    let refs: Vec<ImageRef> = (0..train.n)
        .map(|index| ImageRef { split: Split::Train, index })
        .chain((0..test.n).map(|index| ImageRef { split: Split::Test, index }))
        .collect();
    let bytes_of =
        |i: usize| if i < train.n { (train.image_shape(), train.image(i)) } else { (test.image_shape(), test.image(i - train.n)) };
    let groups = exact_groups(refs.len(), bytes_of);
    // How many training and test images each group (one representative in the search) holds.
    let composition: Vec<[usize; 2]> =
        groups.iter().map(|g| g.iter().fold([0, 0], |[t, s], &m| if (m as usize) < train.n { [t + 1, s] } else { [t, s + 1] })).collect();

    let size = thumbnail_size_of(train, test);
    let fingerprints = Fingerprints::from_thumbnails(representative_thumbnails(train, test, &groups, size), size);
    let search = near_pairs(&fingerprints, threshold, &composition, max_pairs);

    let mut counts = search.counts;
    let mut exact = 0;
    for &[t, s] in &composition {
        let pairs = [t * t.saturating_sub(1) / 2, s * s.saturating_sub(1) / 2, t * s];
        for (count, add) in counts.iter_mut().zip(pairs) {
            *count += add;
        }
        exact += pairs.iter().sum::<usize>();
    }

    // Exact pairs first, then the near pairs of the representatives, closest first, each
    // expanded to its groups' members, until the cap.
    let pair_of = |x: u32, y: u32, distance: f64, exact: bool| {
        let (a, b) = (refs[x as usize], refs[y as usize]);
        DuplicatePair { a: a.min(b), b: a.max(b), distance, exact }
    };
    let mut pairs = Vec::new();
    'exact: for group in &groups {
        for (k, &x) in group.iter().enumerate() {
            for &y in &group[k + 1..] {
                if pairs.len() >= max_pairs {
                    break 'exact;
                }
                pairs.push(pair_of(x, y, 0.0, true));
            }
        }
    }
    let mut near = search.kept;
    near.sort_by(|a, b| a.2.total_cmp(&b.2).then((a.0, a.1).cmp(&(b.0, b.1))));
    'near: for &(gx, gy, distance) in &near {
        for &x in &groups[gx as usize] {
            for &y in &groups[gy as usize] {
                if pairs.len() >= max_pairs {
                    break 'near;
                }
                pairs.push(pair_of(x, y, distance as f64, false));
            }
        }
    }
    pairs.sort_by(|p, q| (!p.exact).cmp(&!q.exact).then(p.distance.total_cmp(&q.distance)).then((p.a, p.b).cmp(&(q.a, q.b))));

    // Groups: the components of the near relation between representatives, with their members.
    let mut forest = search.forest;
    let mut by_root: HashMap<u32, Vec<ImageRef>> = HashMap::new();
    for (g, members) in groups.iter().enumerate() {
        let root = forest.find(g as u32);
        by_root.entry(root).or_default().extend(members.iter().map(|&m| refs[m as usize]));
    }
    let mut linked: Vec<Vec<ImageRef>> = by_root.into_values().filter(|g| g.len() > 1).collect();
    for group in &mut linked {
        group.sort();
    }
    linked.sort_by(|a, b| b.len().cmp(&a.len()).then(a[0].cmp(&b[0])));

    let [within_train, within_test, across] = counts;
    Duplicates {
        pairs,
        within_train,
        within_test,
        across,
        exact,
        groups: linked,
        method: format!(
            "Exact duplicates have identical bytes; near duplicates are pairs whose {}x{} gray thumbnails, \
             each normalised to zero mean and unit contrast, differ by at most {threshold} RMS \
             (a correlation of at least {:.4}) with mean brightness within {MAX_BRIGHTNESS_SHIFT}; every such pair is found.",
            size[0],
            size[1],
            1.0 - threshold * threshold / 2.0
        ),
    }
}

/// Groups of identical images (same shape, same bytes) among `n`, as indices, each group in
/// increasing order and the groups by their first member; a unique image is a group of one.
fn exact_groups<'a>(n: usize, bytes_of: impl Fn(usize) -> ([usize; 3], &'a [u8])) -> Vec<Vec<u32>> {
    let mut groups: Vec<Vec<u32>> = Vec::new();
    // Hash -> the groups with that hash (more than one only on a collision).
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    for i in 0..n {
        let (shape, bytes) = bytes_of(i);
        let mut hasher = DefaultHasher::new();
        (shape, bytes).hash(&mut hasher);
        let candidates = by_hash.entry(hasher.finish()).or_default();
        match candidates.iter().find(|&&g| bytes_of(groups[g][0] as usize) == (shape, bytes)) {
            Some(&g) => groups[g].push(i as u32),
            None => {
                candidates.push(groups.len());
                groups.push(vec![i as u32]);
            }
        }
    }
    groups
}

/// The thumbnail size for images of `height` x `width`: [`THUMBNAIL_SIDE`] or less.
pub fn thumbnail_size(height: usize, width: usize) -> [usize; 2] {
    [height.min(THUMBNAIL_SIDE), width.min(THUMBNAIL_SIDE)]
}

/// One thumbnail size for both sets: the smaller, so both can be area-averaged to it.
fn thumbnail_size_of(train: &ImageSet, test: &ImageSet) -> [usize; 2] {
    let sizes: Vec<[usize; 2]> = [train, test].iter().filter(|s| !s.is_empty()).map(|s| thumbnail_size(s.height, s.width)).collect();
    let smallest = |k: usize| sizes.iter().map(|s| s[k]).min().unwrap_or(1).max(1);
    [smallest(0), smallest(1)]
}

/// The thumbnails of every image of `set` at `size` (each side at most the image's), concatenated:
/// gray (the mean of the channels), area-averaged, in [0, 1].
pub fn thumbnails(set: &ImageSet, size: [usize; 2]) -> Vec<f32> {
    let indices: Vec<usize> = (0..set.n).collect();
    parallel_thumbnails(&indices, size, |i| (set, i))
}

/// The RMS difference of two thumbnails.
pub fn thumbnail_distance(a: &[f32], b: &[f32]) -> f64 {
    let sum: f64 = a.iter().zip(b).map(|(&x, &y)| ((x - y) as f64).powi(2)).sum();
    (sum / a.len().max(1) as f64).sqrt()
}

/// Images as the near-duplicate search compares them: normalised thumbnails (zero mean, divided
/// by the standard deviation or [`MIN_CONTRAST`]) and the mean brightness of each.
#[derive(Clone, Debug, PartialEq)]
pub struct Fingerprints {
    /// [height, width] of the thumbnails.
    pub size: [usize; 2],
    /// The normalised thumbnails, concatenated.
    pub values: Vec<f32>,
    /// The mean of each raw thumbnail, in [0, 1].
    pub means: Vec<f32>,
}

impl Fingerprints {
    /// The fingerprints of every image of `set`, thumbnails of `size` (see [`thumbnail_size`]).
    pub fn of(set: &ImageSet, size: [usize; 2]) -> Fingerprints {
        Fingerprints::from_thumbnails(thumbnails(set, size), size)
    }

    /// Normalises raw thumbnails (see [`thumbnails`]) of `size`.
    pub fn from_thumbnails(mut values: Vec<f32>, size: [usize; 2]) -> Fingerprints {
        let dims = (size[0] * size[1]).max(1);
        let mut means = Vec::with_capacity(values.len() / dims);
        for thumb in values.chunks_exact_mut(dims) {
            let mean = thumb.iter().sum::<f32>() / dims as f32;
            let deviation = (thumb.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / dims as f32).sqrt();
            let scale = 1.0 / deviation.max(MIN_CONTRAST);
            thumb.iter_mut().for_each(|x| *x = (*x - mean) * scale);
            means.push(mean);
        }
        Fingerprints { size, values, means }
    }

    pub fn len(&self) -> usize {
        self.means.len()
    }
    pub fn is_empty(&self) -> bool {
        self.means.is_empty()
    }

    /// Values per fingerprint.
    pub fn dims(&self) -> usize {
        self.size[0] * self.size[1]
    }

    /// The normalised thumbnail of image `i`.
    pub fn get(&self, i: usize) -> &[f32] {
        &self.values[i * self.dims()..(i + 1) * self.dims()]
    }

    /// The distance of image `i` to image `j` of `other` (same size): the RMS difference of the
    /// normalised thumbnails, in [0, 2].
    pub fn distance(&self, i: usize, other: &Fingerprints, j: usize) -> f64 {
        thumbnail_distance(self.get(i), other.get(j))
    }

    /// Whether image `i` and image `j` of `other` are near duplicates at `threshold`.
    pub fn is_near(&self, i: usize, other: &Fingerprints, j: usize, threshold: f64) -> bool {
        (self.means[i] - other.means[j]).abs() <= MAX_BRIGHTNESS_SHIFT && self.distance(i, other, j) <= threshold
    }
}

/// The thumbnail of each group's first member.
fn representative_thumbnails(train: &ImageSet, test: &ImageSet, groups: &[Vec<u32>], size: [usize; 2]) -> Vec<f32> {
    let firsts: Vec<usize> = groups.iter().map(|g| g[0] as usize).collect();
    parallel_thumbnails(&firsts, size, |i| if i < train.n { (train, i) } else { (test, i - train.n) })
}

/// Thumbnails of the images named by `items`, on every core.
fn parallel_thumbnails<'a>(items: &[usize], size: [usize; 2], image_of: impl Fn(usize) -> (&'a ImageSet, usize) + Sync) -> Vec<f32> {
    let dims = size[0] * size[1];
    let mut out = vec![0f32; items.len() * dims];
    let threads = threads_for(items.len(), 2048);
    let per_thread = items.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (chunk_items, chunk_out) in items.chunks(per_thread).zip(out.chunks_mut(per_thread * dims)) {
            let image_of = &image_of;
            scope.spawn(move || {
                let mut resampler = Resampler::default();
                for (&item, thumb) in chunk_items.iter().zip(chunk_out.chunks_mut(dims)) {
                    let (set, i) = image_of(item);
                    resampler.thumbnail(set, i, size, thumb);
                }
            });
        }
    });
    out
}

/// Area averaging: the weights of the source pixels in each target pixel, kept between images of
/// one size.
#[derive(Default)]
struct Resampler {
    key: Option<([usize; 3], [usize; 2])>,
    rows: Vec<Vec<(usize, f32)>>,
    cols: Vec<Vec<(usize, f32)>>,
    gray: Vec<f32>,
    row_sums: Vec<f32>,
}

impl Resampler {
    fn thumbnail(&mut self, set: &ImageSet, i: usize, size: [usize; 2], out: &mut [f32]) {
        let [c, h, w] = set.image_shape();
        if self.key != Some(([c, h, w], size)) {
            self.key = Some(([c, h, w], size));
            self.rows = area_weights(h, size[0]);
            self.cols = area_weights(w, size[1]);
        }
        let image = set.image(i);
        if h * w == 0 {
            out.fill(0.0);
            return;
        }
        // Gray in [0, 1]: the mean of the channels.
        self.gray.clear();
        self.gray.resize(h * w, 0.0);
        let scale = 1.0 / (255.0 * c as f32);
        for plane in image.chunks_exact(h * w) {
            for (g, &b) in self.gray.iter_mut().zip(plane) {
                *g += b as f32 * scale;
            }
        }
        // Columns first (each source row to size[1] values), then rows.
        self.row_sums.clear();
        for row in self.gray.chunks_exact(w) {
            for weights in &self.cols {
                self.row_sums.push(weights.iter().map(|&(x, wt)| row[x] * wt).sum());
            }
        }
        for (ty, weights) in self.rows.iter().enumerate() {
            for tx in 0..size[1] {
                out[ty * size[1] + tx] = weights.iter().map(|&(y, wt)| self.row_sums[y * size[1] + tx] * wt).sum();
            }
        }
    }
}

/// For each of `target` cells over `source` pixels (`target <= source`), the source pixels it
/// covers and their shares, summing to 1.
fn area_weights(source: usize, target: usize) -> Vec<Vec<(usize, f32)>> {
    let scale = source as f64 / target as f64;
    (0..target)
        .map(|t| {
            let (start, end) = (t as f64 * scale, (t + 1) as f64 * scale);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(source);
            (first..last)
                .filter_map(|s| {
                    let overlap = (end.min(s as f64 + 1.0) - start.max(s as f64)).max(0.0);
                    (overlap > 1e-9).then_some((s, (overlap / scale) as f32))
                })
                .collect()
        })
        .collect()
}

/// What the search of near pairs found.
struct NearSearch {
    /// (representative, representative, distance), the closest `max_pairs`.
    kept: Vec<(u32, u32, f32)>,
    /// Member pairs of all near pairs: [within train, within test, across].
    counts: [usize; 3],
    /// The components of the near relation between representatives.
    forest: UnionFind,
}

/// Every pair of fingerprints at most `threshold` RMS apart and of similar brightness, by a sorted
/// sweep on the first principal projection pruned by the others (see the [module docs](self)).
/// `composition` gives the training and test images each fingerprint stands for.
fn near_pairs(fingerprints: &Fingerprints, threshold: f64, composition: &[[usize; 2]], max_pairs: usize) -> NearSearch {
    let (n, dims, thumbs) = (fingerprints.len(), fingerprints.dims(), &fingerprints.values[..]);
    let directions = principal_directions(thumbs, dims, PROJECTIONS);
    let k = directions.len() / dims;
    let mut projections = vec![0f32; n * k];
    for (thumb, projected) in thumbs.chunks_exact(dims).zip(projections.chunks_exact_mut(k)) {
        for (p, direction) in projected.iter_mut().zip(directions.chunks_exact(dims)) {
            *p = dot(thumb, direction);
        }
    }
    // Sorted by the first projection; everything the sweep reads is laid out in that order.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|&a, &b| projections[a as usize * k].total_cmp(&projections[b as usize * k]));
    // The first two projections and the means each in an array of their own: the sweep reads them
    // for every candidate; the other projections only for those that pass.
    let column = |c: usize| -> Vec<f32> { order.iter().map(|&i| projections[i as usize * k + c.min(k - 1)]).collect() };
    let (first, second) = (column(0), column(1));
    let others: Vec<f32> = order.iter().flat_map(|&i| projections[i as usize * k..(i as usize + 1) * k].iter().skip(2).copied()).collect();
    let sorted_thumbs: Vec<f32> = order.iter().flat_map(|&i| fingerprints.get(i as usize).iter().copied()).collect();
    let means: Vec<f32> = order.iter().map(|&i| fingerprints.means[i as usize]).collect();
    let rest = k.saturating_sub(2);

    let radius = (threshold * (dims as f64).sqrt()) as f32;
    let max_sum = (threshold * threshold * dims as f64) as f32;
    // The projections carry f32 rounding: prune a little wider than the radius, so pruning never
    // drops a pair the full distance would accept.
    let bound = radius * (1.0 + 1e-4) + 1e-4;

    let next = AtomicUsize::new(0);
    const CHUNK: usize = 64;
    let threads = threads_for(n, 4096);
    let results: Vec<NearSearch> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut found = NearSearch { kept: Vec::new(), counts: [0; 3], forest: UnionFind::new(n) };
                    let mut candidates: Vec<u32> = Vec::new();
                    loop {
                        let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if start >= n {
                            break;
                        }
                        for i in start..(start + CHUNK).min(n) {
                            let (others_i, thumb_i) = (&others[i * rest..(i + 1) * rest], &sorted_thumbs[i * dims..(i + 1) * dims]);
                            let (first_i, second_i, mean_i) = (first[i], second[i], means[i]);
                            let end = i + 1 + first[i + 1..].partition_point(|&f| f - first_i <= bound);
                            // Branch-free filter on the second projection and the brightness: most
                            // of the window fails it, and unpredictable branches would cost more.
                            candidates.clear();
                            candidates.resize(end - i, 0);
                            let mut passed = 0;
                            for (offset, (&second_j, &mean_j)) in second[i + 1..end].iter().zip(&means[i + 1..end]).enumerate() {
                                candidates[passed] = (i + 1 + offset) as u32;
                                passed +=
                                    (((second_j - second_i).abs() <= bound) & ((mean_j - mean_i).abs() <= MAX_BRIGHTNESS_SHIFT)) as usize;
                            }
                            for &j in &candidates[..passed] {
                                let j = j as usize;
                                let others_j = &others[j * rest..(j + 1) * rest];
                                if others_i.iter().zip(others_j).any(|(a, b)| (a - b).abs() > bound) {
                                    continue;
                                }
                                let Some(sum) = squared_distance_within(thumb_i, &sorted_thumbs[j * dims..(j + 1) * dims], max_sum) else {
                                    continue;
                                };
                                let (a, b) = (order[i], order[j]);
                                let ([ta, sa], [tb, sb]) = (composition[a as usize], composition[b as usize]);
                                found.counts[0] += ta * tb;
                                found.counts[1] += sa * sb;
                                found.counts[2] += ta * sb + sa * tb;
                                found.forest.union(a, b);
                                found.kept.push((a.min(b), a.max(b), (sum / dims as f32).sqrt()));
                                if found.kept.len() >= 2 * max_pairs.max(1) {
                                    keep_closest(&mut found.kept, max_pairs);
                                }
                            }
                        }
                    }
                    found
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    });

    let mut merged = NearSearch { kept: Vec::new(), counts: [0; 3], forest: UnionFind::new(n) };
    for found in results {
        for (total, c) in merged.counts.iter_mut().zip(found.counts) {
            *total += c;
        }
        merged.kept.extend(found.kept);
        let mut forest = found.forest;
        for x in 0..n as u32 {
            let root = forest.find(x);
            if root != x {
                merged.forest.union(x, root);
            }
        }
    }
    keep_closest(&mut merged.kept, max_pairs);
    merged
}

/// Keeps the `max` closest pairs.
fn keep_closest(pairs: &mut Vec<(u32, u32, f32)>, max: usize) {
    if pairs.len() > max {
        if max > 0 {
            pairs.select_nth_unstable_by(max - 1, |a, b| a.2.total_cmp(&b.2));
        }
        pairs.truncate(max);
    }
}

/// The squared distance of `a` and `b` when it is at most `max`, stopping early when it is not.
fn squared_distance_within(a: &[f32], b: &[f32], max: f32) -> Option<f32> {
    let mut sum = 0f32;
    for (a, b) in a.chunks(64).zip(b.chunks(64)) {
        sum += lanes_sum(a, b, |x, y| (x - y) * (x - y));
        if sum > max {
            return None;
        }
    }
    Some(sum)
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    lanes_sum(a, b, |x, y| x * y)
}

/// The sum of `f` over `a` and `b`, in 8 independent lanes so that the compiler can vectorise it
/// (a single running f32 sum must be added in order).
#[inline]
fn lanes_sum(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let (a_chunks, b_chunks) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(&x, &y)| f(x, y)).sum();
    for (a, b) in a_chunks.zip(b_chunks) {
        for k in 0..8 {
            lanes[k] += f(a[k], b[k]);
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// Up to `count` orthonormal directions of largest variance (power iteration with deflation on
/// the covariance of an even sample), `dims` values each. Any unit directions keep the search
/// exact; principal ones make the pruning sharp. Directions of no variance are replaced by axes.
fn principal_directions(thumbs: &[f32], dims: usize, count: usize) -> Vec<f32> {
    let n = thumbs.len() / dims.max(1);
    let count = count.min(dims).max(1);
    let step = n.div_ceil(PCA_SAMPLE).max(1);
    let sample: Vec<&[f32]> = thumbs.chunks_exact(dims).step_by(step).collect();
    let mut mean = vec![0f64; dims];
    for thumb in &sample {
        for (m, &x) in mean.iter_mut().zip(*thumb) {
            *m += x as f64;
        }
    }
    for m in &mut mean {
        *m /= sample.len().max(1) as f64;
    }
    let mut covariance = vec![0f64; dims * dims];
    let mut centred = vec![0f64; dims];
    for thumb in &sample {
        for ((c, &x), m) in centred.iter_mut().zip(*thumb).zip(&mean) {
            *c = x as f64 - m;
        }
        for (row, &ci) in covariance.chunks_exact_mut(dims).zip(&centred) {
            if ci != 0.0 {
                for (v, &cj) in row.iter_mut().zip(&centred) {
                    *v += ci * cj;
                }
            }
        }
    }
    let mut directions: Vec<Vec<f64>> = Vec::new();
    for d in 0..count {
        // A fixed, uneven start, so no direction starts orthogonal to the answer by symmetry.
        let mut v: Vec<f64> = (0..dims).map(|i| 1.0 + ((i * 7919 + d * 104_729) % 97) as f64 / 97.0).collect();
        let mut found = false;
        for _ in 0..100 {
            for u in &directions {
                let along = v.iter().zip(u).map(|(a, b)| a * b).sum::<f64>();
                v.iter_mut().zip(u).for_each(|(a, b)| *a -= along * b);
            }
            let next: Vec<f64> = covariance.chunks_exact(dims).map(|row| row.iter().zip(&v).map(|(a, b)| a * b).sum()).collect();
            let norm = next.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-12 {
                break;
            }
            v = next.into_iter().map(|x| x / norm).collect();
            found = true;
        }
        if !found {
            v = vec![0.0; dims];
            v[d] = 1.0;
        }
        directions.push(v);
    }
    directions.into_iter().flat_map(|v| v.into_iter().map(|x| x as f32)).collect()
}

/// Disjoint sets of `0..n` (path halving, union by size).
#[derive(Clone, Debug)]
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> UnionFind {
        UnionFind { parent: (0..n as u32).collect(), size: vec![1; n] }
    }
    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let grandparent = self.parent[self.parent[x as usize] as usize];
            self.parent[x as usize] = grandparent;
            x = grandparent;
        }
        x
    }
    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
    }
}

/// Threads for `items` items: one per core, but none with fewer than `min_per_thread`.
fn threads_for(items: usize, min_per_thread: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.min(items / min_per_thread.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(images: &[Vec<u8>], side: usize) -> ImageSet {
        ImageSet::new(images.concat(), vec![0; images.len()], 1, side, side, 1).unwrap()
    }

    /// A distinct pattern per seed.
    fn pattern(seed: usize, side: usize) -> Vec<u8> {
        (0..side * side).map(|p| if (p * 31 + seed * 17).is_multiple_of(seed % 7 + 3) { 255 } else { (seed * 13 % 50) as u8 }).collect()
    }

    /// Every near pair, by comparing every pair.
    fn brute_force(fingerprints: &Fingerprints, threshold: f64) -> Vec<(u32, u32)> {
        let (n, dims) = (fingerprints.len(), fingerprints.dims());
        let mut pairs = vec![];
        for i in 0..n {
            for j in i + 1..n {
                let sum = squared_distance_within(fingerprints.get(i), fingerprints.get(j), f32::MAX).unwrap();
                let similar_brightness = (fingerprints.means[i] - fingerprints.means[j]).abs() <= MAX_BRIGHTNESS_SHIFT;
                if similar_brightness && sum <= (threshold * threshold * dims as f64) as f32 {
                    pairs.push((i as u32, j as u32));
                }
            }
        }
        pairs
    }

    #[test]
    fn area_weights_cover_each_cell_once() {
        for (source, target) in [(28, 16), (16, 16), (5, 3), (100, 7)] {
            let weights = area_weights(source, target);
            assert_eq!(weights.len(), target);
            for cell in &weights {
                assert!((cell.iter().map(|w| w.1).sum::<f32>() - 1.0).abs() < 1e-5, "{source} -> {target}");
            }
            let mut per_source = vec![0f32; source];
            for &(s, w) in weights.iter().flatten() {
                per_source[s] += w;
            }
            let expected = target as f32 / source as f32;
            assert!(per_source.iter().all(|&w| (w - expected).abs() < 1e-5), "{source} -> {target}");
        }
    }

    #[test]
    fn thumbnail_of_a_constant_image_is_constant_and_small_images_keep_their_size() {
        let gray = set(&[vec![51; 28 * 28]], 28);
        let thumbs = thumbnails(&gray, thumbnail_size(28, 28));
        assert_eq!(thumbs.len(), 256);
        assert!(thumbs.iter().all(|&v| (v - 0.2).abs() < 1e-5));
        let small = set(&[vec![0, 255, 255, 0]], 2);
        assert_eq!(thumbnail_size(2, 2), [2, 2]);
        assert_eq!(thumbnails(&small, [2, 2]), vec![0.0, 1.0, 1.0, 0.0]);
        // RGB is averaged to gray.
        let rgb = ImageSet::new([vec![255; 4], vec![0; 4], vec![0; 4]].concat(), vec![0], 3, 2, 2, 1).unwrap();
        assert!(thumbnails(&rgb, [2, 2]).iter().all(|&v| (v - 1.0 / 3.0).abs() < 1e-6));
    }

    #[test]
    fn the_sweep_finds_exactly_the_pairs_a_brute_force_finds() {
        // Random-ish thumbnails in clusters, so that many pairs lie near the threshold.
        let dims = 64;
        let mut state = 12345u64;
        let mut random = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 40) as f32 / (1u64 << 24) as f32
        };
        let centres: Vec<Vec<f32>> = (0..20).map(|_| (0..dims).map(|_| random()).collect()).collect();
        let n = 600;
        // Each point with its own noise, so that the distances spread across the thresholds.
        let values: Vec<f32> = (0..n)
            .flat_map(|i| {
                let noise = random() * 0.15;
                centres[i % 20].iter().map(|&c| c + (random() - 0.5) * noise).collect::<Vec<_>>()
            })
            .collect();
        // Means spread over twice the brightness shift, so that it rejects some close pairs.
        let means = (0..n).map(|_| random() * 2.0 * MAX_BRIGHTNESS_SHIFT).collect();
        let fingerprints = Fingerprints { size: [8, 8], values, means };
        for threshold in [0.0, 0.02, 0.03, 0.05] {
            let search = near_pairs(&fingerprints, threshold, &vec![[1, 0]; n], usize::MAX / 4);
            let mut found: Vec<(u32, u32)> = search.kept.iter().map(|&(a, b, _)| (a, b)).collect();
            found.sort();
            let expected = brute_force(&fingerprints, threshold);
            assert!(threshold == 0.0 || expected.len() > 100, "too few pairs to test with: {}", expected.len());
            assert_eq!(found, expected, "threshold {threshold}");
            assert_eq!(search.counts, [expected.len(), 0, 0]);
        }
    }

    #[test]
    fn brightness_and_contrast_do_not_part_copies_but_black_and_white_are_not_copies() {
        let side = 16;
        let digit = pattern(4, side);
        let dimmer: Vec<u8> = digit.iter().map(|&b| (b as f32 * 0.8) as u8).collect();
        let fingerprints = Fingerprints::of(&set(&[digit, dimmer, vec![0; 256], vec![255; 256], vec![20; 256]], side), [16, 16]);
        assert!(fingerprints.distance(0, &fingerprints, 1) < 0.01);
        assert!(fingerprints.is_near(0, &fingerprints, 1, DEFAULT_THRESHOLD));
        // Constant images all normalise to zero; only their brightness tells them apart.
        assert_eq!(fingerprints.distance(2, &fingerprints, 3), 0.0);
        assert!(!fingerprints.is_near(2, &fingerprints, 3, DEFAULT_THRESHOLD));
        assert!(fingerprints.is_near(2, &fingerprints, 4, DEFAULT_THRESHOLD));
        // Normalised thumbnails have unit RMS around a zero mean.
        let digit = fingerprints.get(0);
        assert!(digit.iter().sum::<f32>().abs() < 1e-3);
        assert!((digit.iter().map(|x| x * x).sum::<f32>() / 256.0 - 1.0).abs() < 1e-4);
    }

    #[test]
    fn exact_copies_are_counted_by_split_and_the_pairs_are_capped() {
        let side = 8;
        let a = pattern(1, side);
        let train = set(&[a.clone(), pattern(2, side), a.clone(), a.clone()], side);
        let test = set(&[a.clone(), pattern(3, side)], side);
        let options = DuplicateOptions::default();
        let found = find_duplicates(&train, &test, &options);
        // Train 0, 2, 3 and test 0 are one image: 3 pairs within train, 3 across.
        assert_eq!((found.within_train, found.within_test, found.across, found.exact), (3, 0, 3, 6));
        assert_eq!(found.pairs.len(), 6);
        assert!(found.pairs.iter().all(|p| p.exact && p.distance == 0.0 && p.a < p.b));
        assert_eq!(found.groups.len(), 1);
        assert_eq!(found.groups[0].len(), 4);
        let capped = find_duplicates_capped(&train, &test, &options, 2);
        assert_eq!(capped.pairs.len(), 2);
        assert_eq!(capped.total(), 6);
    }

    #[test]
    fn a_near_copy_of_an_exact_group_pairs_with_every_member() {
        let side = 8;
        let a = pattern(1, side);
        let mut near = a.clone();
        near[0] = near[0].saturating_add(3);
        let train = set(&[a.clone(), pattern(2, side), a.clone()], side);
        let test = set(&[near], side);
        let found = find_duplicates(&train, &test, &DuplicateOptions::default());
        assert_eq!((found.within_train, found.within_test, found.across, found.exact), (1, 0, 2, 1));
        let near_pairs: Vec<_> = found.pairs.iter().filter(|p| !p.exact).collect();
        assert_eq!(near_pairs.len(), 2);
        assert!(near_pairs.iter().all(|p| p.b == ImageRef { split: Split::Test, index: 0 } && p.distance > 0.0));
    }

    #[test]
    fn identical_images_everywhere_stay_cheap() {
        let side = 4;
        let images = vec![vec![7u8; side * side]; 3000];
        let train = set(&images, side);
        let test = set(&images[..1000], side);
        let found = find_duplicates(&train, &test, &DuplicateOptions::default());
        assert_eq!(found.within_train, 3000 * 2999 / 2);
        assert_eq!(found.across, 3000 * 1000);
        assert_eq!(found.exact, found.total());
        assert_eq!(found.pairs.len(), MAX_PAIRS);
        assert_eq!(found.groups.len(), 1);
    }

    #[test]
    fn empty_sets_have_no_duplicates() {
        let empty = ImageSet::new(vec![], vec![], 1, 28, 28, 10).unwrap();
        let found = find_duplicates(&empty, &empty, &DuplicateOptions::default());
        assert_eq!(found.total(), 0);
        assert!(found.pairs.is_empty() && found.groups.is_empty());
    }
}
