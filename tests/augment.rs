//! Augmentation beyond shifts and flips in the batch gather: rotations and scalings about the
//! centre, elastic distortion and cutout. The kernel against the f64 CPU reference on random
//! shapes and parameters, each augmentation alone, the reference itself against transforms worked
//! out by hand, the seeded draws, and the errors for values that cannot work.

use netmorph::data::{Augmentation, Cutout, DeviceDataset, ImageAugment, ImageSet, RandomShift, ELASTIC_POINTS};
use netmorph::testing::{device, rng};
use rand::Rng;

/// Values in [0, 1]: the kernel samples at positions computed in f32 (the reference does the same)
/// and interpolates in f32, the reference in f64.
const TOLERANCE: f32 = 1e-5;

fn random_set(r: &mut impl Rng, n: usize, c: usize, h: usize, w: usize) -> ImageSet {
    let images: Vec<u8> = (0..n * c * h * w).map(|_| r.random()).collect();
    let labels: Vec<u8> = (0..n).map(|_| r.random_range(0..3)).collect();
    ImageSet::new(images, labels, c, h, w, 3).unwrap()
}

/// The largest difference between two batches of the same length.
fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Gathers `augments` of `indices` on the device and compares with the reference; returns the
/// device's batch.
fn check_against_reference(data: &DeviceDataset, set: &ImageSet, indices: &[u32], augments: &[ImageAugment], what: &str) -> Vec<f32> {
    let (x, y) = data.batch_augmented(indices, augments).unwrap();
    let got = x.to_vec().unwrap();
    let want = set.gather_f32_augmented(indices, augments);
    let worst = max_difference(&got, &want);
    assert!(worst <= TOLERANCE, "{what}: the kernel differs from the reference by {worst}");
    let labels: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
    assert_eq!(y.to_u32_vec().unwrap(), labels, "{what}: labels");
    got
}

/// Every augmentation on, at random strengths within the options' ranges.
fn random_augmentation(r: &mut impl Rng, h: usize, w: usize) -> Augmentation {
    let side = h.min(w);
    Augmentation {
        shift: RandomShift { max: r.random_range(0..side.min(4)) },
        flip: r.random(),
        rotation_degrees: r.random_range(0.5..=45.0),
        scale: r.random_range(0.01..0.5),
        elastic: r.random_range(0.1..(side as f32).min(4.0)),
        cutout: r.random_range(1..=side),
    }
}

#[test]
fn augmented_batches_equal_the_f64_reference_on_random_shapes() {
    let dev = device();
    let mut r = rng(71);
    for round in 0..14 {
        // One and three channels (and two and four), square and not, sides from 1 (the elastic
        // grid collapses) to 33, batches that fill no workgroup.
        let c = [1, 3, 1, 3, 2, 4][round % 6];
        let (h, w) = (r.random_range(1..=33), r.random_range(1..=33));
        let (n, batch) = (r.random_range(1..=20), r.random_range(1..=40));
        let set = random_set(&mut r, n, c, h, w);
        let data = DeviceDataset::new(&dev, &set).unwrap();
        let indices: Vec<u32> = (0..batch).map(|_| r.random_range(0..n as u32)).collect();
        let augmentation = random_augmentation(&mut r, h, w);
        augmentation.check(h, w).unwrap();
        let augments = augmentation.draw(batch, round as u64);
        check_against_reference(&data, &set, &indices, &augments, &format!("{c}x{h}x{w}, batch {batch}, {augmentation:?}"));
    }
}

