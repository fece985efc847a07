//! Hostile input: mutated bytes of valid files (bit flips, truncation, inserted and deleted bytes,
//! huge declared sizes written over the header) for every reader of outside data. Each case must
//! end in `Ok` or a named `Error`; a panic fails the test (proptest catches it and shrinks the
//! input), and an allocation taken from a declared size would abort the process.
//!
//! Cases and time (release build, 2 cores): IDX raw 3,000 and gzip 1,500; PNG, JPEG, BMP and GIF
//! 600 each; CIFAR 1,000; .npy 1,500; graph JSON 1,500 (half of them with numbers replaced by huge
//! ones); safetensors 1,500. About 10 s in all. Crashes found on the way are the named regression
//! tests at the end.

use image::{ImageBuffer, Rgb};
use netmorph::data::idx::{encode_idx, gzip, parse_idx, read_idx};
use netmorph::data::npy::encode_npy;
use netmorph::data::{cifar, folder, load_data, LoadOptions};
use netmorph::graph::{Graph, Sequential};
use netmorph::Error;
use proptest::prelude::*;
use std::path::Path;

/// One edit of a file's bytes. Positions are taken modulo the length at the time.
#[derive(Clone, Debug)]
enum Mutation {
    FlipBit {
        at: usize,
        bit: u8,
    },
    Truncate {
        keep: usize,
    },
    Insert {
        at: usize,
        bytes: Vec<u8>,
    },
    Delete {
        at: usize,
        len: usize,
    },
    /// A 4- or 8-byte size, big- or little-endian, written over the bytes at `at`.
    HugeSize {
        at: usize,
        value: u64,
        wide: bool,
        big_endian: bool,
    },
}

fn huge_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(0x7fff_ffff),
        Just(0xffff_ffff),
        Just(0x1_0000),
        Just(1 << 40),
        Just(1 << 62),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

/// Positions favour the first 64 bytes, where the headers are.
fn position() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..64, any::<usize>()]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (position(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit { at, bit }),
        1 => any::<usize>().prop_map(|keep| Mutation::Truncate { keep }),
        1 => (position(), proptest::collection::vec(any::<u8>(), 1..16)).prop_map(|(at, bytes)| Mutation::Insert { at, bytes }),
        1 => (position(), 1usize..32).prop_map(|(at, len)| Mutation::Delete { at, len }),
        2 => (position(), huge_value(), any::<bool>(), any::<bool>())
            .prop_map(|(at, value, wide, big_endian)| Mutation::HugeSize { at, value, wide, big_endian }),
    ]
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    proptest::collection::vec(mutation(), 1..5)
}

fn mutate(seed: &[u8], edits: &[Mutation]) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for edit in edits {
        let len = bytes.len().max(1);
        match edit {
            Mutation::FlipBit { at, bit } => {
                if !bytes.is_empty() {
                    bytes[at % len] ^= 1 << bit;
                }
            }
            Mutation::Truncate { keep } => bytes.truncate(keep % len),
            Mutation::Insert { at, bytes: new } => {
                let at = at % (bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete { at, len: n } => {
                let at = at % len;
                let end = (at + n).min(bytes.len());
                if at < end {
                    bytes.drain(at..end);
                }
            }
            Mutation::HugeSize { at, value, wide, big_endian } => {
                let encoded: Vec<u8> = match (wide, big_endian) {
                    (true, true) => value.to_be_bytes().to_vec(),
                    (true, false) => value.to_le_bytes().to_vec(),
                    (false, true) => (*value as u32).to_be_bytes().to_vec(),
                    (false, false) => (*value as u32).to_le_bytes().to_vec(),
                };
                let at = at % len;
                for (i, b) in encoded.into_iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + i) {
                        *slot = b;
                    }
                }
            }
        }
    }
    bytes
}

