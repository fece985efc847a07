//! A dataset resident on the device as bytes (4x smaller than f32: 60,000 MNIST images are 47 MB,
//! under lavapipe's 128 MiB binding limit), batches gathered and scaled by one kernel, and the
//! seeded per-epoch order of batches.

use super::mnist::{ImageSet, PIXEL_SCALE};
use crate::device::{Access, DType, Device, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;

static GATHER: KernelSpec = KernelSpec {
    name: "gather_batch",
    source: include_str!("../../shaders/gather_batch.wgsl"),
    entry: "main",
    bindings: &[Access::Read, Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite],
};

/// Workgroup size of the gather kernel and values per invocation (`const WG`, `const PER` in its shader).
const WG: usize = 256;
const PER: usize = 4;

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct GatherParams {
    batch: u32,
    image_len: u32,
    n: u32,
    scale: f32,
    height: u32,
    width: u32,
    shifted: u32,
    _pad: u32,
}

/// Images as packed bytes `[n, c, h, w]` and labels as u32 `[n]`, on the device.
pub struct DeviceDataset {
    images: Tensor,
    labels: Tensor,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl DeviceDataset {
    /// Uploads a set (recorded; it reaches the device with the next submit).
    pub fn new(device: &Device, set: &ImageSet) -> Result<DeviceDataset> {
        if set.is_empty() {
            return Err(Error::Invalid("cannot put an empty image set on the device".into()));
        }
        if set.images.len() > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} image bytes exceed the gather kernel's 32-bit indices", set.images.len())));
        }
        let [c, h, w] = set.image_shape();
        let images = Tensor::from_u8(device, &set.images, &[set.n, c, h, w])?;
        let labels: Vec<u32> = set.labels.iter().map(|&l| l as u32).collect();
        let labels = Tensor::from_u32(device, &labels, &[set.n])?;
        Ok(DeviceDataset { images, labels, n: set.n, channels: c, height: h, width: w, classes: set.classes })
    }

    pub fn len(&self) -> usize {
        self.n
    }
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }
    pub fn device(&self) -> &Device {
        self.images.device()
    }

    /// The images at `indices` as f32 `[b, c, h, w]` in [0, 1] and their labels as u32 `[b]`: one
    /// upload of the indices and one kernel.
    pub fn batch(&self, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        self.batch_shifted(indices, &vec![[0, 0]; indices.len()])
    }

    /// As [`batch`](Self::batch), each image moved by its `[dx, dy]` of `shifts` (right and down
    /// for positive values), the uncovered pixels zero: random-shift augmentation in the gather.
    pub fn batch_shifted(&self, indices: &[u32], shifts: &[[i32; 2]]) -> Result<(Tensor, Tensor)> {
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= self.n) {
            return Err(Error::Invalid(format!("batch index {bad} is out of range for a dataset of {} images", self.n)));
        }
        if shifts.len() != indices.len() {
            return Err(Error::Invalid(format!("{} shifts for a batch of {} images", shifts.len(), indices.len())));
        }
        if let Some(bad) =
            shifts.iter().find(|[dx, dy]| dx.unsigned_abs() as usize >= self.width || dy.unsigned_abs() as usize >= self.height)
        {
            return Err(Error::Invalid(format!("shift {bad:?} moves a {}x{} image out of its frame", self.height, self.width)));
        }
        let b = indices.len();
        let total = b * self.image_len();
        if total > u32::MAX as usize {
            return Err(Error::Invalid(format!("a batch of {b} images of {} values exceeds 32-bit indexing", self.image_len())));
        }
        let dev = self.device();
        let idx = Tensor::from_u32(dev, indices, &[b])?;
        // Unshifted batches (evaluation, prediction) upload no shifts: the kernel skips them and
        // the indices fill their binding.
        let shifted = shifts.iter().any(|&s| s != [0, 0]);
        let offsets = if shifted {
            let offsets: Vec<u32> = shifts.iter().flatten().map(|&d| d as u32).collect();
            Tensor::from_u32(dev, &offsets, &[b, 2])?
        } else {
            idx.clone()
        };
        let images = Tensor::uninit(dev, &[b, self.channels, self.height, self.width], "batch images")?;
        let labels = Tensor::uninit_typed(dev, &[b], DType::U32, "batch labels")?;
        let params = GatherParams {
            batch: b as u32,
            image_len: self.image_len() as u32,
            n: self.n as u32,
            scale: PIXEL_SCALE,
            height: self.height as u32,
            width: self.width as u32,
            shifted: shifted as u32,
            _pad: 0,
        };
        let bufs = [self.images.buffer(), self.labels.buffer(), idx.buffer(), offsets.buffer(), images.buffer(), labels.buffer()];
        dev.dispatch(&GATHER, &[], &params, &bufs, crate::ops::grid_1d(crate::ops::groups(b * self.image_len().div_ceil(PER), WG)))?;
        Ok((images, labels))
    }
}

/// Random-shift augmentation: each training image moves by a whole number of pixels, drawn
/// uniformly from `-max..=max` along each axis, the uncovered border zero. A digit moved by two
/// pixels is still that digit, so the network learns that position does not matter instead of
/// memorising where strokes fall (the standard cure for a convnet's validation plateau on MNIST).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RandomShift {
    pub max: usize,
}

impl RandomShift {
    /// The default for `height`x`width` images: 2 pixels, less for images under 16 pixels on a
    /// side (an eighth of the shorter side), none under 8.
    pub fn for_image(height: usize, width: usize) -> RandomShift {
        RandomShift { max: (height.min(width) / 8).min(2) }
    }

    /// `count` shifts `[dx, dy]`, the same for the same seed.
    pub fn draw(&self, count: usize, seed: u64) -> Vec<[i32; 2]> {
        if self.max == 0 {
            return vec![[0, 0]; count];
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let m = self.max as i32;
        (0..count).map(|_| [rand::Rng::random_range(&mut rng, -m..=m), rand::Rng::random_range(&mut rng, -m..=m)]).collect()
    }
}

/// The order of batches: a seeded shuffle per epoch (the same seed and epoch give the same
/// order), every image once, the last partial batch included.
#[derive(Clone, Debug)]
pub struct BatchOrder {
    pub n: usize,
    pub batch_size: usize,
    pub seed: u64,
}

impl BatchOrder {
    pub fn new(n: usize, batch_size: usize, seed: u64) -> Result<BatchOrder> {
        if batch_size == 0 {
            return Err(Error::Invalid("batch size must be at least 1".into()));
        }
        Ok(BatchOrder { n, batch_size, seed })
    }

    pub fn batches_per_epoch(&self) -> usize {
        self.n.div_ceil(self.batch_size)
    }

    /// The batches of `epoch`, shuffled by a generator seeded with `seed + epoch`.
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<u32>> {
        let mut order: Vec<u32> = (0..self.n as u32).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(self.seed.wrapping_add(epoch)));
        order.chunks(self.batch_size).map(<[u32]>::to_vec).collect()
    }

    /// The batches in order, unshuffled (evaluation).
    pub fn sequential(&self) -> Vec<Vec<u32>> {
        let order: Vec<u32> = (0..self.n as u32).collect();
        order.chunks(self.batch_size).map(<[u32]>::to_vec).collect()
    }
}
