//! NumPy `.npy` arrays in Keras' layout: `x_train.npy` + `y_train.npy`, optionally `x_test.npy` +
//! `y_test.npy` (what `np.save` writes from `keras.datasets.*.load_data()`), or `images.npy` +
//! `labels.npy` (no test set).
//!
//! * Images: `[n, h, w]` (one channel) or `[n, h, w, c]` with `c` 1, 3 or 4 (NHWC, as Keras
//!   keeps them; converted to NCHW, a fourth channel, alpha, dropped). `uint8` is taken as is;
//!   `float32`/`float64` must lie in [0, 1] (the usual `x / 255.0`) and are scaled by 255 and
//!   rounded; a value outside [0, 1] or not finite is an error naming the file and the element
//!   (values in [0, 255] would be ambiguous, so they are not guessed at).
//! * Labels: `[n]` or `[n, 1]` (Keras' CIFAR layout) of any integer type; every label must lie in
//!   0..=255. One-hot labels `[n, k]` are an error that says so. Classes = largest label + 1 over
//!   both sets, named "0", "1", ...
//!
//! Parsing goes through the `npyz` crate, after checks of our own on the raw bytes that keep a
//! hostile header from making it allocate or overflow: the header may be at most 10,000 bytes
//! (numpy's own limit), nest at most 16 brackets deep, and declare sizes whose product fits in 63
//! bits; the data must be exactly as long as the header declares.

use super::load::{numbered_classes, RawData};
use super::mnist::ImageSet;
use crate::error::{Error, Result};
use npyz::{DType, NpyFile, Order, TypeChar};
use std::path::{Path, PathBuf};

/// The files of a `.npy` data set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NpyFiles {
    pub train_images: PathBuf,
    pub train_labels: PathBuf,
    /// (images, labels) of the test set, when given.
    pub test: Option<(PathBuf, PathBuf)>,
}

/// The `.npy` files in `dir`, when it holds `x_train.npy` or `images.npy`.
pub fn find(dir: &Path) -> Option<NpyFiles> {
    if dir.join("x_train.npy").is_file() {
        let test = dir.join("x_test.npy").is_file() || dir.join("y_test.npy").is_file();
        Some(NpyFiles {
            train_images: dir.join("x_train.npy"),
            train_labels: dir.join("y_train.npy"),
            test: test.then(|| (dir.join("x_test.npy"), dir.join("y_test.npy"))),
        })
    } else if dir.join("images.npy").is_file() {
        Some(NpyFiles { train_images: dir.join("images.npy"), train_labels: dir.join("labels.npy"), test: None })
    } else {
        None
    }
}

pub(crate) fn load(files: &NpyFiles) -> Result<RawData> {
    let train = read_pair(&files.train_images, &files.train_labels)?;
    let test = files.test.as_ref().map(|(images, labels)| read_pair(images, labels)).transpose()?;
    if let (Some(test), Some((test_images, _))) = (&test, &files.test) {
        let shape = |i: &Images| (i.channels, i.height, i.width);
        let (a, b) = (shape(&train.0), shape(&test.0));
        if a != b {
            return Err(Error::format(
                test_images,
                format!("images are {}x{}x{} (CxHxW) but {} holds {}x{}x{}", b.0, b.1, b.2, files.train_images.display(), a.0, a.1, a.2),
            ));
        }
    }
    let max_label = train.1.iter().chain(test.iter().flat_map(|t| t.1.iter())).copied().max().unwrap_or(0);
    let classes = max_label as usize + 1;
    let into_set =
        |(images, labels): (Images, Vec<u8>)| ImageSet::new(images.data, labels, images.channels, images.height, images.width, classes);
    let train = into_set(train)?;
    let test = test.map(into_set).transpose()?;
    Ok(RawData { train, test, class_names: numbered_classes(classes), skipped: vec![] })
}

struct Images {
    data: Vec<u8>,
    n: usize,
    channels: usize,
    height: usize,
    width: usize,
}

fn read_pair(images_path: &Path, labels_path: &Path) -> Result<(Images, Vec<u8>)> {
    let images = read_images(images_path)?;
    let labels = read_labels(labels_path)?;
    if labels.len() != images.n {
        return Err(Error::format(
            labels_path,
            format!("holds {} labels but {} holds {} images", labels.len(), images_path.display(), images.n),
        ));
    }
    Ok((images, labels))
}