/// An `Ok`, or an error of the kinds a bad file gives, whose message is not empty.
#[track_caller]
fn assert_named<T>(result: netmorph::Result<T>, path: &Path) {
    if let Err(e) = result {
        let msg = e.to_string();
        match &e {
            Error::Format { path: p, .. } | Error::Io { path: p, .. } => assert_eq!(p, path, "{msg}"),
            Error::Invalid(_) | Error::Shape { .. } => {}
            other => panic!("unexpected error kind for a bad file: {other:?}"),
        }
        assert!(msg.len() > path.display().to_string().len() + 2, "an error without a message: {msg}");
    }
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

// --- seeds: small valid files ---

fn idx_images() -> Vec<u8> {
    encode_idx(&[3, 4, 5], &(0..60).collect::<Vec<u8>>())
}

fn image_bytes(format: image::ImageFormat) -> Vec<u8> {
    let img: ImageBuffer<Rgb<u8>, Vec<u8>> = ImageBuffer::from_fn(7, 5, |x, y| Rgb([x as u8 * 30, y as u8 * 40, 99]));
    let mut out = vec![];
    img.write_to(&mut std::io::Cursor::new(&mut out), format).unwrap();
    out
}

fn cifar_seed() -> Vec<u8> {
    let mut out = vec![];
    for label in [3u8, 7] {
        out.push(label);
        out.extend((0..3072u32).map(|i| i as u8));
    }
    out
}

/// A `.npy` file whose header declares `shape` verbatim (malformed ones that `encode_npy` cannot
/// write); unpadded, which the reader does not check.
fn npy_with_raw_shape(shape: &str) -> Vec<u8> {
    let header = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}\n");
    [&b"\x93NUMPY\x01\x00"[..], &(header.len() as u16).to_le_bytes(), header.as_bytes()].concat()
}

fn small_graph() -> Graph {
    Sequential::new(&[1, 6, 6]).conv2d(2, 3).batch_norm().relu().max_pool(2).flatten().dense(3).build(1).unwrap()
}

// --- the fuzzers ---

proptest! {
    #![proptest_config(config(3000))]
    #[test]
    fn idx_raw(edits in mutations()) {
        let path = Path::new("fuzz.idx");
        assert_named(parse_idx(path, &mutate(&idx_images(), &edits)), path);
    }
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn idx_gzip(edits in mutations(), compress_after in any::<bool>()) {
        // Mutate the compressed stream, or mutate the IDX and compress it (a valid stream of bad data).
        let bytes = if compress_after { gzip(&mutate(&idx_images(), &edits)) } else { mutate(&gzip(&idx_images()), &edits) };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images.gz");
        std::fs::write(&path, bytes).unwrap();
        assert_named(read_idx(&path), &path);
    }
}

proptest! {
    #![proptest_config(config(600))]
    #[test]
    fn png(edits in mutations()) {
        let path = Path::new("fuzz.png");
        assert_named(folder::decode_bytes(path, &mutate(&image_bytes(image::ImageFormat::Png), &edits)), path);
    }

    #[test]
    fn jpeg(edits in mutations()) {
        let path = Path::new("fuzz.jpg");
        assert_named(folder::decode_bytes(path, &mutate(&image_bytes(image::ImageFormat::Jpeg), &edits)), path);
    }

    #[test]
    fn bmp(edits in mutations()) {
        let path = Path::new("fuzz.bmp");
        assert_named(folder::decode_bytes(path, &mutate(&image_bytes(image::ImageFormat::Bmp), &edits)), path);
    }

    #[test]
    fn gif(edits in mutations()) {
        let path = Path::new("fuzz.gif");
        assert_named(folder::decode_bytes(path, &mutate(&image_bytes(image::ImageFormat::Gif), &edits)), path);
    }
}

