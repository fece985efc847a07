//! Chooses the near-duplicate threshold of the data health report by measurement on MNIST.
//!
//! Two distance distributions, in the distance `find_duplicates` compares with its threshold (RMS
//! difference of 16x16 gray thumbnails normalised to zero mean and unit contrast), and for
//! comparison in raw thumbnails (values in [0, 1]):
//! - **near copies**: each of `--samples` images re-encoded as JPEG at quality 75 to 95, with ±2
//!   gray levels of noise, with its brightness scaled by 0.9 to 1.1, and resized down (14 to 26
//!   pixels a side) and up again: what a data set picks up when one image is saved twice;
//! - **nearest distinct image**: each sampled image's nearest neighbour among the other 69,999
//!   (byte-identical copies excluded): how close two genuinely different digits come.
//!
//! It prints percentiles of both, then for candidate thresholds the share of copies caught and the
//! share of MNIST's 70,000 images flagged (an image is flagged when some other, not identical,
//! image lies within the threshold: its nearest distinct image does). When some candidates catch
//! every JPEG, noise and brightness copy while others flag no image, it picks the middle of that
//! gap (rounded down to 0.005), so that neither side is near the edge; otherwise the largest
//! candidate that catches 99% of those copies and flags at most 0.1% of the images. Then it
//! times `find_duplicates` on all 70,000 images and counts the flat images of MNIST.
//!
//! cargo run --release --example duplicate_threshold -- [--samples 2000] [--seed 1] [--data-dir DIR]

use clap::Parser;
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{ExtendedColorType, GrayImage};
use netmorph::data::mnist::{default_data_dir, Mnist};
use netmorph::data::ImageSet;
use netmorph::report::duplicates::{
    find_duplicates, thumbnail_size, thumbnails, DuplicateOptions, Duplicates, Fingerprints, DEFAULT_THRESHOLD, MIN_CONTRAST,
};
use netmorph::report::health::{flat_images, FlatKind};
use netmorph::report::{ImageRef, Split};
use netmorph::{Error, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "Measure near-copy and nearest-neighbour distances on MNIST to choose the duplicate threshold")]
struct Args {
    /// Images sampled (each gives one copy of every kind, and one nearest-neighbour search).
    #[arg(long, default_value_t = 2000)]
    samples: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the MNIST files are; default: $NETMORPH_DATA_DIR or the repository's data/mnist.
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// The kinds of near copy, in the order they are made.
const KINDS: [&str; 4] = ["jpeg q75-95", "noise +-2", "brightness x0.9-1.1", "resize 14-26 and back"];
/// The copies the threshold must catch: all but the resized ones (see the printout for why).
const TARGET_KINDS: usize = 3;
/// The least share of those copies the threshold must catch, when no candidate separates.
const MIN_RECALL: f64 = 0.99;
/// The largest share of MNIST's images it may flag, when no candidate separates.
const MAX_FLAGGED: f64 = 0.001;

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let mnist = Mnist::load(&dir)?;
    let (train, test) = (&mnist.train, &mnist.test);
    let all = concat(train, test)?;
    let side = all.height;
    let size = thumbnail_size(all.height, all.width);
    println!("MNIST: {} training and {} test images, {}x{} thumbnails, {} samples\n", train.n, test.n, size[0], size[1], args.samples);

    let mut rng = StdRng::seed_from_u64(args.seed);
    let samples: Vec<usize> = (0..args.samples).map(|_| rng.random_range(0..all.n)).collect();
    let mut copy_bytes = Vec::with_capacity(samples.len() * KINDS.len() * side * side);
    for &i in &samples {
        let original = all.image(i);
        let scale: f32 = rng.random_range(0.9..=1.1);
        let copies = [
            jpeg(original, side, rng.random_range(75..=95))?,
            original.iter().map(|&b| (b as i32 + rng.random_range(-2..=2)).clamp(0, 255) as u8).collect(),
            original.iter().map(|&b| (b as f32 * scale).round().clamp(0.0, 255.0) as u8).collect(),
            resized_down_and_up(original, side, rng.random_range(14..=26))?,
        ];
        for copy in copies {
            copy_bytes.extend_from_slice(&copy);
        }
    }
    let copies = ImageSet::new(copy_bytes, vec![0; samples.len() * KINDS.len()], 1, side, side, 1)?;

