//! Loaders for users' own images (`netmorph::data::load_data`, `read_images`): every format from
//! small files written here, every bad case as a named error, and a round trip of 2,000 MNIST
//! images through a PNG folder that must train to the same first-epoch loss as the IDX original.

use image::{GrayImage, ImageBuffer, Luma, Rgb, RgbImage, Rgba, RgbaImage};
use netmorph::data::idx::{encode_idx, gzip};
use netmorph::data::npy::encode_npy;
use netmorph::data::{load_data, read_images, DataFormat, ImageSet, LoadOptions, LoadedData};
use netmorph::Error;
use std::path::{Path, PathBuf};

fn opts() -> LoadOptions {
    LoadOptions::default()
}

/// All images in one set: the test fraction 0 keeps every image in `train`.
fn keep_all() -> LoadOptions {
    LoadOptions { test_fraction: 0.0, ..LoadOptions::default() }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn gray(w: u32, h: u32, seed: u8) -> GrayImage {
    ImageBuffer::from_fn(w, h, |x, y| Luma([(x * 13 + y * 7) as u8 ^ seed]))
}

fn rgb(w: u32, h: u32, seed: u8) -> RgbImage {
    ImageBuffer::from_fn(w, h, |x, y| Rgb([x as u8 * 20 + seed, y as u8 * 30, seed.wrapping_mul(3)]))
}

fn save<P: image::Pixel<Subpixel = u8> + image::PixelWithColorType>(img: &ImageBuffer<P, Vec<u8>>, path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    img.save(path).unwrap();
}

/// The message of an error, asserting that it names `file` and contains every one of `words`.
#[track_caller]
fn assert_error(result: netmorph::Result<impl std::fmt::Debug>, file: &Path, words: &[&str]) -> String {
    let e = result.expect_err("expected an error");
    let msg = e.to_string();
    assert!(msg.contains(&file.display().to_string()), "error does not name {}: {msg}", file.display());
    for w in words {
        assert!(msg.contains(w), "error lacks `{w}`: {msg}");
    }
    msg
}

/// CHW planes of an interleaved image.
fn planar(interleaved: &[u8], channels: usize) -> Vec<u8> {
    (0..channels).flat_map(|c| interleaved.iter().skip(c).step_by(channels).copied()).collect()
}

// --- image folders ---

#[test]
fn folder_of_png_jpeg_bmp_gif_in_gray_rgb_and_rgba() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let a_gray = gray(5, 4, 1);
    let a_rgba: RgbaImage = ImageBuffer::from_fn(5, 4, |x, y| Rgba([x as u8, y as u8, 200, 17]));
    let b_rgb = rgb(5, 4, 9);
    save(&a_gray, &root.join("apple/1.png"));
    save(&a_rgba, &root.join("apple/2.PNG"));
    save(&b_rgb, &root.join("banana/1.bmp"));
    save(&b_rgb, &root.join("banana/2.jpg"));
    save(&rgb(5, 4, 3), &root.join("banana/3.gif"));
    write(&root.join("banana/notes.txt"), b"ignored: not an image extension");
    write(&root.join("banana/.hidden.png"), b"ignored: hidden");

    let data = load_data(root, &keep_all()).unwrap();
    assert_eq!(data.format, DataFormat::ImageFolder);
    assert_eq!(data.class_names, ["apple", "banana"]);
    let t = &data.train;
    assert_eq!((t.n, t.channels, t.height, t.width, t.classes), (5, 3, 4, 5, 2));
    assert_eq!(t.labels, [0, 0, 1, 1, 1]);
    // Gray replicated into three planes; RGBA loses its alpha; BMP is lossless.
    assert_eq!(t.image(0), [a_gray.as_raw().as_slice(); 3].concat());
    assert_eq!(t.image(1), planar(&image::DynamicImage::ImageRgba8(a_rgba).to_rgb8(), 3));
    assert_eq!(t.image(2), planar(&b_rgb, 3));
    // JPEG is lossy and GIF quantises to a palette: close, not equal.
    let max_error = |got: &[u8], want: &[u8]| got.iter().zip(want).map(|(&a, &b)| (a as i32 - b as i32).abs()).max().unwrap();
    assert!(max_error(t.image(3), &planar(&b_rgb, 3)) < 40, "JPEG differs by {}", max_error(t.image(3), &planar(&b_rgb, 3)));
    assert!(max_error(t.image(4), &planar(&rgb(5, 4, 3), 3)) < 16, "GIF differs by {}", max_error(t.image(4), &planar(&rgb(5, 4, 3), 3)));
    assert!(!data.test_was_split || data.test.n == 0);
}