proptest! {
    #![proptest_config(config(1000))]
    #[test]
    fn cifar_batch(edits in mutations(), cifar100 in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.bin");
        let mut seed = cifar_seed();
        if cifar100 {
            seed.insert(3073, 1);
            seed.insert(0, 2);
        }
        std::fs::write(&path, mutate(&seed, &edits)).unwrap();
        assert_named(cifar::read_batch_file(&path, cifar100), &path);
    }
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn npy(edits in mutations(), which in 0usize..3) {
        let dir = tempfile::tempdir().unwrap();
        let images = encode_npy("|u1", &[2, 3, 2, 3], &[7; 36]);
        let labels = encode_npy("<i8", &[2], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let floats = encode_npy("<f4", &[2, 3, 2], &[0; 48]);
        let (x, y) = (dir.path().join("x_train.npy"), dir.path().join("y_train.npy"));
        let (x_bytes, y_bytes) = match which {
            0 => (mutate(&images, &edits), labels),
            1 => (images, mutate(&labels, &edits)),
            _ => (mutate(&floats, &edits), labels),
        };
        std::fs::write(&x, x_bytes).unwrap();
        std::fs::write(&y, y_bytes).unwrap();
        let result = load_data(dir.path(), &LoadOptions::default());
        if let Err(Error::Format { path, .. } | Error::Io { path, .. }) = &result {
            assert!(*path == x || *path == y, "{result:?}");
        }
        if let Err(e) = &result {
            prop_assert!(matches!(e, Error::Format { .. } | Error::Io { .. } | Error::Invalid(_)), "{e:?}");
        }
    }
}

/// The JSON with its `n`-th number (counting digit runs) replaced by `value`.
fn replace_number(json: &str, n: usize, value: &str) -> String {
    let bytes = json.as_bytes();
    let mut runs = vec![];
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'.') {
                i += 1;
            }
            runs.push(start..i);
        } else {
            i += 1;
        }
    }
    let Some(run) = runs.get(n % runs.len().max(1)) else { return json.to_string() };
    format!("{}{value}{}", &json[..run.start], &json[run.end..])
}

fn huge_number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("0".to_string()),
        Just("4294967296".to_string()),
        Just((1u64 << 40).to_string()),
        Just((1u64 << 62).to_string()),
        Just(u64::MAX.to_string()),
        Just(usize::MAX.to_string()),
        Just("18446744073709551616".to_string()),
        Just("-1".to_string()),
        Just("1e300".to_string()),
        (0u64..100_000).prop_map(|v| v.to_string()),
    ]
}

/// Builds the graph's weights when it loads: the paths that allocate by the architecture's sizes.
fn exercise(graph: netmorph::Result<Graph>) -> netmorph::Result<()> {
    let mut graph = graph?;
    graph.param_counts()?;
    graph.init_weights(3)?;
    graph.validate()
}

proptest! {
    #![proptest_config(config(1500))]
    #[test]
    fn graph_json(edits in mutations(), numbers in proptest::collection::vec((any::<usize>(), huge_number()), 1..4), by_number in any::<bool>()) {
        let seed = small_graph().to_json();
        let json = if by_number {
            numbers.iter().fold(seed, |json, (n, value)| replace_number(&json, *n, value))
        } else {
            String::from_utf8_lossy(&mutate(seed.as_bytes(), &edits)).into_owned()
        };
        let result = exercise(Graph::from_json(&json));
        if let Err(e) = &result {
            prop_assert!(matches!(e, Error::Format { .. } | Error::Shape { .. } | Error::Invalid(_)), "{e:?}");
        }
    }

    #[test]
    fn safetensors_weights(edits in mutations(), numbers in proptest::collection::vec((any::<usize>(), huge_number()), 1..3), by_number in any::<bool>()) {
        let graph = small_graph();
        let seed = graph.weights_to_safetensors().unwrap();
        let bytes = if by_number {
            // Numbers in the JSON header (shapes, offsets), the header's length kept in step.
            let header_len = u64::from_le_bytes(seed[..8].try_into().unwrap()) as usize;
            let header = String::from_utf8_lossy(&seed[8..8 + header_len]).into_owned();
            let header = numbers.iter().fold(header, |h, (n, value)| replace_number(&h, *n, value));
            [&(header.len() as u64).to_le_bytes()[..], header.as_bytes(), &seed[8 + header_len..]].concat()
        } else {
            mutate(&seed, &edits)
        };
        let mut target = graph.without_weights();
        let result = target.load_weights(&bytes);
        if let Err(e) = &result {
            prop_assert!(matches!(e, Error::Format { .. } | Error::Shape { .. } | Error::Invalid(_)), "{e:?}");
        }
    }
}

