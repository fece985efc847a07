//! The data health report before any training (`netmorph::report::health`,
//! `netmorph::report::duplicates`): each detector measured on a synthetic data set with planted
//! defects (exact and near duplicates within and across the sets, constant, nearly blank and
//! saturated images), odd file shapes through a real image folder, and real MNIST, on which
//! nothing may be flagged.

use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, GrayImage, Luma, Rgb, RgbImage};
use netmorph::data::{default_data_dir, load_data, ImageSet, LoadOptions};
use netmorph::report::duplicates::{find_duplicates, DuplicateOptions};
use netmorph::report::health::{check_data, check_sets, class_balance, flat_images, odd_shapes, FlatKind};
use netmorph::report::{ImageRef, Split};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::path::Path;

const SIDE: usize = 28;
const PIXELS: usize = SIDE * SIDE;
const CLASSES: usize = 10;

fn train_ref(index: usize) -> ImageRef {
    ImageRef { split: Split::Train, index }
}
fn test_ref(index: usize) -> ImageRef {
    ImageRef { split: Split::Test, index }
}

/// A structured random image: 2 to 4 bright strokes and a blob on black, the blob placed by class.
fn strokes(rng: &mut StdRng, class: usize) -> Vec<u8> {
    let mut image = vec![0u8; PIXELS];
    let paint = |image: &mut Vec<u8>, x: f32, y: f32, value: u8| {
        let (x, y) = (x.round() as i64, y.round() as i64);
        if (0..SIDE as i64).contains(&x) && (0..SIDE as i64).contains(&y) {
            let pixel = &mut image[y as usize * SIDE + x as usize];
            *pixel = (*pixel).max(value);
        }
    };
    for _ in 0..rng.random_range(2..=4) {
        let (x0, y0, x1, y1): (f32, f32, f32, f32) =
            (rng.random_range(2.0..26.0), rng.random_range(2.0..26.0), rng.random_range(2.0..26.0), rng.random_range(2.0..26.0));
        let value = rng.random_range(150..=255);
        for step in 0..=40 {
            let t = step as f32 / 40.0;
            let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
            for (dx, dy) in [(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)] {
                paint(&mut image, x + dx, y + dy, value);
            }
        }
    }
    let (cx, cy) = (4.0 + (class % 5) as f32 * 5.0, if class < 5 { 8.0 } else { 20.0 });
    let radius: f32 = rng.random_range(1.5..3.5);
    for y in 0..SIDE {
        for x in 0..SIDE {
            if ((x as f32 - cx).powi(2) + (y as f32 - cy).powi(2)).sqrt() <= radius {
                image[y * SIDE + x] = 200;
            }
        }
    }
    image
}

fn with_noise(rng: &mut StdRng, image: &[u8]) -> Vec<u8> {
    image.iter().map(|&b| (b as i32 + rng.random_range(-2..=2)).clamp(0, 255) as u8).collect()
}

fn jpeg(image: &[u8], quality: u8) -> Vec<u8> {
    let mut encoded = vec![];
    JpegEncoder::new_with_quality(&mut encoded, quality).encode(image, SIDE as u32, SIDE as u32, ExtendedColorType::L8).unwrap();
    image::load_from_memory(&encoded).unwrap().to_luma8().into_raw()
}

/// The synthetic data set and what was planted in it.
struct Planted {
    train: Vec<Vec<u8>>,
    test: Vec<Vec<u8>>,
    train_labels: Vec<u8>,
    test_labels: Vec<u8>,
    /// (a, b, exact) with a < b.
    pairs: HashSet<(ImageRef, ImageRef, bool)>,
    flat: Vec<(ImageRef, FlatKind)>,
}

impl Planted {
    fn sets(&self) -> (ImageSet, ImageSet) {
        let set = |images: &Vec<Vec<u8>>, labels: &Vec<u8>| ImageSet::new(images.concat(), labels.clone(), 1, SIDE, SIDE, CLASSES).unwrap();
        (set(&self.train, &self.train_labels), set(&self.test, &self.test_labels))
    }
}