    // Raw thumbnails first, for comparison: the distance the brief suggested.
    let raw = |set: &ImageSet| Fingerprints { size, values: thumbnails(set, size), means: vec![0.5; set.n] };
    let started = Instant::now();
    let (raw_all, raw_copies) = (raw(&all), raw(&copies));
    let raw_study = study(&all, &raw_all, &raw_copies, &samples);
    let (fingerprints, copy_fingerprints) = (Fingerprints::of(&all, size), Fingerprints::of(&copies, size));
    let normalised_study = study(&all, &fingerprints, &copy_fingerprints, &samples);
    println!("(distances and nearest-neighbour searches: {:.1} s)\n", started.elapsed().as_secs_f64());
    println!("RAW thumbnails (values in [0, 1]):");
    raw_study.print();
    println!("\nNORMALISED thumbnails (zero mean, divided by the standard deviation or {MIN_CONTRAST}; what find_duplicates uses):");
    normalised_study.print();

    // The share of all images flagged: those with a near partner that is not an exact copy.
    println!("\nthreshold  copies caught (jpeg, noise, brightness | resized)  MNIST images flagged  find_duplicates time");
    let (mut catches_all, mut flags_none, mut fallback) = (None, None, None);
    for k in 1..=24 {
        let threshold = k as f64 * 0.005;
        let started = Instant::now();
        let found = find_duplicates(train, test, &DuplicateOptions { threshold });
        let seconds = started.elapsed().as_secs_f64();
        let flagged = flagged_share(&found, all.n);
        let (target, resized) =
            (normalised_study.caught(threshold, 0..TARGET_KINDS), normalised_study.caught(threshold, TARGET_KINDS..KINDS.len()));
        println!("  {threshold:<8.3} {:>10.2}% | {:>6.2}%  {:>30.3}%  {seconds:>10.2} s", 100.0 * target, 100.0 * resized, 100.0 * flagged);
        if target >= 1.0 && catches_all.is_none() {
            catches_all = Some(threshold);
        }
        if flagged == 0.0 {
            flags_none = Some(threshold);
        }
        if target >= MIN_RECALL && flagged <= MAX_FLAGGED {
            fallback = Some(threshold);
        }
    }
    match (catches_all, flags_none, fallback) {
        (Some(low), Some(high), _) if low <= high => {
            let middle = ((low + high) / 2.0 / 0.005 + 1e-9).floor() * 0.005;
            println!(
                "\nchosen: {middle:.3}, the middle of the gap between {low:.3} (every jpeg, noise and brightness copy caught) \
                 and {high:.3} (no MNIST image flagged)"
            )
        }
        (_, _, Some(t)) => println!(
            "\nchosen: {t:.3}, the largest candidate catching {}% of the copies and flagging at most {}% of the images",
            100.0 * MIN_RECALL,
            100.0 * MAX_FLAGGED
        ),
        _ => println!(
            "\nno candidate catches {}% of the copies while flagging at most {}% of the images",
            100.0 * MIN_RECALL,
            100.0 * MAX_FLAGGED
        ),
    }
    println!("the library's DEFAULT_THRESHOLD is {DEFAULT_THRESHOLD}");
    let threshold = DEFAULT_THRESHOLD;
    println!(
        "at DEFAULT_THRESHOLD {threshold}: copies caught {:.2}% (jpeg, noise, brightness), {:.2}% (resized), all kinds {:.2}%; \
         sampled images whose nearest distinct image is within it {:.2}%",
        100.0 * normalised_study.caught(threshold, 0..TARGET_KINDS),
        100.0 * normalised_study.caught(threshold, TARGET_KINDS..KINDS.len()),
        100.0 * normalised_study.caught(threshold, 0..KINDS.len()),
        100.0 * share_at_most(&normalised_study.nearest, threshold)
    );