// --- named regression tests: crafted inputs at the edges the fuzzers aim at ---

#[test]
fn idx_gzip_bomb_stops_past_the_declared_size() {
    // Declares 1x1 bytes, then 64 MiB of zeros: compresses to ~64 KiB.
    let mut bytes = encode_idx(&[1, 1], &[0]);
    bytes.resize(bytes.len() + (64 << 20), 0);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bomb.gz");
    std::fs::write(&path, gzip(&bytes)).unwrap();
    let msg = read_idx(&path).unwrap_err().to_string();
    assert!(msg.contains("trailing data") && msg.contains("bomb.gz"), "{msg}");
}

#[test]
fn idx_declaring_huge_dimensions_is_an_error_before_any_allocation() {
    let path = Path::new("huge.idx");
    let mut bytes = vec![0, 0, 8, 3];
    for d in [0xffff_ffffu32, 0xffff_ffff, 0xffff_ffff] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    assert!(parse_idx(path, &bytes).unwrap_err().to_string().contains("overflow"));
    let mut bytes = vec![0, 0, 8, 2];
    for d in [0xffff_ffffu32, 0xffff_ffff] {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    assert!(parse_idx(path, &bytes).unwrap_err().to_string().contains("truncated"));
}

#[test]
fn graph_with_sizes_that_overflow_is_an_error() {
    let json = small_graph().to_json();
    for (what, from, to) in [
        ("dense of 2^62 units", "\"units\":3", format!("\"units\":{}", 1u64 << 62)),
        ("conv of 2^40 filters", "\"filters\":2", format!("\"filters\":{}", 1u64 << 40)),
        ("input of 2^32 x 2^32 pixels", "[1,6,6]", format!("[1,{},{}]", 1u64 << 32, 1u64 << 32)),
        ("dense of usize::MAX units", "\"units\":3", format!("\"units\":{}", usize::MAX)),
    ] {
        assert!(json.contains(from), "{from} not in {json}");
        let result = exercise(Graph::from_json(&json.replacen(from, &to, 1)));
        let e = result.expect_err(what).to_string();
        assert!(e.contains("too large") || e.contains("overflow"), "{what}: {e}");
    }
    let next_id = json.split("\"next_id\": ").nth(1).and_then(|rest| rest.split(',').next()).expect("a next_id field");
    let huge_id = json.replacen(&format!("\"next_id\": {next_id}"), &format!("\"next_id\": {}", usize::MAX), 1);
    let e = Graph::from_json(&huge_id).expect_err("next_id usize::MAX").to_string();
    assert!(e.contains("next_id"), "{e}");
}

#[test]
fn npy_header_declaring_a_huge_shape_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let x = dir.path().join("x_train.npy");
    std::fs::write(&x, encode_npy("|u1", &[usize::MAX, 1 << 32, 2], &[])).unwrap();
    std::fs::write(dir.path().join("y_train.npy"), encode_npy("|u1", &[1], &[0])).unwrap();
    let msg = load_data(dir.path(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("x_train.npy") && msg.contains("overflow"), "{msg}");
    let nested = format!("{}1{}", "(".repeat(500), ")".repeat(500));
    std::fs::write(&x, npy_with_raw_shape(&nested)).unwrap();
    let msg = load_data(dir.path(), &LoadOptions::default()).unwrap_err().to_string();
    assert!(msg.contains("x_train.npy") && msg.contains("nests"), "{msg}");
}