#[test]
fn a_gray_folder_gives_one_channel_and_a_stratified_seeded_split() {
    let dir = tempfile::tempdir().unwrap();
    for class in ["0", "1", "2"] {
        for i in 0..10u8 {
            save(&gray(3, 3, i + class.parse::<u8>().unwrap() * 10), &dir.path().join(class).join(format!("{i:02}.png")));
        }
    }
    let options = LoadOptions { test_fraction: 0.2, seed: 5, ..opts() };
    let data = load_data(dir.path(), &options).unwrap();
    assert!(data.test_was_split);
    assert_eq!((data.train.n, data.test.n, data.train.channels), (24, 6, 1));
    for class in 0..3 {
        assert_eq!(data.test.labels.iter().filter(|&&l| l == class).count(), 2, "class {class} keeps its share");
    }
    let again = load_data(dir.path(), &options).unwrap();
    assert_eq!((again.train, again.test), (data.train.clone(), data.test.clone()));
    let other = load_data(dir.path(), &LoadOptions { seed: 6, ..options }).unwrap();
    assert_ne!(other.test, data.test);
}

#[test]
fn train_and_test_subfolders_are_the_split() {
    let dir = tempfile::tempdir().unwrap();
    for (split, n) in [("train", 3u8), ("test", 2)] {
        for class in ["cat", "dog"] {
            for i in 0..n {
                save(&rgb(4, 4, i), &dir.path().join(split).join(class).join(format!("{i}.png")));
            }
        }
    }
    let data = load_data(dir.path(), &opts()).unwrap();
    assert!(!data.test_was_split);
    assert_eq!(data.class_names, ["cat", "dog"]);
    assert_eq!((data.train.n, data.test.n), (6, 4));
    assert_eq!(data.test.labels, [0, 0, 1, 1]);

    // A test class the training set lacks is an error naming it.
    save(&rgb(4, 4, 0), &dir.path().join("test/eel/0.png"));
    assert_error(load_data(dir.path(), &opts()), &dir.path().join("test/eel"), &["test class `eel`"]);
}

#[test]
fn mixed_sizes_are_an_error_naming_two_files_unless_resized() {
    let dir = tempfile::tempdir().unwrap();
    save(&gray(8, 6, 0), &dir.path().join("a/big.png"));
    save(&gray(4, 3, 0), &dir.path().join("a/small.png"));
    save(&gray(8, 6, 1), &dir.path().join("b/x.png"));
    let msg = assert_error(load_data(dir.path(), &keep_all()), &dir.path().join("a/small.png"), &["3x4", "6x8", "--resize"]);
    assert!(msg.contains(&dir.path().join("a/big.png").display().to_string()), "{msg}");

    let data = load_data(dir.path(), &LoadOptions { resize: Some([5, 7]), ..keep_all() }).unwrap();
    assert_eq!((data.train.n, data.train.height, data.train.width), (3, 5, 7));
    // Resizing a constant image keeps it constant.
    let dir2 = tempfile::tempdir().unwrap();
    save(&GrayImage::from_pixel(9, 9, Luma([77])), &dir2.path().join("c/flat.png"));
    let flat = load_data(dir2.path(), &LoadOptions { resize: Some([4, 4]), ..keep_all() }).unwrap();
    assert_eq!(flat.train.images, vec![77; 16]);
}