    let started = Instant::now();
    let found = find_duplicates(train, test, &DuplicateOptions::default());
    let seconds = started.elapsed().as_secs_f64();
    let count =
        |exact: bool, a: Split, b: Split| found.pairs.iter().filter(|p| p.exact == exact && p.a.split == a && p.b.split == b).count();
    println!(
        "\nfind_duplicates on all {} images at the default threshold: {seconds:.2} s on {} threads",
        all.n,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "  exact pairs: {} within train, {} within test, {} across; near pairs: {} within train, {} within test, {} across; \
         {} groups, the largest of {}; {:.3}% of the images flagged",
        count(true, Split::Train, Split::Train),
        count(true, Split::Test, Split::Test),
        count(true, Split::Train, Split::Test),
        count(false, Split::Train, Split::Train),
        count(false, Split::Test, Split::Test),
        count(false, Split::Train, Split::Test),
        found.groups.len(),
        found.groups.first().map_or(0, |g| g.len()),
        100.0 * flagged_share(&found, all.n)
    );
    println!("  {}", found.method);
    for pair in found.pairs.iter().take(5) {
        let label = |r: ImageRef| if r.split == Split::Train { train.labels[r.index] } else { test.labels[r.index] };
        println!(
            "  closest: {} {} (label {}) ~ {} {} (label {}): {:.4}",
            pair.a.split,
            pair.a.index,
            label(pair.a),
            pair.b.split,
            pair.b.index,
            label(pair.b),
            pair.distance
        );
    }

    let started = Instant::now();
    let mut flat = flat_images(train, Split::Train);
    flat.extend(flat_images(test, Split::Test));
    let kind_count = |kind: FlatKind| flat.iter().filter(|f| f.kind == kind).count();
    println!(
        "\nflat images on MNIST ({:.2} s): {} constant, {} nearly blank, {} saturated",
        started.elapsed().as_secs_f64(),
        kind_count(FlatKind::Constant),
        kind_count(FlatKind::NearlyBlank),
        kind_count(FlatKind::Saturated)
    );
    let pixels = (all.height * all.width) as f64;
    let least_lit = (0..all.n).map(|i| all.image(i).iter().filter(|&&b| b > 8).count()).min().unwrap_or(0);
    println!("the least-lit MNIST digit has {least_lit} pixels ({:.1}%) above 8", 100.0 * least_lit as f64 / pixels);
    Ok(())
}

/// Distances of the copies (per kind) and of the nearest distinct images, sorted.
struct Study {
    copies: Vec<Vec<f64>>,
    nearest: Vec<f64>,
}

impl Study {
    fn print(&self) {
        let copy_quantiles = [0.5, 0.9, 0.99, 0.999, 1.0];
        println!("  near copies, distance at quantiles {copy_quantiles:?}:");
        for (kind, distances) in KINDS.iter().zip(&self.copies) {
            println!("    {kind:<24} {}", quantiles(distances, &copy_quantiles));
        }
        let near_quantiles = [0.0, 0.005, 0.01, 0.05, 0.1, 0.5];
        println!("  nearest distinct image, distance at quantiles {near_quantiles:?}:");
        println!("    {:<24} {}", "", quantiles(&self.nearest, &near_quantiles));
        let target: Vec<f64> = sorted(self.copies[..TARGET_KINDS].concat());
        for q in [0.99, 0.999] {
            let at = quantile(&target, q);
            println!(
                "  {}% of the jpeg, noise and brightness copies are within {at:.4}; {:.2}% of the sampled images have their nearest distinct image that close",
                100.0 * q,
                100.0 * share_at_most(&self.nearest, at)
            );
        }
    }

    /// The share of the copies of `kinds` within `threshold`.
    fn caught(&self, threshold: f64, kinds: std::ops::Range<usize>) -> f64 {
        let (caught, total) =
            self.copies[kinds].iter().fold((0, 0), |(caught, total), d| (caught + d.partition_point(|&x| x <= threshold), total + d.len()));
        caught as f64 / total.max(1) as f64
    }
}