/// 1,600 training and 400 test images of strokes, then defects planted over some of them, each
/// image position used by one defect at most.
fn planted() -> Planted {
    let mut rng = StdRng::seed_from_u64(18);
    let (n_train, n_test) = (1600, 400);
    let mut train_labels: Vec<u8> = (0..n_train).map(|i| (i % CLASSES) as u8).collect();
    let test_labels: Vec<u8> = (0..n_test).map(|i| (i % CLASSES) as u8).collect();
    let mut train: Vec<Vec<u8>> = train_labels.iter().map(|&c| strokes(&mut rng, c as usize)).collect();
    let mut test: Vec<Vec<u8>> = test_labels.iter().map(|&c| strokes(&mut rng, c as usize)).collect();

    // Positions handed out in a shuffled order, each once.
    let mut free_train: Vec<usize> = (0..n_train).collect();
    let mut free_test: Vec<usize> = (0..n_test).collect();
    use rand::seq::SliceRandom;
    free_train.shuffle(&mut rng);
    free_test.shuffle(&mut rng);
    let mut pairs = HashSet::new();
    let mut add_pair = |a: ImageRef, b: ImageRef, exact: bool| {
        pairs.insert((a.min(b), a.max(b), exact));
    };

    // Within train: 30 exact copies, 30 noisy copies, 30 JPEG copies (a copy keeps its label).
    for kind in 0..3 {
        for _ in 0..30 {
            let (src, dst) = (free_train.pop().unwrap(), free_train.pop().unwrap());
            train[dst] = match kind {
                0 => train[src].clone(),
                1 => with_noise(&mut rng, &train[src]),
                _ => jpeg(&train[src], rng.random_range(80..=90)),
            };
            train_labels[dst] = train_labels[src];
            add_pair(train_ref(src), train_ref(dst), kind == 0);
        }
    }
    // Within test: 10 exact and 10 noisy copies.
    for kind in 0..2 {
        for _ in 0..10 {
            let (src, dst) = (free_test.pop().unwrap(), free_test.pop().unwrap());
            test[dst] = if kind == 0 { test[src].clone() } else { with_noise(&mut rng, &test[src]) };
            add_pair(test_ref(src), test_ref(dst), kind == 0);
        }
    }
    // Across: 20 training images copied exactly into the test set, 20 re-encoded as JPEG.
    for kind in 0..2 {
        for _ in 0..20 {
            let (src, dst) = (free_train.pop().unwrap(), free_test.pop().unwrap());
            test[dst] = if kind == 0 { train[src].clone() } else { jpeg(&train[src], rng.random_range(75..=95)) };
            add_pair(train_ref(src), test_ref(dst), kind == 0);
        }
    }

    // Flat images: 8 constant (levels 35 apart, so no two are near copies), 8 nearly blank (one to
    // three dots on a plain background), 8 saturated (white over most of the image, dark strokes).
    let mut flat = vec![];
    for k in 0..24 {
        let (image, kind) = match k / 8 {
            0 => (vec![(k % 8 * 35) as u8; PIXELS], FlatKind::Constant),
            1 => {
                let background = (k % 8 * 30) as u8;
                let mut image = vec![background; PIXELS];
                // Dots far from the background: a faint dot on black would be a near copy of black.
                for _ in 0..rng.random_range(1..=3) {
                    let step: u8 = rng.random_range(150..=200);
                    image[rng.random_range(0..PIXELS)] =
                        if background < 128 { background.saturating_add(step) } else { background - step.min(background) };
                }
                (image, FlatKind::NearlyBlank)
            }
            _ => {
                let mut image: Vec<u8> = strokes(&mut rng, k % CLASSES).iter().map(|&b| 255 - b / 2).collect();
                let cut = rng.random_range(0..PIXELS / 4);
                image[cut..cut + PIXELS / 8].fill(40);
                (image, FlatKind::Saturated)
            }
        };
        // Two in three in the training set.
        let at = if k % 3 == 2 { test_ref(free_test.pop().unwrap()) } else { train_ref(free_train.pop().unwrap()) };
        match at.split {
            Split::Train => train[at.index] = image,
            Split::Test => test[at.index] = image,
        }
        flat.push((at, kind));
    }
    Planted { train, test, train_labels, test_labels, pairs, flat }
}

/// Precision and recall of `found` against `expected`, printed under `name`.
fn score<T: std::hash::Hash + Eq + Clone>(name: &str, found: &HashSet<T>, expected: &HashSet<T>) -> (f64, f64) {
    let hits = found.intersection(expected).count() as f64;
    let precision = if found.is_empty() { 1.0 } else { hits / found.len() as f64 };
    let recall = if expected.is_empty() { 1.0 } else { hits / expected.len() as f64 };
    println!("{name:<28} planted {:>3}  found {:>3}  precision {precision:.3}  recall {recall:.3}", expected.len(), found.len());
    (precision, recall)
}

