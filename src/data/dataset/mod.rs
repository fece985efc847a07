//! A labelled image set on the device as bytes (4x smaller than f32: 60,000 MNIST images are
//! 47 MB), batches gathered, scaled and augmented by one kernel, and the seeded per-epoch order of
//! batches.
//!
//! A set that fits in one storage binding and the memory budget stays resident. A larger one (more
//! than lavapipe's 128 MiB binding, or than the GPU's memory) is streamed: a pass over a list of
//! batches ([`DeviceDataset::batches`]) groups consecutive batches into chunks, gathers each
//! chunk's images on the host, in the pass's order, and uploads them, two chunks on the device at a
//! time (see [`Batches`]). An epoch's order is then exactly the resident one: a uniform shuffle of
//! the whole set, cut into chunks, every image once.

mod augment;
mod stream;

pub use augment::{Augmentation, Cutout, ImageAugment, RandomShift, ELASTIC_GRID, ELASTIC_POINTS, MAX_ROTATION_DEGREES, MAX_SCALE};
pub use stream::Batches;

use super::mnist::{ImageSet, PIXEL_SCALE};
use crate::device::{Access, DType, Device, KernelSpec};
use crate::error::{Error, Result};
use crate::tensor::Tensor;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::sync::Arc;

static GATHER: KernelSpec = KernelSpec {
    name: "gather_batch",
    source: include_str!("../../../shaders/gather_batch.wgsl"),
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
    augmented: u32,
    _pad: u32,
    grid_x: f32,
    grid_y: f32,
    _pad1: [u32; 2],
}

/// Device memory a data set may take before it is streamed, when [`Residency::Auto`] is not
/// told otherwise: wgpu cannot ask a GPU how much memory it has, and the model needs the rest.
pub const DEFAULT_MEMORY_BUDGET: u64 = 2 << 30;

/// The largest streamed chunk by default: beyond it, larger chunks save nothing (thousands of
/// images amortise a chunk's upload) and cost host memory for its gather and staging copy.
pub const DEFAULT_CHUNK_BYTES: u64 = 64 << 20;

/// Where a data set's images live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    /// Resident when the images fit in one storage binding and in `budget` bytes, streamed
    /// otherwise, in chunks of at most [`DEFAULT_CHUNK_BYTES`], the binding limit and half the
    /// budget (two chunks are on the device at a time).
    Auto { budget: u64 },
    /// On the device whole (an error when that exceeds the binding limit).
    Resident,
    /// Streamed in chunks of at most `chunk_bytes` bytes of images (and the binding limit).
    Streamed { chunk_bytes: u64 },
}

impl Default for Residency {
    fn default() -> Self {
        Residency::Auto { budget: DEFAULT_MEMORY_BUDGET }
    }
}

enum Storage {
    /// Images as packed bytes `[n, c, h, w]` and labels as u32 `[n]`, on the device.
    Resident { images: Tensor, labels: Tensor },
    /// The set on the host, uploaded a chunk of `chunk_images` images at a time.
    Streamed { host: Arc<ImageSet>, chunk_images: usize },
}

/// A labelled image set that batches are gathered from on the device, resident or streamed.
pub struct DeviceDataset {
    device: Device,
    storage: Storage,
    pub n: usize,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub classes: usize,
}

impl DeviceDataset {
    /// Puts a set on the device, resident or streamed as [`Residency::default`] decides (a
    /// streamed set keeps a copy of `set` on the host: [`from_shared`](Self::from_shared) does
    /// not copy). A resident set's upload is recorded; it reaches the device with the next submit.
    pub fn new(device: &Device, set: &ImageSet) -> Result<DeviceDataset> {
        Self::with_residency(device, set, Residency::default())
    }

    /// As [`new`](Self::new), with the residency chosen by the caller.
    pub fn with_residency(device: &Device, set: &ImageSet, residency: Residency) -> Result<DeviceDataset> {
        match Self::chunk_images(device, set, residency)? {
            None => Self::resident(device, set),
            Some(chunk_images) => Self::streamed(device, Arc::new(set.clone()), chunk_images),
        }
    }