#[test]
fn each_augmentation_alone_equals_the_reference_and_changes_the_images() {
    let dev = device();
    let mut r = rng(72);
    let none = Augmentation::NONE;
    let alone = [
        ("shift", Augmentation { shift: RandomShift { max: 3 }, ..none }),
        ("flip", Augmentation { flip: true, ..none }),
        ("rotation", Augmentation { rotation_degrees: 30.0, ..none }),
        ("scale", Augmentation { scale: 0.3, ..none }),
        ("elastic", Augmentation { elastic: 2.5, ..none }),
        ("cutout", Augmentation { cutout: 7, ..none }),
    ];
    for (c, h, w) in [(1, 28, 28), (3, 17, 23)] {
        let set = random_set(&mut r, 30, c, h, w);
        let data = DeviceDataset::new(&dev, &set).unwrap();
        let indices: Vec<u32> = (0..30).collect();
        let plain = set.gather_f32(&indices);
        for (name, augmentation) in alone {
            let augments = augmentation.draw(indices.len(), 9);
            let what = format!("{name} alone on {c}x{h}x{w}");
            let copies = matches!(name, "shift" | "flip" | "cutout");
            assert_eq!(augments.iter().any(ImageAugment::is_warped), !copies, "{what}: resampled or copied");
            let got = check_against_reference(&data, &set, &indices, &augments, &what);
            if copies {
                assert!(got == set.gather_f32_augmented(&indices, &augments), "{what}: copied pixels are exact");
            }
            let image_len = c * h * w;
            let changed = (0..indices.len()).filter(|&k| got[k * image_len..][..image_len] != plain[k * image_len..][..image_len]).count();
            assert!(changed >= 10, "{what}: {changed} of 30 images changed");
        }
    }
}

#[test]
fn the_same_seed_gives_the_same_batch() {
    let dev = device();
    let mut r = rng(73);
    let set = random_set(&mut r, 50, 1, 28, 28);
    let data = DeviceDataset::new(&dev, &set).unwrap();
    let indices: Vec<u32> = (0..50).collect();
    let all = Augmentation { shift: RandomShift { max: 2 }, flip: true, rotation_degrees: 15.0, scale: 0.2, elastic: 2.0, cutout: 8 };
    let a = all.draw(50, 123);
    assert_eq!(a, all.draw(50, 123), "same seed, same records");
    assert_ne!(a, all.draw(50, 124), "another seed, other records");
    let first = data.batch_augmented(&indices, &a).unwrap().0.to_vec().unwrap();
    let again = data.batch_augmented(&indices, &all.draw(50, 123)).unwrap().0.to_vec().unwrap();
    assert!(first == again, "the same batch, bit for bit");
}

#[test]
fn new_augmentations_draw_from_their_own_streams() {
    let base = Augmentation { shift: RandomShift { max: 2 }, flip: true, ..Augmentation::NONE };
    let all = Augmentation { rotation_degrees: 20.0, scale: 0.25, elastic: 3.0, cutout: 5, ..base };
    let (before, after) = (base.draw(2000, 8), all.draw(2000, 8));
    assert!(before.iter().all(|a| !a.is_warped() && a.cutout.is_none()), "shifts and flips copy pixels");
    let shifts: Vec<[i32; 2]> = after.iter().map(|a| a.shift).collect();
    assert_eq!(shifts, RandomShift { max: 2 }.draw(2000, 8), "the shift stream is the same as before");
    assert!(before.iter().zip(&after).all(|(b, a)| b.flip == a.flip), "so are the flips");
    // Each new augmentation is drawn alike whether the others are on or not.
    for alone in [
        Augmentation { rotation_degrees: 20.0, ..Augmentation::NONE },
        Augmentation { scale: 0.25, ..Augmentation::NONE },
        Augmentation { elastic: 3.0, ..Augmentation::NONE },
        Augmentation { cutout: 5, ..Augmentation::NONE },
    ] {
        for (a, b) in alone.draw(2000, 8).iter().zip(&after) {
            if alone.rotation_degrees > 0.0 {
                assert_eq!(a.rotation_degrees, b.rotation_degrees);
            }
            if alone.scale > 0.0 {
                assert_eq!(a.scale, b.scale);
            }
            if alone.elastic > 0.0 {
                assert_eq!(a.elastic, b.elastic);
            }
            if alone.cutout > 0 {
                assert_eq!(a.cutout, b.cutout);
            }
        }
    }
    // Uniform within their ranges, both signs, the extremes nearly reached.
    let rotations: Vec<f32> = after.iter().map(|a| a.rotation_degrees).collect();
    let scales: Vec<f32> = after.iter().map(|a| a.scale).collect();
    let fields: Vec<f32> = after.iter().flat_map(|a| a.elastic.into_iter().flatten()).collect();
    for (name, values, lo, hi) in [("rotation", &rotations, -20.0, 20.0), ("scale", &scales, 0.75, 1.25), ("elastic", &fields, -3.0, 3.0)] {
        assert!(values.iter().all(|v| (lo..=hi).contains(v)), "{name} within [{lo}, {hi}]");
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let span = hi - lo;
        assert!((mean - (lo + hi) / 2.0).abs() < 0.03 * span, "{name}: mean {mean}");
        let (min, max) = values.iter().fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)));
        assert!(min < lo + 0.01 * span && max > hi - 0.01 * span, "{name}: from {min} to {max}");
    }
    assert_eq!(fields.len(), 2000 * 2 * ELASTIC_POINTS);
    let centres: Vec<[f32; 2]> = after.iter().map(|a| a.cutout.unwrap().centre).collect();
    assert!(after.iter().all(|a| a.cutout.unwrap().side == 5));
    assert!(centres.iter().flatten().all(|v| (0.0..1.0).contains(v)));
    assert!(centres.iter().any(|c| c[0] < 0.05) && centres.iter().any(|c| c[1] > 0.95), "centres anywhere, borders included");
}

