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
    bindings: &[Access::Read, Access::Read, Access::Read, Access::ReadWrite, Access::ReadWrite],
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
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= self.n) {
            return Err(Error::Invalid(format!("batch index {bad} is out of range for a dataset of {} images", self.n)));
        }
        let b = indices.len();
        let total = b * self.image_len();
        if total > u32::MAX as usize {
            return Err(Error::Invalid(format!("a batch of {b} images of {} values exceeds 32-bit indexing", self.image_len())));
        }
        let dev = self.device();
        let idx = Tensor::from_u32(dev, indices, &[b])?;
        let images = Tensor::uninit(dev, &[b, self.channels, self.height, self.width], "batch images")?;
        let labels = Tensor::uninit_typed(dev, &[b], DType::U32, "batch labels")?;
        let params = GatherParams { batch: b as u32, image_len: self.image_len() as u32, n: self.n as u32, scale: PIXEL_SCALE };
        let bufs = [self.images.buffer(), self.labels.buffer(), idx.buffer(), images.buffer(), labels.buffer()];
        dev.dispatch(&GATHER, &[], &params, &bufs, crate::ops::grid_1d(crate::ops::groups(b * self.image_len().div_ceil(PER), WG)))?;
        Ok((images, labels))
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