/// Reads an image array and converts it to NCHW bytes.
pub fn read_image_array(path: &Path) -> Result<(Vec<u8>, [usize; 4])> {
    let images = read_images(path)?;
    Ok((images.data, [images.n, images.channels, images.height, images.width]))
}

fn read_images(path: &Path) -> Result<Images> {
    let array = read_array(path)?;
    let (n, h, w, c) = match array.shape[..] {
        [n, h, w] => (n, h, w, 1),
        [n, h, w, c] if matches!(c, 1 | 3 | 4) => (n, h, w, c),
        _ => {
            return Err(Error::format(
                path,
                format!("images must be [n, h, w] or [n, h, w, c] with c = 1, 3 or 4 (NHWC), got shape {:?}", array.shape),
            ))
        }
    };
    let values = match array.kind {
        Kind::U8 => array.data,
        Kind::F32 | Kind::F64 => float_to_bytes(path, &array)?,
        Kind::Other | Kind::Int { .. } => {
            return Err(Error::format(path, format!("images are {}, expected uint8, or float32/float64 in [0, 1]", array.descr)))
        }
    };
    // NHWC -> NCHW, dropping a fourth (alpha) channel.
    let channels = if c == 4 { 3 } else { c };
    let plane = h * w;
    let mut data = vec![0u8; n * channels * plane];
    for i in 0..n {
        let src = &values[i * plane * c..(i + 1) * plane * c];
        let dst = &mut data[i * plane * channels..(i + 1) * plane * channels];
        for p in 0..plane {
            for ch in 0..channels {
                dst[ch * plane + p] = src[p * c + ch];
            }
        }
    }
    Ok(Images { data, n, channels, height: h, width: w })
}

fn float_to_bytes(path: &Path, array: &Array) -> Result<Vec<u8>> {
    let size = if array.kind == Kind::F32 { 4 } else { 8 };
    let mut out = Vec::with_capacity(array.data.len() / size);
    for (i, b) in array.data.chunks_exact(size).enumerate() {
        let v = if size == 4 {
            f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64
        } else {
            f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(Error::format(
                path,
                format!("element {i} is {v}: float images must lie in [0, 1] (divide by 255, or save them as uint8)"),
            ));
        }
        out.push((v * 255.0).round() as u8);
    }
    Ok(out)
}

fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let array = read_array(path)?;
    match array.shape[..] {
        [_] | [_, 1] => {}
        [n, k] => {
            return Err(Error::format(
                path,
                format!("labels have shape [{n}, {k}]; one-hot labels are not supported, save the class indices (argmax) as [n]"),
            ))
        }
        _ => return Err(Error::format(path, format!("labels must be [n] or [n, 1], got shape {:?}", array.shape))),
    }
    let (signed, size) = match array.kind {
        Kind::U8 => (false, 1),
        Kind::Int { signed, size } => (signed, size),
        _ => return Err(Error::format(path, format!("labels are {}, expected an integer type", array.descr))),
    };
    array
        .data
        .chunks_exact(size)
        .enumerate()
        .map(|(i, b)| {
            let mut le = [0u8; 8];
            le[..size].copy_from_slice(b);
            let negative = signed && b[size - 1] & 0x80 != 0;
            let value = if negative { i128::from(i64::from_le_bytes(sign_extend(le, size))) } else { i128::from(u64::from_le_bytes(le)) };
            u8::try_from(value)
                .map_err(|_| Error::format(path, format!("label {value} of image {i} is out of range (labels must lie in 0..=255)")))
        })
        .collect()
}

fn sign_extend(mut le: [u8; 8], size: usize) -> [u8; 8] {
    for b in &mut le[size..] {
        *b = 0xff;
    }
    le
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    U8,
    F32,
    F64,
    /// Any integer, `size` bytes little-endian (the bytes are put in that order when read).
    Int {
        signed: bool,
        size: usize,
    },
    Other,
}

/// An array's shape and its elements as little-endian bytes.
struct Array {
    shape: Vec<usize>,
    kind: Kind,
    descr: String,
    data: Vec<u8>,
}

/// A version-1.0 `.npy` file of a C-order array (for writing test data and caches): `descr` is
/// numpy's type string (`"|u1"`, `"<f4"`, `">i4"`, ...), `data` the elements' bytes as they are to
/// be stored. The header is padded so that the data starts at a multiple of 64 bytes, as numpy
/// writes it.
pub fn encode_npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // 10 bytes of prelude (magic, version, header length), the header and its newline.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

