//! The data layer: MNIST files (shipped and generated), image sets, the checked downloader against
//! a local HTTP server, and batches gathered on the device.

use netmorph::data::idx::{encode_idx, gzip};
use netmorph::data::mnist::{TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS};
use netmorph::data::{
    default_data_dir, download_files, Augmentation, BatchOrder, DeviceDataset, ImageAugment, ImageSet, Mnist, RandomShift, MNIST_SHA256,
};
use netmorph::Error;
use rand::Rng;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A fresh temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("netmorph-data-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small MNIST-like set: `n` images of `h x w`, labels below 10.
fn synthetic(n: usize, h: usize, w: usize, seed: u8) -> (Vec<u8>, Vec<u8>) {
    let images = (0..n * h * w).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    let labels = (0..n).map(|i| ((i + seed as usize) % 10) as u8).collect();
    (images, labels)
}

fn write_mnist(dir: &Path, n_train: usize, n_test: usize, gz: bool) {
    let (ti, tl) = synthetic(n_train, 4, 3, 1);
    let (vi, vl) = synthetic(n_test, 4, 3, 2);
    let files = [
        (TRAIN_IMAGES, encode_idx(&[n_train, 4, 3], &ti)),
        (TRAIN_LABELS, encode_idx(&[n_train], &tl)),
        (TEST_IMAGES, encode_idx(&[n_test, 4, 3], &vi)),
        (TEST_LABELS, encode_idx(&[n_test], &vl)),
    ];
    for (name, bytes) in files {
        if gz {
            std::fs::write(dir.join(format!("{name}.gz")), gzip(&bytes)).unwrap();
        } else {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}

#[test]
fn loads_generated_mnist_raw_and_gz() {
    for gz in [false, true] {
        let dir = TempDir::new(if gz { "gz" } else { "raw" });
        write_mnist(&dir.0, 7, 3, gz);
        let m = Mnist::load(&dir.0).unwrap();
        let (ti, tl) = synthetic(7, 4, 3, 1);
        assert_eq!(m.train, ImageSet::new(ti, tl, 1, 4, 3, 10).unwrap());
        assert_eq!((m.test.n, m.test.channels, m.test.height, m.test.width, m.test.classes), (3, 1, 4, 3, 10));
    }
}

#[test]
fn mismatched_image_and_label_counts_name_both_files() {
    let dir = TempDir::new("mismatch");
    write_mnist(&dir.0, 5, 3, false);
    std::fs::write(dir.0.join(TRAIN_LABELS), encode_idx(&[4], &[0, 1, 2, 3])).unwrap();
    let e = Mnist::load(&dir.0).unwrap_err();
    let s = e.to_string();
    assert!(matches!(e, Error::Format { .. }) && s.contains(TRAIN_IMAGES) && s.contains(TRAIN_LABELS), "{s}");
    assert!(s.contains("5 images") && s.contains("4 labels"), "{s}");
}

#[test]
fn missing_files_and_bad_labels_are_clear_errors() {
    let dir = TempDir::new("missing");
    let e = Mnist::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains(TRAIN_IMAGES) && e.contains("not found"), "{e}");
    write_mnist(&dir.0, 2, 2, false);
    std::fs::write(dir.0.join(TEST_LABELS), encode_idx(&[2], &[3, 12])).unwrap();
    let e = Mnist::load(&dir.0).unwrap_err().to_string();
    assert!(e.contains(TEST_LABELS) && e.contains("label 12"), "{e}");
}

#[test]
fn shipped_mnist_loads_and_matches_its_checksums() {
    let dir = default_data_dir();
    if std::env::var_os("NETMORPH_DATA_DIR").is_none() {
        assert!(dir.ends_with("data/mnist"), "{}", dir.display());
    }
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for (name, sha) in MNIST_SHA256 {
        assert!(sums.lines().any(|l| l.split_whitespace().eq([sha, name])), "{name} {sha} is not in SHA256SUMS");
        let path = if dir.join(name).is_file() { dir.join(name) } else { dir.join(format!("{name}.gz")) };
        netmorph::data::download::verify(&path, sha).unwrap();
    }
    let m = Mnist::load(&dir).unwrap();
    assert_eq!((m.train.n, m.test.n), (60_000, 10_000));
    assert_eq!(m.train.image_shape(), [1, 28, 28]);
    assert_eq!(m.train.images.len(), 60_000 * 784);
    assert!(m.train.labels.iter().all(|&l| l < 10));
    // Every class is present in both sets.
    for set in [&m.train, &m.test] {
        let mut counts = [0usize; 10];
        set.labels.iter().for_each(|&l| counts[l as usize] += 1);
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}

#[test]
fn take_and_split() {
    let (images, labels) = synthetic(10, 2, 3, 5);
    let set = ImageSet::new(images, labels, 1, 2, 3, 10).unwrap();
    let first = set.take(4);
    assert_eq!((first.n, first.images.len(), first.labels.len()), (4, 24, 4));
    assert_eq!(first.image(3), set.image(3));
    assert_eq!(set.take(100), set);
    let (train, val) = set.split(3).unwrap();
    assert_eq!((train.n, val.n), (7, 3));
    assert_eq!(val.image(0), set.image(7));
    assert_eq!(val.labels, set.labels[7..]);
    assert!(set.split(11).is_err());
    assert!(ImageSet::new(vec![0; 5], vec![1, 2], 1, 2, 2, 10).unwrap_err().to_string().contains("2x2"));
}

/// A tiny HTTP/1.1 server on 127.0.0.1 serving `files` by path (404 otherwise), counting the
/// requests; it stops when dropped or after 60 seconds.
struct TestServer {
    url: String,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    fn start(files: HashMap<String, Vec<u8>>) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/mnist/", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !halt.load(Ordering::Relaxed) && Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        count.fetch_add(1, Ordering::Relaxed);
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        let mut reader = BufReader::new(stream);
                        let mut request_line = String::new();
                        if reader.read_line(&mut request_line).is_err() {
                            continue;
                        }
                        // Skip the headers up to the blank line.
                        let mut line = String::new();
                        while reader.read_line(&mut line).map(|n| n > 0).unwrap_or(false) && line != "\r\n" {
                            line.clear();
                        }
                        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut stream = reader.into_inner();
                        let _ = match files.get(&path) {
                            Some(body) => stream
                                .write_all(
                                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes(),
                                )
                                .and_then(|()| stream.write_all(body)),
                            None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
                        };
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        TestServer { url, requests, stop }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

#[test]
fn downloads_verifies_and_caches() {
    let a = encode_idx(&[3, 2, 2], &[7; 12]);
    let b = encode_idx(&[3], &[1, 2, 3]);
    let files = HashMap::from([("/mnist/a-idx3-ubyte.gz".to_string(), gzip(&a)), ("/mnist/b-idx1-ubyte.gz".to_string(), gzip(&b))]);
    let server = TestServer::start(files);
    let cache = TempDir::new("download");
    let (sa, sb) = (sha256_hex(&a), sha256_hex(&b));
    let want = [("a-idx3-ubyte", sa.as_str()), ("b-idx1-ubyte", sb.as_str())];

    let dir = download_files(&server.url, &cache.0, &want).unwrap();
    assert_eq!(server.requests.load(Ordering::Relaxed), 2);
    assert_eq!(netmorph::data::read_idx(dir.join("a-idx3-ubyte.gz")).unwrap().dims, vec![3, 2, 2]);
    assert_eq!(netmorph::data::read_idx(dir.join("b-idx1-ubyte.gz")).unwrap().data, vec![1, 2, 3]);
    // No temporary file is left behind.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 2);

    // Present and valid: nothing is fetched again.
    download_files(&server.url, &cache.0, &want).unwrap();
    assert_eq!(server.requests.load(Ordering::Relaxed), 2);

    // A corrupt cached file is replaced.
    std::fs::write(dir.join("b-idx1-ubyte.gz"), gzip(&encode_idx(&[3], &[9, 9, 9]))).unwrap();
    download_files(&server.url, &cache.0, &want).unwrap();
    assert_eq!(server.requests.load(Ordering::Relaxed), 3);
    assert_eq!(netmorph::data::read_idx(dir.join("b-idx1-ubyte.gz")).unwrap().data, vec![1, 2, 3]);
}

#[test]
fn wrong_checksum_and_missing_file_are_rejected() {
    let a = encode_idx(&[2], &[4, 5]);
    let server = TestServer::start(HashMap::from([("/mnist/a-idx1-ubyte.gz".to_string(), gzip(&a))]));
    let cache = TempDir::new("badsum");
    let wrong = "0".repeat(64);
    let e = download_files(&server.url, &cache.0, &[("a-idx1-ubyte", &wrong)]).unwrap_err().to_string();
    assert!(e.contains("a-idx1-ubyte") && e.contains(&wrong) && e.contains(&sha256_hex(&a)), "{e}");
    // The rejected file is gone, and so is the temporary one.
    assert_eq!(std::fs::read_dir(&cache.0).unwrap().count(), 0);

    let e = download_files(&server.url, &cache.0, &[("missing-idx1-ubyte", &wrong)]).unwrap_err().to_string();
    assert!(e.contains("missing-idx1-ubyte.gz") && e.contains("404"), "{e}");
    assert_eq!(std::fs::read_dir(&cache.0).unwrap().count(), 0);
}

#[test]
fn gathered_batches_equal_the_cpu_conversion() {
    let dev = netmorph::testing::device();
    // 3x5x7 = 105 bytes per image: images start at every offset within a 32-bit word.
    for (n, c, h, w, batch) in [(11, 3, 5, 7, 4), (9, 1, 28, 28, 4), (1, 1, 1, 1, 1), (300, 1, 3, 3, 128)] {
        let mut images: Vec<u8> = (0..n * c * h * w).map(|i| (i * 37 % 256) as u8).collect();
        images[0] = 255;
        let labels: Vec<u8> = (0..n).map(|i| (i * 3 % 7) as u8).collect();
        let set = ImageSet::new(images, labels, c, h, w, 7).unwrap();
        let data = DeviceDataset::new(&dev, &set).unwrap();
        assert_eq!(data.len(), n);
        let order = BatchOrder::new(n, batch, 5).unwrap();
        for indices in order.epoch(0).iter().chain(&order.sequential()) {
            let (x, y) = data.batch(indices).unwrap();
            assert_eq!(x.shape(), &[indices.len(), c, h, w]);
            assert_eq!(x.to_vec().unwrap(), set.gather_f32(indices), "images {indices:?} of {c}x{h}x{w}");
            let want: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
            assert_eq!(y.to_u32_vec().unwrap(), want);
        }
    }
    let set = ImageSet::new(vec![1; 8], vec![0, 1], 1, 2, 2, 2).unwrap();
    let data = DeviceDataset::new(&dev, &set).unwrap();
    assert!(data.batch(&[0, 2]).unwrap_err().to_string().contains("index 2"));
    let (x, _) = data.batch(&[1]).unwrap();
    assert_eq!(x.to_vec().unwrap(), vec![1.0 / 255.0; 4]);
}

#[test]
fn shifted_batches_equal_the_cpu_reference() {
    let dev = netmorph::testing::device();
    // Odd sizes, several channels, shifts up to the whole frame, and batches that are not a
    // multiple of the kernel's 4 values per invocation or its 256-lane workgroup.
    for (n, c, h, w, batch, max) in [(13, 3, 5, 7, 5, 3), (9, 1, 28, 28, 9, 2), (2, 2, 2, 3, 2, 1), (70, 1, 6, 6, 67, 5)] {
        let images: Vec<u8> = (0..n * c * h * w).map(|i| (i * 53 % 251 + 1) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % 4) as u8).collect();
        let set = ImageSet::new(images, labels, c, h, w, 4).unwrap();
        let data = DeviceDataset::new(&dev, &set).unwrap();
        for (k, indices) in BatchOrder::new(n, batch, 3).unwrap().epoch(1).iter().enumerate() {
            let mut shifts = RandomShift { max }.draw(indices.len(), k as u64);
            shifts[0] = [0, 0];
            let (x, y) = data.batch_shifted(indices, &shifts).unwrap();
            let want = set.gather_f32_shifted(indices, &shifts);
            assert_eq!(x.to_vec().unwrap(), want, "{c}x{h}x{w}, shifts {shifts:?}");
            assert_eq!(&want[..c * h * w], set.gather_f32(&indices[..1]), "a zero shift is the image");
            let labels: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
            assert_eq!(y.to_u32_vec().unwrap(), labels);
        }
    }
    // By hand: a 2x3 image moved one right and one up.
    let set = ImageSet::new(vec![1, 2, 3, 4, 5, 6], vec![0], 1, 2, 3, 1).unwrap();
    let s = 1.0 / 255.0;
    assert_eq!(set.gather_f32_shifted(&[0], &[[1, -1]]), vec![0.0, 4.0 * s, 5.0 * s, 0.0, 0.0, 0.0]);
    let data = DeviceDataset::new(&dev, &set).unwrap();
    assert_eq!(data.batch_shifted(&[0], &[[1, -1]]).unwrap().0.to_vec().unwrap(), vec![0.0, 4.0 * s, 5.0 * s, 0.0, 0.0, 0.0]);
    let e = data.batch_shifted(&[0], &[[3, 0]]).unwrap_err().to_string();
    assert!(e.contains("[3, 0]") && e.contains("2x3"), "{e}");
    assert!(data.batch_shifted(&[0, 0], &[[0, 0]]).unwrap_err().to_string().contains("1 shifts for a batch of 2"));
}

#[test]
fn flipped_and_shifted_batches_equal_the_cpu_reference() {
    let dev = netmorph::testing::device();
    let mut r = netmorph::testing::rng(21);
    for round in 0..12 {
        // Random shapes, widths odd and even (the middle column of an odd width stays put).
        let (c, h, w) = (r.random_range(1..=4), r.random_range(1..=20), r.random_range(1..=20));
        let (n, batch) = (r.random_range(1..=60), r.random_range(1..=300));
        let images: Vec<u8> = (0..n * c * h * w).map(|_| r.random()).collect();
        let labels: Vec<u8> = (0..n).map(|_| r.random_range(0..5)).collect();
        let set = ImageSet::new(images, labels, c, h, w, 5).unwrap();
        let data = DeviceDataset::new(&dev, &set).unwrap();
        let indices: Vec<u32> = (0..batch).map(|_| r.random_range(0..n as u32)).collect();
        // Every image flipped, then a random mix of flips and shifts.
        let shift = RandomShift { max: h.min(w).saturating_sub(1).min(3) };
        let all_flipped: Vec<ImageAugment> =
            shift.draw(batch, round).into_iter().map(|shift| ImageAugment { shift, flip: true, ..ImageAugment::default() }).collect();
        let mixed = Augmentation { shift, flip: true, ..Augmentation::NONE }.draw(batch, round);
        for augments in [all_flipped, mixed] {
            let (x, y) = data.batch_augmented(&indices, &augments).unwrap();
            assert!(
                x.to_vec().unwrap() == set.gather_f32_augmented(&indices, &augments),
                "{c}x{h}x{w}, batch {batch}, augments {augments:?}"
            );
            let want: Vec<u32> = indices.iter().map(|&i| set.labels[i as usize] as u32).collect();
            assert_eq!(y.to_u32_vec().unwrap(), want);
        }
        let unflipped: Vec<ImageAugment> =
            shift.draw(batch, round).into_iter().map(|shift| ImageAugment { shift, flip: false, ..ImageAugment::default() }).collect();
        let shifts: Vec<[i32; 2]> = unflipped.iter().map(|a| a.shift).collect();
        assert_eq!(set.gather_f32_augmented(&indices, &unflipped), set.gather_f32_shifted(&indices, &shifts));
    }
    // By hand: a 2x3 image mirrored, then moved one right and one up.
    let set = ImageSet::new(vec![1, 2, 3, 4, 5, 6], vec![0], 1, 2, 3, 1).unwrap();
    let s = 1.0 / 255.0;
    let flip_right_up = [ImageAugment { shift: [1, -1], flip: true, ..ImageAugment::default() }];
    assert_eq!(set.gather_f32_augmented(&[0], &flip_right_up), vec![0.0, 6.0 * s, 5.0 * s, 0.0, 0.0, 0.0]);
    let flip = [ImageAugment { shift: [0, 0], flip: true, ..ImageAugment::default() }];
    assert_eq!(set.gather_f32_augmented(&[0], &flip), vec![3.0 * s, 2.0 * s, 1.0 * s, 6.0 * s, 5.0 * s, 4.0 * s]);
    let data = DeviceDataset::new(&dev, &set).unwrap();
    assert_eq!(data.batch_augmented(&[0], &flip_right_up).unwrap().0.to_vec().unwrap(), set.gather_f32_augmented(&[0], &flip_right_up));
    let e = data.batch_augmented(&[0, 0], &flip).unwrap_err().to_string();
    assert!(e.contains("1 augmentations for a batch of 2"), "{e}");
}

#[test]
fn flips_are_seeded_half_the_time_and_leave_the_shifts_alone() {
    let on = Augmentation { shift: RandomShift { max: 2 }, flip: true, ..Augmentation::NONE };
    let a = on.draw(1000, 4);
    assert_eq!(a, on.draw(1000, 4), "same seed, same augmentation");
    let flipped = a.iter().filter(|x| x.flip).count();
    assert!((400..=600).contains(&flipped), "{flipped} of 1000 flipped");
    let shifts: Vec<[i32; 2]> = a.iter().map(|x| x.shift).collect();
    assert_eq!(shifts, RandomShift { max: 2 }.draw(1000, 4), "turning flips on keeps a run's shifts");
    assert!(Augmentation { flip: false, ..on }.draw(100, 4).iter().all(|x| !x.flip));
    assert!(Augmentation::NONE.draw(10, 1).iter().all(ImageAugment::is_identity));
    assert_eq!(
        Augmentation::for_image(1, 28, 28),
        Augmentation { shift: RandomShift { max: 2 }, flip: false, ..Augmentation::NONE },
        "digits are not mirrored"
    );
    assert_eq!(
        Augmentation::for_image(3, 32, 32),
        Augmentation { shift: RandomShift { max: 2 }, flip: true, ..Augmentation::NONE },
        "photographs are"
    );
}

#[test]
fn random_shifts_are_seeded_bounded_and_sized_to_the_image() {
    let s = RandomShift { max: 2 };
    let a = s.draw(500, 9);
    assert_eq!(a, s.draw(500, 9), "same seed, same shifts");
    assert_ne!(a, s.draw(500, 10));
    assert!(a.iter().flatten().all(|d| (-2..=2).contains(d)));
    for v in -2..=2 {
        assert!(a.iter().any(|[dx, dy]| *dx == v && *dy == -v), "every shift occurs: {v}");
    }
    assert!(RandomShift { max: 0 }.draw(4, 1).iter().all(|d| *d == [0, 0]));
    assert_eq!(RandomShift::for_image(28, 28).max, 2);
    assert_eq!(RandomShift::for_image(14, 14).max, 1);
    assert_eq!(RandomShift::for_image(9, 7).max, 0);
}

#[test]
fn batch_order_is_a_seeded_shuffle_with_the_partial_batch() {
    let order = BatchOrder::new(10, 4, 42).unwrap();
    let e0 = order.epoch(0);
    assert_eq!(e0.iter().map(Vec::len).collect::<Vec<_>>(), vec![4, 4, 2]);
    assert_eq!(order.batches_per_epoch(), 3);
    let mut all: Vec<u32> = e0.concat();
    all.sort();
    assert_eq!(all, (0..10).collect::<Vec<u32>>());
    assert_eq!(e0, BatchOrder::new(10, 4, 42).unwrap().epoch(0), "same seed and epoch, same order");
    assert_ne!(e0, order.epoch(1), "each epoch is shuffled anew");
    assert_eq!(order.epoch(1), BatchOrder::new(10, 4, 41).unwrap().epoch(2), "seeded with seed + epoch");
    assert_eq!(order.sequential(), vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7], vec![8, 9]]);
    assert!(BatchOrder::new(10, 0, 1).is_err());
}