/// Measures the copies against their originals and each sample's nearest distinct image.
fn study(all: &ImageSet, fingerprints: &Fingerprints, copies: &Fingerprints, samples: &[usize]) -> Study {
    let mut per_kind: Vec<Vec<f64>> = vec![vec![]; KINDS.len()];
    for (s, &i) in samples.iter().enumerate() {
        for (k, distances) in per_kind.iter_mut().enumerate() {
            // A copy whose brightness moved too far is not near, whatever its distance.
            let c = s * KINDS.len() + k;
            let similar = (fingerprints.means[i] - copies.means[c]).abs() <= netmorph::report::duplicates::MAX_BRIGHTNESS_SHIFT;
            distances.push(if similar { fingerprints.distance(i, copies, c) } else { f64::INFINITY });
        }
    }
    Study { copies: per_kind.into_iter().map(sorted).collect(), nearest: sorted(nearest_distinct(all, fingerprints, samples)) }
}

/// For each sample, the distance to its nearest near-comparable image among all others that are
/// not byte-identical to it (brute force, on every core).
fn nearest_distinct(all: &ImageSet, fingerprints: &Fingerprints, samples: &[usize]) -> Vec<f64> {
    let dims = fingerprints.dims();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = samples.len().div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let workers: Vec<_> = samples
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|&i| {
                            let own = fingerprints.get(i);
                            let mut best = f32::INFINITY;
                            for (j, other) in fingerprints.values.chunks_exact(dims).enumerate() {
                                let sum: f32 = own.iter().zip(other).map(|(a, b)| (a - b) * (a - b)).sum();
                                let similar = (fingerprints.means[i] - fingerprints.means[j]).abs()
                                    <= netmorph::report::duplicates::MAX_BRIGHTNESS_SHIFT;
                                if sum < best && similar && j != i && all.image(j) != all.image(i) {
                                    best = sum;
                                }
                            }
                            (best as f64 / dims as f64).sqrt()
                        })
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))).collect()
    })
}

/// The share of the `n` images that are in a near (not exact) pair.
fn flagged_share(found: &Duplicates, n: usize) -> f64 {
    let flagged: HashSet<ImageRef> = found.pairs.iter().filter(|p| !p.exact).flat_map(|p| [p.a, p.b]).collect();
    flagged.len() as f64 / n.max(1) as f64
}

/// The training and test images as one set.
fn concat(train: &ImageSet, test: &ImageSet) -> Result<ImageSet> {
    let images = [&train.images[..], &test.images[..]].concat();
    ImageSet::new(images, [&train.labels[..], &test.labels[..]].concat(), 1, train.height, train.width, train.classes)
}

/// A gray square image encoded as JPEG at `quality` and decoded again.
fn jpeg(image: &[u8], side: usize, quality: u8) -> Result<Vec<u8>> {
    let mut encoded = vec![];
    JpegEncoder::new_with_quality(&mut encoded, quality)
        .encode(image, side as u32, side as u32, ExtendedColorType::L8)
        .map_err(|e| Error::Other(format!("JPEG encoding: {e}")))?;
    let decoded = image::load_from_memory(&encoded).map_err(|e| Error::Other(format!("JPEG decoding: {e}")))?;
    Ok(decoded.to_luma8().into_raw())
}

/// A gray square image resized (bilinear) to `small` pixels a side and back.
fn resized_down_and_up(image: &[u8], side: usize, small: u32) -> Result<Vec<u8>> {
    let gray = GrayImage::from_raw(side as u32, side as u32, image.to_vec()).ok_or_else(|| Error::Other("image size".into()))?;
    let down = image::imageops::resize(&gray, small, small, FilterType::Triangle);
    Ok(image::imageops::resize(&down, side as u32, side as u32, FilterType::Triangle).into_raw())
}

fn sorted(mut values: Vec<f64>) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    values
}

fn share_at_most(sorted: &[f64], threshold: f64) -> f64 {
    sorted.partition_point(|&d| d <= threshold) as f64 / sorted.len().max(1) as f64
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let at = (sorted.len().saturating_sub(1) as f64 * q).round() as usize;
    sorted.get(at).copied().unwrap_or(f64::NAN)
}

/// The values at the quantiles of a sorted list, formatted.
fn quantiles(sorted: &[f64], qs: &[f64]) -> String {
    qs.iter().map(|&q| format!("{:.4}", quantile(sorted, q))).collect::<Vec<_>>().join("  ")
}