#[test]
fn every_planted_defect_is_found_and_little_else() {
    let planted = planted();
    let (train_set, test_set) = planted.sets();
    let names: Vec<String> = (0..CLASSES).map(|c| format!("class {c}")).collect();
    let health = check_sets(&train_set, &test_set, &names, &DuplicateOptions::default());
    println!("checks took {:.3} s; {}", health.seconds, health.duplicates.method);

    type Pair = (ImageRef, ImageRef, bool);
    let found: HashSet<Pair> = health.duplicates.pairs.iter().map(|p| (p.a, p.b, p.exact)).collect();
    let kind_of = |&(a, b, exact): &Pair| (a.split, b.split, exact);
    let mut worst = (1.0f64, 1.0f64);
    for (name, splits) in [
        ("exact, within train", (Split::Train, Split::Train, true)),
        ("near, within train", (Split::Train, Split::Train, false)),
        ("exact, within test", (Split::Test, Split::Test, true)),
        ("near, within test", (Split::Test, Split::Test, false)),
        ("exact, train and test", (Split::Train, Split::Test, true)),
        ("near, train and test", (Split::Train, Split::Test, false)),
    ] {
        let select = |pairs: &HashSet<Pair>| pairs.iter().filter(|p| kind_of(p) == splits).cloned().collect::<HashSet<_>>();
        let (precision, recall) = score(name, &select(&found), &select(&planted.pairs));
        worst = (worst.0.min(precision), worst.1.min(recall));
    }
    for kind in [FlatKind::Constant, FlatKind::NearlyBlank, FlatKind::Saturated] {
        let flagged: HashSet<ImageRef> = health.flat.iter().filter(|f| f.kind == kind).map(|f| f.image).collect();
        let expected: HashSet<ImageRef> = planted.flat.iter().filter(|f| f.1 == kind).map(|f| f.0).collect();
        let (precision, recall) = score(&format!("{kind:?}"), &flagged, &expected);
        worst = (worst.0.min(precision), worst.1.min(recall));
    }
    assert!(worst.0 >= 0.9 && worst.1 >= 0.95, "worst precision {:.3}, worst recall {:.3}", worst.0, worst.1);

    // The counts agree with the pairs (none are capped here), and the groups are the planted pairs.
    let count = |a: Split, b: Split| found.iter().filter(|p| (p.0.split, p.1.split) == (a, b)).count();
    let duplicates = &health.duplicates;
    assert_eq!(duplicates.within_train, count(Split::Train, Split::Train));
    assert_eq!(duplicates.within_test, count(Split::Test, Split::Test));
    assert_eq!(duplicates.across, count(Split::Train, Split::Test));
    assert_eq!(duplicates.exact, found.iter().filter(|p| p.2).count());
    assert!(duplicates.groups.iter().all(|g| g.len() == 2), "each planted copy makes a group of two");
    assert!(duplicates.pairs.iter().all(|p| p.a < p.b && (!p.exact || p.distance == 0.0)));
    assert!(duplicates.pairs.windows(2).all(|w| (!w[0].exact, w[0].distance) <= (!w[1].exact, w[1].distance)), "exact first, then closest");

    // The class counts see the copies' labels, and the whole report is JSON.
    assert_eq!(health.classes.train.iter().sum::<usize>(), 1600);
    assert_eq!(health.classes.names[3], "class 3");
    let json = serde_json::to_string(&health).unwrap();
    assert!(json.contains("\"nearly_blank\"") && json.contains("\"within_train\""));
}

#[test]
fn a_higher_threshold_finds_at_least_the_same_pairs() {
    let planted = planted();
    let (train_set, test_set) = planted.sets();
    let strict = find_duplicates(&train_set, &test_set, &DuplicateOptions { threshold: 0.0 });
    assert_eq!(strict.pairs.iter().filter(|p| !p.exact).count(), 0, "threshold 0: byte-different images are never within it here");
    assert_eq!(strict.exact, 30 + 10 + 20);
    let loose = find_duplicates(&train_set, &test_set, &DuplicateOptions { threshold: 0.3 });
    let default = find_duplicates(&train_set, &test_set, &DuplicateOptions::default());
    assert!(loose.total() >= default.total() && default.total() >= strict.total());
}