#[test]
fn an_empty_class_folder_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    save(&gray(2, 2, 0), &dir.path().join("full/0.png"));
    write(&dir.path().join("empty/readme.txt"), b"no images here");
    assert_error(load_data(dir.path(), &opts()), &dir.path().join("empty"), &["empty class folder"]);
}

#[test]
fn an_unreadable_image_is_an_error_naming_it_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..3 {
        save(&gray(2, 2, i), &dir.path().join(format!("a/{i}.png")));
    }
    save(&gray(2, 2, 9), &dir.path().join("b/0.png"));
    let bad = dir.path().join("a/broken.png");
    let mut png = std::fs::read(dir.path().join("a/0.png")).unwrap();
    png.truncate(png.len() / 2);
    write(&bad, &png);
    assert_error(load_data(dir.path(), &opts()), &bad, &["cannot decode image"]);
    let not_an_image = dir.path().join("b/text.jpg");
    write(&not_an_image, b"hello, I am text");

    let data = load_data(dir.path(), &LoadOptions { skip_bad: true, ..keep_all() }).unwrap();
    assert_eq!(data.train.n, 4);
    let skipped: Vec<&PathBuf> = data.skipped.iter().map(|(p, _)| p).collect();
    assert_eq!(skipped, [&bad, &not_an_image]);
    assert!(data.skipped[1].1.contains("not a PNG, JPEG, BMP or GIF"), "{:?}", data.skipped);
}

/// A PNG of `width` x `height` whose header says so, but without the pixels (the CRC is right).
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    let mut png = vec![];
    gray(1, 1, 0).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
    // IHDR: length (4), "IHDR" (4), width, height at bytes 16..24, CRC over type + data at 29..33.
    png[16..20].copy_from_slice(&width.to_be_bytes());
    png[20..24].copy_from_slice(&height.to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(&png[12..29]);
    png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
    png
}

#[test]
fn a_huge_declared_image_is_an_error_not_an_out_of_memory_abort() {
    let dir = tempfile::tempdir().unwrap();
    save(&gray(2, 2, 0), &dir.path().join("a/ok.png"));
    let huge = dir.path().join("a/huge.png");
    write(&huge, &png_declaring(100_000, 100_000));
    assert_error(load_data(dir.path(), &opts()), &huge, &["cannot decode image"]);
    // Below the side limit but over the allocation limit (16384^2 RGB would be 768 MiB).
    write(&huge, &png_declaring(16_000, 16_000));
    assert_error(load_data(dir.path(), &opts()), &huge, &["cannot decode image"]);
    assert_error(read_images(std::slice::from_ref(&huge), 1, 2, 2, true), &huge, &["cannot decode image"]);
}

#[test]
fn read_images_converts_channels_and_checks_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let g = gray(3, 2, 5);
    let c: RgbaImage = ImageBuffer::from_fn(3, 2, |x, y| Rgba([x as u8 * 50, y as u8 * 90, 7, 0]));
    let (gp, cp) = (dir.path().join("g.png"), dir.path().join("c.png"));
    save(&g, &gp);
    save(&c, &cp);
    let paths = [gp.clone(), cp.clone()];
    let rgb_out = read_images(&paths, 3, 2, 3, false).unwrap();
    let c_rgb = image::DynamicImage::ImageRgba8(c.clone()).to_rgb8();
    assert_eq!(rgb_out, [[g.as_raw().as_slice(); 3].concat(), planar(&c_rgb, 3)].concat());
    let gray_out = read_images(&paths, 1, 2, 3, false).unwrap();
    assert_eq!(&gray_out[..6], g.as_raw().as_slice());
    assert_eq!(&gray_out[6..], image::DynamicImage::ImageRgba8(c).to_luma8().as_raw().as_slice());
    assert_error(read_images(&paths, 1, 4, 4, false), &gp, &["2x3", "4x4"]);
    assert_eq!(read_images(&paths, 3, 4, 4, true).unwrap().len(), 2 * 3 * 16);
    assert!(matches!(read_images(&paths, 2, 2, 3, false), Err(Error::Invalid(_))));
    let missing = dir.path().join("missing.png");
    assert!(matches!(read_images(&[missing], 1, 2, 3, false), Err(Error::Io { .. })));
}