/// One image, `h`x`w`, of distinct smooth-ish values.
fn one_image(h: usize, w: usize) -> ImageSet {
    let images: Vec<u8> = (0..h * w).map(|i| ((i * 37) % 251) as u8).collect();
    ImageSet::new(images, vec![0], 1, h, w, 1).unwrap()
}

fn with(change: impl FnOnce(&mut ImageAugment)) -> ImageAugment {
    let mut a = ImageAugment::default();
    change(&mut a);
    a
}

/// The reference and the kernel on one image: both within tolerance of `want`.
fn check_by_hand(set: &ImageSet, a: ImageAugment, want: &[f32], what: &str) {
    let reference = set.gather_f32_augmented(&[0], &[a]);
    assert!(max_difference(&reference, want) <= TOLERANCE, "{what}: the reference gives {reference:?}, not {want:?}");
    let data = DeviceDataset::new(&device(), set).unwrap();
    let got = data.batch_augmented(&[0], &[a]).unwrap().0.to_vec().unwrap();
    assert!(max_difference(&got, want) <= TOLERANCE, "{what}: the kernel gives {got:?}, not {want:?}");
}

#[test]
fn the_reference_rotates_scales_distorts_and_cuts_as_worked_out_by_hand() {
    let s = 1.0 / 255.0;
    let (h, w) = (5, 5);
    let set = one_image(h, w);
    let image: Vec<f32> = set.images.iter().map(|&b| b as f32 * s).collect();
    let at = |x: usize, y: usize| image[y * w + x];
    // A quarter turn about the centre: output (x, y) reads source (y, w - 1 - x).
    let quarter: Vec<f32> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| at(y, w - 1 - x)).collect();
    check_by_hand(&set, with(|a| a.rotation_degrees = 90.0), &quarter, "a quarter turn");
    // A half turn: the image upside down and mirrored.
    let half: Vec<f32> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| at(w - 1 - x, h - 1 - y)).collect();
    check_by_hand(&set, with(|a| a.rotation_degrees = 180.0), &half, "a half turn");
    // Twice as large about the centre (2, 2): output (x, y) reads (1 + x / 2, 1 + y / 2), halfway
    // between pixels at odd coordinates.
    let source = |o: usize| 1.0 + o as f64 / 2.0;
    let sample = |sx: f64, sy: f64| {
        let (x0, y0) = (sx.floor() as usize, sy.floor() as usize);
        let (fx, fy) = (sx - x0 as f64, sy - y0 as f64);
        let p = |x: usize, y: usize| if x < w && y < h { at(x, y) as f64 } else { 0.0 };
        ((1.0 - fy) * ((1.0 - fx) * p(x0, y0) + fx * p(x0 + 1, y0)) + fy * ((1.0 - fx) * p(x0, y0 + 1) + fx * p(x0 + 1, y0 + 1))) as f32
    };
    let zoomed: Vec<f32> = (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| sample(source(x), source(y))).collect();
    check_by_hand(&set, with(|a| a.scale = 2.0), &zoomed, "twice as large");
    // Half as large: output (x, y) reads (2x - 2, 2y - 2), zero where that leaves the image.
    let shrunk: Vec<f32> = (0..h)
        .flat_map(|y| (0..w).map(move |x| (x, y)))
        .map(|(x, y)| if (1..=3).contains(&x) && (1..=3).contains(&y) { at(2 * x - 2, 2 * y - 2) } else { 0.0 })
        .collect();
    check_by_hand(&set, with(|a| a.scale = 0.5), &shrunk, "half as large");
    // A uniform elastic field of one pixel to the right reads each pixel's right neighbour: a
    // shift one to the left.
    let left = set.gather_f32_augmented(&[0], &[with(|a| a.shift = [-1, 0])]);
    check_by_hand(&set, with(|a| a.elastic = [[1.0, 0.0]; ELASTIC_POINTS]), &left, "a uniform field");
    // A field that grows from 0 at the left edge to 4 pixels down at the right edge (each control
    // point moves by its own column, 0, 4/3, 8/3 and 4): column x reads x rows further down.
    let mut ramp = [[0.0f32; 2]; ELASTIC_POINTS];
    for (k, point) in ramp.iter_mut().enumerate() {
        point[1] = (k % 4) as f32 * (w - 1) as f32 / 3.0;
    }
    let sheared: Vec<f32> =
        (0..h).flat_map(|y| (0..w).map(move |x| (x, y))).map(|(x, y)| if y + x < h { at(x, y + x) } else { 0.0 }).collect();
    check_by_hand(&set, with(|a| a.elastic = ramp), &sheared, "a sheared field");
    // A full turn with a shift and a flip resamples (sin 360 degrees is not 0 in floating point)
    // what the copying path gives exactly.
    let moved = with(|a| {
        a.shift = [2, -1];
        a.flip = true;
    });
    let copied = set.gather_f32_augmented(&[0], &[moved]);
    check_by_hand(&set, ImageAugment { rotation_degrees: 360.0, ..moved }, &copied, "a full turn, moved and mirrored");
    // A 3-pixel cutout centred on pixel (2, 1) of a 4x5 image zeroes columns 1..4 of rows 0..3;
    // one centred on the corner pixel (3, 4), rows 3..5 of columns 2..4 (the rest falls outside).
    let (h, w) = (5, 4);
    let set = one_image(h, w);
    let plain = set.gather_f32(&[0]);
    for (centre, [x0, x1, y0, y1]) in [([2.5 / 4.0, 1.5 / 5.0], [1, 4, 0, 3]), ([3.5 / 4.0, 4.5 / 5.0], [2, 4, 3, 5])] {
        let cutout = Cutout { centre, side: 3 };
        assert_eq!(cutout.square(h, w), [x0, x1, y0, y1]);
        let mut want = plain.clone();
        for y in y0..y1 {
            want[y as usize * w + x0 as usize..][..(x1 - x0) as usize].fill(0.0);
        }
        let a = with(|a| a.cutout = Some(cutout));
        assert!(set.gather_f32_augmented(&[0], &[a]) == want, "cutout at {centre:?}");
        check_by_hand(&set, a, &want, "cutout");
        // After a rotation the square is still the output's.
        let turned = ImageAugment { rotation_degrees: 180.0, ..a };
        let half_turn = set.gather_f32_augmented(&[0], &[ImageAugment { cutout: None, ..turned }]);
        let got = set.gather_f32_augmented(&[0], &[turned]);
        for (k, (g, t)) in got.iter().zip(&half_turn).enumerate() {
            let (x, y) = ((k % w) as u32, (k / w) as u32);
            let inside = (x0..x1).contains(&x) && (y0..y1).contains(&y);
            assert_eq!(*g, if inside { 0.0 } else { *t }, "cutout after a rotation, pixel ({x}, {y})");
        }
    }
}