#[test]
fn odd_sizes_and_colours_are_named_and_the_file_lists_stay_aligned_after_the_split() {
    let dir = tempfile::tempdir().unwrap();
    // Each image is one gray level, its id, so that resizing keeps it and the file can be told
    // from its pixels.
    let mut odd = vec![];
    for (class, ids) in [("a", 10..40), ("b", 40..70)] {
        for id in ids {
            let path = dir.path().join(class).join(format!("{id:03}.png"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            let level = id as u8;
            match id {
                12 | 45 => {
                    GrayImage::from_pixel(32, 30, Luma([level])).save(&path).unwrap();
                    odd.push(path);
                }
                50 => {
                    RgbImage::from_pixel(28, 28, Rgb([level, level, level])).save(&path).unwrap();
                    odd.push(path);
                }
                _ => GrayImage::from_pixel(28, 28, Luma([level])).save(&path).unwrap(),
            }
        }
    }
    let options = LoadOptions { resize: Some([28, 28]), test_fraction: 0.3, seed: 5, ..LoadOptions::default() };
    let data = load_data(dir.path(), &options).unwrap();
    assert!(data.test_was_split);
    assert_eq!((data.train.n, data.test.n, data.train.channels), (42, 18, 3));
    for (set, files) in [(&data.train, &data.train_files), (&data.test, &data.test_files)] {
        assert_eq!(files.len(), set.n);
        for (i, file) in files.iter().enumerate() {
            let id: u8 = file.path.file_stem().unwrap().to_str().unwrap().parse().unwrap();
            assert!(set.image(i).iter().all(|&b| b.abs_diff(id) <= 1), "image {i} is not {}", file.path.display());
            let class = file.path.parent().unwrap().file_name().unwrap().to_str().unwrap();
            assert_eq!(data.class_names[set.labels[i] as usize], class);
        }
    }

    let found = odd_shapes(&data.train_files, &data.test_files);
    let mut named: Vec<&Path> = found.iter().map(|o| o.path.as_path()).collect();
    named.sort();
    assert_eq!(named, odd.iter().map(|p| p.as_path()).collect::<Vec<_>>());
    for shape in &found {
        assert_eq!(shape.usual, "28x28, 1 channel");
        let files = if shape.image.split == Split::Train { &data.train_files } else { &data.test_files };
        assert_eq!(files[shape.image.index].path, shape.path);
        let expected = if shape.path.ends_with("050.png") { ([28, 28], 3) } else { ([30, 32], 1) };
        assert_eq!((shape.size, shape.channels), expected);
    }
    let health = check_data(&data, &DuplicateOptions::default());
    assert_eq!(health.odd_shapes, found);
    assert_eq!(health.classes.train.iter().sum::<usize>() + health.classes.test.iter().sum::<usize>(), 60);
}

#[test]
fn a_given_test_folder_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    for (split, count) in [("train", 6), ("test", 3)] {
        for class in ["x", "y"] {
            for i in 0..count {
                let path = dir.path().join(split).join(class).join(format!("{i}.png"));
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                GrayImage::from_pixel(8, 8, Luma([i as u8 * 20])).save(&path).unwrap();
            }
        }
    }
    let data = load_data(dir.path(), &LoadOptions::default()).unwrap();
    assert!(!data.test_was_split);
    assert_eq!((data.train_files.len(), data.test_files.len()), (12, 6));
    assert!(data.test_files.iter().all(|f| f.path.starts_with(dir.path().join("test")) && (f.width, f.height, f.channels) == (8, 8, 1)));
    assert!(odd_shapes(&data.train_files, &data.test_files).is_empty());
}

#[test]
fn nothing_on_mnist_is_flat_or_duplicated() {
    let data = load_data(&default_data_dir(), &LoadOptions::default()).unwrap();
    assert!(data.train_files.is_empty() && data.test_files.is_empty(), "IDX files have no image files");
    let health = check_data(&data, &DuplicateOptions::default());
    let duplicates = &health.duplicates;
    println!(
        "MNIST: {:.2} s; flat {}, duplicate pairs {} (exact {}), imbalance {:.3}",
        health.seconds,
        health.flat.len(),
        duplicates.total(),
        duplicates.exact,
        health.classes.imbalance
    );
    assert!(health.flat.is_empty(), "{:?}", &health.flat[..health.flat.len().min(5)]);
    assert_eq!(duplicates.total(), 0, "{:?}", &duplicates.pairs[..duplicates.pairs.len().min(5)]);
    let balance = class_balance(&data.train, &data.test, &data.class_names);
    assert_eq!(balance, health.classes);
    assert_eq!(balance.train, [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]);
    assert!((balance.imbalance - 6742.0 / 5421.0).abs() < 1e-12 && balance.empty_classes.is_empty());
    assert!(odd_shapes(&data.train_files, &data.test_files).is_empty());
    assert!(flat_images(&data.test, Split::Test).is_empty());
}