#[test]
fn a_folder_of_nothing_lists_what_was_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    write(&dir.path().join("readme.txt"), b"hello");
    let msg = assert_error(load_data(dir.path(), &opts()), dir.path(), &["no data set found"]);
    for what in ["CIFAR-10", "CIFAR-100", "x_train.npy", "*train*images*", "<class>/"] {
        assert!(msg.contains(what), "lacks {what}: {msg}");
    }
    let file = dir.path().join("readme.txt");
    assert_error(load_data(&file, &opts()), &file, &["expected a folder"]);
    assert!(matches!(load_data(&dir.path().join("nope"), &opts()), Err(Error::Io { .. })));
    assert!(matches!(load_data(dir.path(), &LoadOptions { test_fraction: 1.0, ..opts() }), Err(Error::Invalid(_))));
}

// --- CIFAR ---

/// CIFAR records: `labels` bytes then a 3x32x32 image derived from `seed`.
fn cifar_records(records: &[(&[u8], u8)]) -> Vec<u8> {
    let mut out = vec![];
    for (labels, seed) in records {
        out.extend_from_slice(labels);
        out.extend((0..3072u32).map(|i| (i as u8).wrapping_mul(*seed)));
    }
    out
}

#[test]
fn cifar10_batches_with_names_and_test_batch() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-10-batches-bin");
    write(&bin.join("data_batch_1.bin"), &cifar_records(&[(&[3], 1), (&[9], 2)]));
    write(&bin.join("data_batch_2.bin"), &cifar_records(&[(&[0], 3)]));
    write(&bin.join("test_batch.bin"), &cifar_records(&[(&[7], 4)]));
    let names = "airplane\nautomobile\nbird\ncat\ndeer\ndog\nfrog\nhorse\nship\ntruck\n\n";
    write(&bin.join("batches.meta.txt"), names.as_bytes());
    let data = load_data(dir.path(), &opts()).unwrap();
    assert_eq!(data.format, DataFormat::Cifar10);
    assert_eq!(data.class_names[3], "cat");
    assert_eq!((data.train.n, data.train.channels, data.train.height, data.train.classes), (3, 3, 32, 10));
    assert_eq!(data.train.labels, [3, 9, 0]);
    assert_eq!(data.test.labels, [7]);
    assert_eq!(data.train.image(1), &cifar_records(&[(&[], 2)])[..]);
    assert!(!data.test_was_split);

    // Without a test batch the training batches are split.
    std::fs::remove_file(bin.join("test_batch.bin")).unwrap();
    std::fs::remove_file(bin.join("batches.meta.txt")).unwrap();
    let data = load_data(&bin, &LoadOptions { test_fraction: 0.5, ..opts() }).unwrap();
    assert!(data.test_was_split);
    assert_eq!(data.class_names[9], "9");
}

#[test]
fn cifar_bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let batch = dir.path().join("data_batch_1.bin");
    let mut good = cifar_records(&[(&[1], 1), (&[2], 2)]);
    good.pop();
    write(&batch, &good);
    assert_error(load_data(dir.path(), &opts()), &batch, &["truncated", "6145 bytes", "3073-byte"]);
    write(&batch, &cifar_records(&[(&[1], 1), (&[10], 2)]));
    assert_error(load_data(dir.path(), &opts()), &batch, &["record 1", "label 10 is out of range"]);
    write(&batch, &cifar_records(&[(&[1], 1)]));
    write(&dir.path().join("batches.meta.txt"), b"one\ntwo\n");
    assert_error(load_data(dir.path(), &opts()), &dir.path().join("batches.meta.txt"), &["2 class names, expected 10"]);
}

