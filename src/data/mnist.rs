//! MNIST from its four IDX files, and `ImageSet`, a labelled set of u8 images of any size,
//! channel count and number of classes.

use super::idx::read_idx;
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The pixel scale: the value of byte `b` is `b as f32 * PIXEL_SCALE` on the CPU and the GPU alike.
pub const PIXEL_SCALE: f32 = 1.0 / 255.0;

/// Labelled images, stored as bytes in NCHW order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageSet {
    /// `n * channels * height * width` bytes.
    pub images: Vec<u8>,
    /// `n` labels, each below `classes`.
    pub labels: Vec<u8>,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl ImageSet {
    /// Checks that the sizes agree and every label is below `classes`.
    pub fn new(images: Vec<u8>, labels: Vec<u8>, channels: usize, height: usize, width: usize, classes: usize) -> Result<ImageSet> {
        let n = labels.len();
        let image_len = channels * height * width;
        if images.len() != n * image_len {
            return Err(Error::Invalid(format!(
                "{} image bytes are not {n} images of {channels}x{height}x{width} ({} bytes)",
                images.len(),
                n * image_len
            )));
        }
        if let Some((i, &l)) = labels.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::Invalid(format!("label {l} of image {i} is not below the {classes} classes")));
        }
        Ok(ImageSet { images, labels, n, channels, height, width, classes })
    }

    /// Bytes per image.
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The bytes of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * self.image_len()..(i + 1) * self.image_len()]
    }

    /// The shape of one image: [channels, height, width].
    pub fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// The images at `indices` as f32 in [0, 1], NCHW (the CPU form of a batch).
    pub fn gather_f32(&self, indices: &[u32]) -> Vec<f32> {
        indices.iter().flat_map(|&i| self.image(i as usize).iter().map(|&b| b as f32 * PIXEL_SCALE)).collect()
    }

    /// As [`gather_f32`](Self::gather_f32), each image moved by its `[dx, dy]` (right and down),
    /// the uncovered pixels zero: the CPU reference of [`DeviceDataset::batch_shifted`](super::DeviceDataset::batch_shifted).
    pub fn gather_f32_shifted(&self, indices: &[u32], shifts: &[[i32; 2]]) -> Vec<f32> {
        let (h, w) = (self.height as i64, self.width as i64);
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for (&i, &[dx, dy]) in indices.iter().zip(shifts) {
            let image = self.image(i as usize);
            for c in 0..self.channels as i64 {
                for y in 0..h {
                    for x in 0..w {
                        let (sy, sx) = (y - dy as i64, x - dx as i64);
                        let inside = (0..h).contains(&sy) && (0..w).contains(&sx);
                        out.push(if inside { image[((c * h + sy) * w + sx) as usize] as f32 * PIXEL_SCALE } else { 0.0 });
                    }
                }
            }
        }
        out
    }

    /// The first `n` images (all of them when there are fewer): `--train-limit`.
    pub fn take(&self, n: usize) -> ImageSet {
        self.range(0, n.min(self.n))
    }

    /// The images shrunk by averaging `factor`x`factor` blocks (edge rows and columns that fill no
    /// whole block are dropped): quick runs, such as 14x14 MNIST with a factor of 2.
    pub fn downsample(&self, factor: usize) -> Result<ImageSet> {
        if factor == 0 || factor > self.height || factor > self.width {
            return Err(Error::Invalid(format!(
                "cannot downsample {}x{} images by a factor of {factor}: use 1 to {}",
                self.height,
                self.width,
                self.height.min(self.width)
            )));
        }
        if factor == 1 {
            return Ok(self.clone());
        }
        let (h, w) = (self.height / factor, self.width / factor);
        let mut images = Vec::with_capacity(self.n * self.channels * h * w);
        for i in 0..self.n {
            let image = self.image(i);
            for c in 0..self.channels {
                for y in 0..h {
                    for x in 0..w {
                        let mut sum = 0u32;
                        for dy in 0..factor {
                            let row = (c * self.height + y * factor + dy) * self.width + x * factor;
                            sum += image[row..row + factor].iter().map(|&b| b as u32).sum::<u32>();
                        }
                        images.push((sum / (factor * factor) as u32) as u8);
                    }
                }
            }
        }
        Ok(ImageSet { images, height: h, width: w, ..self.clone() })
    }

    /// Splits off the last `n_val` images as a validation set: (training, validation).
    pub fn split(&self, n_val: usize) -> Result<(ImageSet, ImageSet)> {
        if n_val > self.n {
            return Err(Error::Invalid(format!("cannot hold out {n_val} validation images from a set of {}", self.n)));
        }
        let cut = self.n - n_val;
        Ok((self.range(0, cut), self.range(cut, self.n)))
    }

    fn range(&self, start: usize, end: usize) -> ImageSet {
        let len = self.image_len();
        ImageSet { images: self.images[start * len..end * len].to_vec(), labels: self.labels[start..end].to_vec(), n: end - start, ..*self }
    }

    /// Reads an image file ([n, h, w] or [n, c, h, w]) and a label file ([n]) in IDX form.
    pub fn from_idx(images_path: &Path, labels_path: &Path, classes: usize) -> Result<ImageSet> {
        let images = read_idx(images_path)?;
        let labels = read_idx(labels_path)?;
        let (n, c, h, w) = match images.dims[..] {
            [n, h, w] => (n, 1, h, w),
            [n, c, h, w] => (n, c, h, w),
            _ => {
                return Err(Error::format(
                    images_path,
                    format!("expected images [n, h, w] or [n, c, h, w], got dimensions {:?}", images.dims),
                ))
            }
        };
        if labels.dims.len() != 1 {
            return Err(Error::format(labels_path, format!("expected labels [n], got dimensions {:?}", labels.dims)));
        }
        if labels.dims[0] != n {
            return Err(Error::format(
                images_path,
                format!("holds {n} images but {} holds {} labels", labels_path.display(), labels.dims[0]),
            ));
        }
        if let Some((i, &l)) = labels.data.iter().enumerate().find(|(_, &l)| l as usize >= classes) {
            return Err(Error::format(labels_path, format!("label {l} of image {i} is not below the {classes} classes")));
        }
        Ok(ImageSet { images: images.data, labels: labels.data, n, channels: c, height: h, width: w, classes })
    }
}

/// The MNIST training (60,000) and test (10,000) sets: 1x28x28 images, 10 classes.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: ImageSet,
    pub test: ImageSet,
}

pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

impl Mnist {
    /// Loads the four files from `dir`, each raw or with `.gz`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        let train = ImageSet::from_idx(&find(dir, TRAIN_IMAGES)?, &find(dir, TRAIN_LABELS)?, 10)?;
        let test = ImageSet::from_idx(&find(dir, TEST_IMAGES)?, &find(dir, TEST_LABELS)?, 10)?;
        Ok(Mnist { train, test })
    }
}

/// `dir/name`, or `dir/name.gz` when only that exists.
fn find(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    Err(Error::format(
        raw,
        format!("not found, nor {name}.gz (set NETMORPH_DATA_DIR to the folder holding MNIST, or fetch it with data::download_mnist)"),
    ))
}

/// Where MNIST is looked for: `NETMORPH_DATA_DIR` if set, else the copy shipped in the repository.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("NETMORPH_DATA_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/data/mnist")),
    }
}