#[test]
fn values_that_cannot_work_get_errors_that_name_them() {
    let set = one_image(6, 8);
    let data = DeviceDataset::new(&device(), &set).unwrap();
    for (bad, expected) in [
        (with(|a| a.rotation_degrees = f32::NAN), "rotation of NaN"),
        (with(|a| a.scale = 0.0), "scale of 0"),
        (with(|a| a.scale = f32::INFINITY), "scale of inf"),
        (with(|a| a.elastic[3] = [0.0, f32::NAN]), "elastic displacement of NaN"),
        (with(|a| a.elastic[0] = [9.0, 0.0]), "elastic displacement of 9"),
        (with(|a| a.cutout = Some(Cutout { centre: [1.0, 0.5], side: 2 })), "cutout centred at [1.0, 0.5]"),
        (with(|a| a.shift = [0, 6]), "shift [0, 6]"),
    ] {
        let e = data.batch_augmented(&[0, 0], &[ImageAugment::default(), bad]).unwrap_err().to_string();
        assert!(e.contains("image 1 of the batch") && e.contains(expected), "{expected}: {e}");
    }
    let none = Augmentation::NONE;
    for (bad, expected) in [
        (Augmentation { rotation_degrees: 46.0, ..none }, "rotation_degrees 46"),
        (Augmentation { rotation_degrees: -1.0, ..none }, "rotation_degrees -1"),
        (Augmentation { scale: 0.5, ..none }, "scale 0.5"),
        (Augmentation { scale: f32::NAN, ..none }, "scale NaN"),
        (Augmentation { elastic: -0.5, ..none }, "elastic -0.5"),
        (Augmentation { elastic: 6.0, ..none }, "elastic 6"),
        (Augmentation { cutout: 7, ..none }, "cutout of 7 pixels"),
        (Augmentation { shift: RandomShift { max: 6 }, ..none }, "shift of up to 6"),
    ] {
        let e = bad.check(6, 8).unwrap_err().to_string();
        assert!(e.contains(expected) && e.contains("6x8"), "{expected}: {e}");
    }
    let fine = Augmentation { shift: RandomShift { max: 5 }, flip: true, rotation_degrees: 45.0, scale: 0.49, elastic: 5.9, cutout: 6 };
    fine.check(6, 8).unwrap();
    assert!(!fine.is_none() && Augmentation::NONE.is_none());
    for one in [
        Augmentation { rotation_degrees: 1.0, ..none },
        Augmentation { scale: 0.1, ..none },
        Augmentation { elastic: 1.0, ..none },
        Augmentation { cutout: 1, ..none },
    ] {
        assert!(!one.is_none(), "{one:?} is an augmentation");
    }
}

#[test]
fn a_classifier_refuses_an_augmentation_its_images_cannot_take() {
    use netmorph::graph::Graph;
    use netmorph::search::classifier::{ClassifierConfig, ImageClassifier};
    let set = random_set(&mut rng(74), 4, 1, 12, 12);
    let graph = Graph::keras_mnist_convnet(&[1, 12, 12], 3, 1).unwrap();
    let config = ClassifierConfig { cutout: 13, verbose: false, ..ClassifierConfig::default() };
    let e = ImageClassifier::from_architecture(&device(), config, &graph, &set).err().expect("refused").to_string();
    assert!(e.contains("cutout of 13 pixels") && e.contains("12x12"), "{e}");
    let config = ClassifierConfig { rotation_degrees: 10.0, scale: 0.1, elastic: 1.0, cutout: 4, ..ClassifierConfig::default() };
    let a = config.augmentation_for(1, 12, 12);
    assert_eq!(a, Augmentation { shift: RandomShift { max: 1 }, flip: false, rotation_degrees: 10.0, scale: 0.1, elastic: 1.0, cutout: 4 });
    assert!(config.augmentation_for(3, 32, 32).flip, "the shift and flip defaults stay per image");
}