#[test]
fn cifar100_uses_fine_labels_and_checks_them() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("cifar-100-binary");
    write(&bin.join("train.bin"), &cifar_records(&[(&[4, 30], 1), (&[19, 99], 2)]));
    write(&bin.join("test.bin"), &cifar_records(&[(&[0, 5], 3)]));
    let names: String = (0..100).map(|i| format!("class{i}\n")).collect();
    write(&bin.join("fine_label_names.txt"), names.as_bytes());
    let data = load_data(dir.path(), &opts()).unwrap();
    assert_eq!(data.format, DataFormat::Cifar100);
    assert_eq!((data.train.labels.clone(), data.test.labels.clone(), data.train.classes), (vec![30, 99], vec![5], 100));
    assert_eq!(data.class_names[99], "class99");

    write(&bin.join("test.bin"), &cifar_records(&[(&[0, 100], 3)]));
    assert_error(load_data(dir.path(), &opts()), &bin.join("test.bin"), &["label 100 is out of range"]);
    write(&bin.join("test.bin"), &cifar_records(&[(&[20, 1], 3)]));
    assert_error(load_data(dir.path(), &opts()), &bin.join("test.bin"), &["coarse label 20"]);
}

// --- NumPy ---

fn i64s(values: &[i64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

#[test]
fn npy_keras_layout_nhwc_to_nchw_with_test_set() {
    let dir = tempfile::tempdir().unwrap();
    // 2 images of 2x3 pixels, 3 channels, NHWC: value = 100*image + 10*pixel + channel.
    let nhwc: Vec<u8> = (0..2).flat_map(|i| (0..6).flat_map(move |p| (0..3).map(move |c| 100 * i + 10 * p + c))).collect();
    write(&dir.path().join("x_train.npy"), &encode_npy("|u1", &[2, 2, 3, 3], &nhwc));
    write(&dir.path().join("y_train.npy"), &encode_npy("<i8", &[2, 1], &i64s(&[4, 1])));
    let floats: Vec<u8> = [0.0f32, 1.0, 0.5, 0.2, 0.0, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    write(&dir.path().join("x_test.npy"), &encode_npy("<f4", &[1, 2, 3], &floats));
    write(&dir.path().join("y_test.npy"), &encode_npy("|u1", &[1], &[2]));
    // Train is 3 channels, test 1: an error naming the test file.
    let x_test = dir.path().join("x_test.npy");
    assert_error(load_data(dir.path(), &opts()), &x_test, &["1x2x3", "3x2x3"]);

    let floats3: Vec<u8> = std::iter::repeat_n([0.0f32, 1.0, 0.5], 6).flatten().flat_map(|v| v.to_le_bytes()).collect();
    write(&x_test, &encode_npy("<f4", &[1, 2, 3, 3], &floats3));
    let data = load_data(dir.path(), &opts()).unwrap();
    assert_eq!(data.format, DataFormat::Npy);
    assert_eq!((data.train.n, data.train.channels, data.train.height, data.train.width, data.train.classes), (2, 3, 2, 3, 5));
    let want: Vec<u8> = (0..2).flat_map(|i| (0..3).flat_map(move |c| (0..6).map(move |p| 100 * i + 10 * p + c))).collect();
    assert_eq!(data.train.images, want);
    assert_eq!(data.train.labels, [4, 1]);
    assert_eq!(data.test.images, [[0u8; 6], [255; 6], [128; 6]].concat());
    assert!(!data.test_was_split);
}

#[test]
fn npy_images_and_labels_gray_with_split() {
    let dir = tempfile::tempdir().unwrap();
    let n = 20;
    write(&dir.path().join("images.npy"), &encode_npy("|u1", &[n, 2, 2], &(0..n as u8 * 4).collect::<Vec<u8>>()));
    let labels: Vec<u8> = (0..n as i32).flat_map(|i| (i % 2).to_be_bytes()).collect();
    write(&dir.path().join("labels.npy"), &encode_npy(">i4", &[n], &labels));
    let data = load_data(dir.path(), &LoadOptions { test_fraction: 0.2, ..opts() }).unwrap();
    assert!(data.test_was_split);
    assert_eq!((data.train.n, data.test.n, data.train.channels, data.train.classes), (16, 4, 1, 2));
    assert_eq!(data.class_names, ["0", "1"]);
}

#[test]
fn npy_bad_files_are_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (x, y) = (dir.path().join("x_train.npy"), dir.path().join("y_train.npy"));
    write(&x, &encode_npy("|u1", &[2, 2, 2], &[0; 8]));
    write(&y, &encode_npy("<i8", &[2], &i64s(&[0, -1])));
    assert_error(load_data(dir.path(), &opts()), &y, &["label -1 of image 1 is out of range"]);
    write(&y, &encode_npy("<i2", &[2], &[0, 0, 0, 1]));
    assert_error(load_data(dir.path(), &opts()), &y, &["label 256 of image 1 is out of range"]);
    write(&y, &encode_npy("<i8", &[2, 3], &i64s(&[0; 6])));
    assert_error(load_data(dir.path(), &opts()), &y, &["one-hot"]);
    write(&y, &encode_npy("<f4", &[2], &[0; 8]));
    assert_error(load_data(dir.path(), &opts()), &y, &["integer"]);
    write(&y, &encode_npy("<i8", &[3], &i64s(&[0, 1, 1])));
    assert_error(load_data(dir.path(), &opts()), &y, &["3 labels", "2 images"]);
    write(&y, &encode_npy("<i8", &[2], &i64s(&[0, 1])));
    write(&x, &encode_npy("|u1", &[2, 2, 2], &[0; 7]));
    assert_error(load_data(dir.path(), &opts()), &x, &["truncated", "8 bytes", "holds 7"]);
    write(&x, &encode_npy("<f4", &[1, 1, 2], &[2.0f32, 0.5].iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()));
    assert_error(load_data(dir.path(), &opts()), &x, &["element 0 is 2", "[0, 1]"]);
    write(&x, &encode_npy("|u1", &[2, 2, 2, 2], &[0; 16]));
    assert_error(load_data(dir.path(), &opts()), &x, &["shape [2, 2, 2, 2]"]);
    write(&x, b"\x93NUMPY\x01\x00\xff\x00{");
    assert_error(load_data(dir.path(), &opts()), &x, &["truncated", "header declares 255 bytes"]);
    write(&x, b"\x93NUMPY\x02\x00\xff\xff\xff\xff{");
    assert_error(load_data(dir.path(), &opts()), &x, &["header of 4294967295 bytes"]);
    write(&x, &encode_npy("|u1", &[2, 2, 2], &[0; 8]));
    std::fs::remove_file(&y).unwrap();
    let missing = load_data(dir.path(), &opts());
    assert!(matches!(&missing, Err(Error::Io { path, .. }) if *path == y), "{missing:?}");
}

// --- IDX under other names ---

#[test]
fn idx_under_emnist_names_takes_classes_from_the_largest_label() {
    let dir = tempfile::tempdir().unwrap();
    let n = 10;
    let labels: Vec<u8> = (0..n as u8).map(|i| 1 + i % 26).collect();
    let images: Vec<u8> = (0..n * 4).map(|i| i as u8).collect();
    write(&dir.path().join("emnist-letters-train-images-idx3-ubyte.gz"), &gzip(&encode_idx(&[n, 2, 2], &images)));
    write(&dir.path().join("emnist-letters-train-labels-idx1-ubyte"), &encode_idx(&[n], &labels));
    write(&dir.path().join("emnist-letters-mapping.txt"), b"not matched");
    let data = load_data(dir.path(), &LoadOptions { test_fraction: 0.0, ..opts() }).unwrap();
    assert_eq!(data.format, DataFormat::Idx);
    assert!(data.test_was_split);
    assert_eq!((data.train.n, data.train.classes, data.class_names.len()), (n, 11, 11));
    assert_eq!(data.train.images, images);

    // Fashion-MNIST's names, with a test set; raw and gzip copies of one file are one file.
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("train-images-idx3-ubyte.gz", encode_idx(&[2, 1, 1], &[5, 6])),
        ("train-images-idx3-ubyte", encode_idx(&[2, 1, 1], &[5, 6])),
        ("train-labels-idx1-ubyte.gz", encode_idx(&[2], &[0, 9])),
        ("t10k-images-idx3-ubyte.gz", encode_idx(&[1, 1, 1], &[7])),
        ("t10k-labels-idx1-ubyte.gz", encode_idx(&[1], &[3])),
    ] {
        write(&dir.path().join(name), &gzip(&bytes));
    }
    let data = load_data(dir.path(), &opts()).unwrap();
    assert_eq!((data.train.labels.clone(), data.test.labels.clone(), data.train.classes), (vec![0, 9], vec![3], 10));

    // A truncated file is named.
    let cut = dir.path().join("t10k-images-idx3-ubyte.gz");
    write(&cut, &gzip(&encode_idx(&[1, 1, 1], &[7])[..16]));
    assert_error(load_data(dir.path(), &opts()), &cut, &["truncated"]);
    // Two candidates for one role are ambiguous.
    write(&dir.path().join("other-train-labels"), &encode_idx(&[2], &[0, 1]));
    assert_error(load_data(dir.path(), &opts()), dir.path(), &["2 files match", "labels"]);
}

// --- MNIST round trip ---

fn mnist_2000() -> ImageSet {
    netmorph::data::Mnist::load(netmorph::data::default_data_dir()).expect("MNIST in data/mnist").train.take(2000)
}

/// `set` written as a PNG class folder, "0".."9".
fn write_png_folder(set: &ImageSet, root: &Path) {
    for i in 0..set.n {
        let img = GrayImage::from_raw(set.width as u32, set.height as u32, set.image(i).to_vec()).unwrap();
        save(&img, &root.join(set.labels[i].to_string()).join(format!("{i:05}.png")));
    }
}

/// The set with its images sorted by (label, bytes): one order for two sets of the same images.
fn canonical(set: &ImageSet) -> ImageSet {
    let mut order: Vec<usize> = (0..set.n).collect();
    order.sort_by(|&a, &b| (set.labels[a], set.image(a)).cmp(&(set.labels[b], set.image(b))));
    netmorph::data::split::select(set, &order)
}

fn round_trip() -> (ImageSet, LoadedData) {
    let original = mnist_2000();
    let dir = tempfile::tempdir().unwrap();
    write_png_folder(&original, dir.path());
    let loaded = load_data(dir.path(), &keep_all()).unwrap();
    (original, loaded)
}

#[test]
fn mnist_through_a_png_folder_gives_back_the_same_images() {
    let (original, loaded) = round_trip();
    assert_eq!(loaded.class_names, (0..10).map(|c| c.to_string()).collect::<Vec<_>>());
    assert_eq!(loaded.train.image_shape(), [1, 28, 28]);
    assert_eq!(canonical(&loaded.train), canonical(&original));
}

#[test]
fn mnist_through_a_png_folder_trains_to_the_same_first_epoch_loss() {
    use netmorph::data::DeviceDataset;
    use netmorph::graph::{Graph, Model};
    use netmorph::optim::adam::Adam;
    use netmorph::train::{fit, FitConfig};
    let (original, loaded) = round_trip();
    let dev = netmorph::testing::device();
    let loss = |set: &ImageSet| {
        let graph = Graph::keras_mnist_convnet(&[1, 28, 28], 10, 3).unwrap();
        let model = Model::new(&graph, &dev).unwrap();
        let mut opt = Adam::new(1e-3, 0.9, 0.999, 1e-7, 0.0);
        let cfg = FitConfig { epochs: 1, batch_size: 32, seed: 11, verbose: false, ..FitConfig::default() };
        let history = fit(&model, &mut opt, &DeviceDataset::new(&dev, set).unwrap(), None, &cfg).unwrap();
        history.epochs[0].loss
    };
    let (a, b) = (loss(&canonical(&original)), loss(&canonical(&loaded.train)));
    eprintln!("[loaders] first-epoch loss: IDX {a:.6}, PNG folder {b:.6}");
    assert!(a.is_finite());
    assert_eq!(a, b);
}