    /// As [`with_residency`](Self::with_residency), sharing the host's copy of the set.
    pub fn from_shared(device: &Device, set: Arc<ImageSet>, residency: Residency) -> Result<DeviceDataset> {
        match Self::chunk_images(device, &set, residency)? {
            None => Self::resident(device, &set),
            Some(chunk_images) => Self::streamed(device, set, chunk_images),
        }
    }

    /// Images per streamed chunk, or None for a resident set.
    fn chunk_images(device: &Device, set: &ImageSet, residency: Residency) -> Result<Option<usize>> {
        if set.is_empty() {
            return Err(Error::Invalid("cannot put an empty image set on the device".into()));
        }
        // Batch indices are u32, and so are the kernel's byte offsets within a binding.
        if set.n > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} images exceed the 32-bit batch indices", set.n)));
        }
        let bytes = set.images.len() as u64;
        let binding = device.max_binding_bytes().min(u32::MAX as u64);
        let chunk_bytes = match residency {
            Residency::Resident => return Ok(None),
            Residency::Auto { budget } if bytes <= binding && bytes <= budget && set.n as u64 * 4 <= binding => return Ok(None),
            Residency::Auto { budget } => DEFAULT_CHUNK_BYTES.min(budget / 2),
            Residency::Streamed { chunk_bytes } => chunk_bytes,
        };
        // The labels of a chunk are u32: its images and labels must both fit in a binding.
        let image_len = set.image_len() as u64;
        let chunk_images = chunk_bytes.min(binding) / image_len;
        let chunk_images = chunk_images.min(binding / 4).min(set.n as u64) as usize;
        if chunk_images == 0 {
            return Err(Error::Invalid(format!(
                "an image of {image_len} bytes does not fit in a streamed chunk of {} bytes",
                chunk_bytes.min(binding)
            )));
        }
        Ok(Some(chunk_images))
    }

    fn resident(device: &Device, set: &ImageSet) -> Result<DeviceDataset> {
        if set.images.len() > u32::MAX as usize {
            return Err(Error::Invalid(format!("{} image bytes exceed the gather kernel's 32-bit indices", set.images.len())));
        }
        let [c, h, w] = set.image_shape();
        let images = Tensor::from_u8(device, &set.images, &[set.n, c, h, w])?;
        let labels: Vec<u32> = set.labels.iter().map(|&l| l as u32).collect();
        let labels = Tensor::from_u32(device, &labels, &[set.n])?;
        Ok(Self::with_storage(device, set, Storage::Resident { images, labels }))
    }

    fn streamed(device: &Device, set: Arc<ImageSet>, chunk_images: usize) -> Result<DeviceDataset> {
        let storage = Storage::Streamed { host: set.clone(), chunk_images };
        Ok(Self::with_storage(device, &set, storage))
    }

    fn with_storage(device: &Device, set: &ImageSet, storage: Storage) -> DeviceDataset {
        let [channels, height, width] = set.image_shape();
        DeviceDataset { device: device.clone(), storage, n: set.n, channels, height, width, classes: set.classes }
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
        &self.device
    }

    /// Whether the set is streamed in chunks rather than resident.
    pub fn is_streamed(&self) -> bool {
        matches!(self.storage, Storage::Streamed { .. })
    }

    /// The most images a streamed chunk holds (None for a resident set).
    pub fn images_per_chunk(&self) -> Option<usize> {
        match self.storage {
            Storage::Resident { .. } => None,
            Storage::Streamed { chunk_images, .. } => Some(chunk_images),
        }
    }

    /// A pass over `order`'s batches, gathered in turn with [`Batches::gather`]: what `fit`,
    /// `evaluate` and `logits` use, streaming the chunks of a streamed set.
    pub fn batches(&self, order: Vec<Vec<u32>>) -> Result<Batches<'_>> {
        Batches::new(self, order)
    }

    /// The images at `indices` as f32 `[b, c, h, w]` in [0, 1] and their labels as u32 `[b]`: one
    /// upload of the indices and one kernel (a streamed set gathers and uploads the batch's images
    /// first: for a pass over many batches, [`batches`](Self::batches) streams them instead).
    pub fn batch(&self, indices: &[u32]) -> Result<(Tensor, Tensor)> {
        self.batch_augmented(indices, &[])
    }

    /// As [`batch`](Self::batch), each image moved by its `[dx, dy]` of `shifts` (right and down
    /// for positive values), the uncovered pixels zero: random-shift augmentation in the gather.
    pub fn batch_shifted(&self, indices: &[u32], shifts: &[[i32; 2]]) -> Result<(Tensor, Tensor)> {
        if shifts.len() != indices.len() {
            return Err(Error::Invalid(format!("{} shifts for a batch of {} images", shifts.len(), indices.len())));
        }
        let augments: Vec<ImageAugment> = shifts.iter().map(|&shift| ImageAugment { shift, ..ImageAugment::default() }).collect();
        self.batch_augmented(indices, &augments)
    }

    /// As [`batch`](Self::batch), each image augmented by its [`ImageAugment`] (an empty
    /// `augments`: none).
    pub fn batch_augmented(&self, indices: &[u32], augments: &[ImageAugment]) -> Result<(Tensor, Tensor)> {
        self.check_batch(indices, augments)?;
        match &self.storage {
            Storage::Resident { images, labels } => self.gather(images, labels, self.n, indices, augments),
            Storage::Streamed { host, .. } => {
                let chunk = stream::HostChunk::gather(host, indices);
                let (images, labels) = chunk.upload(&self.device, self.image_shape())?;
                let local: Vec<u32> = (0..indices.len() as u32).collect();
                self.gather(&images, &labels, indices.len(), &local, augments)
            }
        }
    }

    fn image_shape(&self) -> [usize; 3] {
        [self.channels, self.height, self.width]
    }

    /// Indices within the set, one augmentation per image (or none), each one possible for the
    /// images (shifts within the frame, finite values).
    fn check_batch(&self, indices: &[u32], augments: &[ImageAugment]) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= self.n) {
            return Err(Error::Invalid(format!("batch index {bad} is out of range for a dataset of {} images", self.n)));
        }
        if !augments.is_empty() && augments.len() != indices.len() {
            return Err(Error::Invalid(format!("{} augmentations for a batch of {} images", augments.len(), indices.len())));
        }
        if let Some((k, problem)) = augments.iter().enumerate().find_map(|(k, a)| Some((k, a.problem(self.height, self.width)?))) {
            return Err(Error::Invalid(format!("the augmentation of image {k} of the batch: {problem}")));
        }
        Ok(())
    }

    /// One dispatch of the gather kernel: images `local` of `images`/`labels` (`n` of them, a
    /// whole resident set or one chunk), augmented by `augments` (empty: none).
    fn gather(&self, images: &Tensor, labels: &Tensor, n: usize, local: &[u32], augments: &[ImageAugment]) -> Result<(Tensor, Tensor)> {
        let b = local.len();
        let total = b * self.image_len();
        if total > u32::MAX as usize {
            return Err(Error::Invalid(format!("a batch of {b} images of {} values exceeds 32-bit indexing", self.image_len())));
        }
        let dev = &self.device;
        let idx = Tensor::from_u32(dev, local, &[b])?;
        // Batches without augmentation (evaluation, prediction) upload none: the kernel skips
        // them and the indices fill their binding.
        let augmented = augments.iter().any(|a| !a.is_identity());
        let words = if augmented {
            let words: Vec<u32> = augments.iter().flat_map(|a| a.words(self.height, self.width)).collect();
            Tensor::from_u32(dev, &words, &[b, augment::AUGMENT_WORDS])?
        } else {
            idx.clone()
        };
        let out_images = Tensor::uninit(dev, &[b, self.channels, self.height, self.width], "batch images")?;
        let out_labels = Tensor::uninit_typed(dev, &[b], DType::U32, "batch labels")?;
        let params = GatherParams {
            batch: b as u32,
            image_len: self.image_len() as u32,
            n: n as u32,
            scale: PIXEL_SCALE,
            height: self.height as u32,
            width: self.width as u32,
            augmented: augmented as u32,
            _pad: 0,
            grid_x: augment::elastic_grid_step(self.width),
            grid_y: augment::elastic_grid_step(self.height),
            _pad1: [0; 2],
        };
        let bufs = [images.buffer(), labels.buffer(), idx.buffer(), words.buffer(), out_images.buffer(), out_labels.buffer()];
        dev.dispatch(&GATHER, &[], &params, &bufs, crate::ops::grid_1d(crate::ops::groups(b * self.image_len().div_ceil(PER), WG)))?;
        Ok((out_images, out_labels))
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