/// numpy's own default limit on the header (`max_header_size`).
const MAX_HEADER_LEN: usize = 10_000;
/// Deeper nesting than any real header, shallow enough for a recursive parser's stack.
const MAX_HEADER_DEPTH: usize = 16;

fn read_array(path: &Path) -> Result<Array> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let fail = |msg: String| Error::format(path, msg);
    check_header(&bytes).map_err(fail)?;
    let file = NpyFile::new(&bytes[..]).map_err(|e| fail(format!("invalid .npy header: {e}")))?;
    if file.order() == Order::Fortran && file.shape().len() > 1 {
        return Err(fail("Fortran-order arrays are not supported; save with np.ascontiguousarray".into()));
    }
    let DType::Plain(type_str) = file.dtype() else {
        return Err(fail(format!("dtype {} is not a plain numeric type", file.dtype().descr())));
    };
    let size = type_str.num_bytes().unwrap_or(0);
    let kind = match (type_str.type_char(), size) {
        (TypeChar::Uint, 1) => Kind::U8,
        (TypeChar::Float, 4) => Kind::F32,
        (TypeChar::Float, 8) => Kind::F64,
        (TypeChar::Int, 1 | 2 | 4 | 8) => Kind::Int { signed: true, size },
        (TypeChar::Uint, 2 | 4 | 8) => Kind::Int { signed: false, size },
        _ => Kind::Other,
    };
    let shape: Vec<usize> = file
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| fail(format!("shape {:?} does not fit in memory", file.shape())))?;
    let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let want = elements.and_then(|e| e.checked_mul(size)).ok_or_else(|| fail(format!("shape {shape:?} overflows")))?;
    let descr = type_str.to_string();
    let data = file.into_inner();
    if data.len() != want {
        let problem = if data.len() < want { "truncated" } else { "trailing data" };
        return Err(fail(format!("{problem}: shape {shape:?} of {descr} needs {want} bytes of data, the file holds {}", data.len())));
    }
    if kind == Kind::Other {
        return Ok(Array { shape, kind, descr, data: vec![] });
    }
    let mut data = data.to_vec();
    // Store every element little-endian.
    if type_str.endianness() == npyz::Endianness::Big && size > 1 {
        data.chunks_exact_mut(size).for_each(|c| c.reverse());
    }
    Ok(Array { shape, kind, descr, data })
}

/// Checks the magic, the header's length against the file and its content's nesting and sizes
/// before `npyz` reads it.
fn check_header(bytes: &[u8]) -> std::result::Result<(), String> {
    const MAGIC: &[u8] = b"\x93NUMPY";
    if bytes.len() < 10 {
        return Err(format!("truncated: {} bytes, a .npy header needs at least 10", bytes.len()));
    }
    if !bytes.starts_with(MAGIC) {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (prelude, header_len) = match bytes[6] {
        1 => (10, u16::from_le_bytes([bytes[8], bytes[9]]) as usize),
        2 | 3 if bytes.len() >= 12 => (12, u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize),
        2 | 3 => return Err(format!("truncated: {} bytes, a version-{} .npy header needs at least 12", bytes.len(), bytes[6])),
        v => return Err(format!(".npy version {v}.{} is not supported (1.0, 2.0 or 3.0)", bytes[7])),
    };
    if header_len > MAX_HEADER_LEN {
        return Err(format!("header of {header_len} bytes is longer than the {MAX_HEADER_LEN} numpy allows"));
    }
    if bytes.len() < prelude + header_len {
        return Err(format!(
            "truncated: the header declares {header_len} bytes, the file holds {} after the prelude",
            bytes.len() - prelude
        ));
    }
    let text = &bytes[prelude..prelude + header_len];
    let mut depth = 0usize;
    for &b in text {
        match b {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if depth > MAX_HEADER_DEPTH {
            return Err(format!("header nests brackets more than {MAX_HEADER_DEPTH} deep"));
        }
    }
    // Every number in the header, multiplied: bounds the shape (and any sub-array dtype) so that
    // npyz's own products cannot overflow.
    let mut product: u64 = 1;
    for run in text.split(|b| !b.is_ascii_digit()).filter(|r| !r.is_empty()) {
        let value = std::str::from_utf8(run).ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(u64::MAX);
        product = product.checked_mul(value.max(1)).filter(|p| *p < 1 << 63).ok_or("header declares sizes whose product overflows")?;
    }
    Ok(())
}
